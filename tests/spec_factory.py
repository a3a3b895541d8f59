"""The one maker of random networks for the tests of every folder (hw, sim, boards).

``sized_network`` gives the layers the caller names (sizes and folding); ``random_thresholds`` the
thresholds a hidden layer gets. Tests that draw the sizes too (tests/hw/hw_harness.random_spec) and
the conv specs (tests/hw/conv_specs.py) build on these.
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np

from xnorflow.hw.spec import LayerSpec, NetworkSpec


def random_thresholds(rng: np.random.Generator, n_in: int, n_out: int, constant_channels: bool = True) -> np.ndarray:
    """Thresholds near n_in / 2, the expected popcount, so the outputs vary from frame to frame; with
    ``constant_channels`` about a tenth each are 0 (always +1) and n_in + 1 (always -1)."""
    spread = max(1, int(np.sqrt(n_in)) // (1 if constant_channels else 2))
    t = rng.integers(n_in // 2 - spread, n_in // 2 + spread + 1, size=n_out)
    if constant_channels:
        kind = rng.random(n_out)
        t = np.where(kind < 0.1, 0, np.where(kind < 0.2, n_in + 1, t))
    return np.clip(t, 0, n_in + 1).astype(np.int64)


def sized_network(sizes: list[int], folding: list[tuple[int, int]], seed: int = 0,
                  weight_styles: list[str] | None = None, constant_channels: bool = False) -> NetworkSpec:
    """Dense layers sizes[0] -> sizes[1] -> ... with random weights and thresholds (the last layer
    none: it gives the scores), the given (PE, SIMD) per layer and optionally a weight memory style."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(pairwise(sizes)):
        weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        is_output = k == len(sizes) - 2
        thresholds = None if is_output else random_thresholds(rng, n_in, n_out, constant_channels)
        style = weight_styles[k] if weight_styles else "auto"
        layers.append(LayerSpec(n_in, n_out, weights, thresholds, weight_style=style))
    spec = NetworkSpec(tuple(layers), name="-".join(map(str, sizes))).with_folding(folding)
    spec.validate()
    return spec


def random_frames(spec: NetworkSpec, frames: int, seed: int = 1) -> np.ndarray:
    """Random input bits for ``frames`` frames of ``spec``."""
    return np.random.default_rng(seed).integers(0, 2, size=(frames, spec.input_bits), dtype=np.uint8)
