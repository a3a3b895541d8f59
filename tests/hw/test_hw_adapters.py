"""WidthAdapter alone: frame-aware regrouping of bits, dropped padding, full rate, no deadlock."""
from __future__ import annotations

import numpy as np
import pytest
from hw_harness import pack_beats, simulate_stream

from xnorflow.hw.adapters import AdapterError, RegisterSlice, WidthAdapter


def run_adapter(in_width, out_width, n, frames=4, gap=0.0, stall=0.0, seed=0):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(frames, n), dtype=np.uint8)
    # Random padding on the way in: the adapter must drop it; zeros on the way out.
    beats_in = pack_beats(bits, in_width, pad_rng=rng)
    expected = pack_beats(bits, out_width)
    dut = WidthAdapter(in_width, out_width, n)
    got, cycles = simulate_stream(dut, beats_in, len(expected), gap=gap, stall=stall, seed=seed)
    return dut, got, expected, cycles


def random_widths(seed):
    rng = np.random.default_rng(seed)
    return int(rng.integers(1, 70)), int(rng.integers(1, 70)), int(rng.integers(1, 300))


@pytest.mark.parametrize("seed", range(12))
def test_random_widths_with_gaps_and_backpressure(seed):
    in_width, out_width, n = random_widths(seed)
    _, got, expected, _ = run_adapter(in_width, out_width, n, gap=0.3, stall=0.3, seed=seed)
    assert got == expected, f"in_width={in_width} out_width={out_width} n={n} seed={seed}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 200))
def test_random_widths_sweep(seed):
    test_random_widths_with_gaps_and_backpressure(seed)


@pytest.mark.parametrize("in_width, out_width, n", [
    (16, 16, 64),    # identity
    (16, 16, 70),    # same width, padded last beat is masked
    (64, 16, 64), (16, 64, 64), (3, 2, 11), (2, 3, 11), (1, 7, 13), (7, 1, 13), (50, 64, 30),
    (6, 114, 1024), (3, 12, 4), (5, 10, 3),     # deserializers ending in a partial input beat
    (256, 8, 2304), (12, 3, 10), (12, 4, 5), (9, 3, 2),   # serializers, some with partial input beats
])
def test_corner_widths(in_width, out_width, n):
    dut, got, expected, _ = run_adapter(in_width, out_width, n, frames=5, gap=0.2, stall=0.2, seed=n)
    assert got == expected
    assert dut.is_identity == (in_width == out_width and n % in_width == 0)


def deserializer_widths(seed):
    """An output width a multiple of the input's (the deserializer); every other frame ends in a
    partial input beat."""
    rng = np.random.default_rng(seed)
    in_width = int(rng.integers(1, 20))
    n = in_width * int(rng.integers(1, 40)) - (int(rng.integers(0, in_width)) if seed % 2 else 0)
    return in_width, in_width * int(rng.integers(2, 9)), max(1, n)


@pytest.mark.parametrize("seed, widths", [(seed, random_widths(100 + seed)) for seed in range(8)]
                         + [(seed, deserializer_widths(500 + seed)) for seed in range(6)])
def test_never_the_bottleneck(seed, widths):
    """With both sides always willing, frames take max(input beats, output beats) cycles each."""
    in_width, out_width, n = widths
    frames = 6
    dut, got, expected, cycles = run_adapter(in_width, out_width, n, frames=frames, seed=seed)
    assert got == expected
    bound = frames * max(dut.in_beats, dut.out_beats) + 3     # + latency of the bit buffer
    assert cycles[-1] <= bound, (f"in_width={in_width} out_width={out_width} n={n}: "
                                 f"{cycles[-1]} cycles for {frames} frames, bound {bound}")


def serializer_widths(seed):
    """An input width a multiple of the output's (the serializer); every other frame ends in a
    partial input beat, some of whose slices are not sent."""
    rng = np.random.default_rng(seed)
    out_width = int(rng.integers(1, 20))
    in_width = out_width * int(rng.integers(2, 9))
    n = in_width * int(rng.integers(1, 12)) - (int(rng.integers(0, in_width)) if seed % 2 else 0)
    return in_width, out_width, max(1, n)


@pytest.mark.parametrize("kind, widths", [("deserializer", deserializer_widths), ("serializer", serializer_widths)])
@pytest.mark.parametrize("seed", range(12))
def test_whole_multiple_adapters_with_gaps_and_backpressure(kind, widths, seed):
    in_width, out_width, n = widths(seed)
    dut, got, expected, _ = run_adapter(in_width, out_width, n, gap=0.3, stall=0.3, seed=seed)
    assert dut.kind == kind
    assert got == expected, f"in_width={in_width} out_width={out_width} n={n} seed={seed}"


@pytest.mark.parametrize("seed", range(6))
def test_serializer_runs_at_full_rate(seed):
    """One output beat per cycle, a new input beat taken as the last slice of the one before goes."""
    in_width, out_width, n = serializer_widths(700 + seed)
    frames = 6
    dut, got, expected, cycles = run_adapter(in_width, out_width, n, frames=frames, seed=seed)
    assert got == expected
    assert cycles[-1] - cycles[0] == frames * dut.out_beats - 1


def test_bad_widths_are_refused():
    with pytest.raises(AdapterError, match="in_width"):
        WidthAdapter(0, 8, 8)


@pytest.mark.parametrize("seed", range(4))
def test_register_slice_keeps_order_under_backpressure(seed):
    rng = np.random.default_rng(seed)
    words = [int(w) for w in rng.integers(0, 2**13, size=200)]
    got, _ = simulate_stream(RegisterSlice(13), words, len(words), gap=0.3, stall=0.4, seed=seed)
    assert got == words


def test_register_slice_runs_at_full_rate():
    words = list(range(100))
    got, cycles = simulate_stream(RegisterSlice(8), words, len(words))
    assert got == words
    assert cycles[-1] - cycles[0] == len(words) - 1      # one word per cycle, no bubble
