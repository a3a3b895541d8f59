"""Build folders for the simulation tests, made the way `xnorflow compile` makes them: a NetworkSpec
with random weights, its Verilog from export_verilog, and vectors.npz from the golden model."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from spec_factory import sized_network  # noqa: F401  (the sim tests' network maker)

from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim import golden
from xnorflow.sim.export import export_verilog
from xnorflow.sim.layout import verilog_file


def write_build_folder(root: Path, spec: NetworkSpec, frames: int, seed: int = 1,
                       verilog_spec: NetworkSpec | None = None) -> Path:
    """spec.npz and vectors.npz of ``spec``; the Verilog of ``verilog_spec`` (default: the same spec,
    another one to plant a bug the simulation must find)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec.save(root / "spec.npz")
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, 2, size=(frames, spec.input_bits), dtype=np.uint8)
    result = golden.execute(spec, inputs)
    np.savez(root / "vectors.npz", inputs=inputs,
             labels=rng.integers(0, spec.n_classes, size=frames).astype(np.int64),
             golden_scores=result.scores, golden_predictions=result.predictions,
             torch_predictions=result.predictions)
    export_verilog(verilog_spec or spec, verilog_file(root))
    return root


def with_threshold(spec: NetworkSpec, layer: int, neuron: int, threshold: int) -> NetworkSpec:
    """A copy of ``spec`` where one hidden neuron has another threshold."""
    thresholds = spec.layers[layer].thresholds.copy()
    thresholds[neuron] = threshold
    layers = list(spec.layers)
    layers[layer] = replace(layers[layer], thresholds=thresholds)
    return replace(spec, layers=tuple(layers))


def flipping_threshold(spec: NetworkSpec, inputs: np.ndarray, layer: int) -> tuple[int, int]:
    """(neuron, new threshold) of ``layer`` that flips that neuron's bit on about a third of the frames."""
    result = golden.execute(spec, inputs)
    layer_input = inputs if layer == 0 else result.activations[layer - 1]
    counts = golden.popcounts(golden.pack_rows(layer_input), spec.layers[layer])   # (frames, n_out)
    best = None
    for neuron in range(spec.layers[layer].n_out):
        old = int(spec.layers[layer].thresholds[neuron])
        for new in range(spec.layers[layer].n_in + 2):
            flipped = np.mean((counts[:, neuron] >= old) != (counts[:, neuron] >= new))
            score = abs(flipped - 1 / 3)
            if new != old and (best is None or score < best[0]):
                best = (score, neuron, new)
    return best[1], best[2]
