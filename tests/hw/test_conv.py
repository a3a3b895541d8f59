"""The conv and max-pool ops: alone and in networks, against golden, in Amaranth's simulator."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conv_specs import describe_conv, random_conv_spec
from hw_harness import (
    check_network,
    check_random_run,
    pack_beats,
    random_frames,
    random_thresholds,
    simulate_network,
    simulate_stream,
    steady_interval,
    with_random_packing,
)

from xnorflow.hw.ops import op_for
from xnorflow.hw.ops.conv import ConvEngine, ConvOp, window_group
from xnorflow.hw.ops.maxpool import MaxPool, MaxPoolOp
from xnorflow.hw.spec import LayerSpec, NetworkSpec, SpecError, conv_layer, maxpool_layer
from xnorflow.sim import golden


def a_conv(shape=(3, 6, 5), out=4, kernel=3, padding=1, pad_value=1, pe=3, simd=5, seed=0) -> LayerSpec:
    rng = np.random.default_rng(seed)
    n_in = kernel * kernel * shape[0]
    return conv_layer(shape, rng.integers(0, 2, size=(out, n_in), dtype=np.uint8), random_thresholds(rng, n_in, out),
                      kernel=kernel, padding=padding, pad_value=pad_value, pe=pe, simd=simd)


# --- the ops' facts and validation ---------------------------------------------------------------
def test_conv_geometry_cycles_and_group():
    layer = a_conv()
    op = op_for(layer)
    assert layer.out_shape == (4, 6, 5) and layer.n_in == 27
    assert op.cycles == 30 * 2 * 6 and op.beats_per_frame == 30 * 2
    assert (op.in_width, op.in_unit, op.out_width, op.out_unit) == (3, 3, 3, 4)
    # NF * SF = 1: read the whole window per beat; the writer's H * W bounds a valid conv's cycles.
    full = a_conv(padding=0, pe=4, simd=27)
    assert window_group(full) == 3 and op_for(full).cycles == max(4 * 3, 30)
    assert {m["role"] for m in op.memories()} == {"weights", "input buffer", "thresholds", "line buffer"}


@pytest.mark.parametrize("change, message", [
    ({"stride": 2}, "stride 2; the conv op builds stride 1 only"),
    ({"padding": 3}, r"supported: K >= 1 and 0 <= padding < K"),
    ({"thresholds": None}, "must be dense"),
    ({"out_shape": (4, 3, 3)}, "dilation is not supported"),
    ({"pad_value": 2}, "pad value 2"),
])
def test_conv_refusals_name_the_layer_in_one_line(change, message):
    layer = replace(a_conv(), **change)
    with pytest.raises(SpecError, match=message) as info:
        op_for(layer, 2).validate(2)
    assert str(info.value).startswith("layer 2 (conv)") and "\n" not in str(info.value)


def test_a_kernel_larger_than_the_padded_input_is_refused():
    layer = a_conv(shape=(1, 3, 3), kernel=5, padding=0)
    with pytest.raises(SpecError, match="kernel 5 is larger than the padded input 3 x 3"):
        ConvEngine(layer)


def test_maxpool_refusals():
    layer = maxpool_layer((2, 5, 5), 2)
    MaxPoolOp(layer).validate()
    with pytest.raises(SpecError, match="supported: size S >= 1 with stride S"):
        MaxPoolOp(replace(layer, stride=1)).validate()
    with pytest.raises(SpecError, match="has no output"):
        MaxPool(maxpool_layer((2, 2, 5), 3))


def test_spatial_shapes_must_chain_but_a_vector_may_become_pixels():
    conv = a_conv(shape=(3, 4, 4))                       # -> (4, 4, 4)
    scores = LayerSpec(64, 2, np.zeros((2, 64), dtype=np.uint8), None)
    with pytest.raises(SpecError, match=r"layer 1 takes C x H x W \(8, 2, 4\) but layer 0 gives \(4, 4, 4\)"):
        NetworkSpec((conv, maxpool_layer((8, 2, 4), 2), LayerSpec(8, 2, np.zeros((2, 8), dtype=np.uint8), None))).validate()
    # A dense layer's 48 bits read as a 4 x 4 image of 3 channels in (y, x, c) order: allowed.
    dense = LayerSpec(10, 48, np.zeros((48, 10), dtype=np.uint8), np.zeros(48, dtype=np.int64))
    NetworkSpec((dense, conv, scores)).validate()


# --- each op's component alone against its reference ---------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_maxpool_alone_matches_reference(seed):
    rng = np.random.default_rng(seed)
    c, h, w, s = int(rng.integers(1, 9)), int(rng.integers(3, 10)), int(rng.integers(3, 10)), int(rng.integers(1, 4))
    layer = maxpool_layer((c, h, w), s, pool_and=rng.integers(0, 2, size=c))
    op = MaxPoolOp(layer)
    frames = rng.integers(0, 2, size=(3, c * h * w), dtype=np.uint8)
    beats = pack_beats(frames.reshape(-1, c), c)
    out, _ = simulate_stream(MaxPool(layer), beats, 3 * op.beats_per_frame, gap=0.3, stall=0.3, seed=seed)
    assert np.array_equal(op.decode(out), op.reference(frames)), (c, h, w, s)


@pytest.mark.parametrize("kernel, padding, pe, simd", [(3, 1, 3, 5), (2, 0, 4, 12), (1, 0, 2, 2), (3, 0, 4, 27)])
def test_conv_engine_alone_matches_reference(kernel, padding, pe, simd):
    layer = a_conv(shape=(3, 5, 4), kernel=kernel, padding=padding, pe=pe, simd=min(simd, kernel * kernel * 3))
    op = ConvOp(layer)
    frames = np.random.default_rng(kernel).integers(0, 2, size=(2, layer.in_shape[0] * 20), dtype=np.uint8)
    beats = pack_beats(frames.reshape(-1, 3), 3)
    out, _ = simulate_stream(ConvEngine(layer), beats, 2 * op.beats_per_frame, gap=0.3, stall=0.3, seed=kernel)
    assert np.array_equal(op.decode(out), op.reference(frames))
    # The golden kernel agrees with the reference too.
    _, bits = golden.GOLDEN_KERNELS["conv"](op, golden.pack_rows(frames))
    assert np.array_equal(bits, op.reference(frames))


# --- networks: random conv / pool / dense chains -------------------------------------------------
def run_conv_spec(seed: int, frames: int, packed: bool = False, **limits) -> None:
    spec = random_conv_spec(seed, **limits)
    if packed:
        spec = with_random_packing(spec, seed)
    in_width = None if seed % 4 else int(np.random.default_rng(seed).integers(1, 40))   # a host gearbox
    check_random_run(spec, frames, seed, in_width, describe_conv)


@pytest.mark.parametrize("seed", range(10))
def test_random_conv_specs_match_golden(seed):
    run_conv_spec(seed, frames=2)


@pytest.mark.parametrize("seed", range(300, 303))
def test_random_conv_specs_with_packed_weights_match_golden(seed):
    run_conv_spec(seed, frames=2, packed=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 120))
def test_random_conv_spec_sweep(seed):
    """K 1-5, C 1-70, H and W 3-20, padding 0/1 with either bit, folding not dividing, pools before
    and after convs; random gaps and backpressure."""
    run_conv_spec(seed, frames=2, max_c=70 if seed % 3 == 0 else 12, max_hw=20 if seed % 3 else 10,
                  max_out=24, max_folds=8)


def measure_conv_ii(spec: NetworkSpec, frames: int = 5, warmup: int = 2) -> float:
    bits = random_frames(spec, frames, 3)
    run = simulate_network(spec, bits, drain=spec.analytic_cycles_per_frame)   # no gaps, no backpressure
    check_network(spec, bits, run)
    return steady_interval(run.output_cycles, warmup)


def conv_net(folding: tuple[int, int], shape=(2, 8, 8), kernel=3, padding=1, out=6, pool=2) -> NetworkSpec:
    conv = a_conv(shape=shape, out=out, kernel=kernel, padding=padding, pe=folding[0], simd=folding[1])
    layers = [conv]
    if pool:
        layers.append(maxpool_layer(conv.out_shape, pool))
    n = int(np.prod(layers[-1].out_shape))
    rng = np.random.default_rng(5)
    layers.append(LayerSpec(n, 10, rng.integers(0, 2, size=(10, n), dtype=np.uint8), random_thresholds(rng, n, 10),
                            pe=5, simd=16))
    layers.append(LayerSpec(10, 4, rng.integers(0, 2, size=(4, 10), dtype=np.uint8), None, pe=2, simd=10))
    spec = NetworkSpec(tuple(layers), name="convnet")
    spec.validate()
    return spec


@pytest.mark.parametrize("folding, kernel, padding", [
    ((6, 18), 3, 1),      # NF * SF = 1: the generator reads a whole window per beat
    ((3, 18), 3, 1),      # NF = 2, SF = 1
    ((6, 6), 3, 1),       # SF = 3 beats of one window row each
    ((4, 5), 3, 0),       # neither divides; valid conv
    ((1, 1), 2, 1),       # the slowest: 6 x 8 cycles per pixel
    ((6, 50), 5, 1),      # K = 5, NF * SF = 1 (G = 5)
    ((2, 7), 5, 0),       # K = 5 valid conv: the writer's H x W may bind
])
def test_conv_measured_ii_matches_analytic(folding, kernel, padding):
    spec = conv_net(folding, kernel=kernel, padding=padding)
    measured, analytic = measure_conv_ii(spec), spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe_conv(spec)}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 230))
def test_random_conv_spec_ii_matches_analytic(seed):
    """The measured II of random conv / pool / dense nets (random folding) is the analytic one."""
    spec = random_conv_spec(seed, max_c=16, max_hw=12, max_out=12, max_folds=8)
    measured, analytic = measure_conv_ii(spec, frames=4, warmup=1), spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe_conv(spec)}"
