"""Shared helpers of the hardware tests: random specs and stream testbenches on Amaranth's simulator."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import numpy as np
from amaranth.hdl import ClockDomain, Module, Value
from amaranth.sim import Simulator
from spec_factory import (  # noqa: F401  (shared makers)
    int_dense_layer,
    random_frames,
    random_int_thresholds,
    random_thresholds,
    sized_network,
)

from xnorflow.hw.network import Network, decode_output, input_beats, taps_to_activations
from xnorflow.hw.spec import LayerSpec, NetworkSpec, pack_words
from xnorflow.sim.golden import execute


# --- random specs ------------------------------------------------------------------------------
def random_folding(rng: np.random.Generator, n_in: int, n_out: int, max_cycles: int) -> tuple[int, int]:
    """A random (pe, simd), divisors or not, whose layer takes at most max_cycles per frame."""
    while True:
        pe = int(rng.integers(1, n_out + 1))
        simd = int(rng.integers(1, n_in + 1))
        if -(-n_out // pe) * -(-n_in // simd) <= max_cycles:
            return pe, simd


def random_layer(rng, n_in, n_out, output, max_cycles) -> LayerSpec:
    weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
    thresholds = None if output else random_thresholds(rng, n_in, n_out)
    pe, simd = random_folding(rng, n_in, n_out, max_cycles)
    return LayerSpec(n_in, n_out, weights, thresholds, pe, simd)


def random_spec(seed: int, *, max_layers: int = 4, max_in: int = 300, max_out: int = 64,
                max_cycles: int = 200, input_bits: int = 1) -> NetworkSpec:
    """A random valid network: 1..max_layers layers, n_in 1..max_in, widths 1..max_out, random folding.
    With ``input_bits`` b >= 2, the first of at least two layers is int_dense on b-bit inputs."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1 if input_bits == 1 else 2, max_layers + 1))
    widths = [int(rng.integers(1, max_in + 1))] + [int(rng.integers(1, max_out + 1)) for _ in range(n_layers)]
    layers = [random_layer(rng, widths[k], widths[k + 1], k == n_layers - 1, max_cycles) for k in range(n_layers)]
    if input_bits > 1:
        layers[0] = int_dense_layer(rng, widths[0], widths[1], input_bits, layers[0].pe, layers[0].simd)
    layers = tuple(layers)
    spec = NetworkSpec(layers, name=f"random{seed}")
    spec.validate()
    return spec


def with_random_packing(spec: NetworkSpec, seed: int) -> NetworkSpec:
    """``spec`` with a random weight packing (1..PE PEs per memory word) on every layer with weights;
    every third layer keeps one memory per PE, a fifth packs all its PEs into one memory."""
    rng = np.random.default_rng(seed)

    def packing(layer):
        choice = rng.random()
        if layer.weights is None or choice < 0.3:
            return 1
        return layer.pe if choice < 0.5 else int(rng.integers(1, layer.pe + 1))

    packed = replace(spec, layers=tuple(replace(layer, weight_packing=packing(layer)) for layer in spec.layers))
    packed.validate()
    return packed


def describe(spec: NetworkSpec, in_width: int | None = None) -> str:
    """Sizes, folding and weight packing, for failure messages."""
    layers = ", ".join(f"{l.kind} {l.n_in}->{l.n_out} b={l.input_bits} pe={l.pe} simd={l.simd} "
                       f"packing={l.weight_packing}" for l in spec.layers)
    return f"{spec.name} [{layers}] in_width={in_width or spec.layers[0].simd}"


# --- stream testbench --------------------------------------------------------------------------
async def send_beats(ctx, port, beats, rng: random.Random, gap: float) -> None:
    """Drive beats into a stream sink, holding valid low for random cycles before each beat."""
    for beat in beats:
        while gap and rng.random() < gap:
            await ctx.tick()
        ctx.set(port.payload, beat)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


@dataclass
class NetworkRun:
    """What a simulation of the Network top saw."""

    outputs: list[int] = field(default_factory=list)      # output payloads in order
    output_cycles: list[int] = field(default_factory=list)
    taps: list[list[int]] = field(default_factory=list)   # per hidden layer, tap beats in order
    cycles: int = 0


def simulate_network(spec: NetworkSpec, frames_bits: np.ndarray, *, in_width: int | None = None,
                     gap: float = 0.0, stall: float = 0.0, seed: int = 0,
                     junk_beats_first: int = 0, max_cycles: int | None = None, drain: int = 0) -> NetworkRun:
    """Run frames through :class:`Network` in Amaranth's simulator and collect every output beat.

    ``gap``: probability of an idle input cycle before each beat; ``stall``: probability that the
    output's ready is low in a cycle. ``junk_beats_first`` beats of random input are sent first,
    then the sync reset is pulsed mid-stream; only what comes out after the reset is recorded.
    ``drain``: cycles to keep recording the taps after the last output (a max-pool's floor drops a
    conv's last rows, which the output then no longer waits for).
    """
    dut = Network(spec, in_width=in_width)
    top = Module()
    top.domains.sync = domain = ClockDomain("sync")
    top.submodules.dut = dut
    rng = random.Random(seed)
    beats = input_beats(spec, frames_bits, dut.in_width)
    n_frames = len(frames_bits)
    hidden = len(spec.layers) - 1
    run = NetworkRun(taps=[[] for _ in range(hidden)])
    state = {"recording": junk_beats_first == 0}
    if max_cycles is None:
        per_frame = max(spec.analytic_cycles_per_frame, len(beats) // max(1, n_frames))
        slack = 1 + 4 * max(gap, stall) / max(1e-9, 1 - max(gap, stall))
        max_cycles = int((n_frames + 4) * per_frame * slack * 2 + 200 * (len(spec.layers) + 1)
                         + 4 * junk_beats_first)

    async def driver(ctx):
        if junk_beats_first:
            junk = [rng.getrandbits(dut.in_width) for _ in range(junk_beats_first)]
            await send_beats(ctx, dut.i, junk, rng, gap)
            ctx.set(domain.rst, 1)
            for _ in range(2):          # plain ticks: repeat()/until() raise DomainReset here
                await ctx.tick()
            ctx.set(domain.rst, 0)
            state["recording"] = True
        await send_beats(ctx, dut.i, beats, rng, gap)

    tap_signals = [(getattr(dut, f"tap{k}_valid"), getattr(dut, f"tap{k}_data")) for k in range(hidden)]
    sampled = [dut.o.valid, dut.o.ready, dut.o.payload.as_value()]
    for valid, payload in tap_signals:
        sampled += [valid, payload]

    async def monitor(ctx):
        cycle = 0
        ctx.set(dut.o.ready, int(rng.random() >= stall))
        async for _clk, rst, o_valid, o_ready, o_payload, *taps in ctx.tick().sample(*sampled):
            if state["recording"] and not rst:
                if o_valid and o_ready:
                    run.outputs.append(int(o_payload))
                    run.output_cycles.append(cycle)
                for k in range(hidden):
                    if taps[2 * k]:
                        run.taps[k].append(int(taps[2 * k + 1]))
            cycle += 1
            if len(run.outputs) == n_frames:
                if state.setdefault("drained", 0) == drain:
                    break
                state["drained"] += 1
            if cycle > max_cycles:
                raise AssertionError(f"only {len(run.outputs)} of {n_frames} frames came out in "
                                     f"{max_cycles} cycles: {describe(spec, in_width)}")
            ctx.set(dut.o.ready, int(rng.random() >= stall))
        run.cycles = cycle

    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor)
    sim.run()
    return run


def check_network(spec: NetworkSpec, frames_bits: np.ndarray, run: NetworkRun, in_width=None) -> None:
    """Every frame's class index and scores, and every hidden activation, against the golden model."""
    where = describe(spec, in_width)
    golden = execute(spec, frames_bits)
    assert len(run.outputs) == len(frames_bits), f"{len(run.outputs)} outputs for {len(frames_bits)} frames: {where}"
    activations = taps_to_activations(spec, run.taps)
    for k, (got, want) in enumerate(zip(activations, golden.activations)):
        assert got.shape == want.shape, f"layer {k}: {got.shape[0]} frames of taps, want {want.shape[0]}: {where}"
        bad = np.argwhere(got != want)
        assert not bad.size, (f"layer {k} activations differ at (frame, channel) {bad[:5].tolist()}: {where}")
    for f, payload in enumerate(run.outputs):
        index, scores = decode_output(spec, payload)
        assert scores == golden.scores[f].tolist(), (
            f"frame {f}: scores {scores} != golden {golden.scores[f].tolist()}: {where}")
        assert index == golden.predictions[f], f"frame {f}: class {index} != golden {golden.predictions[f]}: {where}"


def check_random_run(spec: NetworkSpec, frames: int, seed: int, in_width: int | None = None, label=describe) -> None:
    """Random frames through the network with gaps and backpressure, checked against golden; a
    failure names the network by ``label(spec)``."""
    bits = random_frames(spec, frames, seed)
    run = simulate_network(spec, bits, in_width=in_width, gap=0.3, stall=0.3, seed=seed,
                           drain=2 * spec.analytic_cycles_per_frame)
    try:
        check_network(spec, bits, run, in_width)
    except AssertionError as e:
        raise AssertionError(f"{e} -- {label(spec)}") from None


def steady_interval(cycles: list[int], warmup: int) -> float:
    """Mean cycles between output beats after the first ``warmup`` beats."""
    steady = cycles[warmup:]
    assert len(steady) >= 2, "need at least two steady-state outputs to measure an interval"
    return (steady[-1] - steady[0]) / (len(steady) - 1)


# --- single components -------------------------------------------------------------------------
def pack_beats(frames_bits: np.ndarray, width: int, pad_rng: np.random.Generator | None = None) -> list[int]:
    """(frames, n) bits -> beats of ``width`` bits, ceil(n / width) per frame, in order.

    The last beat's padding is 0, or random when ``pad_rng`` is given (to check it is dropped).
    """
    frames, n = frames_bits.shape
    beats = -(-n // width)
    padded = np.zeros((frames, beats * width), dtype=np.uint8)
    if pad_rng is not None:
        padded[:, n:] = pad_rng.integers(0, 2, size=(frames, beats * width - n))
    padded[:, :n] = frames_bits
    return [int(w) for w in pack_words(padded.reshape(-1, width))]


def simulate_stream(dut, beats: list[int], n_out: int, *, gap: float = 0.0, stall: float = 0.0,
                    seed: int = 0, max_cycles: int = 100_000) -> tuple[list[int], list[int]]:
    """Push beats into ``dut.i`` and collect ``n_out`` beats from ``dut.o``: (payloads, their cycles)."""
    rng = random.Random(seed)
    payloads, cycles = [], []

    async def monitor(ctx):
        cycle = 0
        ctx.set(dut.o.ready, int(rng.random() >= stall))
        async for _clk, _rst, valid, ready, payload in ctx.tick().sample(
                dut.o.valid, dut.o.ready, Value.cast(dut.o.payload)):
            if valid and ready:
                payloads.append(int(payload))
                cycles.append(cycle)
            cycle += 1
            if len(payloads) == n_out:
                return
            if cycle > max_cycles:
                raise AssertionError(f"{len(payloads)} of {n_out} beats came out in {max_cycles} cycles")
            ctx.set(dut.o.ready, int(rng.random() >= stall))

    async def driver(ctx):
        await send_beats(ctx, dut.i, beats, rng, gap)

    top = Module()
    top.domains.sync = ClockDomain("sync")   # explicit: an identity adapter has no logic of its own
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor)
    sim.run()
    return payloads, cycles
