"""Interrupted at random points, a build folder is never misread: the rerun recovers, same figures.

Each round starts a command (train, compile, simulate, synth, flow) as a user would, sends SIGINT
or SIGKILL after a random delay, then runs the same command to completion and compares its figures
with those of an uninterrupted run. Slow: about 60 rounds of real training, compiles, Verilator runs
and (a few) Yosys/nextpnr builds.
"""
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from xnorflow.compiler import build_folder

pytestmark = pytest.mark.slow

FIGURES = ("accuracy_golden", "torch_golden_agreement", "analytic_cycles_per_frame", "images_simulated",
           "rtl_mismatches", "accuracy_rtl", "cycles_per_frame", "luts", "brams", "fmax_mhz", "clock_mhz")


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "xnorflow.compiler.cli", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def interrupt(args, delay: float, how: signal.Signals) -> None:
    process = start(*args)
    time.sleep(delay)
    process.send_signal(how)
    process.wait(timeout=120)


def figures(build) -> dict:
    report = json.loads((build / "report.json").read_text())
    return {key: report.get(key) for key in FIGURES}


def assert_whole(build) -> None:
    """No journal, stage or trash left once a command finished; the marker kept."""
    assert (build / build_folder.MARKER).is_file()
    assert not (build / build_folder.JOURNAL).exists()
    assert not [p for p in build.iterdir() if p.name.startswith((".stage-", ".trash-"))]


def test_interrupts_at_random_points_never_leave_a_folder_a_rerun_misreads(tmp_path):
    rng = random.Random(12)
    model = tmp_path / "model.pt"
    assert run_cli("train", "--epochs", "2", "-o", model).returncode == 0
    reference = tmp_path / "reference"
    assert run_cli("compile", model, "-o", reference).returncode == 0
    assert run_cli("simulate", reference, "--images", "30").returncode == 0
    simulated = figures(reference)
    assert run_cli("synth", reference, "--clock-mhz", "board", "--pnr-seed", "2").returncode == 0
    synthesized = figures(reference)
    model_bytes = model.read_bytes()

    rounds = []
    for _ in range(14):
        rounds += ["train", "compile", "simulate", "flow"]
    rounds += ["synth"] * 4
    rng.shuffle(rounds)
    for n, command in enumerate(rounds):
        how = rng.choice([signal.SIGINT, signal.SIGKILL])
        work = tmp_path / f"round{n}"
        if command == "train":
            target = work / "model.pt"
            args = ("train", "--epochs", "2", "-o", target)
            interrupt(args, rng.uniform(0.5, 6.0), how)
            assert run_cli(*args).returncode == 0
            # A SIGKILL may leave its hidden mkstemp file; nothing else, and the model file whole.
            assert [p.name for p in work.iterdir() if not p.name.startswith(".")] == ["model.pt"]
            assert run_cli("compile", target, "-o", work / "check").returncode == 0
            continue
        build = work / "b"
        if command in ("simulate", "synth"):
            shutil.copytree(reference, build)
            shutil.rmtree(build / "synth")
        args = {"compile": ("compile", model, "-o", build),
                "simulate": ("simulate", build, "--images", "30"),
                "synth": ("synth", build, "--clock-mhz", "board", "--pnr-seed", "2"),
                "flow": ("flow", "--model", model, "--images", "30", "--no-synth", "-o", build)}[command]
        interrupt(args, rng.uniform(0.3, {"synth": 30.0, "flow": 12.0}.get(command, 5.0)), how)
        rerun = run_cli(*args)
        assert rerun.returncode == 0, f"round {n} ({command}, {how.name}): {rerun.stderr}"
        assert_whole(build)
        expected = synthesized if command == "synth" else simulated
        got = figures(build)
        compiled, simulated_too = FIGURES[:3], FIGURES[:7]
        keys = {"compile": compiled, "simulate": simulated_too, "flow": simulated_too, "synth": FIGURES}[command]
        assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}, f"round {n} ({command}, {how.name})"
    assert model.read_bytes() == model_bytes
