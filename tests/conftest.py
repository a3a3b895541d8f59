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
