"""The board top: the network behind a UART, at the board's own clock.

Protocol (what `xnorflow.boards.host` speaks): the host sends each frame as ceil(input_bits / 8) bytes,
element i of the input vector being bit i % 8 of byte i // 8 (LSB first, the last byte zero-padded);
the board answers one byte per frame, the class index. Frames may be sent back to back: a FIFO of one
frame's bytes sits between the UART and the network, whose own ping-pong buffer holds another.

Clock: the design runs at the board oscillator (12 MHz iCE40 / 25 MHz ULX3S / 48 MHz OrangeCrab), no
PLL. The UART, not the network, sets the frame rate: a 784-bit frame takes 98 bytes = 8.5 ms at
115200 baud, ~100k cycles at 12 MHz, while the foldings we build for these boards need a few hundred
to a few thousand cycles per frame; a PLL would add risk for no throughput. (A slower network only
makes the host wait: it keeps at most two frames unanswered, which the FIFO and the network's input
buffer hold, so no byte is lost.)

`BoardTopCore` is the platform-free design (ports ``rx``, ``tx``, ``overrun``, ``framing_error`` plus
the implicit ``clk``/``rst``), exported to Verilog for the cocotb + Verilator test; `BoardTop` wraps
it for an amaranth-boards platform.
"""
from __future__ import annotations

from amaranth import Elaboratable, Module
from amaranth.build import ResourceError
from amaranth.lib import fifo, io, wiring
from amaranth.lib.wiring import In, Out

from xnorflow.boards.registry import Board
from xnorflow.boards.uart import DEFAULT_BAUD, UARTRx, UARTTx, uart_divisor
from xnorflow.hw.network import Network
from xnorflow.hw.spec import NetworkSpec, SpecError, ceil_div

# The UART answers with one byte per frame, so the class index must fit in a byte.
MAX_CLASSES = 256


def frame_bytes(spec: NetworkSpec) -> int:
    """Bytes the host sends per frame."""
    return ceil_div(spec.input_bits, 8)


def check_protocol(spec: NetworkSpec) -> None:
    if spec.n_classes > MAX_CLASSES:
        raise SpecError(f"the network has {spec.n_classes} classes but the board answers one byte per "
                        f"frame: use at most {MAX_CLASSES} classes")


class BoardTopCore(wiring.Component):
    """UART RX -> byte FIFO -> Network(in_width=8) -> class index -> UART TX.

    ``overrun`` (sticky) means a byte arrived while the FIFO was full and was lost: the host sent
    faster than the network computes. ``framing_error`` (sticky) means a byte had no stop bit: the
    host's baud rate does not match.
    """

    def __init__(self, spec: NetworkSpec, clk_hz: float, baud: int = DEFAULT_BAUD):
        try:
            spec.validate()
            check_protocol(spec)
            self.divisor = uart_divisor(clk_hz, baud)
        except ValueError:
            self._MustUse__silence = True  # refused, never built: no "created but never used" warning
            raise
        self.spec = spec
        self.clk_hz = clk_hz
        self.baud = baud
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "overrun": Out(1),
            "framing_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UARTRx(self.divisor)
        m.submodules.uart_tx = tx = UARTTx(self.divisor)
        # One frame of slack on top of the network's own ping-pong input buffer.
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=max(2, frame_bytes(self.spec)))
        m.submodules.network = network = Network(self.spec, in_width=8)

        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.overrun.eq(rx.overrun),
            self.framing_error.eq(rx.framing_error),
            # UART bytes into the FIFO, FIFO into the network.
            rx_fifo.w_data.eq(rx.o.payload),
            rx_fifo.w_en.eq(rx.o.valid),
            rx.o.ready.eq(rx_fifo.w_rdy),
            network.i.payload.eq(rx_fifo.r_data),
            network.i.valid.eq(rx_fifo.r_rdy),
            rx_fifo.r_en.eq(network.i.ready),
            # One answer byte per frame: the class index, zero-extended.
            tx.i.payload.eq(network.o.payload.index),
            tx.i.valid.eq(network.o.valid),
            network.o.ready.eq(tx.i.ready),
        ]
        return m


class BoardTop(Elaboratable):
    """`BoardTopCore` on a board: the platform's default clock and its UART resource.

    ``overrun`` and ``framing_error`` light the board's LEDs 0 and 1 when it has them.
    """

    def __init__(self, spec: NetworkSpec, board: Board, baud: int = DEFAULT_BAUD):
        self.spec = spec
        self.board = board
        self.baud = baud

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = BoardTopCore(self.spec, platform.default_clk_frequency, self.baud)
        uart = platform.request(*self.board.uart, dir="-")
        m.submodules.uart_rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buffer.i), tx_buffer.o.eq(core.tx)]
        for number, flag in enumerate((core.overrun, core.framing_error)):
            try:
                led = platform.request("led", number, dir="-")
            except ResourceError:  # a board without that LED: the flag stays internal
                continue
            m.submodules[f"led{number}_buffer"] = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(flag)
        return m
