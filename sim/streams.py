"""Testbench roles for valid/ready streams, as cocotbext-axi has them: `StreamSource` drives a
stream's payload and valid, `StreamSink` drives its ready, `StreamMonitor` only watches. Each is bound
to a clock and to the stream's signals, found by a signal-name prefix (`StreamBus`: ``i``, ``o``, a
layer tap ``tap<k>``, or any internal stream a bench exposes). Random flow control comes from pause
generators (`idle_gaps` for a source, `stalls` for a sink), iterators the bench seeds.

Timing discipline (Verilator is cycle based: after an edge trigger the design has already moved):
inputs are written just after a rising clock edge and everything is sampled at the falling edge,
where every value is settled and is exactly what the next rising edge will see. A transfer happens
at a rising edge when valid and ready were both 1 at the falling edge before it.

Speed: a Python wake-up costs more CPU than Verilator spends on a small net's cycle, so nothing here
awaits every cycle unless it must. Idle waits sleep on the signal that ends them (``RisingEdge(ready)``,
``RisingEdge(valid)``) and an input gap is one ``Timer``; per-cycle work only happens while a beat is
actually moving. Hence a source's pause generator yields, per beat, the idle cycles to insert before
it (one Timer), where a sink's yields, per cycle an output waits, whether ready is held low.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, First, RisingEdge, Timer

from xnorflow.sim.defaults import CLOCK_PERIOD_NS

HALF_PERIOD_NS = CLOCK_PERIOD_NS // 2
LONGEST_GAP = 4           # cycles of an input gap: 1 .. LONGEST_GAP


# --- time and handshakes --------------------------------------------------------------------------
def now_cycle() -> int:
    """Index of the current clock cycle (cycle c spans [c*T, (c+1)*T): a clock started high)."""
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


# --- pause generators -----------------------------------------------------------------------------
def idle_gaps(rng, probability: float) -> Iterator[int]:
    """A source's pauses: before each beat, with ``probability``, an idle gap of 1..LONGEST_GAP
    cycles (else 0). Draws nothing from ``rng`` when the probability is 0."""
    while True:
        yield rng.randint(1, LONGEST_GAP) if probability and rng.random() < probability else 0


def stalls(rng, probability: float) -> Iterator[bool]:
    """A sink's pauses: for each cycle an output waits, ready is held low with ``probability``.
    Draws nothing from ``rng`` when the probability is 0."""
    while True:
        yield bool(probability) and rng.random() < probability


# --- the roles ------------------------------------------------------------------------------------
class StreamBus:
    """The handles of one stream of ``dut``: ``payload``, ``valid`` and ``ready`` (None for a stream
    without one, such as a tap, whose valid is the transfer strobe). ``ports`` maps the roles
    ``<prefix>_payload``, ``<prefix>_valid``, ``<prefix>_ready`` to the top's port names (the runner
    reads them from the Verilog: sim/runner.resolve_ports)."""

    def __init__(self, dut, ports: dict, prefix: str):
        self.prefix = prefix
        self.payload = getattr(dut, ports[f"{prefix}_payload"])
        self.valid = getattr(dut, ports[f"{prefix}_valid"])
        ready = ports.get(f"{prefix}_ready")
        self.ready = getattr(dut, ready) if ready else None


class StreamSource:
    """Drives ``bus``'s payload and valid: each beat is held valid until a falling edge sees ready
    (valid never drops before its beat is taken); idle gaps come only between beats, as ``pause``
    (an `idle_gaps` iterator, None for none) says. Records the cycle each frame's first beat was taken."""

    def __init__(self, bus: StreamBus, clk, pause: Iterator[int] | None = None):
        self.bus, self.clk, self.pause = bus, clk, pause
        self.accept_cycles: list[int] = []   # cycle of each frame's first beat transfer
        self.frames_sent = 0
        self.beats_sent = 0

    async def send(self, beats: list[int]) -> None:
        """One frame's beats. Called just after a rising edge; returns just after the rising edge
        that took the last beat."""
        bus, clk = self.bus, self.clk
        for n, beat in enumerate(beats):
            gap = next(self.pause) if self.pause is not None else 0
            if gap:
                bus.valid.value = 0
                await wait_cycles(clk, gap)
            bus.payload.value = beat
            bus.valid.value = 1
            await sample_when_high(clk, bus.ready)
            if n == 0:
                self.accept_cycles.append(now_cycle())
            await RisingEdge(clk)          # the transfer
            self.beats_sent += 1
        self.frames_sent += 1

    async def send_frames(self, frames) -> None:
        """Every frame (a list of beats) in order, then idle."""
        for beats in frames:
            await self.send(beats)
        self.idle()

    def idle(self) -> None:
        self.bus.valid.value = 0


class StreamMonitor:
    """Only watches ``bus``: records (cycle, payload) of every transfer (valid, and ready where the
    stream has one, at a falling edge). Each transfer costs a Python wake-up: for taps, watch them
    only when their beats are wanted."""

    def __init__(self, bus: StreamBus, clk):
        self.bus, self.clk = bus, clk
        self.beats: list[tuple[int, int]] = []

    def _transferring(self) -> bool:
        bus = self.bus
        return is_high(bus.valid) and (bus.ready is None or is_high(bus.ready))

    async def run(self) -> None:
        bus, clk = self.bus, self.clk
        while True:
            await FallingEdge(clk)
            while not self._transferring():
                if bus.ready is None or not is_high(bus.valid):
                    await RisingEdge(bus.valid)
                else:                          # offered, not taken: until it is (or withdrawn by a reset)
                    await First(RisingEdge(bus.ready), FallingEdge(bus.valid))
                await FallingEdge(clk)
            self.beats.append((now_cycle(), bus.payload.value.to_unsigned()))

    @property
    def payloads(self) -> list[int]:
        return [payload for _, payload in self.beats]


class StreamSink(StreamMonitor):
    """Takes ``bus``'s beats: drives ready, held low on the cycles ``pause`` (a `stalls` iterator,
    None: always ready) says while an output waits, and records (cycle, payload) of each transfer.
    ``done`` is set once ``expected`` beats arrived, so nobody else wakes up per beat; ``on_beat`` is
    called with the count after each."""

    def __init__(self, bus: StreamBus, clk, pause: Iterator[bool] | None = None, expected: int | None = None,
                 on_beat: Callable[[int], None] | None = None):
        super().__init__(bus, clk)
        self.pause, self.expected, self.on_beat = pause, expected, on_beat
        self.done = Event()

    def _choose_ready(self) -> None:
        if self.pause is not None:
            self.bus.ready.value = int(not next(self.pause))

    def _take(self) -> None:
        self.beats.append((now_cycle(), self.bus.payload.value.to_unsigned()))
        if self.on_beat is not None:
            self.on_beat(len(self.beats))
        if self.expected is not None and len(self.beats) >= self.expected:
            self.done.set()

    async def run(self) -> None:
        bus, clk = self.bus, self.clk
        bus.ready.value = 1
        await FallingEdge(clk)
        while True:
            if not is_high(bus.valid):
                await RisingEdge(bus.valid)   # sleeps through idle cycles
                self._choose_ready()
                await FallingEdge(clk)
                continue
            if is_high(bus.ready):
                self._take()
            await RisingEdge(clk)
            self._choose_ready()
            await FallingEdge(clk)
