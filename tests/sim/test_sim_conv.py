"""Conv and max-pool through the simulation flow: golden kernels against the ops' references, the
real Verilator run of a small conv net, and localisation naming a conv's channel and pixel."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_builds import write_build_folder
from spec_factory import random_int_thresholds

from xnorflow.hw.ops import op_for
from xnorflow.hw.ops.conv import window_beat
from xnorflow.hw.spec import LayerSpec, NetworkSpec, conv_layer, maxpool_layer
from xnorflow.sim import golden
from xnorflow.sim.localise import first_divergence
from xnorflow.sim.runner import simulate


def small_conv_net(seed: int = 0, channels: int = 2, size: int = 8, input_bits: int = 1,
                   folding: tuple[int, int] = (4, 5)) -> NetworkSpec:
    """conv 3x3 (padding 1 of +1 bits; PE, SIMD = ``folding``) -> max-pool 2 (some channels AND) ->
    dense -> dense (scores). With ``input_bits`` b >= 2 the conv is an int_conv on b-bit pixels,
    padded with the value 0."""
    rng = np.random.default_rng(seed)
    out = 6
    n_in = 9 * channels
    weights = rng.integers(0, 2, size=(out, n_in), dtype=np.uint8)
    if input_bits == 1:
        thresholds = rng.integers(n_in // 2 - 2, n_in // 2 + 3, size=out)
    else:
        thresholds = random_int_thresholds(rng, weights, input_bits, extremes=False)
    conv = conv_layer((channels, size, size), weights, thresholds, kernel=3, padding=1,
                      pad_value=int(input_bits == 1), pe=folding[0], simd=folding[1], input_bits=input_bits)
    pool = maxpool_layer(conv.out_shape, 2, pool_and=np.array([0, 1, 0, 0, 1, 0]))
    n = int(np.prod(pool.out_shape))
    hidden = LayerSpec(n, 12, rng.integers(0, 2, size=(12, n), dtype=np.uint8),
                       rng.integers(n // 2 - 3, n // 2 + 4, size=12), pe=5, simd=16)
    scores = LayerSpec(12, 5, rng.integers(0, 2, size=(5, 12), dtype=np.uint8), None, pe=2, simd=6)
    spec = NetworkSpec((conv, pool, hidden, scores), name="small-conv")
    spec.validate()
    return spec


@pytest.mark.parametrize("input_bits, size, frame_bits, ii, folding", [
    (1, 8, 128, 512, (4, 5)),   # II: conv 64 pixels x NF 2 x SF 4; the pool 64, the dense layers 3 x 6 and 3 x 2
    (8, 6, 576, 288, (4, 5)),   # int_conv on 6 x 6 pixels of 2 channels of 8 bits: 36 pixels x NF 2 x SF 4
    # NF 3 x SF 4 >= 3 x 3: the window generator emits one pixel per beat (hw/ops/conv.py: window_beat)
    (1, 8, 128, 768, (2, 5)),
    (8, 6, 576, 432, (2, 5)),
])
def test_small_conv_net_is_bit_exact_in_verilator(tmp_path, input_bits, size, frame_bits, ii, folding):
    spec = small_conv_net(size=size, input_bits=input_bits, folding=folding)
    assert spec.input_bits == frame_bits and spec.analytic_cycles_per_frame == ii
    assert window_beat(spec.layers[0]) == ((1, 1) if folding == (2, 5) else (1, 3))
    build = write_build_folder(tmp_path / "build", spec, frames=60)
    result = simulate(build, backpressure=0.5, gaps=0.3, seed=2, progress=False)
    assert result["errors"] == []
    assert result["images_simulated"] == 60
    assert result["rtl_mismatches"] == 0 and result["mismatches"] == []
    assert result["cycles_per_frame"] == ii
    assert result["reset_mid_frame_ok"] is True


@st.composite
def conv_networks_and_frames(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c, h, w = (draw(st.integers(1, 6)), draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    padding = draw(st.integers(0, 1))
    k = draw(st.integers(max(1, padding + 1), min(5, min(h, w) + 2 * padding)))
    o = draw(st.integers(1, 8))
    n_in = k * k * c
    layers = [conv_layer((c, h, w), rng.integers(0, 2, size=(o, n_in), dtype=np.uint8),
                         rng.integers(0, n_in + 2, size=o), kernel=k, padding=padding,
                         pad_value=draw(st.integers(0, 1)))]
    _, oh, ow = layers[0].out_shape
    if draw(st.booleans()) and min(oh, ow) >= 2:
        layers.append(maxpool_layer(layers[0].out_shape, draw(st.integers(2, min(3, oh, ow))),
                                    pool_and=rng.integers(0, 2, size=o)))
    n = int(np.prod(layers[-1].out_shape))
    layers.append(LayerSpec(n, 3, rng.integers(0, 2, size=(3, n), dtype=np.uint8), None))
    frames = rng.integers(0, 2, size=(draw(st.integers(1, 12)), c * h * w), dtype=np.uint8)
    return NetworkSpec(tuple(layers)), frames


@settings(max_examples=40, deadline=None)
@given(conv_networks_and_frames())
def test_conv_and_pool_kernels_match_their_references(case):
    spec, frames = case
    fast, slow = golden.execute(spec, frames), golden.reference_execute(spec, frames)
    assert np.array_equal(fast.scores, slow.scores)
    for got, want in zip(fast.activations, slow.activations, strict=True):
        assert np.array_equal(got, want)


def taps_of(spec: NetworkSpec, activations: list[np.ndarray]) -> list[list[int]]:
    """One frame's hidden activations as each layer's output beats (what the RTL's taps carry)."""
    taps = []
    for layer, bits in zip(spec.layers[:-1], activations):
        op = op_for(layer)
        units = bits.reshape(-1, op.out_unit)
        beats = []
        for unit in units:
            folds = -(-op.out_unit // op.out_width)
            padded = np.zeros(folds * op.out_width, dtype=np.uint8)
            padded[:op.out_unit] = unit
            beats += [int(sum(int(b) << r for r, b in enumerate(padded[f * op.out_width:(f + 1) * op.out_width])))
                      for f in range(folds)]
        taps.append(beats)
    return taps


def test_localisation_names_the_conv_channel_and_pixel():
    spec = small_conv_net(seed=4)
    frames = np.random.default_rng(1).integers(0, 2, size=(30, spec.input_bits), dtype=np.uint8)
    truth = golden.execute(spec, frames)
    thresholds = spec.layers[0].thresholds.copy()
    thresholds[3] = 0                                            # channel 3 always fires
    broken_spec = replace(spec, layers=(replace(spec.layers[0], thresholds=thresholds), *spec.layers[1:]))
    broken = golden.execute(broken_spec, frames)
    f = int(np.flatnonzero((truth.activations[0] != broken.activations[0]).any(axis=1))[0])
    found = first_divergence(spec, frames[f], [a[f] for a in truth.activations],
                             taps_of(spec, [a[f] for a in broken.activations]),
                             list(broken.scores[f]), list(truth.scores[f]))
    first = int(np.flatnonzero(truth.activations[0][f] != broken.activations[0][f])[0])
    y, x = divmod(first // 6, 8)
    assert (found.layer, found.neuron, found.channel, found.pixel) == (0, first, 3, (y, x))
    assert (found.rtl, found.golden) == (1, 0)
    assert found.threshold == spec.layers[0].thresholds[3] and found.popcount < found.threshold
    assert found.describe(f, spec).startswith(f"image {f}: layer 0 (conv) channel 3 at pixel (y, x) = ({y}, {x}) "
                                              "differs (RTL 1, golden 0; popcount")
