"""The integer-input ops (int_dense, int_conv: DESIGN.md section 2b): facts and refusals, the engine
alone against the op's reference with gaps and backpressure and its measured II, and whole networks
with an integer first layer against golden, all in Amaranth's simulator."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conv_specs import describe_conv, random_conv_spec
from hw_harness import (
    check_network,
    check_random_run,
    describe,
    int_dense_layer,
    pack_beats,
    random_frames,
    random_spec,
    simulate_network,
    simulate_stream,
    steady_interval,
)

from xnorflow.hw.intmvu import sum_bound
from xnorflow.hw.ops import op_for
from xnorflow.hw.ops.int_conv import IntConvEngine
from xnorflow.hw.ops.int_dense import pack_elements, unpack_elements
from xnorflow.hw.spec import LayerSpec, NetworkSpec, SpecError, conv_layer, maxpool_layer
from xnorflow.sim import golden


def an_int_dense(n_in=13, n_out=5, input_bits=4, pe=2, simd=5, seed=0) -> LayerSpec:
    return int_dense_layer(np.random.default_rng(seed), n_in, n_out, input_bits, pe, simd)


def an_int_conv(shape=(3, 5, 4), out=4, kernel=3, padding=1, input_bits=8, pe=3, simd=5, seed=0) -> LayerSpec:
    rng = np.random.default_rng(seed)
    n_in = kernel * kernel * shape[0]
    weights = rng.integers(0, 2, size=(out, n_in), dtype=np.uint8)
    thresholds = rng.integers(-60 * n_in, 60 * n_in, size=out)
    return conv_layer(shape, weights, thresholds, kernel=kernel, padding=padding, pe=pe, simd=min(simd, n_in),
                      input_bits=input_bits)


# --- facts and refusals --------------------------------------------------------------------------
def test_int_dense_facts():
    layer = an_int_dense(n_in=13, n_out=5, input_bits=4, pe=2, simd=5)
    op = op_for(layer)
    assert op.kind == "int_dense" and not op.emits_scores
    assert (op.in_width, op.in_unit, op.out_width, op.out_unit) == (20, 52, 2, 5)
    assert op.cycles == 3 * 3 and op.beats_per_frame == 3 and op.submodule_name(0) == "intmvu0"
    memories = {m["role"]: m for m in op.memories()}
    assert memories["weights"]["width"] == 5 and memories["input buffer"]["width"] == 20
    # Thresholds are stored in [-S, S + 1], S = 13 * 15 = 195: 9 bits signed (the ROM Yosys maps is
    # narrower by the bit columns that are constant in every word).
    assert sum_bound(layer) == 195 and op.threshold_bits == 9 and 0 < memories["thresholds"]["width"] <= 2 * 9
    assert op.flip_flops() > 0 and op.logic_terms()["int_lane_bit"] == 3 * 5 * 4


def test_network_input_bits_count_b_bits_per_element():
    first = an_int_dense(n_in=10, n_out=6, input_bits=8)
    scores = LayerSpec(6, 3, np.zeros((3, 6), dtype=np.uint8), None)
    spec = NetworkSpec((first, scores))
    spec.validate()
    assert spec.input_bits == 80
    conv = an_int_conv(shape=(2, 4, 4), input_bits=5)
    n = int(np.prod(conv.out_shape))
    assert NetworkSpec((conv, LayerSpec(n, 2, np.zeros((2, n), dtype=np.uint8), None))).input_bits == 2 * 16 * 5


def test_elements_pack_lsb_first():
    bits = pack_elements(np.array([[5, 0, 7]]), 3)
    assert bits.tolist() == [[1, 0, 1, 0, 0, 0, 1, 1, 1]]
    assert unpack_elements(bits, 3).tolist() == [[5, 0, 7]]
    with pytest.raises(SpecError, match="3-bit inputs take 0..7"):
        pack_elements(np.array([[8]]), 3)


@pytest.mark.parametrize("layer, index, message", [
    (replace(an_int_dense(), input_bits=1), 0, r"input_bits 1; integer inputs take 2 to 16 bits"),
    (replace(an_int_dense(), input_bits=17), 0, r"input_bits 17; integer inputs take 2 to 16 bits"),
    (replace(an_int_dense(), thresholds=None), 0, "an integer-input layer gives activation bits"),
    (an_int_dense(), 1, r"layer 1 \(int_dense\) takes integer inputs, but only the first layer"),
    (replace(an_int_dense(), kind="dense"), 0, "input_bits 4 on a binary layer; .* int_dense or int_conv"),
    (replace(an_int_conv(), pad_value=1), 0, r"pad value 1; an integer-input conv pads with the input value 0"),
    (replace(an_int_conv(), kind="conv"), 0, "input_bits 8 on a binary layer"),
    (replace(an_int_conv(), stride=2), 0, r"layer 0 \(int_conv\): stride 2"),
])
def test_bad_integer_layers_are_refused_in_one_line(layer, index, message):
    with pytest.raises(SpecError, match=message) as info:
        op_for(layer, index).validate(index)
    assert "\n" not in str(info.value)


def test_an_integer_layer_after_the_first_is_refused_by_the_network():
    hidden = LayerSpec(6, 10, np.zeros((10, 6), dtype=np.uint8), np.zeros(10, dtype=np.int64))
    scores = LayerSpec(5, 2, np.zeros((2, 5), dtype=np.uint8), None)
    with pytest.raises(SpecError, match=r"layer 1 \(int_dense\) takes integer inputs"):
        NetworkSpec((hidden, an_int_dense(n_in=10, n_out=5), scores)).validate()


# --- the engines alone against the op's reference ------------------------------------------------
def run_int_dense(layer: LayerSpec, seed: int, frames: int = 3) -> None:
    """Frames through the engine alone with gaps and backpressure (exact against the reference and
    the golden kernel), then without both: the steady interval between frames is NF * SF."""
    op = op_for(layer)
    where = f"int_dense {layer.n_in}->{layer.n_out} b={layer.input_bits} pe={layer.pe} simd={layer.simd}"
    bits = np.random.default_rng(seed).integers(0, 2, size=(frames, op.in_unit), dtype=np.uint8)
    want = op.reference(bits)
    assert np.array_equal(golden.GOLDEN_KERNELS["int_dense"](op, golden.pack_rows(bits))[1], want), where
    beats = pack_beats(bits, op.in_width)
    out, _ = simulate_stream(op.component(), beats, frames * op.beats_per_frame, gap=0.3, stall=0.3, seed=seed)
    assert np.array_equal(op.decode(out), want), where
    timed = 5
    beats = pack_beats(np.resize(bits, (timed, bits.shape[1])), op.in_width)
    _, cycles = simulate_stream(op.component(), beats, timed * op.beats_per_frame, seed=seed)
    frame_starts = cycles[::op.beats_per_frame]
    assert steady_interval(frame_starts, 2) == op.cycles, where


def random_int_layer(seed: int) -> LayerSpec:
    """b 2..8, N 1..300, up to 24 outputs, random PE and SIMD (dividing or not) within 200 cycles a
    frame and 96 lanes (the simulator compiles every adder tree)."""
    rng = np.random.default_rng(seed)
    b, n_in, n_out = int(rng.integers(2, 9)), int(rng.integers(1, 301)), int(rng.integers(1, 25))
    while True:
        pe, simd = int(rng.integers(1, n_out + 1)), int(rng.integers(1, min(n_in, 96) + 1))
        if pe * simd <= 96 and -(-n_out // pe) * -(-n_in // simd) <= 200:
            return int_dense_layer(rng, n_in, n_out, b, pe, simd)


@pytest.mark.parametrize("seed", range(10))
def test_random_int_dense_layers_match_reference(seed):
    run_int_dense(random_int_layer(seed), seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 110))
def test_random_int_dense_layer_sweep(seed):
    """100 more random integer-input layers (b 2-8, N 1-300, folding not dividing, thresholds below
    the smallest and above the largest sum): exact with gaps and backpressure, II = NF * SF."""
    run_int_dense(random_int_layer(seed), seed)


def test_extreme_inputs_and_thresholds_at_the_bounds():
    """Every input at its largest and at 0, thresholds exactly at +-S and S + 1, the widest sums."""
    layer = an_int_dense(n_in=7, n_out=6, input_bits=8, pe=4, simd=3)
    bound = sum_bound(layer)
    weights = np.zeros((6, 7), dtype=np.uint8)
    weights[1::2] = 1
    layer = replace(layer, weights=weights, thresholds=np.array([-bound, bound + 1, -bound + 1, bound, 0, 1]))
    op = op_for(layer)
    values = np.array([[255] * 7, [0] * 7, [255, 0, 255, 0, 255, 0, 255]])
    bits = pack_elements(values, 8)
    out, _ = simulate_stream(op.component(), pack_beats(bits, op.in_width), 3 * op.beats_per_frame, gap=0.2,
                             stall=0.2)
    assert np.array_equal(op.decode(out), op.reference(bits))
    # Rows of weight -1 sum to -S on the first frame, rows of +1 to S: each threshold at its edge.
    assert op.reference(bits)[0].tolist() == [1, 0, 0, 1, 0, 1]


@pytest.mark.parametrize("kernel, padding, pe, simd, input_bits", [
    (3, 1, 3, 5, 8), (2, 0, 4, 12, 3), (1, 0, 2, 2, 2), (3, 0, 4, 27, 5)])
def test_int_conv_engine_alone_matches_reference(kernel, padding, pe, simd, input_bits):
    layer = an_int_conv(shape=(3, 5, 4), kernel=kernel, padding=padding, pe=pe, simd=simd, input_bits=input_bits)
    op = op_for(layer)
    assert op.in_width == op.in_unit == 3 * input_bits
    frames = np.random.default_rng(kernel).integers(0, 2, size=(2, 20 * op.in_width), dtype=np.uint8)
    beats = pack_beats(frames.reshape(-1, op.in_width), op.in_width)
    out, _ = simulate_stream(IntConvEngine(layer), beats, 2 * op.beats_per_frame, gap=0.3, stall=0.3, seed=kernel)
    assert np.array_equal(op.decode(out), op.reference(frames))
    _, bits = golden.GOLDEN_KERNELS["int_conv"](op, golden.pack_rows(frames))
    assert np.array_equal(bits, op.reference(frames))


# --- networks with an integer first layer --------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_random_int_dense_networks_match_golden(seed):
    b = 2 + seed * 2
    spec = random_spec(seed, max_in=120, max_out=24, input_bits=b)
    # seeds 1 and 3: the host sends beats of another width, through a gearbox of b-bit elements
    in_width = None if seed % 2 == 0 else int(np.random.default_rng(seed).integers(1, 40))
    check_random_run(spec, 3, seed, in_width)


@pytest.mark.parametrize("seed", range(4))
def test_random_int_conv_networks_match_golden(seed):
    spec = random_conv_spec(seed, input_bits=[8, 3, 5, 2][seed])
    assert spec.layers[0].kind == "int_conv"
    check_random_run(spec, 2, seed, None if seed % 2 else 8, describe_conv)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 40))
def test_random_int_network_sweep(seed):
    b = int(np.random.default_rng(seed).integers(2, 9))
    if seed % 2:
        check_random_run(random_spec(seed, max_in=200, max_out=32, input_bits=b), 2, seed)
    else:
        check_random_run(random_conv_spec(seed, max_c=6, max_hw=10, max_out=12, input_bits=b), 2, seed, None,
                         describe_conv)


@pytest.mark.parametrize("folding", [(4, 18), (2, 5), (1, 1)])
def test_int_conv_network_measured_ii_matches_analytic(folding):
    """int_conv 3x3 on 8-bit 2 x 8 x 8 images -> max-pool -> dense -> scores, no gaps or backpressure."""
    conv = an_int_conv(shape=(2, 8, 8), out=4, kernel=3, padding=1, input_bits=8, pe=folding[0], simd=folding[1])
    pool = maxpool_layer(conv.out_shape, 2)
    n = int(np.prod(pool.out_shape))
    rng = np.random.default_rng(5)
    hidden = LayerSpec(n, 10, rng.integers(0, 2, size=(10, n), dtype=np.uint8),
                       rng.integers(n // 2 - 3, n // 2 + 4, size=10), pe=5, simd=16)
    scores = LayerSpec(10, 4, rng.integers(0, 2, size=(4, 10), dtype=np.uint8), None, pe=2, simd=10)
    spec = NetworkSpec((conv, pool, hidden, scores), name="int-convnet")
    spec.validate()
    bits = random_frames(spec, 5, 3)
    run = simulate_network(spec, bits, drain=spec.analytic_cycles_per_frame)
    check_network(spec, bits, run)
    measured, analytic = steady_interval(run.output_cycles, 2), spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe(spec)}"
