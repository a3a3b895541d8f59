"""cocotb 2.x testbench of the exported network (`xnorflow_top`): the per-cycle bench.

cocotb imports this module inside Verilator; `sim/runner.py` writes a JSON config and points the
environment variable ``XNORFLOW_TB_CONFIG`` at it. The config names the frames with their golden
scores, the port names found in the Verilog (by stream prefix: ``i``, ``o``, ``tap<k>``), the random
flow-control settings and where to write the results.

The bench is cocotb's matrix_multiplier example in shape: a `NetworkTester` joins a `StreamSource`
on the input, a `StreamSink` on the output and a `StreamMonitor` per layer tap (sim/streams.py, which
documents the timing discipline and the speed rules every role keeps) to the golden results and the
`Scoreboard` (sim/scoreboard.py). The stream format (frames -> beats, the output beat, tap beats) is
hw/stream_format.py's. Taps are watched only when the config asks for them (the re-run of a failing
frame): every tap beat costs a Python wake-up.
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
from cocotb.triggers import First, RisingEdge, SimTimeoutError, Timer, with_timeout

from xnorflow.hw.stream_format import frames_to_beats, split_frames
from xnorflow.sim.defaults import CLOCK_PERIOD_NS
from xnorflow.sim.scoreboard import Scoreboard, steady_state_ii, watchdog_cycles
from xnorflow.sim.streams import (
    StreamBus,
    StreamMonitor,
    StreamSink,
    StreamSource,
    idle_gaps,
    is_high,
    sample_when_high,
    stalls,
    wait_cycles,
)

CONFIG_ENV = "XNORFLOW_TB_CONFIG"


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
    ports: dict                      # stream role -> port name ("clk", "i_payload", "o_valid", "tap0_payload", ...)
    taps: list                       # per hidden layer: {"prefix", "pe", "n_out", "beats"}
    analytic_ii: int
    backpressure: float
    gaps: float
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


class Progress:
    """Writes 'done/total' to a file the runner turns into a progress bar."""

    def __init__(self, config: BenchConfig, total: int):
        self.path = Path(config.progress_file) if config.progress_file else None
        self.every, self.total = max(1, config.progress_every), total

    def update(self, done: int) -> None:
        if self.path is not None and (done % self.every == 0 or done >= self.total):
            self.path.write_text(f"{done} {self.total}\n")


def split_taps(tap_beats: list[list[int]], taps_config: list[dict], frames: list[int]) -> dict:
    """Per frame, per hidden layer, the tap beats (each layer emits ``beats`` tap beats per frame)."""
    per_frame = {f: [] for f in frames}
    for beats, tap in zip(tap_beats, taps_config):
        for frame, frame_beats in zip(frames, split_frames(beats, tap["beats"], len(frames))):
            per_frame[frame].append(frame_beats)
    return per_frame


@dataclass
class Phase:
    """What one phase of streaming saw: the accept cycle of each frame's first beat, the (cycle,
    payload) of each output beat (at most one per frame sent), the tap payloads per hidden layer
    (when watched), and an error when the design stopped answering or answered too often."""

    accept_cycles: list[int]
    outputs: list[tuple[int, int]]
    taps: list[list[int]]
    error: str | None


# --- the tester (its coroutines run inside the simulator) ---------------------------------------
class NetworkTester:
    """The network under test: its clock and reset, its streams by prefix, the shared random source
    of the flow control, the frames as beats and the scoreboard holding their golden results."""

    def __init__(self, dut, config: BenchConfig):
        self.config = config
        ports = config.ports
        self.clk = getattr(dut, ports["clk"])
        self.rst = getattr(dut, ports["rst"])
        self.input = StreamBus(dut, ports, "i")
        self.output = StreamBus(dut, ports, "o")
        self.taps = [StreamBus(dut, ports, tap["prefix"]) for tap in config.taps]
        self.rng = random.Random(config.seed)
        image_ids, self.beats, scores, predictions = load_frames(config)
        self.scoreboard = Scoreboard(config.n_classes, config.index_width, config.score_width, image_ids,
                                     scores, predictions)
        self.clock_started = False

    def start_clock(self) -> None:
        if not self.clock_started:
            # High first: rising edges at c*T, falling edges at c*T + T/2, so now_cycle() is c
            # at both edges of cycle c.
            Clock(self.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=True)
            self.clock_started = True

    async def reset(self, cycles: int = 3) -> None:
        """Synchronous active-high reset with both streams idle; returns just after a rising edge."""
        self.input.valid.value = 0
        self.output.ready.value = 1
        self.rst.value = 1
        self.start_clock()
        for _ in range(cycles):
            await RisingEdge(self.clk)
        self.rst.value = 0

    def source(self, gaps: float) -> StreamSource:
        """The input's source, with an idle gap before a beat with probability ``gaps``."""
        return StreamSource(self.input, self.clk, idle_gaps(self.rng, gaps) if gaps else None)

    def sink(self, backpressure: float, expected: int, on_beat=None) -> StreamSink:
        """The output's sink, not ready with probability ``backpressure`` in a cycle an output waits."""
        return StreamSink(self.output, self.clk, stalls(self.rng, backpressure) if backpressure else None,
                          expected=expected, on_beat=on_beat)

    def watchdog(self, gaps: float, backpressure: float) -> int:
        return watchdog_cycles(self.config.analytic_ii, len(self.config.taps), gaps, backpressure)

    async def run_phase(self, frames: list[int], gaps: float, backpressure: float,
                        progress: Progress | None = None, done_before: int = 0) -> Phase:
        """Stream ``frames`` (indices into the frames) through the network. Called just after a
        rising edge, returns just after one."""
        on_beat = (lambda n: progress.update(done_before + n)) if progress is not None else None
        source, sink = self.source(gaps), self.sink(backpressure, len(frames), on_beat)
        sink_task = cocotb.start_soon(sink.run())
        monitors = [StreamMonitor(tap, self.clk) for tap in self.taps] if self.config.collect_taps else []
        monitor_tasks = [cocotb.start_soon(m.run()) for m in monitors]
        limit = self.watchdog(gaps, backpressure)
        feeder = cocotb.start_soon(source.send_frames(self.beats[f] for f in frames))
        error = None
        # One wake-up per watchdog period, not per frame: the sink signals completion.
        while not sink.done.is_set():
            before = len(sink.beats)
            await First(sink.done.wait(), Timer(limit * CLOCK_PERIOD_NS, unit="ns"))
            if not sink.done.is_set() and len(sink.beats) == before:
                error = (f"no output for {limit} cycles after {before} of {len(frames)} frames "
                         f"({source.frames_sent} sent): the design is stuck")
                break
        if error is None:
            # Anything beyond the frames we sent is a spurious output; give it time to show up.
            await Timer(max(1000, limit // 16) * CLOCK_PERIOD_NS, unit="ns")
            if len(sink.beats) > len(frames):
                error = f"{len(sink.beats) - len(frames)} output beat(s) more than the {len(frames)} frames sent"
        for task in (feeder, sink_task, *monitor_tasks):
            task.cancel()
        source.idle()
        self.output.ready.value = 1
        await RisingEdge(self.clk)
        return Phase(source.accept_cycles, sink.beats[:len(frames)], [m.payloads for m in monitors], error)

    def check(self, frames: list[int], outputs: list[tuple[int, int]]) -> list[dict]:
        """The scoreboard's record of each output beat, in frame order."""
        return [self.scoreboard.check(f, payload) for f, (_, payload) in zip(frames, outputs)]


async def start_tester(dut) -> NetworkTester:
    """What every test starts from: the run's config and frames in a tester, after a clean reset."""
    tester = NetworkTester(dut, BenchConfig.from_env())
    await tester.reset()
    return tester


@cocotb.test()
async def stream_frames(dut):
    """Phase 1 (clean flow: input always valid, output always ready) measures the steady-state II
    and the latency on the first frames; phase 2 streams every frame with random input gaps and
    output backpressure. The scoreboard checks every output of both phases."""
    tester = await start_tester(dut)
    config = tester.config

    n = len(tester.beats)
    measure = list(range(min(n, config.measure_frames)))
    stress = [] if config.clean_only else list(range(n))
    progress = Progress(config, len(measure) + len(stress))
    result = {"frames": [], "mismatches": [], "errors": [], "measure": {}}

    clean = await tester.run_phase(measure, 0.0, 0.0, progress)
    accepts, outputs = clean.accept_cycles, clean.outputs
    output_cycles = [cycle for cycle, _ in outputs]
    result["measure"] = {
        "frames": len(measure),
        "cycles_per_frame": steady_state_ii(output_cycles[:len(measure)]),
        # The first frame meets an empty pipeline: first beat accepted -> output beat taken.
        "latency_cycles": (output_cycles[0] - accepts[0]) if outputs and accepts else None,
        "output_cycles": output_cycles,
        "accept_cycles": accepts,
    }
    records = tester.check(measure, outputs)
    tap_records = split_taps(clean.taps, config.taps, measure) if config.collect_taps else {}
    if clean.error:
        result["errors"].append(f"clean phase: {clean.error}")

    if stress and not clean.error:
        await tester.reset()
        random_flow = await tester.run_phase(stress, config.gaps, config.backpressure, progress, len(measure))
        stress_records = tester.check(stress, random_flow.outputs)
        for record, (cycle, _), accept in zip(stress_records, random_flow.outputs, random_flow.accept_cycles):
            record["accept_cycle"], record["output_cycle"] = accept, cycle
        if random_flow.error:
            result["errors"].append(f"random-flow phase (gaps {config.gaps}, backpressure "
                                    f"{config.backpressure}): {random_flow.error}")
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
    tester = await start_tester(dut)
    config, clk = tester.config, tester.clk
    n = len(tester.beats)
    trials = []
    for trial, where in enumerate(("input", "compute", "output-held")):
        victim = trial % n
        tester.output.ready.value = 0 if where == "output-held" else 1
        source = tester.source(0.0)
        frame_beats = tester.beats[victim]
        if where == "input" and len(frame_beats) > 1:
            await source.send(frame_beats[: len(frame_beats) // 2 or 1])
        elif where == "compute":
            await source.send(frame_beats)
            source.idle()
            # Let the frame get into the engines before resetting.
            await wait_cycles(clk, tester.rng.randint(1, max(1, config.analytic_ii)))
        else:
            await source.send(frame_beats)
            source.idle()
            # Reset while the finished frame's output beat waits for a ready that never comes.
            try:
                await with_timeout(sample_when_high(clk, tester.output.valid),
                                   tester.watchdog(0.0, 0.0) * CLOCK_PERIOD_NS, "ns")
            except SimTimeoutError:
                pass     # no output at all: the frames after the reset will show what is wrong
            await RisingEdge(clk)
        # What was in flight when the reset hit (post-edge values: a diagnostic, not a check).
        in_flight = {"beats_sent": source.beats_sent, "beats_in_frame": len(frame_beats),
                     "output_waiting": is_high(tester.output.valid)}
        await tester.reset(cycles=2)
        after = [(victim + k + 1) % n for k in range(3)]
        phase = await tester.run_phase(after, 0.0, 0.0)
        records = tester.check(after, phase.outputs)
        trials.append({
            "reset_during": where, "frame_interrupted": victim, "in_flight": in_flight, "frames_after": after,
            "outputs": len(phase.outputs), "error": phase.error,
            "mismatches": [r for r in records if "mismatch" in r],
            "ok": phase.error is None and len(phase.outputs) == len(after) and not any("mismatch" in r for r in records),
        })
    Path(config.reset_results_file).write_text(json.dumps({"trials": trials}))
    failed = [t for t in trials if not t["ok"]]
    assert not failed, f"reset mid-frame broke the design: {failed}"
