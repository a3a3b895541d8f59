"""Every pass computes the same before and after; ties are identified, not tolerated blindly."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.compiler.model import BatchNorm, BnnModel, CompileError, DenseLayer, execute
from xnorflow.compiler.passes import (
    FoldBatchNormIntoThresholds,
    RemoveArgmaxInvariantOutputScale,
    SetFolding,
    cheapest_folding,
    lower_to_spec,
    streamline,
)
from xnorflow.sim import golden

# A pre-activation this close to its boundary (in units of the ±1 dot product) counts as an exact tie:
# float64 rounding of tau is many orders of magnitude smaller than the spacing of integer dots (2).
TIE = 1e-9


def random_layer(rng, n_in, n_out, is_output=False, with_bias=True):
    weights = rng.integers(0, 2, (n_out, n_in), dtype=np.uint8)
    gamma = rng.normal(0, 1, n_out)
    kinds = rng.integers(0, 4, n_out)            # 0: positive, 1: negative, 2: zero gamma, 3: as drawn
    gamma[kinds == 0] = np.abs(gamma[kinds == 0]) + 0.01
    gamma[kinds == 1] = -np.abs(gamma[kinds == 1]) - 0.01
    gamma[kinds == 2] = 0.0
    bn = BatchNorm(gamma=gamma, beta=rng.normal(0, 2, n_out), mean=rng.normal(0, np.sqrt(n_in), n_out),
                   var=rng.uniform(0.1, 4 * n_in, n_out), eps=1e-5)
    bias = rng.normal(0, 3, n_out) if with_bias else None
    if is_output:
        return DenseLayer(weights=weights, is_output=True, output_scale=float(rng.uniform(0.01, 3)))
    return DenseLayer(weights=weights, is_output=False, bias=bias, bn=bn)


def random_model(rng, sizes):
    layers = [random_layer(rng, a, b) for a, b in itertools.pairwise(sizes[:-1])]
    layers.append(random_layer(rng, sizes[-2], sizes[-1], is_output=True))
    return BnnModel(tuple(layers))


def assert_same_bits_except_ties(before, after):
    """Hidden bits must agree wherever the float model is not at an exact tie; returns the tie count."""
    ties = 0
    for k, (a, b, margin) in enumerate(zip(before.activations, after.activations, before.margins)):
        clear = margin > TIE
        differ = (a != b) & clear
        assert not differ.any(), f"layer {k}: {int(differ.sum())} bits differ away from any tie"
        ties += int((~clear).sum())
    return ties


sizes_strategy = st.lists(st.integers(1, 150), min_size=3, max_size=5)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_strategy, seed=st.integers(0, 2**32 - 1))
def test_fold_batchnorm_computes_the_same(sizes, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, sizes)
    x = rng.integers(0, 2, (64, sizes[0]), dtype=np.uint8)
    folded = FoldBatchNormIntoThresholds()(model)
    before, after = execute(model, x), execute(folded, x)
    ties = assert_same_bits_except_ties(before, after)
    if ties == 0:
        np.testing.assert_array_equal(before.predictions, after.predictions)
    for layer in folded.layers[:-1]:
        assert layer.bn is None and layer.bias is None
        assert layer.thresholds.min() >= 0 and layer.thresholds.max() <= layer.n_in + 1


def test_exact_ties_follow_the_float_rule():
    """At dot == tau the float model outputs +1 (y = 0 >= 0); so must the thresholds, for either sign of gamma."""
    n = 7
    weights = np.zeros((2, n), dtype=np.uint8)
    # tau = mean - 0 - 0 = 1: reached by dot = 1, i.e. p = 4 matches of 7
    bn = BatchNorm(gamma=np.array([2.0, -2.0]), beta=np.zeros(2), mean=np.array([1.0, 1.0]),
                   var=np.ones(2), eps=0.0)
    hidden = DenseLayer(weights=weights, is_output=False, bn=bn)
    out = DenseLayer(weights=np.ones((1, 2), dtype=np.uint8), is_output=True)
    model = BnnModel((hidden, out))
    x = np.zeros((n + 1, n), dtype=np.uint8)
    for p in range(n + 1):
        x[p, :p] = 0          # weights are 0, so a 0 input matches
        x[p, p:] = 1          # ... and every 1 input mismatches: p matches in row p
    before = execute(model, x)
    after = execute(FoldBatchNormIntoThresholds()(model), x)
    ties = before.margins[0] <= TIE
    assert ties[4].all() and ties.sum() == 2            # p = 4 is the tie, for both channels
    np.testing.assert_array_equal(before.activations[0], after.activations[0])


def test_constant_channels_and_negative_gamma_thresholds():
    n = 10
    bn = BatchNorm(gamma=np.array([0.0, 0.0, -1.0, 1.0]), beta=np.array([0.5, -0.5, 0.0, 0.0]),
                   mean=np.array([0.0, 0.0, 100.0, 100.0]), var=np.ones(4), eps=0.0)
    layer = DenseLayer(weights=np.zeros((4, n), dtype=np.uint8), is_output=False, bn=bn)
    out = DenseLayer(weights=np.ones((1, 4), dtype=np.uint8), is_output=True)
    folded = FoldBatchNormIntoThresholds()(BnnModel((layer, out)))
    t = folded.layers[0].thresholds
    # constant +1, constant -1, gamma<0 with tau beyond N (always +1), gamma>0 with tau beyond N (never)
    assert list(t) == [0, n + 1, 0, n + 1]
    assert (folded.layers[0].weights[2] == 1).all()     # the negative-gamma row is inverted


def test_output_scale_is_dropped_and_argmax_kept():
    rng = np.random.default_rng(3)
    model = FoldBatchNormIntoThresholds()(random_model(rng, [40, 30, 10]))
    x = rng.integers(0, 2, (200, 40), dtype=np.uint8)
    cleaned = RemoveArgmaxInvariantOutputScale()(model)
    assert cleaned.layers[-1].output_scale is None
    np.testing.assert_array_equal(execute(model, x).predictions, execute(cleaned, x).predictions)


def test_per_class_output_batchnorm_is_refused():
    rng = np.random.default_rng(4)
    model = random_model(rng, [20, 10, 5])
    last = model.layers[-1]
    bn = BatchNorm(gamma=rng.uniform(0.5, 2, 5), beta=np.zeros(5), mean=np.zeros(5), var=np.ones(5), eps=0.0)
    from dataclasses import replace
    model = model.with_layers(list(model.layers[:-1]) + [replace(last, bn=bn)])
    with pytest.raises(CompileError, match="argmax"):
        RemoveArgmaxInvariantOutputScale()(model)


def test_uniform_output_batchnorm_is_folded_exactly():
    rng = np.random.default_rng(5)
    model = random_model(rng, [20, 10, 5])
    from dataclasses import replace
    bn = BatchNorm(gamma=np.full(5, 1.5), beta=np.full(5, 0.25), mean=np.full(5, 3.0), var=np.full(5, 2.0), eps=0.0)
    model = model.with_layers(list(model.layers[:-1]) + [replace(model.layers[-1], bn=bn)])
    x = rng.integers(0, 2, (300, 20), dtype=np.uint8)
    cleaned = RemoveArgmaxInvariantOutputScale()(model)
    np.testing.assert_array_equal(execute(model, x).predictions, execute(cleaned, x).predictions)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, seed=st.integers(0, 2**32 - 1), target=st.integers(1, 400))
def test_set_folding_computes_the_same_and_meets_the_target(sizes, seed, target):
    rng = np.random.default_rng(seed)
    model = streamline(random_model(rng, sizes))
    folded = SetFolding(target_cycles=target)(model)
    x = rng.integers(0, 2, (16, sizes[0]), dtype=np.uint8)
    np.testing.assert_array_equal(execute(model, x).scores, execute(folded, x).scores)
    assert max(l.cycles for l in folded.layers) <= target


def test_cheapest_folding_prefers_fewest_lanes():
    pe, simd = cheapest_folding(784, 64, 784)
    assert pe * simd == 64 and 64 // pe * -(-784 // simd) <= 784


def test_set_folding_by_hand_is_checked():
    model = streamline(random_model(np.random.default_rng(0), [30, 20, 10]))
    with pytest.raises(CompileError, match="does not fit"):
        SetFolding(folding=[(21, 1), (1, 1)])(model)
    with pytest.raises(CompileError, match="one pair per layer"):
        SetFolding(folding=[(1, 1)])(model)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, seed=st.integers(0, 2**32 - 1))
def test_lowered_spec_runs_the_same_in_the_golden_model(sizes, seed):
    """The golden model (bit-packed) and the compiler's integer reference agree exactly after lowering."""
    rng = np.random.default_rng(seed)
    model = streamline(random_model(rng, sizes))
    spec = lower_to_spec(model)
    x = rng.integers(0, 2, (50, sizes[0]), dtype=np.uint8)
    reference, result = execute(model, x), golden.execute(spec, x)
    np.testing.assert_array_equal(reference.scores, result.scores)
    np.testing.assert_array_equal(reference.predictions, result.predictions)
    for a, b in zip(reference.activations, result.activations):
        np.testing.assert_array_equal(a, b)


def test_lowering_refuses_unfolded_models():
    model = random_model(np.random.default_rng(0), [30, 20, 10])
    with pytest.raises(CompileError, match="FoldBatchNormIntoThresholds"):
        lower_to_spec(model)
