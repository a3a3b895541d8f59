"""`xnorflow sweep`: points built on a real Dask LocalCluster of 2 worker processes, equal to the same
points built serially, resumable, a killed worker's point retried, failures recorded, bad input refused."""
import csv
import json
import os
import signal

import pytest
from conftest import run_cli

from xnorflow.compiler.sweep import (
    SweepError,
    build_point,
    grid_points,
    local_cluster,
    point_complete,
    run_sweep,
)
from xnorflow.compiler.sweep_report import best_bitstream, pareto_front
from xnorflow.errors import XnorflowError

IMAGES = 24
# Figures that must not depend on where or when a point was built (timings and paths left out).
SAME_FIGURES = ("arch", "dataset", "board", "device", "layers", "accuracy_torch", "accuracy_golden",
                "torch_golden_agreement", "images_simulated", "rtl_mismatches", "accuracy_rtl", "cycles_per_frame",
                "analytic_cycles_per_frame", "latency_cycles", "estimate", "folding_reason", "compile_inputs",
                "luts", "ffs", "brams", "fmax_mhz", "clock_mhz", "timing_met", "fps_at_clock", "fps")


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    cluster = local_cluster(workers=2)
    with Client(cluster) as c:
        yield c
    cluster.close()


def models(path):
    return [(str(path), "tfc")]


def test_four_points_on_two_workers_equal_serial_builds_and_a_rerun_builds_nothing(client, tfc_digits_model,
                                                                                      tmp_path):
    points = grid_points(models(tfc_digits_model), "icebreaker", lut_shares="0.4,0.6,0.85,1", synth=False)
    assert [p.name for p in points] == [f"tfc-icebreaker-share{s}" for s in ("0.4", "0.6", "0.85", "1")]
    assert len(client.scheduler_info()["workers"]) == 2

    outcome = run_sweep(points, tmp_path / "sweep", images=IMAGES, client=client)
    assert (outcome["built"], outcome["reused"], outcome["failed"]) == (4, 0, 0)
    rows = {r["point"]: r for r in json.loads((tmp_path / "sweep" / "results.json").read_text())["points"]}
    assert all(r["status"] == "done" and r["rebuilt"] == ["compile", "simulate"] for r in rows.values())

    # The same points built one after another in this process give the same figures.
    for point in points:
        serial = build_point(point, tmp_path / "serial" / point.name, images=IMAGES)["report"]
        swept = rows[point.name]["report"]
        assert {k: swept.get(k) for k in SAME_FIGURES} == {k: serial.get(k) for k in SAME_FIGURES}, point.name
        assert swept["images_simulated"] == IMAGES and swept["rtl_mismatches"] == 0

    # results.csv: one row a point with the report's figures as columns.
    with open(tmp_path / "sweep" / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["point"] for r in table] == [p.name for p in points]
    assert all(r["status"] == "done" and r["rtl_mismatches"] == "0" and r["estimate.luts"] for r in table)
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert "Pareto front" in page and "data:image/png;base64," in page

    # A second run of the same sweep submits nothing and touches no build folder.
    stamps = {p.name: os.stat(tmp_path / "sweep" / "points" / p.name / "report.json").st_mtime_ns for p in points}
    again = run_sweep(points, tmp_path / "sweep", images=IMAGES, client=client)
    assert (again["built"], again["reused"], again["failed"]) == (0, 4, 0)
    assert stamps == {p.name: os.stat(tmp_path / "sweep" / "points" / p.name / "report.json").st_mtime_ns
                      for p in points}
    # Asking for more images than were simulated makes the points incomplete again.
    assert not point_complete(points[0], tmp_path / "sweep" / "points" / points[0].name, IMAGES + 1)


def test_a_killed_worker_is_retried_and_a_failing_point_is_reported(client, tfc_digits_model, tmp_path):
    good = grid_points(models(tfc_digits_model), "icebreaker", synth=False)
    # A folding for 2 layers on a 4-layer network: the compile fails the same way every time.
    bad = grid_points(models(tfc_digits_model), "icebreaker", foldings=["1,1;1,1"], synth=False)
    killed = []

    def kill_the_first_start(event):
        if event.get("event") == "started" and event["point"] == good[0].name and not killed:
            killed.append(event["pid"])
            os.kill(event["pid"], signal.SIGKILL)          # the worker process, mid-task

    outcome = run_sweep(good + bad, tmp_path / "sweep", images=IMAGES, client=client,
                        on_event=kill_the_first_start)
    assert killed
    rows = {r["point"]: r for r in outcome["rows"]}
    retried = rows[good[0].name]
    assert retried["status"] == "done" and retried["attempts"] == 2
    assert "worker running it died" in retried["errors"][0]
    assert retried["report"]["rtl_mismatches"] == 0
    failed = rows[bad[0].name]
    assert failed["status"] == "failed" and failed["attempts"] == 1        # deterministic: not retried
    assert "2 layers" in failed["error"] or "layer" in failed["error"]
    assert outcome["failed"] == 1
    with open(tmp_path / "sweep" / "results.csv") as f:
        table = {r["point"]: r for r in csv.DictReader(f)}
    assert table[bad[0].name]["status"] == "failed" and table[bad[0].name]["error"] == failed["error"]
    assert bad[0].name in (tmp_path / "sweep" / "report.html").read_text()


def test_grid_checks_every_value_before_anything_runs(tfc_digits_model):
    m = models(tfc_digits_model)
    points = grid_points(m, "icebreaker,ulx3s-25f", lut_shares="0.5,0.85", clocks="auto,30", seeds="1-3")
    assert len(points) == 2 * 2 * 2 * 3 and len({p.name for p in points}) == len(points)
    assert points[0].name == "tfc-icebreaker-share0.5-clkauto-seed1"
    for kwargs, words in [({"seeds": ""}, "no points"), ({"seeds": "0"}, "1 to"), ({"seeds": "5-2"}, "not"),
                          ({"seeds": f"{2**31}"}, "1 to"), ({"lut_shares": "1.5"}, "--lut-share 1.5"),
                          ({"lut_shares": ","}, "no points"), ({"clocks": "500"}, "PLL"),
                          ({"lut_shares": "0.5", "fps": "1000"}, "one design axis"),
                          ({"foldings": ["8"]}, "PE,SIMD")]:
        with pytest.raises(XnorflowError) as info:
            grid_points(m, "icebreaker", **kwargs)
        assert words in str(info.value), (kwargs, str(info.value))
    with pytest.raises(SweepError, match="no-synth"):
        grid_points(m, "icebreaker", seeds="1", synth=False)
    # A hand folding with LUT budgets: one point per budget, each compiled with both.
    points = grid_points(m, "icebreaker", lut_shares="0.5,0.85", foldings=["8,8;4,8"], synth=False)
    assert [(p.lut_share, p.folding) for p in points] == [(0.5, "8,8;4,8"), (0.85, "8,8;4,8")]
    assert len({p.name for p in points}) == 2


@pytest.mark.parametrize("options, words", [
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
    (["--pnr-seeds", ""], "no points"),
    (["--lut-share", "0"], "--lut-share 0"),
    (["--pnr-seeds", "1-99999999999"], "nextpnr seeds"),
    (["--boards", "nosuchboard"], "unknown board"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_started(tfc_digits_model, tmp_path, options, words):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "-o", out, "--model", tfc_digits_model, *options)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert not out.exists()


def test_pareto_front_and_best_bitstream():
    items = [(100, 5.0, "a"), (200, 4.0, "b"), (200, 9.0, "c"), (300, 9.0, "d"), (400, 12.0, "e")]
    assert [tag for *_, tag in pareto_front(items)] == ["a", "c", "e"]
    rows = [{"status": "done", "point": "x", "report": {"bitstream": "x.bin", "timing_met": True, "fps_at_clock": 5,
                                                       "luts": 10}},
            {"status": "done", "point": "y", "report": {"bitstream": "y.bin", "timing_met": False, "fps_at_clock": 9}},
            {"status": "failed", "point": "z", "report": {}}]
    assert best_bitstream(rows)["point"] == "x"


def test_progress_shows_done_running_and_failed():
    import io

    from xnorflow.compiler.sweep import Progress

    lines = []
    progress = Progress(["a", "b", "c"], stream=io.StringIO(), log=lines.append)
    progress.event({"point": "a", "event": "started"})
    progress.event({"point": "a", "event": "phase", "line": "[synth] 45 MHz: routing (iteration 3000)"})
    progress.set("b", "failed", "[sweep] b FAILED: boom")
    assert any("1 running" in line and "1 failed" in line for line in lines)
    progress.set("a", "done")
    assert "1 built" in lines[-1] and "0 running" in lines[-1]


@pytest.mark.slow
def test_two_seeds_synthesized_in_parallel(client, tfc_digits_model, tmp_path):
    points = grid_points(models(tfc_digits_model), "icebreaker", clocks="30", seeds="1,2")
    outcome = run_sweep(points, tmp_path / "sweep", images=IMAGES, client=client)
    assert outcome["built"] == 2
    for row in outcome["rows"]:
        assert row["report"]["seed_attempts"] == [row["pnr_seed"]] and row["report"]["timing_met"]
    assert best_bitstream(outcome["rows"])["report"]["bitstream"]
    phases = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert phases["points"][0]["report"]["synth_seconds"] > 0


@pytest.mark.slow
def test_synth_tries_seeds_in_parallel_at_the_first_clock(tfc_digits_model, tmp_path):
    from xnorflow.compiler.build import compile_model, synthesize_build

    build = tmp_path / "b"
    compile_model(tfc_digits_model, build, log=lambda *_: None)
    report = synthesize_build(build, progress=False, parallel_seeds=2)
    first = report["clock_attempts_mhz"][0]
    assert report["clock_attempts_mhz"][:2] == [first, first] and report["seed_attempts"][:2] == [1, 2]
    assert report["synthesis_inputs"]["parallel_seeds"] == 2 and report["synth_wall_seconds"] > 0
    assert report["timing_met"] and (build / "synth" / "xnorflow.bin").is_file()
    assert sorted(p.name for p in build.iterdir() if not p.name.startswith(".")) == \
        ["report.json", "spec.npz", "synth", "vectors.npz", "verilog"]


SHARES = "0.4,0.6,0.85,1"


@pytest.mark.slow
def test_ctrl_c_keeps_finished_points_and_the_next_run_builds_only_the_rest(tfc_digits_model, tmp_path):
    """Ctrl-C in a terminal interrupts the whole foreground process group (the command and its Dask
    workers): finished points stay whole and listed, and the same command later reuses them."""
    import subprocess
    import sys
    import time

    sweep = tmp_path / "sweep"
    points = grid_points(models(tfc_digits_model), "icebreaker", lut_shares=SHARES, synth=False)
    argv = [sys.executable, "-m", "xnorflow.compiler.cli", "sweep", "-o", str(sweep), "--model",
            str(tfc_digits_model), "--boards", "icebreaker", "--lut-share", SHARES,
            "--no-synth", "--images", str(IMAGES), "--workers", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    done, deadline = [], time.monotonic() + 600
    while not done and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:
            rows = json.loads((sweep / "results.json").read_text())["points"]
        except (OSError, ValueError, KeyError):
            continue
        done = [r["point"] for r in rows if r["status"] == "done"]
    assert done, "no point finished before the deadline"
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr

    rows = {r["point"]: r for r in json.loads((sweep / "results.json").read_text())["points"]}
    finished = [name for name, r in rows.items() if r["status"] == "done"]
    assert set(done) <= set(finished) and len(finished) < len(points), "the interrupt came after every point finished"
    for point in points:
        if point.name in finished:
            assert point_complete(point, sweep / "points" / point.name, IMAGES), point.name
            assert not list((sweep / "points" / point.name).glob(".stage-*")), point.name

    again = run_cli(*argv[3:])
    assert again.returncode == 0, again.stderr
    rows = {r["point"]: r for r in json.loads((sweep / "results.json").read_text())["points"]}
    assert all(rows[name]["status"] == "reused" for name in finished)
    assert all(r["status"] in ("done", "reused") for r in rows.values())
    assert sum(r["status"] == "done" for r in rows.values()) == len(points) - len(finished)
