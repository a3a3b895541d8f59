"""The board top: the network behind a UART, clocked by the board oscillator or a PLL.

Protocol (what `xnorflow.boards.host` speaks; `xnorflow.boards.protocol` has its bytes): the host sends
each frame as ceil(input_bits / 8) bytes, element i of the input vector being bit i % 8 of byte i // 8
(LSB first, the last byte zero-padded); the board answers two bytes per frame: a tag,
``0x80 | (n mod 128)`` where n counts the frames the board has answered since configuration, then the
class index (below 128, so its top bit is 0). The top bit tells tags from classes and the counter tells
the host which frame an answer belongs to, so a byte lost, duplicated or added on the line shows up at
the next byte the host reads instead of shifting every later answer onto the wrong frame. Frames may
be sent back to back: a FIFO of one frame's bytes sits between the UART and the network, whose own
ping-pong buffer holds another.

Clock: ``BoardTop(..., clock_hz=None)`` runs the design at the board oscillator (12 MHz iCE40 /
25 MHz ULX3S / 48 MHz OrangeCrab). ``clock_hz=F`` puts the family's PLL (iCE40 SB_PLL40_PAD, ECP5
EHXPLLL) between the oscillator and the ``sync`` domain, set by `xnorflow.boards.pll.plan_pll` to the
highest frequency it can make that is not above F, so the network runs near the Fmax nextpnr
reports: the frames/s the build reports are then what the bitstream delivers whenever the link is
not the bottleneck. The UART runs at the fastest rate the board's USB-serial bridge takes that the
clock makes (3 Mbaud on the iCEBreaker and ULX3S: a 98-byte frame in 0.33 ms), unless a baud rate is
given. The UART divisor is computed from the PLL's actual output frequency, and the PLL
output net carries nextpnr's clock constraint, so timing is checked at the frequency the design runs.
Reset with a PLL: the ``sync`` domain is held in reset until the PLL reports LOCK (and while the
board's reset button, if the platform has one, is pressed), the way amaranth's platforms reset their
default domain: on iCE40 a power-on timer on top (block RAMs read zero for ~3 us after
configuration), on ECP5 through the global set/reset (SGSR) driven from the PLL clock.

`BoardTopCore` is the platform-free design (ports ``rx``, ``tx``, ``overrun``, ``framing_error`` plus
the implicit ``clk``/``rst``), exported to Verilog for the cocotb + Verilator test; `BoardTop` wraps
it for an amaranth-boards platform.
"""
from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal
from amaranth.build import ResourceError
from amaranth.lib import fifo, io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from xnorflow.boards.pll import PllPlan, plan_pll
from xnorflow.boards.protocol import MAX_CLASSES, TAG_BITS, TAG_MARK
from xnorflow.boards.registry import Board
from xnorflow.boards.uart import DEFAULT_BAUD, UARTRx, UARTTx, fastest_baud, uart_divisor
from xnorflow.hw.adapters import RegisterSlice
from xnorflow.hw.network import Network
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import NetworkSpec, SpecError
from xnorflow.hw.stream_format import BYTE_BITS, beats_per_frame

# iCE40 block RAMs read as zero for ~3 us after configuration: amaranth's iCE40 platform holds its
# default domain in reset for 15 us of clock (5x margin); we count the same after the PLL locks.
ICE40_POWER_ON_RESET_SECONDS = 15e-6


def frame_bytes(spec: NetworkSpec) -> int:
    """Bytes the host sends per frame."""
    return beats_per_frame(spec.input_bits, BYTE_BITS)


def check_protocol(spec: NetworkSpec) -> None:
    if spec.n_classes > MAX_CLASSES:
        raise SpecError(f"the network has {spec.n_classes} classes but the board answers each frame with "
                        f"a 7-bit class index: use at most {MAX_CLASSES} classes")


class BoardTopCore(wiring.Component):
    """UART RX -> byte FIFO -> Network(in_width=8) -> (frame tag, class index) -> UART TX.

    ``overrun`` (sticky) means a byte arrived while the FIFO was full and was lost: the host sent
    faster than the network computes. ``framing_error`` (sticky) means a byte had no stop bit: the
    host's baud rate does not match.
    """

    def __init__(self, spec: NetworkSpec, clk_hz: float, baud: int = DEFAULT_BAUD):
        with refusing(self):
            spec.validate()
            check_protocol(spec)
            self.divisor = uart_divisor(clk_hz, baud)
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
        # Register slices on both sides of the network: the FIFO's read logic and the first
        # gearbox's ready were one combinational loop of 8 LUT levels, the longest path of TFC on
        # the iCE40UP5K once the engines were pipelined; the transmitter's ready would likewise
        # reach into the network's output queue.
        m.submodules.question = question = RegisterSlice(8)
        m.submodules.answer = answer = RegisterSlice(8)

        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.overrun.eq(rx.overrun),
            self.framing_error.eq(rx.framing_error),
            # UART bytes into the FIFO, FIFO into the network.
            rx_fifo.w_data.eq(rx.o.payload),
            rx_fifo.w_en.eq(rx.o.valid),
            rx.o.ready.eq(rx_fifo.w_rdy),
            question.i.payload.eq(rx_fifo.r_data),
            question.i.valid.eq(rx_fifo.r_rdy),
            rx_fifo.r_en.eq(question.i.ready),
            # The class index, zero-extended; the answer slice holds it while its tag goes out.
            answer.i.payload.eq(network.o.payload.index),
            answer.i.valid.eq(network.o.valid),
            network.o.ready.eq(answer.i.ready),
        ]
        wiring.connect(m, question.o, network.i)

        # Two bytes per answer: the tag (TAG_MARK | frame counter) then the class. ``second`` says the
        # class byte is due; the answer leaves the slice, and the counter steps, when that byte is taken.
        # The transmitter's valid is the slice's, never waiting for its ready (the stream rule).
        # The chosen byte goes to the transmitter through a register slice of its own: with the
        # transmitter's ready gating the answer slice through the byte choice directly, that chain
        # was the longest path of TFC on the iCE40UP5K (45.8 -> 41.8 MHz at 45, bench/records.md).
        m.submodules.line = line = RegisterSlice(8)
        frame_count = Signal(TAG_BITS)
        second = Signal()
        m.d.comb += [
            line.i.payload.eq(Mux(second, answer.o.payload, TAG_MARK | frame_count)),
            line.i.valid.eq(answer.o.valid),
            answer.o.ready.eq(line.i.ready & second),
        ]
        wiring.connect(m, line.o, tx.i)
        with m.If(line.i.valid & line.i.ready):
            m.d.sync += second.eq(~second)
            with m.If(second):
                m.d.sync += frame_count.eq(frame_count + 1)
        return m


class BoardTop(Elaboratable):
    """`BoardTopCore` on a board: its UART resource, clocked by the board oscillator (``clock_hz=None``)
    or by the family's PLL at the highest frequency it makes not above ``clock_hz``; its UART at
    ``baud``, or (None) the fastest rate the board's bridge takes that ``clk_hz`` makes.

    ``pll`` is the `PllPlan` (None without a PLL), ``clk_hz`` the frequency the design runs at and
    ``core`` the `BoardTopCore` (its UART divisor computed from ``clk_hz``).
    An impossible ``clock_hz`` raises `xnorflow.boards.pll.PllError` here, before any build.
    ``overrun`` and ``framing_error`` light the board's LEDs 0 and 1 when it has them.
    """

    def __init__(self, spec: NetworkSpec, board: Board, baud: int | None = None, clock_hz: float | None = None):
        self.spec = spec
        self.board = board
        with refusing(self):
            self.pll: PllPlan | None = None if clock_hz is None else plan_pll(board.family, board.clock_hz, clock_hz)
            self.clk_hz = self.pll.f_out_hz if self.pll else board.clock_hz
            self.baud = fastest_baud(self.clk_hz, board.max_baud) if baud is None else baud
            # Built here so a spec or baud rate the core refuses fails before any platform work.
            self.core = BoardTopCore(spec, self.clk_hz, self.baud)

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            m.submodules.clocking = clocking = PllSyncDomain(self.pll)
            # Defined here, above every module that uses it; `PllSyncDomain` drives its clock and reset.
            m.domains.sync = clocking.domain
        m.submodules.core = core = self.core
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


class PllSyncDomain(Elaboratable):
    """The family's PLL, fed by the platform's default clock, driving the clock and reset of
    ``domain`` (the ``sync`` ClockDomain, which the parent adds to its module: Amaranth wants a
    domain defined above every module that uses it).

    Replaces the platform's own `create_missing_domain` for ``sync`` (which runs at the oscillator),
    keeping its reset behaviour: the board's reset button if there is one, and on top of it the PLL's
    LOCK, so no flip-flop leaves reset on a clock that is not yet steady. ``clk`` is the PLL output
    (the net nextpnr's clock constraint names) and ``lock`` the PLL's lock flag.
    """

    def __init__(self, plan: PllPlan):
        self.plan = plan
        # ``keep``: Yosys would otherwise drop this name for the top's ``clk`` when it flattens the
        # design, and nextpnr would ignore a constraint on a net it cannot find.
        self.clk = Signal(attrs={"keep": 1})
        self.lock = Signal()
        # ECP5 resets through the global set/reset, like amaranth's own ECP5 ``sync`` domain.
        self.domain = ClockDomain("sync", reset_less=plan.family == "ecp5")

    def elaborate(self, platform):
        if platform.default_clk_frequency != self.plan.f_in_hz:
            raise ValueError(f"the PLL was planned for a {self.plan.f_in_hz / 1e6:g} MHz input but the "
                             f"platform's clock is {platform.default_clk_frequency / 1e6:g} MHz")
        m = Module()
        reset_button = self._reset_button(m, platform)
        if self.plan.family == "ice40":
            self._ice40(m, platform, reset_button)
        else:
            self._ecp5(m, platform, reset_button)
        platform.add_clock_constraint(self.clk, self.plan.f_out_hz)
        return m

    def _reset_button(self, m: Module, platform):
        if platform.default_rst is None:
            return Const(0)
        m.submodules.rst_buffer = rst_buffer = io.Buffer("i", platform.request(platform.default_rst, dir="-"))
        return rst_buffer.i

    def _ice40(self, m: Module, platform, reset_button) -> None:
        # SB_PLL40_PAD: the oscillator pin (iCEBreaker pin 35) is the PLL's own input pad, so the
        # clock enters the PLL directly instead of through an SB_IO / global buffer.
        clk_pin = platform.request(platform.default_clk, dir="-")
        m.submodules.pll = Instance(
            self.plan.primitive,
            **{f"p_{name}": value for name, value in self.plan.parameters().items()},
            i_PACKAGEPIN=clk_pin.io,
            i_RESETB=Const(1),
            i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=self.clk,
            o_LOCK=self.lock,
        )
        # Power-on reset: count ICE40_POWER_ON_RESET_SECONDS of PLL clock once LOCK is steady.
        m.domains.pll_por = ClockDomain(reset_less=True, local=True)
        m.d.comb += ClockSignal("pll_por").eq(self.clk)
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.lock, locked, o_domain="pll_por")
        delay = max(1, int(ICE40_POWER_ON_RESET_SECONDS * self.plan.f_out_hz))
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~locked):
            m.d.pll_por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.pll_por += ready.eq(1)
        with m.Else():
            m.d.pll_por += timer.eq(timer + 1)

        m.d.comb += self.domain.clk.eq(self.clk)
        if platform.default_rst is None:
            m.d.comb += self.domain.rst.eq(~ready)   # ``ready`` is already in this clock's domain
        else:
            m.submodules.reset_sync = ResetSynchronizer(~ready | reset_button, domain=self.domain.name)

    def _ecp5(self, m: Module, platform, reset_button) -> None:
        clk_port = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_port)
        m.submodules.pll = Instance(
            self.plan.primitive,
            # ecppll's loop-filter settings for this primitive.
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            **{f"p_{name}": value for name, value in self.plan.parameters().items()},
            i_CLKI=clk_buffer.i,
            i_CLKFB=self.clk,          # FEEDBK_PATH "CLKOP": the output is its own feedback
            i_RST=Const(0), i_STDBY=Const(0),
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0), i_PHASESTEP=Const(0),
            i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
            o_CLKOP=self.clk,
            o_LOCK=self.lock,
        )
        # As amaranth's ECP5 platform: every flip-flop is reset by the global set/reset, released
        # in step with the clock through two flip-flops that GSR itself leaves alone (else GSR would
        # hold them at zero and never let go). GSR is active low: it lets go once LOCK is high and
        # the reset button (if any) is released.
        gsr0, gsr1 = Signal(), Signal()
        m.submodules += [
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=self.clk, i_D=self.lock & ~reset_button, o_Q=gsr0),
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=self.clk, i_D=gsr0, o_Q=gsr1),
            Instance("SGSR", i_CLK=self.clk, i_GSR=gsr1),
        ]
        m.d.comb += self.domain.clk.eq(self.clk)
