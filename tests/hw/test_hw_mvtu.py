"""One MVTU alone against the golden popcounts: hidden activations and the output layer's scores
(the last layer's MVTU with the label-select op after it, which turns its fold scores into the
class index and every class's score)."""
from __future__ import annotations

import numpy as np
import pytest
from hw_harness import describe, pack_beats, random_layer, simulate_stream

from xnorflow.hw.mvtu import MVTU
from xnorflow.hw.network import Network, decode_output
from xnorflow.hw.spec import LayerSpec, NetworkSpec, SpecError
from xnorflow.sim.golden import pack_rows, popcounts


def run_layer(layer, frames=3, gap=0.0, stall=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(frames, layer.n_in), dtype=np.uint8)
    n_out_beats = frames if layer.is_output else frames * layer.neuron_folds
    dut = Network(NetworkSpec((layer,))) if layer.is_output else MVTU(layer)
    got, cycles = simulate_stream(dut, pack_beats(x, layer.simd), n_out_beats, gap=gap, stall=stall, seed=seed)
    return x, popcounts(pack_rows(x), layer), got, cycles


def expected_hidden_beats(layer, counts):
    """Golden output bits as the MVTU's beats; padded channels must come out as 0."""
    bits = (counts >= layer.thresholds[None, :]).astype(np.uint8)
    return pack_beats(bits, layer.pe)


@pytest.mark.parametrize("seed", range(10))
def test_hidden_layer_matches_golden(seed):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, int(rng.integers(1, 300)), int(rng.integers(1, 65)), False, max_cycles=150)
    _, counts, got, _ = run_layer(layer, gap=0.3, stall=0.3, seed=seed)
    assert got == expected_hidden_beats(layer, counts), f"n_in={layer.n_in} n_out={layer.n_out} pe={layer.pe} simd={layer.simd}"


@pytest.mark.parametrize("seed", range(10))
def test_output_layer_matches_golden(seed):
    rng = np.random.default_rng(1000 + seed)
    layer = random_layer(rng, int(rng.integers(1, 300)), int(rng.integers(1, 65)), True, max_cycles=150)
    spec = NetworkSpec((layer,))
    _, counts, got, _ = run_layer(layer, gap=0.3, stall=0.3, seed=seed)
    for frame, payload in enumerate(got):
        index, scores = decode_output(spec, payload)
        assert scores == counts[frame].tolist(), describe(spec)
        assert index == int(np.argmax(counts[frame])), describe(spec)


def test_argmax_ties_go_to_the_lowest_index():
    """All-equal weights give every class the same score: the index must be 0 for any folding."""
    n_in, n_out = 9, 7
    weights = np.ones((n_out, n_in), dtype=np.uint8)
    weights[5] = 0       # class 5 scores n_in - popcount(x): the winner only when x is mostly 0
    for pe in (1, 2, 3, 7):
        layer = LayerSpec(n_in, n_out, weights, None, pe=pe, simd=4)
        _, counts, got, _ = run_layer(layer, frames=6, seed=pe)
        spec = NetworkSpec((layer,))
        for frame, payload in enumerate(got):
            index, scores = decode_output(spec, payload)
            assert scores == counts[frame].tolist()
            best = counts[frame].max()
            assert index == min(c for c in range(n_out) if counts[frame][c] == best), f"pe={pe}"


@pytest.mark.parametrize("pe, simd", [(4, 8), (5, 7), (64, 64), (1, 64), (64, 1)])
def test_layer_takes_nf_times_sf_cycles_per_frame(pe, simd):
    rng = np.random.default_rng(pe * 100 + simd)
    layer = random_layer(rng, 64, 64, False, max_cycles=64 * 64)   # folding replaced below
    layer = LayerSpec(64, 64, layer.weights, layer.thresholds, pe=pe, simd=simd)
    frames = 6
    _, counts, got, cycles = run_layer(layer, frames=frames)
    assert got == expected_hidden_beats(layer, counts)
    frame_ends = cycles[layer.neuron_folds - 1::layer.neuron_folds]
    intervals = np.diff(frame_ends[2:])
    assert (intervals == layer.cycles).all(), f"frame intervals {intervals.tolist()}, want {layer.cycles}"


def test_bad_folding_is_refused():
    layer = LayerSpec(8, 4, np.zeros((4, 8), dtype=np.uint8), np.zeros(4, dtype=np.int64), pe=5, simd=2)
    with pytest.raises(SpecError, match="PE=5"):
        MVTU(layer)


def test_packed_weight_memories_hold_each_pes_bank_side_by_side():
    """LayerSpec.weight_memories: PE g*P + j's bank word at bits j*SIMD of memory g's word, the last
    memory holding the PEs left over; widths count only the columns that are not constant."""
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 50, 11, False, max_cycles=10 ** 6)
    layer = LayerSpec(50, 11, layer.weights, layer.thresholds, pe=5, simd=7, weight_packing=2)
    memories = layer.weight_memories()
    assert [len(group) for group in layer.weight_groups()] == [2, 2, 1] and len(memories) == 3
    depth = layer.neuron_folds * layer.synapse_folds
    padded = np.ones((layer.neuron_folds * 5, layer.synapse_folds * 7), dtype=np.uint8)
    padded[:11, :50] = layer.weights
    for pe in range(5):
        g, j = divmod(pe, 2)
        for address in range(depth):
            nf, sf = divmod(address, layer.synapse_folds)
            bits = padded[nf * 5 + pe, sf * 7:(sf + 1) * 7]
            want = sum(int(b) << i for i, b in enumerate(bits))
            assert (int(memories[g][address]) >> (j * 7)) & 0x7F == want
    # A memory 2 words deep: Yosys keeps only the columns that differ between its two words.
    weights = np.array([[0, 1, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 1, 1, 0]], dtype=np.uint8)
    shallow = LayerSpec(8, 2, weights, None, pe=2, simd=4, weight_packing=2)
    assert shallow.weight_memory_widths() == [2 + 2]
