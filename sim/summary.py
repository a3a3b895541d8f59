"""The summary of a simulation: the report figures of a run's raw results, and their merge into
the build folder's report.json.

A figure the run did not measure is None, never made up (DESIGN.md section 4). The raw results are
either bench's (sim/cocotb_tb.py's JSON, or sim/fast.py's merge of its chunks, in the same format).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim.layout import SIMULATION_KEYS


def summarise(spec: NetworkSpec, raw: dict, labels) -> dict:
    """The report figures of a run: only what the simulation measured (None otherwise)."""
    frames = raw["frames"]
    predictions = np.array([f["index"] for f in frames], dtype=np.int64)
    images = np.array([f["image"] for f in frames], dtype=np.int64)
    failing = {m["image"] for m in raw["mismatches"]}
    accuracy = None
    if labels is not None and len(frames):
        accuracy = float(np.mean(predictions == labels[images]))
    reset = raw.get("reset") or {}
    trials = reset.get("trials", [])
    errors = list(raw.get("errors", []))
    if reset.get("error"):
        errors.append(reset["error"])
    errors += [f"reset during {t['reset_during']}: {t['error'] or 'outputs differ from golden'}"
               for t in trials if not t["ok"]]
    return {
        "images_simulated": len(frames),
        "rtl_mismatches": len(failing),
        "accuracy_rtl": accuracy,
        "cycles_per_frame": raw["measure"].get("cycles_per_frame"),
        "latency_cycles": raw["measure"].get("latency_cycles"),
        "analytic_cycles_per_frame": spec.analytic_cycles_per_frame,
        "reset_mid_frame_ok": (all(t["ok"] for t in trials) if trials else None),
        "errors": errors,
        "sim_seconds": raw["sim_seconds"],
        "frames_per_second": (len(frames) + raw["measure"]["frames"]) / raw["sim_seconds"] if raw["sim_seconds"] else None,
        "verilator_build_seconds": raw["verilator_build_seconds"],
        "log": raw["log"],
        "mode": raw.get("mode", "cycle"),
        "chunks": raw.get("chunks"),
        "cycles_simulated": raw.get("cycles_simulated"),
        "cycles_per_cpu_second": raw.get("cycles_per_cpu_second"),
    }


def merge_report(root: Path, result: dict) -> None:
    """Write the simulation's report keys into build/report.json, keeping the other steps' keys."""
    path = root / "report.json"
    report = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            report = {}
    report.update({key: result[key] for key in SIMULATION_KEYS})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
