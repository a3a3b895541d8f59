"""cocotb test of the stream roles (sim/streams.py) on a two-entry FIFO: a source with idle gaps,
a sink with stalls, and a monitor on each stream, which has a ready. Config (JSON) in
``XNORFLOW_STREAM_ROLES_TB``; what each role saw goes to its ``results_file``."""
import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from xnorflow.sim.defaults import CLOCK_PERIOD_NS
from xnorflow.sim.streams import StreamBus, StreamMonitor, StreamSink, StreamSource, idle_gaps, stalls

PORTS = {f"{stream}_{member}": f"{stream}__{member}" for stream in ("i", "o") for member in ("payload", "valid", "ready")}


@cocotb.test()
async def roles_see_every_transfer(dut):
    config = json.loads(Path(os.environ["XNORFLOW_STREAM_ROLES_TB"]).read_text())
    rng = random.Random(config["seed"])
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=True)
    dut.rst.value, dut.i__valid.value, dut.o__ready.value = 1, 0, 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    into, out = StreamBus(dut, PORTS, "i"), StreamBus(dut, PORTS, "o")
    beats = sum(len(frame) for frame in config["frames"])
    source = StreamSource(into, dut.clk, idle_gaps(rng, config["gaps"]))
    sink = StreamSink(out, dut.clk, stalls(rng, config["stalls"]), expected=beats)
    watch_in, watch_out = StreamMonitor(into, dut.clk), StreamMonitor(out, dut.clk)
    for role in (sink, watch_in, watch_out):
        cocotb.start_soon(role.run())
    await RisingEdge(dut.clk)
    await source.send_frames(config["frames"])
    await with_timeout(sink.done.wait(), 100 * beats * CLOCK_PERIOD_NS, "ns")
    await ClockCycles(dut.clk, 10)
    Path(config["results_file"]).write_text(json.dumps({
        "accept_cycles": source.accept_cycles, "frames_sent": source.frames_sent, "beats_sent": source.beats_sent,
        "sink": sink.beats, "watch_in": watch_in.beats, "watch_out": watch_out.beats}))
