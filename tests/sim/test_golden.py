"""The compiled golden kernel against the plain NumPy formulation of the numerics contract."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_factory import random_thresholds

from xnorflow.hw.ops import op_for
from xnorflow.hw.spec import LayerSpec, NetworkSpec, conv_layer, maxpool_layer
from xnorflow.sim import golden


def reference_popcounts(input_bits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """DESIGN.md section 2 written out in NumPy: p = number of lanes where x == w."""
    return (input_bits[:, None, :] == weights[None, :, :]).sum(axis=2)


def reference_execute(spec: NetworkSpec, input_bits: np.ndarray):
    x, activations = input_bits.astype(np.uint8), []
    for layer in spec.layers[:-1]:
        x = (reference_popcounts(x, layer.weights) >= layer.thresholds[None, :]).astype(np.uint8)
        activations.append(x)
    return reference_popcounts(x, spec.layers[-1].weights), activations


@st.composite
def networks_and_frames(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    widths = [draw(st.integers(1, 200)) for _ in range(draw(st.integers(2, 4)))]
    layers = []
    for k, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        last = k == len(widths) - 2
        thresholds = None if last else rng.integers(0, n_in + 2, size=n_out)   # the whole range [0, N + 1]
        layers.append(LayerSpec(n_in=n_in, n_out=n_out, weights=rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8),
                                thresholds=thresholds))
    frames = rng.integers(0, 2, size=(draw(st.integers(1, 40)), widths[0]), dtype=np.uint8)
    return NetworkSpec(layers=tuple(layers)), frames


@settings(max_examples=60, deadline=None)
@given(networks_and_frames())
def test_golden_kernel_matches_plain_numpy(case):
    spec, frames = case
    result = golden.execute(spec, frames)
    scores, activations = reference_execute(spec, frames)
    assert np.array_equal(result.scores, scores)
    for got, want in zip(result.activations, activations, strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(result.predictions, np.argmax(scores, axis=1))


def test_popcounts_counts_agreeing_lanes_across_word_boundaries():
    # 130 lanes: two full words and two bits of a third, where padding must count nothing.
    weights = np.zeros((2, 130), dtype=np.uint8)
    weights[1, 64:] = 1
    frame = np.ones((1, 130), dtype=np.uint8)
    layer = LayerSpec(n_in=130, n_out=2, weights=weights, thresholds=None)
    assert golden.popcounts(golden.pack_rows(frame), layer).tolist() == [[0, 66]]


def test_every_registered_kind_has_a_golden_kernel():
    from xnorflow.hw.ops import OPS
    assert set(OPS) <= set(golden.GOLDEN_KERNELS), f"no golden kernel for {set(OPS) - set(golden.GOLDEN_KERNELS)}"


@settings(max_examples=30, deadline=None)
@given(networks_and_frames())
def test_golden_kernels_match_every_ops_numpy_reference(case):
    """execute() runs each op through its kind's kernel; reference_execute() through the op's own
    plain NumPy `reference` (hw/ops/): both must agree, predictions included (ties to the lowest index)."""
    spec, frames = case
    fast, slow = golden.execute(spec, frames), golden.reference_execute(spec, frames)
    assert np.array_equal(fast.scores, slow.scores)
    assert np.array_equal(fast.predictions, slow.predictions)
    for got, want in zip(fast.activations, slow.activations, strict=True):
        assert np.array_equal(got, want)


# --- the conv and max-pool kernels on packed frames against their ops' references -----------------
def random_feature_layer(rng: np.random.Generator, max_work: int) -> LayerSpec:
    """A conv or (one time in three) max-pool layer. C 1-70, about a third of them above 64 (a pixel
    straddles words); H and W 3-20. Convs: K 1-5, padding 0 or 1 of either bit, O 1-70, thresholds
    near N / 2 and some constant channels; redrawn while output bits x N exceed ``max_work`` (the
    reference's cost). Pools: size 1-4, random AND channels (a pool before a batch-norm of negative
    gamma) among OR channels."""
    while True:
        c = int(rng.integers(65, 71)) if rng.random() < 0.3 else int(rng.integers(1, 65))
        h, w = (int(v) for v in rng.integers(3, 21, size=2))
        if rng.random() < 1 / 3:
            return maxpool_layer((c, h, w), int(rng.integers(1, min(4, h, w) + 1)), pool_and=rng.integers(0, 2, size=c))
        padding = int(rng.integers(0, 2))
        k = int(rng.choice([k for k in range(1, 6) if padding < k <= min(h, w) + 2 * padding]))
        o = int(rng.integers(1, 71))
        n_in = k * k * c
        if (h + 2 * padding - k + 1) * (w + 2 * padding - k + 1) * o * n_in <= max_work:
            return conv_layer((c, h, w), rng.integers(0, 2, size=(o, n_in), dtype=np.uint8),
                              random_thresholds(rng, n_in, o), kernel=k, padding=padding,
                              pad_value=int(rng.integers(0, 2)))


def check_feature_kernels(layers: int, max_work: int, seed: int) -> None:
    """Each random layer's golden kernel, given packed frames, emits the reference's bits, packed and
    unpacked (`random_feature_layer`)."""
    rng = np.random.default_rng(seed)
    for case in range(layers):
        layer = random_feature_layer(rng, max_work)
        op = op_for(layer)
        frames = rng.integers(0, 2, size=(int(rng.integers(1, 4)), int(np.prod(layer.in_shape))), dtype=np.uint8)
        packed, bits = golden.kernel_for(op)(op, golden.pack_rows(frames))
        want = op.reference(frames)
        where = (f"case {case}: {layer.kind} {layer.in_shape} -> {layer.out_shape}, K {layer.kernel}, "
                 f"padding {layer.padding} of {layer.pad_value}")
        assert np.array_equal(bits, want), where
        assert np.array_equal(packed, golden.pack_rows(want)), where


def test_conv_and_pool_kernels_match_the_references_on_random_layers():
    check_feature_kernels(layers=200, max_work=20_000_000, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_conv_and_pool_kernels_match_the_references_on_many_random_layers(seed):
    check_feature_kernels(layers=400, max_work=200_000_000, seed=seed)
