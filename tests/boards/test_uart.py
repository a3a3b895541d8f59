"""UART receiver and transmitter in Amaranth simulation against a bit-level line model."""
import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from xnorflow.boards.uart import LINK_RATES, UARTError, UARTRx, UARTTx, fastest_baud, uart_divisor


def line_levels(byte: int, stop: int = 1) -> list[int]:
    """The 8N1 bit sequence of one byte: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def waveform(data: list[int], cycles_per_bit: float, idle_cycles: int = 3, stop: int = 1) -> list[int]:
    """Line level per clock cycle for a sender whose bit lasts ``cycles_per_bit`` (maybe fractional)."""
    bits = []
    for byte in data:
        bits += line_levels(byte, stop)
    levels = [1] * idle_cycles
    start = len(levels)
    for k, bit in enumerate(bits):
        end = start + round((k + 1) * cycles_per_bit)
        levels += [bit] * (end - len(levels))
    return levels + [1] * (2 * round(cycles_per_bit))


def run_rx(divisor: int, levels: list[int], ready_pattern=lambda cycle: True):
    """Drive ``levels`` into a UARTRx; return the bytes it delivered and its sticky flags."""
    dut = UARTRx(divisor)
    received = []
    flags = {}

    async def testbench(ctx):
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            ready = ready_pattern(cycle)
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):
                received.append(ctx.get(dut.o.payload))
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        for _ in range(3):  # drain what is still held
            if ctx.get(dut.o.valid):
                received.append(ctx.get(dut.o.payload))
            await ctx.tick()
        flags["overrun"] = ctx.get(dut.overrun)
        flags["framing_error"] = ctx.get(dut.framing_error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return received, flags


def test_divisor_from_clock_and_baud():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(25e6, 115200) == 217
    assert uart_divisor(4 * 9600, 9600) == 4


@pytest.mark.parametrize("clk_hz, baud, words", [
    (12e6, 4_000_000, "too slow"),
    (1e6, 300_000, "too slow"),   # 3.33 cycles per bit rounds to 3, under the minimum of 4
    (12e6, 0, "positive"),
])
def test_divisor_refuses_rates_the_clock_cannot_make(clk_hz, baud, words):
    with pytest.raises(UARTError, match=words) as info:
        uart_divisor(clk_hz, baud)
    assert "\n" not in str(info.value)


def test_divisor_refuses_a_rate_far_off():
    with pytest.raises(UARTError, match="off"):
        uart_divisor(1e6, 180_000)  # 5.56 cycles per bit -> 6, 7.4 % slow


def test_tx_drives_8n1_with_exact_bit_times():
    divisor = 7
    data = [0x00, 0xFF, 0xA5, 0x3C]
    dut = UARTTx(divisor)
    trace = []

    async def testbench(ctx):
        for byte in data:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        for _ in range(12 * divisor):
            await ctx.tick()

    async def line_monitor(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            trace.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.add_process(line_monitor)
    sim.run()

    expected = []
    for byte in data:
        expected += line_levels(byte)
    first_start = trace.index(0)
    bits = trace[first_start:first_start + len(expected) * divisor]
    assert bits == [b for b in expected for _ in range(divisor)]
    assert all(level == 1 for level in trace[first_start + len(expected) * divisor:])


# At 4-5 cycles per bit the 3-sample vote leaves no room for drift: only exact rates. With the
# divisors real boards use (~100 and more) a sender off by 3 % must still be read.
@pytest.mark.parametrize("divisor, baud_error", [
    (4, 0.0), (5, 0.0), (16, 0.0), (16, -0.03), (16, 0.03), (104, -0.03), (104, 0.0), (104, 0.03)])
def test_rx_reads_bytes_from_a_sender_off_by_a_few_percent(divisor, baud_error):
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(6)] + [0x00, 0xFF, 0x55]
    received, flags = run_rx(divisor, waveform(data, divisor * (1 + baud_error)))
    assert received == data
    assert flags == {"overrun": 0, "framing_error": 0}


def test_rx_holds_bytes_under_backpressure_and_flags_overrun():
    divisor = 8
    data = [0x12, 0x34, 0x56]
    # Never ready until the very end: the first byte is kept, the others are lost.
    received, flags = run_rx(divisor, waveform(data, divisor), ready_pattern=lambda cycle: False)
    assert received == [0x12]
    assert flags["overrun"] == 1


def test_rx_ignores_a_glitch_and_rejects_a_missing_stop_bit():
    divisor = 16
    glitch = [1] * 10 + [0] + [1] * 40            # one-cycle low pulse: not a start bit
    flipped = waveform([0x0F], divisor)
    # Bits 0..2 of 0x0F are 1; dip each for one cycle at one of the three samples the receiver
    # votes over (middle - 1, middle, middle + 1): a majority vote reads them all as 1.
    for bit, offset in ((0, -1), (1, 0), (2, 1)):
        middle = 3 + (1 + bit) * divisor + (divisor - 1) // 2
        flipped[middle + offset] = 0
    received, flags = run_rx(divisor, glitch + flipped)
    assert received == [0x0F]

    received, flags = run_rx(divisor, waveform([0xAA], divisor, stop=0) + [1] * 3 * divisor)
    assert received == []
    assert flags["framing_error"] == 1


def test_tx_to_rx_loopback_with_random_backpressure():
    divisor = 5
    rng = random.Random(1)
    data = [rng.randrange(256) for _ in range(20)]

    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    received = []

    async def sender(ctx):
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
            for _ in range(rng.randrange(3)):
                await ctx.tick()

    async def receiver(ctx):
        # Taking a byte within a few cycles is enough: the next one is 10 bit times away.
        while len(received) < len(data):
            ready = rng.random() < 0.3
            ctx.set(rx.o.ready, ready)
            if ready and ctx.get(rx.o.valid):
                received.append(ctx.get(rx.o.payload))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(sender)
    sim.add_testbench(receiver)
    sim.run_until(1e-6 * 12 * divisor * (len(data) + 2))
    assert received == data
    assert isinstance(tx, wiring.Component) and isinstance(rx, wiring.Component)


@pytest.mark.parametrize("clk_hz, max_baud, baud", [
    (12e6, 3_000_000, 3_000_000),    # iCEBreaker oscillator: 4 clocks a bit
    (45e6, 3_000_000, 3_000_000),    # a PLL clock: 15 clocks a bit
    (33.75e6, 3_000_000, 2_000_000),  # 11.25 clocks a bit is 2.3 % off at 3 Mbaud; 2 Mbaud is 0.7 %
    (25e6, 3_000_000, 1_500_000),    # ULX3S oscillator: 3 and 2 Mbaud are 4.2 % off
    (48e6, 115_200, 115_200),        # a bridge limited to 115200
])
def test_fastest_baud_is_the_fastest_link_rate_the_bridge_takes_and_the_clock_makes(clk_hz, max_baud, baud):
    assert fastest_baud(clk_hz, max_baud) == baud
    uart_divisor(clk_hz, baud)
    faster = [rate for rate in LINK_RATES if baud < rate <= max_baud]
    for rate in faster:
        with pytest.raises(UARTError):
            uart_divisor(clk_hz, rate)


def test_fastest_baud_refuses_a_clock_too_slow_for_any_rate():
    with pytest.raises(UARTError, match="--baud") as info:
        fastest_baud(30e3, 3_000_000)
    assert "\n" not in str(info.value)
