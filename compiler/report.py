"""build/report.json: the figures every step measures, under the keys DESIGN.md section 4 names.

Each step merges its own figures in; a figure no step has measured stays null. The file is replaced
atomically, so a reader never sees half of it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from xnorflow.errors import XnorflowError

REPORT_NAME = "report.json"

REPORT_KEYS = (
    "arch", "dataset", "board", "device", "layers",
    "accuracy_torch", "accuracy_golden", "torch_golden_agreement",
    "images_simulated", "rtl_mismatches", "accuracy_rtl",
    "cycles_per_frame", "analytic_cycles_per_frame", "latency_cycles",
    "fmax_mhz", "fps", "luts", "ffs", "bram_bits", "brams", "sprams", "dsps",
    "compile_seconds", "synth_seconds",
)

# The figures each step measures and merges in (a compile starts a fresh report without them); the
# simulation's are sim/layout.py's SIMULATION_KEYS (sim/ merges them in without the compiler).
SYNTHESIS_KEYS = ("fmax_mhz", "fps", "luts", "ffs", "bram_bits", "brams", "sprams", "dsps", "synth_seconds",
                  # beyond DESIGN.md: the clock the bitstream runs at (PLL output or oscillator),
                  # the PLL's settings, whether nextpnr met timing there, every build tried, and
                  # nextpnr's router (boards/synth.py `nextpnr_router`)
                  "clock_mhz", "baud", "pll", "timing_met", "clock_attempts_mhz", "fmax_attempts_mhz", "seed_attempts",
                  "router",
                  # where Yosys put each memory ("block", "logic", ...): the weights in block RAM, checked
                  "memories")


def report_path(build_dir) -> Path:
    return Path(build_dir) / REPORT_NAME


def empty_report() -> dict:
    return {key: None for key in REPORT_KEYS}


class ReportError(XnorflowError):
    """A report.json that cannot be read; the message names the file and the fix."""


def read_report(build_dir) -> dict:
    path = report_path(build_dir)
    if not path.exists():
        return empty_report()
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"cannot read {path} ({type(e).__name__}: {e}): run `xnorflow compile` again to "
                          "rebuild the folder's report") from None
    if not isinstance(report, dict):
        raise ReportError(f"{path} holds a JSON {type(report).__name__}, not the report's object: run "
                          "`xnorflow compile` again to rebuild the folder's report")
    return {**empty_report(), **report}


def write_report(build_dir, report: dict) -> Path:
    path = report_path(build_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2, sort_keys=False, default=_jsonable)
            f.write("\n")
        os.chmod(tmp, 0o644)   # mkstemp makes it private; a report is for everyone who can read the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def update_report(build_dir, **fields) -> dict:
    report = read_report(build_dir)
    report.update(fields)
    write_report(build_dir, report)
    return report


def format_figure(value, missing: str = "-") -> str:
    """One way to print a report figure: fractions to 4 places, others to 0.1, thousands grouped."""
    if value is None:
        return missing
    if isinstance(value, float):
        if abs(value) <= 1:
            return f"{value:.4f}"
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _jsonable(value):
    """NumPy scalars and paths into plain JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into report.json")
