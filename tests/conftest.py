"""Fixtures shared across the test folders: small trained models, made once per test session."""
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def tfc_digits_model(tmp_path_factory):
    """A TFC trained briefly on digits: real training, few epochs, enough to be far above chance."""
    from xnorflow.training.train import train

    path = tmp_path_factory.mktemp("models") / "tfc-digits.pt"
    train("tfc", "digits", path, epochs=4, seed=0, progress=False, threads=1)
    return path


def run_cli(*args, cwd=None):
    """Run the installed `xnorflow` command as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "xnorflow.compiler.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=900, check=False)


@pytest.fixture(scope="session", autouse=True)
def synth_history(tmp_path_factory):
    """Synthesis times go to a history file of the test session, not the user's cache (boards/synth.py);
    set before any Dask worker process starts, so workers inherit it."""
    import os

    path = tmp_path_factory.mktemp("history") / "synth-history.jsonl"
    previous = os.environ.get("XNORFLOW_SYNTH_HISTORY")
    os.environ["XNORFLOW_SYNTH_HISTORY"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XNORFLOW_SYNTH_HISTORY", None)
    else:
        os.environ["XNORFLOW_SYNTH_HISTORY"] = previous
