"""The Network top against the golden model: random specs, measured II, reset, payload layout."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Fragment
from hw_harness import (
    check_network,
    describe,
    random_frames,
    random_spec,
    simulate_network,
    sized_network,
    steady_interval,
    with_random_packing,
)

from xnorflow.hw.network import Network, decode_output, input_beats, output_layout
from xnorflow.hw.spec import SpecError

TFC = [64, 64, 64, 64, 10]
SFC = [784, 256, 256, 256, 10]


def random_in_width(spec, seed):
    """Every third spec gets a host width different from the first layer's SIMD (adapter in front)."""
    if seed % 3:
        return None
    return int(np.random.default_rng(seed).integers(1, 65))


def run_random_spec(seed, frames, max_cycles=200, register_weights=False, packed=False):
    spec = random_spec(seed, max_cycles=max_cycles)
    if packed:
        spec = with_random_packing(spec, seed)
    if register_weights:
        spec = replace(spec, layers=tuple(replace(layer, register_weights=True) for layer in spec.layers))
    in_width = random_in_width(spec, seed)
    bits = random_frames(spec, frames, seed)
    run = simulate_network(spec, bits, in_width=in_width, gap=0.3, stall=0.3, seed=seed)
    check_network(spec, bits, run, in_width)


@pytest.mark.parametrize("seed", range(14))
def test_random_specs_match_golden(seed):
    run_random_spec(seed, frames=3)


@pytest.mark.parametrize("seed", range(300, 306))
def test_random_specs_with_registered_weights_match_golden(seed):
    run_random_spec(seed, frames=3, register_weights=True)


# Packed weight memories (LayerSpec.weight_packing): several PEs' words in one memory word.
@pytest.mark.parametrize("seed", range(500, 510))
def test_random_specs_with_packed_weights_match_golden(seed):
    run_random_spec(seed, frames=3, register_weights=seed % 2 == 1, packed=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(510, 610))
def test_random_packed_spec_sweep(seed):
    run_random_spec(seed, frames=3, max_cycles=400, register_weights=seed % 2 == 1, packed=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(14, 214))
def test_random_spec_sweep(seed):
    run_random_spec(seed, frames=4, max_cycles=400)


def measure_ii(spec, frames=8, warmup=3):
    bits = random_frames(spec, frames, 7)
    run = simulate_network(spec, bits)          # input always valid, output always ready
    check_network(spec, bits, run)
    return steady_interval(run.output_cycles, warmup)


@pytest.mark.parametrize("folding", [
    [(16, 16), (16, 16), (16, 16), (10, 16)],     # balanced: every hidden layer 16 cycles
    [(4, 8), (8, 4), (16, 16), (1, 2)],           # the output layer is the bottleneck
    [(64, 1), (1, 64), (64, 1), (10, 1)],         # SF = 1 and NF = 1 extremes, all 64 cycles
    [(32, 32), (16, 64), (16, 16), (5, 32)],      # a middle layer is the bottleneck
])
def test_tfc_measured_ii_matches_analytic(folding):
    spec = sized_network(TFC, folding, seed=1)
    measured = measure_ii(spec)
    analytic = spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe(spec)}"


@pytest.mark.parametrize("folding", [
    pytest.param([(16, 49), (16, 32), (16, 32), (10, 16)], id="ii256"),
    pytest.param([(64, 196), (32, 128), (32, 128), (10, 128)], id="ii16", marks=pytest.mark.slow),
    pytest.param([(8, 112), (4, 64), (8, 16), (1, 64)], id="ii512-unbalanced", marks=pytest.mark.slow),
])
def test_sfc_measured_ii_matches_analytic(folding):
    spec = sized_network(SFC, folding, seed=2)
    measured = measure_ii(spec, frames=6, warmup=2)
    analytic = spec.analytic_cycles_per_frame
    assert abs(measured - analytic) <= 0.02 * analytic, f"II {measured} != {analytic}: {describe(spec)}"


@pytest.mark.parametrize("spec_maker, in_width", [
    (lambda: sized_network(TFC, [(16, 16), (8, 16), (16, 8), (10, 16)], seed=3), None),
    (lambda: random_spec(5), 8),
])
def test_reset_mid_frame_then_clean_frames(spec_maker, in_width):
    spec = spec_maker()
    bits = random_frames(spec, 4, 11)
    beats_per_frame = len(input_beats(spec, bits[:1], in_width))
    # One and a half frames of junk: a frame in flight and a half-written input buffer at reset.
    junk = beats_per_frame + max(1, beats_per_frame // 2)
    run = simulate_network(spec, bits, in_width=in_width, gap=0.2, stall=0.2, seed=4,
                           junk_beats_first=junk)
    check_network(spec, bits, run, in_width)


def test_output_payload_layout_is_the_documented_contract():
    spec = sized_network([20, 13], [(4, 5)], seed=0)
    iw, sw = spec.class_index_width, spec.score_width
    layout = output_layout(spec)
    assert layout.size == iw + spec.n_classes * sw
    assert layout["index"].offset == 0
    assert layout["scores"].offset == iw
    scores = [(3 * c + 1) % (1 << sw) for c in range(spec.n_classes)]
    payload = layout.const({"index": 11, "scores": scores}).as_value().value
    assert decode_output(spec, payload) == (11, scores)


def test_taps_are_ports_for_each_hidden_layer():
    spec = sized_network(TFC, [(16, 16)] * 3 + [(10, 16)], seed=0)
    network = Network(spec)
    Fragment.get(network, None)                  # elaborates: the taps are driven, not just declared
    names = set(network.signature.members)
    assert {"tap0_data", "tap1_valid", "tap2_data"} <= names and "tap3_data" not in names


def test_invalid_spec_is_refused_with_a_fix():
    spec = sized_network([10, 4, 3], [(1, 1), (1, 1)], seed=0)
    bad = spec.with_folding([(5, 1), (1, 1)])
    with pytest.raises(SpecError, match="choose 1 <= PE"):
        Network(bad)
    with pytest.raises(SpecError, match="in_width"):
        Network(spec, in_width=0)
