"""The conv and max-pool ops: alone and in networks, against golden, in Amaranth's simulator."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Fragment
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
from xnorflow.hw.ops.conv import ConvEngine, ConvOp, padded_images, window_beat
from xnorflow.hw.ops.int_conv import IntConvOp
from xnorflow.hw.ops.maxpool import MaxPool, MaxPoolOp
from xnorflow.hw.spec import LayerSpec, NetworkSpec, SpecError, ceil_div, conv_layer, maxpool_layer
from xnorflow.hw.swg import SlidingWindowGenerator
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
    # NF * SF = 2 * 6 >= K*K: one pixel (C bits) per beat, nine beats per window.
    assert window_beat(layer) == (1, 1) and op._window_bits() == 3
    # NF * SF = 1: read the whole window per beat; the writer's H * W bounds a valid conv's cycles.
    full = a_conv(padding=0, pe=4, simd=27)
    assert window_beat(full) == (3, 3) and op_for(full).cycles == max(4 * 3, 30)
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


def folded_conv(kernel: int, folds: int, channels: int = 3, input_bits: int = 1) -> LayerSpec:
    """A conv on a 3 x 6 x 6 image whose MVTU spends exactly ``folds`` = NF cycles per window (SF = 1)."""
    rng = np.random.default_rng(kernel * 100 + folds)
    n_in = kernel * kernel * channels
    weights = rng.integers(0, 2, size=(folds, n_in), dtype=np.uint8)
    thresholds = rng.integers(-n_in, n_in, size=folds) if input_bits > 1 else random_thresholds(rng, n_in, folds)
    return conv_layer((channels, 6, 6), weights, thresholds, kernel=kernel, padding=kernel // 2, pe=1, simd=n_in,
                      input_bits=input_bits, pad_value=0)


@pytest.mark.parametrize("kernel", range(1, 6))
@pytest.mark.parametrize("input_bits", [1, 4])
def test_window_beat_is_one_pixel_from_k_squared_folds(kernel, input_bits):
    """NF * SF >= K*K: C elements per beat, K*K beats per window; fewer folds: G = ceil(K / (NF * SF))
    rows of K pixels per beat. The engine's generator and the op's estimate follow the same geometry."""
    op_kind = IntConvOp if input_bits > 1 else ConvOp
    pixel = 3 * input_bits
    for folds in sorted({max(1, kernel * kernel - 1), kernel * kernel, kernel * kernel + 1, 1}):
        layer = folded_conv(kernel, folds, input_bits=input_bits)
        assert layer.neuron_folds * layer.synapse_folds == folds
        op = op_kind(layer)
        engine = op.component()
        if folds >= kernel * kernel:
            geometry, beat_bits = (1, 1), pixel
        else:
            g = ceil_div(kernel, folds)
            geometry, beat_bits = (g, kernel), g * kernel * pixel
        assert window_beat(layer) == geometry == (engine.group, engine.columns), (kernel, folds)
        assert op._window_bits() == beat_bits and op.logic_terms()["window_bit"] == beat_bits
        swg = SlidingWindowGenerator(pixel, 6, 6, kernel, kernel // 2, 0, *geometry)
        assert swg.o.payload.shape().width == beat_bits
        assert swg.beats == (kernel * kernel if geometry[1] == 1 else ceil_div(kernel, geometry[0]))
        assert swg.beats <= folds
        Fragment.get(engine, None), Fragment.get(swg, None)      # both build
        # The line buffer is the same either way: G x K banks.
        line = next(m for m in op.memories() if m["role"] == "line buffer")
        assert line["count"] == geometry[0] * kernel and line["width"] == pixel
    # At the switch the beat narrows from one window row (G = 1 for K*K - 1 folds) to one pixel, and
    # the generator's flip-flops with it.
    below, at = (ConvOp(folded_conv(kernel, f)) for f in (max(1, kernel * kernel - 1), kernel * kernel))
    if kernel > 1:
        assert below._window_bits() == kernel * at._window_bits()
        assert at.flip_flops() - at.matrix_op(at.layer).flip_flops() < \
            below.flip_flops() - below.matrix_op(below.layer).flip_flops()


def test_window_generator_refuses_other_beat_geometries():
    for group, columns in [(1, 1), (2, 3), (3, None)]:
        Fragment.get(SlidingWindowGenerator(2, 5, 5, 3, 1, 0, group=group, columns=columns), None)
    for group, columns in [(1, 2), (2, 1), (1, 4), (1, 0)]:
        with pytest.raises(SpecError, match=rf"G={group}, J={columns} cannot be built: .* J = 1 with G = 1"):
            SlidingWindowGenerator(2, 5, 5, 3, 1, 0, group=group, columns=columns)


def expected_window_beats(frames: np.ndarray, c: int, h: int, w: int, k: int, p: int, pad: int, group: int,
                          columns: int) -> list[int]:
    """Every window of every frame, as the generator's beats of G rows of J pixels (padded rows 0)."""
    layer = replace(a_conv(), in_shape=(c, h, w), kernel=k, padding=p, pad_value=pad)
    images = padded_images(frames, layer)                      # (frames, H + 2P, W + 2P, C)
    pixels = np.asarray(pack_beats(images.reshape(-1, c), c), dtype=object).reshape(images.shape[:3])
    beats = []
    for image in pixels:
        for oy in range(h + 2 * p - k + 1):
            for ox in range(w + 2 * p - k + 1):
                window = image[oy:oy + k, ox:ox + k]
                if columns == 1:
                    beats += [int(v) for v in window.reshape(-1)]          # (ky, kx), one pixel a beat
                    continue
                for band in range(ceil_div(k, group)):
                    beat = 0
                    for i, row in enumerate(window[band * group:(band + 1) * group]):
                        for kx, v in enumerate(row):
                            beat |= int(v) << ((i * k + kx) * c)
                    beats.append(beat)
    return beats


def check_window_beats(got: list[int], want: list[int], beats_per_window: int, case) -> None:
    """The generator's beats are the expected ones; a failure names the first wrong beat's window."""
    bad = next((n for n, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert bad is None, (f"beat {bad % beats_per_window} of window {bad // beats_per_window}: "
                         f"{got[bad]:#x} != {want[bad]:#x} (C, H, W, K, P, pad, G, J) = {case}")
    assert len(got) == len(want), f"{len(got)} beats, want {len(want)}: {case}"


def window_generator_case(kernel: int, padding: int, seed: int) -> tuple[int, int, int, int]:
    """(C, H, W, pad bit): odd and even sizes from the smallest the padded window fits to K + 4."""
    rng = np.random.default_rng(seed)
    low = max(1, kernel - 2 * padding)
    return (int(rng.integers(1, 5)), int(rng.integers(low, kernel + 5)), int(rng.integers(low, kernel + 5)),
            (kernel + padding + seed) % 2)


@pytest.mark.parametrize("kernel, padding", [(k, p) for k in range(1, 6) for p in range(k)])
def test_window_generator_one_pixel_per_beat(kernel, padding):
    """Pixels geometry (J = 1): beat r of each window is pixel (r // K, r % K), pad bits outside the
    image, through gaps and backpressure, over three frames (the writer runs into the next frame)."""
    c, h, w, pad = window_generator_case(kernel, padding, seed=kernel * 10 + padding)
    frames = np.random.default_rng(padding).integers(0, 2, size=(3, h * w * c), dtype=np.uint8)
    swg = SlidingWindowGenerator(c, h, w, kernel, padding, pad, group=1, columns=1)
    assert swg.o.payload.shape().width == c and swg.beats == kernel * kernel
    want = expected_window_beats(frames, c, h, w, kernel, padding, pad, 1, 1)
    got, _ = simulate_stream(swg, pack_beats(frames.reshape(-1, c), c), len(want), gap=0.3, stall=0.3,
                             seed=kernel + padding)
    check_window_beats(got, want, swg.beats, (c, h, w, kernel, padding, pad, 1, 1))


@pytest.mark.parametrize("kernel, padding, group", [(3, 1, 1), (3, 2, 2), (4, 1, 3), (5, 3, 5), (2, 0, 2)])
def test_window_generator_rows_per_beat(kernel, padding, group):
    """Rows geometry (J = K): beat g holds window rows g*G .. g*G + G - 1, rows past K - 1 zero."""
    c, h, w, pad = window_generator_case(kernel, padding, seed=kernel * 10 + padding + 5)
    frames = np.random.default_rng(group).integers(0, 2, size=(3, h * w * c), dtype=np.uint8)
    swg = SlidingWindowGenerator(c, h, w, kernel, padding, pad, group=group)
    want = expected_window_beats(frames, c, h, w, kernel, padding, pad, group, kernel)
    got, _ = simulate_stream(swg, pack_beats(frames.reshape(-1, c), c), len(want), gap=0.3, stall=0.3, seed=group)
    check_window_beats(got, want, swg.beats, (c, h, w, kernel, padding, pad, group, kernel))


@pytest.mark.parametrize("group, columns", [(1, 1), (1, 3), (2, 3)])
def test_window_generator_at_full_rate(group, columns):
    """No gaps, no backpressure: after the first window is written, one beat every cycle (the
    reader's R beats per window outlast the writer's W pixels per row)."""
    c, h, w, k, p = 2, 6, 7, 3, 1
    frames = np.random.default_rng(0).integers(0, 2, size=(2, h * w * c), dtype=np.uint8)
    swg = SlidingWindowGenerator(c, h, w, k, p, 1, group=group, columns=columns)
    want = expected_window_beats(frames, c, h, w, k, p, 1, group, columns)
    got, cycles = simulate_stream(swg, pack_beats(frames.reshape(-1, c), c), len(want))
    check_window_beats(got, want, swg.beats, (c, h, w, k, p, 1, group, columns))
    assert cycles[-1] - cycles[0] == len(want) - 1


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


@pytest.mark.parametrize("kernel, padding, pe, simd", [
    (3, 1, 3, 5),       # NF * SF = 12: one pixel per beat, 3 -> 5 bits through a gearbox
    (2, 0, 4, 12),      # NF * SF = 1: the whole window in one beat
    (1, 0, 2, 2),
    (3, 0, 4, 27),
    (3, 1, 4, 3),       # NF * SF = 9 = K*K: one pixel per beat at full rate, no adapter
    (5, 2, 1, 6),       # NF * SF = 4 x 13: one pixel per beat into a 3 -> 6 bit deserializer
    (4, 1, 2, 4),       # NF * SF = 2 x 12 < 16: one row of K pixels per beat
])
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


def test_random_conv_specs_exercise_both_window_beats():
    """The random specs above (and the int_conv ones of test_int_ops.py) read windows both ways: a
    pixel per beat with K > 1, and rows per beat, with one row (G = 1) and several (G > 1)."""
    specs = [random_conv_spec(seed) for seed in (*range(10), *range(300, 303))]
    specs += [random_conv_spec(seed, input_bits=b) for seed, b in enumerate([8, 3, 5, 2])]
    seen = {"pixels": set(), "rows": set()}
    for spec in specs:
        for layer in spec.layers:
            if layer.kind in ("conv", "int_conv"):
                g, j = window_beat(layer)
                seen["pixels" if j == 1 else "rows"].add((layer.kernel, g, layer.kind))
    assert {k for k, _, _ in seen["pixels"]} >= {2, 3, 4, 5}
    assert {g > 1 for _, g, _ in seen["rows"]} == {False, True}
    assert any(kind == "int_conv" and k > 1 for k, _, kind in seen["pixels"])


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
    ((1, 1), 2, 1),       # the slowest: 6 x 8 cycles per pixel, one pixel per beat
    ((6, 50), 5, 1),      # K = 5, NF * SF = 1 (G = 5)
    ((2, 7), 5, 0),       # K = 5 valid conv: the writer's H x W may bind
    ((6, 2), 3, 1),       # NF * SF = 9 = K*K: one pixel per beat, every cycle, no adapter
    ((6, 3), 3, 1),       # NF * SF = 6 < 9: rows again (G = 1), 6 x 3 bits through a gearbox
    ((3, 4), 3, 1),       # NF * SF = 10: pixels through a 2 -> 4 bit deserializer
    ((3, 3), 3, 0),       # NF * SF = 12: pixels through a 2 -> 3 bit gearbox; valid conv
    ((6, 2), 5, 2),       # K = 5, NF * SF = 25 = K*K: pixels at full rate
    ((2, 2), 5, 1),       # K = 5, NF * SF = 75: pixels
])
def test_conv_measured_ii_matches_analytic(folding, kernel, padding):
    spec = conv_net(folding, kernel=kernel, padding=padding)
    conv = spec.layers[0]
    assert (window_beat(conv)[1] == 1) == (conv.neuron_folds * conv.synapse_folds >= kernel * kernel)
    measured, analytic = measure_conv_ii(spec), spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe_conv(spec)}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 230))
def test_random_conv_spec_ii_matches_analytic(seed):
    """The measured II of random conv / pool / dense nets (random folding) is the analytic one."""
    spec = random_conv_spec(seed, max_c=16, max_hw=12, max_out=12, max_folds=8)
    measured, analytic = measure_conv_ii(spec, frames=4, warmup=1), spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe_conv(spec)}"
