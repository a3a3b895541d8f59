"""The bench's measurement helpers and the localiser, which names the right layer and neuron. Pure
Python: no simulator. (The stream format itself is tested in tests/hw/test_stream_format.py.)"""
import numpy as np
from sim_builds import sized_network, with_threshold

from xnorflow.sim import golden
from xnorflow.sim.localise import first_divergence, mismatch_lines
from xnorflow.sim.scoreboard import steady_state_ii


def test_steady_state_ii_ignores_the_pipeline_fill():
    assert steady_state_ii([100, 180, 200, 220, 240, 260]) == 20
    assert steady_state_ii([5, 9]) is None


def _taps_of(spec, activations):
    """Tap beats that a correct RTL would emit for one frame's golden activations."""
    taps = []
    for layer, bits in zip(spec.layers[:-1], activations):
        padded = np.zeros(layer.neuron_folds * layer.pe, dtype=np.uint8)
        padded[:layer.n_out] = bits
        taps.append([int(sum(int(b) << r for r, b in enumerate(padded[nf * layer.pe:(nf + 1) * layer.pe])))
                     for nf in range(layer.neuron_folds)])
    return taps


def test_first_divergence_names_the_layer_and_neuron_of_a_changed_threshold():
    spec = sized_network([24, 16, 12, 6], [(3, 5), (4, 4), (2, 4)], seed=3)
    frames = np.random.default_rng(2).integers(0, 2, size=(200, 24), dtype=np.uint8)
    truth = golden.execute(spec, frames)
    broken = golden.execute(with_threshold(spec, 1, 5, 0), frames)     # neuron 5 of layer 1 always fires
    flipped = np.flatnonzero(truth.activations[1][:, 5] == 0)
    assert flipped.size, "the random spec should leave neuron 5 silent on some frames"
    f = int(flipped[0])
    rtl_taps = _taps_of(spec, [a[f] for a in broken.activations])
    found = first_divergence(spec, frames[f], [a[f] for a in truth.activations], rtl_taps,
                             list(broken.scores[f]), list(truth.scores[f]))
    assert (found.layer, found.neuron, found.rtl, found.golden) == (1, 5, 1, 0)
    assert found.threshold == spec.layers[1].thresholds[5]
    assert found.popcount < found.threshold
    assert found.describe(f, spec).startswith(f"image {f}: layer 1 neuron 5 differs (RTL 1, golden 0; popcount")


def test_first_divergence_in_an_integer_input_layer_gives_its_sum():
    spec = sized_network([10, 16, 6], [(3, 4), (2, 4)], seed=5, input_bits=8)
    frames = np.random.default_rng(2).integers(0, 2, size=(200, spec.input_bits), dtype=np.uint8)
    truth = golden.execute(spec, frames)
    broken = golden.execute(with_threshold(spec, 0, 7, -10**6), frames)   # neuron 7 of layer 0 always fires
    f = int(np.flatnonzero(truth.activations[0][:, 7] == 0)[0])
    found = first_divergence(spec, frames[f], [a[f] for a in truth.activations],
                             _taps_of(spec, [a[f] for a in broken.activations]),
                             list(broken.scores[f]), list(truth.scores[f]))
    assert (found.layer, found.neuron, found.rtl, found.golden) == (0, 7, 1, 0)
    assert found.count_name == "sum" and found.popcount < found.threshold
    assert found.describe(f, spec).startswith(f"image {f}: layer 0 neuron 7 differs (RTL 1, golden 0; sum ")


def test_first_divergence_is_none_when_everything_agrees_and_points_at_scores_otherwise():
    spec = sized_network([20, 8, 4], [(2, 5), (1, 4)], seed=5)
    frame = np.random.default_rng(0).integers(0, 2, size=(1, 20), dtype=np.uint8)
    truth = golden.execute(spec, frame)
    taps = _taps_of(spec, [a[0] for a in truth.activations])
    scores = [int(s) for s in truth.scores[0]]
    assert first_divergence(spec, frame[0], [a[0] for a in truth.activations], taps, scores, scores) is None
    wrong = scores.copy()
    wrong[2] += 1
    found = first_divergence(spec, frame[0], [a[0] for a in truth.activations], taps, wrong, scores)
    assert (found.layer, found.neuron, found.rtl, found.golden) == (1, 2, scores[2] + 1, scores[2])
    assert "output layer" in found.describe(0, spec)


def test_mismatch_lines_lists_messages_and_counts_the_rest():
    result = {"mismatches": [{"message": f"image {i}: layer 0 neuron 1 differs"} for i in range(12)],
              "results_file": "build/sim/results.json"}
    lines = mismatch_lines(result, limit=10)
    assert lines[0] == "image 0: layer 0 neuron 1 differs" and len(lines) == 11
    assert lines[-1] == "... and 2 more failing images (see build/sim/results.json)"
    assert mismatch_lines({"mismatches": []}) == []
