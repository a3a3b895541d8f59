"""Networks with random weights for the board tests (sizes and folding chosen by each test)."""
from __future__ import annotations

from itertools import pairwise

import numpy as np

from xnorflow.hw.spec import LayerSpec, NetworkSpec


def random_network(sizes: list[int], folding: list[tuple[int, int]], seed: int = 0,
                   weight_styles: list[str] | None = None) -> NetworkSpec:
    """Layers sizes[0] -> sizes[1] -> ... with random weights, thresholds near n_in / 2 (so hidden
    bits vary), the given (PE, SIMD) per layer and optionally a weight memory style per layer."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(pairwise(sizes)):
        weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        is_output = k == len(sizes) - 2
        spread = max(1, int(np.sqrt(n_in)) // 2)
        thresholds = None if is_output else rng.integers(n_in // 2 - spread, n_in // 2 + spread + 1,
                                                         size=n_out).astype(np.int64)
        style = weight_styles[k] if weight_styles else "auto"
        layers.append(LayerSpec(n_in, n_out, weights, thresholds, weight_style=style))
    spec = NetworkSpec(tuple(layers), name="-".join(map(str, sizes))).with_folding(folding)
    spec.validate()
    return spec


def random_frames(spec: NetworkSpec, frames: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(frames, spec.input_bits), dtype=np.uint8)
