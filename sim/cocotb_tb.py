"""cocotb 2.x testbench of the exported network (`xnorflow_top`): driver, monitor, scoreboard.

cocotb imports this module inside Verilator; `sim/runner.py` writes a JSON config and points the
environment variable ``XNORFLOW_TB_CONFIG`` at it. The config names the spec, the frames with their
golden scores, the port names found in the Verilog, the random flow-control settings and where to
write the results.

Timing discipline (Verilator is cycle based: after an edge trigger the design has already moved):
we write inputs just after a rising clock edge and sample everything at the falling edge, where
every value is settled and is exactly what the next rising edge will see. A transfer on a stream
happens at a rising edge when valid and ready were both 1 at the falling edge before it.

Speed: a Python wake-up costs ~12 us of CPU while Verilator runs a TFC-sized net's cycle (with
cocotb's clock) in ~5 us, so nothing here awaits every cycle unless it must. Idle waits sleep on the signal that ends them
(``RisingEdge(ready)``, ``RisingEdge(valid)``) and gaps use one ``Timer``; per-cycle work only
happens while a beat is actually moving (and for the debug taps, which only the re-run of a failing
frame collects).

The stream format (frames -> beats, output and tap decoding) is hw/stream_format.py's. The pure
helpers (Scoreboard, steady_state_ii, watchdog_cycles) are used by the fast mode too; cocotb imports
fine outside a simulator, only the coroutines need one.
"""
from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, First, RisingEdge, SimTimeoutError, Timer, with_timeout

from xnorflow.hw.stream_format import decode_output, frames_to_beats, split_frames

CONFIG_ENV = "XNORFLOW_TB_CONFIG"
CLOCK_PERIOD_NS = 10
HALF_PERIOD_NS = CLOCK_PERIOD_NS // 2


# --- the config the runner writes ---------------------------------------------------------------
@dataclass
class BenchConfig:
    frames_file: str                 # npz: image_ids, inputs, expected_scores, expected_predictions
    results_file: str                # where the main test writes its JSON
    reset_results_file: str          # where the mid-frame reset test writes its JSON
    in_width: int                    # bits per input beat (the top's i__payload width)
    n_classes: int
    index_width: int
    score_width: int
    ports: dict                      # role -> port name ("i_payload", "o_valid", ...)
    taps: list                       # per hidden layer: {"data", "valid", "pe", "n_out", "beats"}
    analytic_ii: int
    backpressure: float = 0.5
    gaps: float = 0.3
    seed: int = 0
    measure_frames: int = 32
    collect_taps: bool = False
    clean_only: bool = False         # skip the random-flow phase (re-runs of single frames)
    progress_file: str | None = None
    progress_every: int = 200
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> BenchConfig:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"{CONFIG_ENV} is not set: run the testbench through xnorflow.sim.runner")
        return cls(**json.loads(Path(path).read_text()))


def load_frames(config: BenchConfig):
    with np.load(config.frames_file) as data:
        image_ids = data["image_ids"].astype(np.int64)
        inputs = data["inputs"].astype(np.uint8)
        scores = data["expected_scores"].astype(np.int64)
        predictions = data["expected_predictions"].astype(np.int64)
    return image_ids, frames_to_beats(inputs, config.in_width), scores, predictions


# --- the bench (the coroutines below run inside the simulator) -----------------------------------


def now_cycle() -> int:
    """Index of the current clock cycle (cycle c spans [c*T, (c+1)*T))."""
    return int(get_sim_time("ns")) // CLOCK_PERIOD_NS


def is_high(handle) -> bool:
    """A 1-bit port reads as a Logic (0, 1, X, Z); only a clean 1 counts."""
    return handle.value == 1


async def wait_cycles(clk, cycles: int) -> None:
    """Advance to the rising edge ``cycles`` edges ahead with one Timer (ClockCycles would wake
    Python on every edge). Called just after a rising edge; lands between edges, then aligns."""
    if cycles <= 0:
        return
    await Timer(cycles * CLOCK_PERIOD_NS - HALF_PERIOD_NS, unit="ns")
    await RisingEdge(clk)


async def sample_when_high(clk, signal) -> None:
    """Return at the first falling edge (from the next one on) where ``signal`` is 1."""
    await FallingEdge(clk)
    while not is_high(signal):
        await RisingEdge(signal)
        await FallingEdge(clk)


class Bench:
    """Handles, clock, reset and the shared random source of one simulation."""

    def __init__(self, dut, config: BenchConfig):
        self.dut = dut
        self.config = config
        ports = config.ports
        self.clk = getattr(dut, ports["clk"])
        self.rst = getattr(dut, ports["rst"])
        self.i_payload = getattr(dut, ports["i_payload"])
        self.i_valid = getattr(dut, ports["i_valid"])
        self.i_ready = getattr(dut, ports["i_ready"])
        self.o_payload = getattr(dut, ports["o_payload"])
        self.o_valid = getattr(dut, ports["o_valid"])
        self.o_ready = getattr(dut, ports["o_ready"])
        self.taps = [(getattr(dut, t["data"]), getattr(dut, t["valid"])) for t in config.taps]
        self.rng = random.Random(config.seed)
        self.clock_started = False

    def start_clock(self) -> None:
        if not self.clock_started:
            # High first: rising edges at c*T, falling edges at c*T + T/2, so now_cycle() is c
            # at both edges of cycle c.
            Clock(self.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=True)
            self.clock_started = True

    async def reset(self, cycles: int = 3) -> None:
        """Synchronous active-high reset with both streams idle; returns just after a rising edge."""
        self.i_valid.value = 0
        self.o_ready.value = 1
        self.rst.value = 1
        self.start_clock()
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.rst.value = 0


class Driver:
    """Streams frames into ``i``: valid held for each beat until a falling edge sees ready, with
    random idle gaps between beats (probability ``gaps`` per beat, 1..4 cycles)."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.accept_cycles: list[int] = []   # cycle of each frame's first beat transfer
        self.sent = 0                        # whole frames
        self.beats_sent = 0

    async def send(self, beats: list[int], gaps: float) -> None:
        """Called just after a rising edge; returns just after the rising edge that took the last beat."""
        b = self.bench
        for n, beat in enumerate(beats):
            if gaps and b.rng.random() < gaps:
                b.i_valid.value = 0
                await wait_cycles(b.clk, b.rng.randint(1, 4))
            b.i_payload.value = beat
            b.i_valid.value = 1
            await sample_when_high(b.clk, b.i_ready)
            if n == 0:
                self.accept_cycles.append(now_cycle())
            await RisingEdge(b.clk)          # the transfer
            self.beats_sent += 1
        self.sent += 1

    def idle(self) -> None:
        self.bench.i_valid.value = 0


class Monitor:
    """Takes output beats from ``o`` with random backpressure: each cycle where an output waits,
    ready is 0 with probability ``backpressure``. Records (cycle, payload) of every transfer and
    sets ``done`` once ``expected`` beats arrived (so nobody else has to wake up per frame)."""

    def __init__(self, bench: Bench, backpressure: float, expected: int, on_beat=None):
        self.bench = bench
        self.backpressure = backpressure
        self.expected = expected
        self.on_beat = on_beat
        self.beats: list[tuple[int, int]] = []
        self.done = Event()

    def _choose_ready(self) -> None:
        if self.backpressure:
            self.bench.o_ready.value = int(self.bench.rng.random() >= self.backpressure)

    def _take(self) -> None:
        b = self.bench
        self.beats.append((now_cycle(), b.o_payload.value.to_unsigned()))
        if self.on_beat is not None:
            self.on_beat(len(self.beats))
        if len(self.beats) >= self.expected:
            self.done.set()

    async def run(self) -> None:
        b = self.bench
        b.o_ready.value = 1
        await FallingEdge(b.clk)
        while True:
            if not is_high(b.o_valid):
                await RisingEdge(b.o_valid)   # sleeps through idle cycles
                self._choose_ready()
                await FallingEdge(b.clk)
                continue
            if is_high(b.o_ready):
                self._take()
            await RisingEdge(b.clk)
            self._choose_ready()
            await FallingEdge(b.clk)


class TapMonitor:
    """Collects the transfers of one hidden layer's output stream (only for re-runs: every tap beat
    costs a Python wake-up)."""

    def __init__(self, bench: Bench, data, valid):
        self.bench, self.data, self.valid = bench, data, valid
        self.beats: list[int] = []

    async def run(self) -> None:
        clk = self.bench.clk
        while True:
            await sample_when_high(clk, self.valid)
            self.beats.append(self.data.value.to_unsigned())


class Scoreboard:
    """Compares each output beat, in order, with the golden class index and every class score."""

    def __init__(self, n_classes: int, index_width: int, score_width: int, image_ids, scores, predictions):
        self.layout = (n_classes, index_width, score_width)
        self.image_ids, self.scores, self.predictions = image_ids, scores, predictions

    def check(self, frame: int, payload: int) -> dict:
        """The record of one output beat; a negative payload (X bits read from a dump) decodes as -1s."""
        n_classes, index_width, score_width = self.layout
        index, scores = (decode_output(payload, n_classes, index_width, score_width) if payload >= 0
                         else (-1, [-1] * n_classes))
        expected_scores = [int(s) for s in self.scores[frame]]
        expected_index = int(self.predictions[frame])
        record = {"frame": frame, "image": int(self.image_ids[frame]), "index": index, "scores": scores}
        if index != expected_index or scores != expected_scores:
            record["mismatch"] = {
                "expected_index": expected_index, "expected_scores": expected_scores,
                "differing_classes": [k for k, (g, e) in enumerate(zip(scores, expected_scores)) if g != e],
            }
        return record


class Progress:
    """Writes 'done/total' to a file the runner turns into a progress bar."""

    def __init__(self, config: BenchConfig, total: int):
        self.path = Path(config.progress_file) if config.progress_file else None
        self.every, self.total = max(1, config.progress_every), total

    def update(self, done: int) -> None:
        if self.path is not None and (done % self.every == 0 or done >= self.total):
            self.path.write_text(f"{done} {self.total}\n")


def watchdog_cycles(analytic_ii: int, stages: int, gaps: float, backpressure: float) -> int:
    """Cycles without any output after which a design of ``stages`` engines counts as stuck: far
    beyond a frame's latency through every layer even with random stalls (both benches use it)."""
    stall = 1.0 / max(0.05, 1.0 - max(gaps, backpressure))
    return int(64 * analytic_ii * stall * (stages + 2)) + 2000


async def run_phase(bench: Bench, frames: list[int], beats, gaps: float, backpressure: float,
                    progress: Progress | None = None, done_before: int = 0):
    """Stream ``frames`` (indices into ``beats``) through the network. Called just after a rising
    edge, returns just after one. Returns the accept cycle of each frame's first beat, the
    (cycle, payload) of each output beat, the tap beats per hidden layer (when collected) and an
    error string when the design stopped answering or answered too often."""
    on_beat = (lambda n: progress.update(done_before + n)) if progress is not None else None
    driver, monitor = Driver(bench), Monitor(bench, backpressure, len(frames), on_beat)
    monitor_task = cocotb.start_soon(monitor.run())
    tap_monitors = [TapMonitor(bench, d, v) for d, v in bench.taps] if bench.config.collect_taps else []
    tap_tasks = [cocotb.start_soon(t.run()) for t in tap_monitors]
    limit = watchdog_cycles(bench.config.analytic_ii, len(bench.config.taps), gaps, backpressure)

    async def feed():
        for frame in frames:
            await driver.send(beats[frame], gaps)
        driver.idle()

    feeder = cocotb.start_soon(feed())
    error = None
    # One wake-up per watchdog period, not per frame: the monitor signals completion.
    while not monitor.done.is_set():
        before = len(monitor.beats)
        await First(monitor.done.wait(), Timer(limit * CLOCK_PERIOD_NS, unit="ns"))
        if not monitor.done.is_set() and len(monitor.beats) == before:
            error = (f"no output for {limit} cycles after {before} of {len(frames)} frames "
                     f"({driver.sent} sent): the design is stuck")
            break
    if error is None:
        # Anything beyond the frames we sent is a spurious output; give it time to show up.
        await Timer(max(1000, limit // 16) * CLOCK_PERIOD_NS, unit="ns")
        if len(monitor.beats) > len(frames):
            error = f"{len(monitor.beats) - len(frames)} output beat(s) more than the {len(frames)} frames sent"
    for task in (feeder, monitor_task, *tap_tasks):
        task.cancel()
    driver.idle()
    bench.o_ready.value = 1
    await RisingEdge(bench.clk)
    return driver.accept_cycles, monitor.beats[:len(frames)], [t.beats for t in tap_monitors], error


def steady_state_ii(output_cycles: list[int]) -> float | None:
    """Cycles between consecutive outputs once the pipeline is full: the median gap over the
    second half of a clean, back-to-back run (the first outputs still see the pipeline filling)."""
    if len(output_cycles) < 3:
        return None
    gaps = np.diff(np.asarray(output_cycles))
    return float(np.median(gaps[len(gaps) // 2:]))


def split_taps(tap_beats: list[list[int]], taps_config: list[dict], frames: list[int]) -> dict:
    """Per frame, per hidden layer, the tap beats (each layer emits ``beats`` tap beats per frame)."""
    per_frame = {f: [] for f in frames}
    for beats, tap in zip(tap_beats, taps_config):
        for frame, frame_beats in zip(frames, split_frames(beats, tap["beats"], len(frames))):
            per_frame[frame].append(frame_beats)
    return per_frame


async def start_bench(dut):
    """What every test starts from: the run's config and frames, a bench and a scoreboard, a clean reset."""
    config = BenchConfig.from_env()
    image_ids, beats, scores, predictions = load_frames(config)
    bench = Bench(dut, config)
    board = Scoreboard(config.n_classes, config.index_width, config.score_width, image_ids, scores, predictions)
    await bench.reset()
    return config, beats, bench, board


@cocotb.test()
async def stream_frames(dut):
    """Phase 1 (clean flow: input always valid, output always ready) measures the steady-state II
    and the latency on the first frames; phase 2 streams every frame with random input gaps and
    output backpressure. The scoreboard checks every output of both phases."""
    config, beats, bench, board = await start_bench(dut)

    n = len(beats)
    measure = list(range(min(n, config.measure_frames)))
    stress = [] if config.clean_only else list(range(n))
    progress = Progress(config, len(measure) + len(stress))
    result = {"frames": [], "mismatches": [], "errors": [], "measure": {}}

    accepts, outputs, taps, error = await run_phase(bench, measure, beats, 0.0, 0.0, progress)
    output_cycles = [cycle for cycle, _ in outputs]
    result["measure"] = {
        "frames": len(measure),
        "cycles_per_frame": steady_state_ii(output_cycles[:len(measure)]),
        # The first frame meets an empty pipeline: first beat accepted -> output beat taken.
        "latency_cycles": (output_cycles[0] - accepts[0]) if outputs and accepts else None,
        "output_cycles": output_cycles,
        "accept_cycles": accepts,
    }
    records = [board.check(f, payload) for f, (_, payload) in zip(measure, outputs)]
    tap_records = split_taps(taps, config.taps, measure) if config.collect_taps else {}
    if error:
        result["errors"].append(f"clean phase: {error}")

    if stress and not error:
        await bench.reset()
        accepts, outputs, _, error = await run_phase(bench, stress, beats, config.gaps,
                                                     config.backpressure, progress, len(measure))
        stress_records = [board.check(f, payload) for f, (_, payload) in zip(stress, outputs)]
        for record, (cycle, _), accept in zip(stress_records, outputs, accepts):
            record["accept_cycle"], record["output_cycle"] = accept, cycle
        if error:
            result["errors"].append(f"random-flow phase (gaps {config.gaps}, backpressure "
                                    f"{config.backpressure}): {error}")
        for record in records:
            record["phase"] = "clean"
        for record in stress_records:
            record["phase"] = "random"
        result["frames"] = stress_records
        checked = records + stress_records
    else:
        for record, (cycle, _), accept in zip(records, outputs, accepts):
            record["accept_cycle"], record["output_cycle"], record["phase"] = accept, cycle, "clean"
        result["frames"] = records
        checked = records

    for record in checked:
        if "mismatch" in record:
            result["mismatches"].append(record)
    if tap_records:
        result["taps"] = {str(f): beats_per_layer for f, beats_per_layer in tap_records.items()}
    Path(config.results_file).write_text(json.dumps(result))
    print(f"xnorflow: {len(checked)} outputs checked, {len(result['mismatches'])} mismatches, "
          f"errors: {result['errors'] or 'none'}", file=sys.stderr)


@cocotb.test()
async def reset_mid_frame(dut):
    """Assert reset in the middle of a frame (while its beats stream in, while it computes, while
    its output is held back), then check that clean frames afterwards still match the golden model
    and that nothing from before the reset leaks out."""
    config, beats, bench, board = await start_bench(dut)
    n = len(beats)
    trials = []
    for trial, where in enumerate(("input", "compute", "output-held")):
        victim = trial % n
        bench.o_ready.value = 0 if where == "output-held" else 1
        driver = Driver(bench)
        frame_beats = beats[victim]
        if where == "input" and len(frame_beats) > 1:
            await driver.send(frame_beats[: len(frame_beats) // 2 or 1], 0.0)
        elif where == "compute":
            await driver.send(frame_beats, 0.0)
            driver.idle()
            # Let the frame get into the engines before resetting.
            await wait_cycles(bench.clk, bench.rng.randint(1, max(1, config.analytic_ii)))
        else:
            await driver.send(frame_beats, 0.0)
            driver.idle()
            # Reset while the finished frame's output beat waits for a ready that never comes.
            try:
                await with_timeout(sample_when_high(bench.clk, bench.o_valid),
                                   watchdog_cycles(config.analytic_ii, len(config.taps), 0.0, 0.0)
                                   * CLOCK_PERIOD_NS, "ns")
            except SimTimeoutError:
                pass     # no output at all: the frames after the reset will show what is wrong
            await RisingEdge(bench.clk)
        # What was in flight when the reset hit (post-edge values: a diagnostic, not a check).
        in_flight = {"beats_sent": driver.beats_sent, "beats_in_frame": len(frame_beats),
                     "output_waiting": is_high(bench.o_valid)}
        await bench.reset(cycles=2)
        after = [(victim + k + 1) % n for k in range(3)]
        _, outputs, _, error = await run_phase(bench, after, beats, 0.0, 0.0)
        records = [board.check(f, payload) for f, (_, payload) in zip(after, outputs)]
        trials.append({
            "reset_during": where, "frame_interrupted": victim, "in_flight": in_flight, "frames_after": after,
            "outputs": len(outputs), "error": error,
            "mismatches": [r for r in records if "mismatch" in r],
            "ok": error is None and len(outputs) == len(after) and not any("mismatch" in r for r in records),
        })
    Path(config.reset_results_file).write_text(json.dumps({"trials": trials}))
    failed = [t for t in trials if not t["ok"]]
    assert not failed, f"reset mid-frame broke the design: {failed}"
