"""cocotb tests of the fast harness (sim/harness.py): cocotb starts each run and waits for its end.

The config (JSON, path in ``XNORFLOW_FAST_CONFIG``) names the phases to run, each with its frame
count, gap and stall probabilities (as 16-bit thresholds), seed, watchdog and the files the harness
dumps; the test runs them in order and writes what each reported (done, stuck, outputs, extra, cycles)
to ``status_file``. The frames, the payloads and the stamps travel through the files; Python never
waits on a single cycle, only on ``done`` and on a progress timer.

The mid-frame reset check runs here too: the network is reset while a frame streams in, while it
computes and while its output is held back, then clean frames must still match (checked by the
runner against golden, like every other phase).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import First, RisingEdge, Timer

from xnorflow.sim.defaults import CLOCK_PERIOD_NS

CONFIG_ENV = "XNORFLOW_FAST_CONFIG"
PROGRESS_CYCLES = 200_000          # a progress update (one Python wake-up) this often


def load_config() -> dict:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: run the fast testbench through xnorflow.sim.runner")
    return json.loads(Path(path).read_text())


async def reset(dut, phase: dict) -> None:
    dut.rst.value = 1
    dut.n_frames.value = phase["frames"]
    dut.gap_threshold.value = phase["gap_threshold"]
    dut.stall_threshold.value = phase["stall_threshold"]
    dut.seed.value = phase["seed"]
    dut.watchdog.value = phase["watchdog"]
    dut.tail.value = phase["tail"]
    await Timer(3 * CLOCK_PERIOD_NS, unit="ns")
    dut.rst.value = 0


async def run_phase(dut, phase: dict, progress_file: str | None, progress_base: int) -> dict:
    """One run of the harness to its ``done``; returns its status (with the CPU seconds it took:
    a rate in cycles per CPU second does not depend on what else the machine runs)."""
    cpu = time.process_time()
    await reset(dut, phase)
    while True:
        await First(RisingEdge(dut.done), Timer(PROGRESS_CYCLES * CLOCK_PERIOD_NS, unit="ns"))
        if progress_file:
            Path(progress_file).write_text(f"{progress_base + int(dut.outputs_seen.value.to_unsigned())}\n")
        if dut.done.value == 1:
            break
    return {"name": phase["name"], "stuck": bool(dut.stuck.value == 1),
            "outputs": int(dut.outputs_seen.value.to_unsigned()), "extra": int(dut.extra.value.to_unsigned()),
            "cycles": int(dut.cycle.value.to_unsigned()), "cpu_seconds": time.process_time() - cpu}


async def reset_during(dut, phase: dict, after_cycles: int) -> None:
    """Start ``phase`` and reset the harness and the network ``after_cycles`` cycles into it."""
    await reset(dut, phase)
    await Timer(max(1, after_cycles) * CLOCK_PERIOD_NS, unit="ns")


@cocotb.test()
async def stream_chunk(dut):
    config = load_config()
    statuses = []
    done = 0
    for phase in config["phases"]:
        if phase.get("reset_after") is not None:
            # The interrupted run: the network is reset (below, by the next phase) mid-frame.
            await reset_during(dut, phase, phase["reset_after"])
            statuses.append({"name": phase["name"], "reset_after": phase["reset_after"]})
            continue
        status = await run_phase(dut, phase, config.get("progress_file"), done)
        done += status["outputs"]
        statuses.append(status)
        # Dumped at done: move them aside so the next phase's dump does not overwrite them.
        for key in ("payloads", "in", "out"):
            os.replace(config["dump"][key], phase["files"][key])
    Path(config["status_file"]).write_text(json.dumps(statuses))
