"""cocotb bench of the exported BoardTopCore: a host UART model sends frames, another reads the answers.

Run by tests/boards/test_board_top.py through cocotb_tools.runner. The config (JSON, path in
``XNORFLOW_BOARD_TB``) holds the board's clock period and the host's bit time (in picoseconds: the
host keeps its own baud rate, not a multiple of the board's clock), the frames as byte lists, random
idle gaps between bytes and where to write what the bench saw; the pytest side compares that with
the golden model, so this bench only measures.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer, with_timeout

CONFIG_ENV = "XNORFLOW_BOARD_TB"


def level(signal) -> int:
    """A one-bit signal's value (cocotb 2.x gives a Logic, which converts with int())."""
    return int(signal.value)


async def uart_send(line, byte: int, bit_ps: int) -> None:
    """Drive one 8N1 byte onto ``line``, LSB first."""
    for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
        line.value = level
        await Timer(bit_ps, unit="ps")


async def uart_receive(line, bit_ps: int, count: int, received: list, errors: list) -> None:
    """Read ``count`` 8N1 bytes from ``line``, sampling each bit in its middle."""
    while len(received) < count:
        await FallingEdge(line)
        await Timer(bit_ps // 2, unit="ps")
        if level(line) != 0:
            errors.append(f"glitch instead of a start bit after {len(received)} bytes")
            continue
        byte = 0
        for i in range(8):
            await Timer(bit_ps, unit="ps")
            byte |= level(line) << i
        await Timer(bit_ps, unit="ps")
        if level(line) != 1:
            errors.append(f"byte {len(received)} has no stop bit")
        received.append(byte)


@cocotb.test()
async def frames_in_classes_out(dut):
    config = json.loads(Path(os.environ[CONFIG_ENV]).read_text())
    clock_ps, bit_ps = config["clock_ps"], config["bit_ps"]
    rng = random.Random(config["seed"])

    dut.rx.value = 1
    cocotb.start_soon(Clock(dut.clk, clock_ps, unit="ps").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    idle_tx = level(dut.tx)

    frames = config["frames"]
    received, errors = [], []
    # Two answer bytes per frame (tag, class); the pytest side checks both.
    receiver = cocotb.start_soon(uart_receive(dut.tx, bit_ps, 2 * len(frames), received, errors))
    for frame in frames:
        for byte in frame:
            await uart_send(dut.rx, byte, bit_ps)
            if rng.random() < config["gap_probability"]:  # a host that pauses between bytes
                await Timer(bit_ps * rng.randrange(1, 4), unit="ps")
    # Once the last byte is in, every answer must follow within a few frames' compute + one TX byte each.
    try:
        await with_timeout(receiver, config["drain_ps"], "ps")
    except TimeoutError:
        errors.append(f"timed out with {len(received)} of {2 * len(frames)} answer bytes")

    Path(config["results_file"]).write_text(json.dumps({
        "idle_tx": idle_tx,
        "received": received,
        "errors": errors,
        "overrun": level(dut.overrun),
        "framing_error": level(dut.framing_error),
    }))
