"""Integer-input first layers (int_dense, int_conv): the golden kernels against the ops' references on
random networks (the real Verilator run of a small 8-bit conv net is in test_sim_conv.py)."""
from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_factory import int_dense_layer, random_int_thresholds

from xnorflow.hw.spec import LayerSpec, NetworkSpec, conv_layer, maxpool_layer
from xnorflow.sim import golden


@st.composite
def int_networks_and_frames(draw):
    """An int_dense or int_conv (+ maybe a max-pool) first layer on b-bit inputs, b 2..16, then binary
    dense layers; thresholds anywhere, far outside the sums included."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = draw(st.integers(2, 16))
    if draw(st.booleans()):
        widths = [draw(st.integers(1, 200)) for _ in range(draw(st.integers(3, 4)))]
        layers = [int_dense_layer(rng, widths[0], widths[1], b)]
    else:
        c, h, w = draw(st.integers(1, 4)), draw(st.integers(3, 8)), draw(st.integers(3, 8))
        padding = draw(st.integers(0, 1))
        k = draw(st.integers(padding + 1, min(4, min(h, w) + 2 * padding)))
        o = draw(st.integers(1, 8))
        weights = rng.integers(0, 2, size=(o, k * k * c), dtype=np.uint8)
        layers = [conv_layer((c, h, w), weights, random_int_thresholds(rng, weights, b), kernel=k, padding=padding,
                             input_bits=b)]
        _, oh, ow = layers[0].out_shape
        if draw(st.booleans()) and min(oh, ow) >= 2:
            layers.append(maxpool_layer(layers[0].out_shape, 2))
        widths = [int(np.prod(layers[-1].out_shape)), draw(st.integers(1, 30)), draw(st.integers(1, 10))]
    tail = widths[1:] if layers[0].kind == "int_dense" else widths     # the binary layers' sizes
    for k, (n_in, n_out) in enumerate(itertools.pairwise(tail)):
        last = k == len(tail) - 2
        layers.append(LayerSpec(n_in, n_out, rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8),
                                None if last else rng.integers(0, n_in + 2, size=n_out)))
    spec = NetworkSpec(tuple(layers))
    frames = rng.integers(0, 2, size=(draw(st.integers(1, 12)), spec.input_bits), dtype=np.uint8)
    return spec, frames


@settings(max_examples=40, deadline=None)
@given(int_networks_and_frames())
def test_integer_kernels_match_their_references(case):
    spec, frames = case
    spec.validate()
    fast, slow = golden.execute(spec, frames), golden.reference_execute(spec, frames)
    assert np.array_equal(fast.scores, slow.scores)
    for got, want in zip(fast.activations, slow.activations, strict=True):
        assert np.array_equal(got, want)
