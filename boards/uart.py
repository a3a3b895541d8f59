"""8N1 UART receiver and transmitter with `amaranth.lib.stream` byte interfaces.

One start bit (0), eight data bits LSB first, one stop bit (1); the line idles high. Both ends count
``divisor`` clock cycles per bit, ``divisor = round(clk_hz / baud)`` (see `uart_divisor`).

The receiver synchronises the line, waits for a falling edge, and then decides every bit by a
majority vote of three samples taken around the middle of the bit, so a one-cycle glitch neither
starts a byte nor flips a bit, and a sender whose baud rate is off by a few percent is still read
correctly (the middle of bit 9 drifts by under half a bit up to about 4.5 % error).
"""
from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from xnorflow.errors import XnorflowError

DEFAULT_BAUD = 115200
# Largest baud-rate error (from rounding the divisor) we accept: a receiver on the other side
# tolerates a few percent in total, and this leaves most of it to the other end's clock.
MAX_BAUD_ERROR = 0.02
# The receiver votes over the samples at middle-1, middle, middle+1 of a bit, which needs 4 cycles.
MIN_DIVISOR = 4
# Rates a USB-serial bridge makes to a fraction of a percent, fastest first (FTDI's FT2232H and
# FT231X divide 3 MHz by 1, 1.5, 2, 3, 3.25, 6, 6.5, 13, ...): a board's link runs at the fastest of
# these that its bridge takes and its clock's divisor makes within MAX_BAUD_ERROR (`fastest_baud`).
LINK_RATES = (3_000_000, 2_000_000, 1_500_000, 1_000_000, 921_600, 500_000, 460_800, 230_400, 115_200,
              57_600, 38_400, 19_200, 9_600)


class UARTError(XnorflowError):
    """A baud rate the clock cannot make; the message names a fix."""


def uart_divisor(clk_hz: float, baud: int = DEFAULT_BAUD) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``, refusing rates the clock cannot make."""
    if baud <= 0 or clk_hz <= 0:
        raise UARTError(f"baud rate {baud} and clock {clk_hz} Hz must be positive")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise UARTError(f"a {clk_hz / 1e6:g} MHz clock is too slow for {baud} baud (needs at least "
                        f"{MIN_DIVISOR} cycles per bit): use a baud rate of at most {int(clk_hz // MIN_DIVISOR)}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise UARTError(f"{baud} baud is {error:.1%} off at {clk_hz / 1e6:g} MHz (divisor {divisor}): "
                        "choose a baud rate that divides the clock more evenly, e.g. 115200 or 9600")
    return divisor


def fastest_baud(clk_hz: float, max_baud: int) -> int:
    """The fastest of `LINK_RATES` not above ``max_baud`` (the bridge's limit) that ``clk_hz`` makes."""
    for baud in LINK_RATES:
        if baud <= max_baud:
            try:
                uart_divisor(clk_hz, baud)
            except UARTError:
                continue
            return baud
    raise UARTError(f"a {clk_hz / 1e6:g} MHz clock makes none of the baud rates up to {max_baud}: "
                    "give one it divides with --baud")


def _check_divisor(divisor: int) -> int:
    if int(divisor) != divisor or divisor < MIN_DIVISOR:
        raise UARTError(f"UART divisor {divisor} must be an integer >= {MIN_DIVISOR} cycles per bit: "
                        "compute it with uart_divisor(clk_hz, baud)")
    return int(divisor)


class UARTRx(wiring.Component):
    """Serial line in, bytes out.

    ``o.valid`` rises for each received byte and stays up until ``o.ready``. A byte that completes
    while the previous one has not been taken is dropped and ``overrun`` is set (sticky); a byte
    whose stop bit reads 0 is dropped and counted in ``framing_error`` (sticky as well).
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "overrun": Out(1),
            "framing_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        # The last three line samples; at the decision cycle they are middle-1, middle, middle+1.
        window = Signal(3, init=0b111)
        m.d.sync += window.eq(Cat(line, window[:2]))
        vote = Signal()
        m.d.comb += vote.eq((window[0] & window[1]) | (window[0] & window[2]) | (window[1] & window[2]))

        timer = Signal(range(divisor + 1))
        bits_left = Signal(range(9))
        shift = Signal(8)
        tick = Signal()
        m.d.comb += tick.eq(timer == 0)
        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("idle"), m.If(~line):
                # `line` is low for the first sample; the decision comes when the window's
                # centre sample is (divisor - 1) // 2 samples later, the middle of the bit.
                m.d.sync += timer.eq((divisor - 1) // 2 + 1)
                m.next = "start"
            with m.State("start"), m.If(tick):
                with m.If(vote):  # the line was only glitching low: not a start bit
                    m.next = "idle"
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bits_left.eq(8)]
                    m.next = "data"
            with m.State("data"), m.If(tick):
                m.d.sync += [shift.eq(Cat(shift[1:], vote)), timer.eq(divisor - 1),
                             bits_left.eq(bits_left - 1)]
                with m.If(bits_left == 1):
                    m.next = "stop"
            with m.State("stop"), m.If(tick):
                # Back to idle in the middle of the stop bit, so the next start edge is seen.
                m.next = "idle"
                with m.If(~vote):
                    m.d.sync += self.framing_error.eq(1)
                with m.Elif(self.o.valid & ~self.o.ready):
                    m.d.sync += self.overrun.eq(1)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
        return m


class UARTTx(wiring.Component):
    """Bytes in, serial line out; takes a byte (``i.ready``) when the line is idle or a stop bit ends."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        # Start bit, 8 data bits, stop bit, shifted out LSB first; all ones means the idle line.
        frame = Signal(10, init=(1 << 10) - 1)
        bits_left = Signal(range(11))
        timer = Signal(range(divisor))

        # Ready when idle, and in the last cycle of a stop bit, so bytes go back to back.
        last_cycle_of_stop = (bits_left == 1) & (timer == 0)
        m.d.comb += [self.tx.eq(frame[0]), self.i.ready.eq((bits_left == 0) | last_cycle_of_stop)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(Cat(0, self.i.payload, 1)), bits_left.eq(10), timer.eq(divisor - 1)]
        with m.Elif(bits_left != 0):
            with m.If(timer == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits_left.eq(bits_left - 1),
                             timer.eq(divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


__all__ = ["DEFAULT_BAUD", "UARTError", "UARTRx", "UARTTx", "uart_divisor"]
