"""The one maker of random networks for the tests of every folder (hw, sim, boards).

``sized_network`` gives the layers the caller names (sizes and folding; ``input_bits`` b >= 2 makes
the first an int_dense layer on b-bit inputs); ``random_thresholds`` the thresholds a hidden layer
gets, ``random_int_thresholds`` those of an integer-input layer (thresholds on the sum s). Tests that draw the sizes too (tests/hw/hw_harness.random_spec) and
the conv specs (tests/hw/conv_specs.py) build on these.
"""
from __future__ import annotations

from dataclasses import replace
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


def random_int_thresholds(rng: np.random.Generator, weights: np.ndarray, input_bits: int,
                          extremes: bool = True) -> np.ndarray:
    """Thresholds on s = sum(w * x) (w = +-1 from the weight bits, x uniform b-bit) for an integer-input
    layer: near each row's expected sum within about one standard deviation, so the outputs vary;
    with ``extremes`` about a twentieth each of 0, the row's smallest sum (always 1), its largest + 1
    (always 0), and far below -S and above S (S = n_in * (2^b - 1); the hardware clamps those)."""
    top = (1 << input_bits) - 1
    signed = 2 * np.asarray(weights, dtype=np.int64) - 1
    n_out, n_in = signed.shape
    mean = signed.sum(axis=1) * top / 2
    spread = max(1.0, top * np.sqrt(n_in / 3))
    t = np.rint(mean + rng.normal(0, spread, size=n_out)).astype(np.int64)
    if extremes:
        bound = n_in * top
        lowest = -top * (signed < 0).sum(axis=1)
        highest = top * (signed > 0).sum(axis=1) + 1
        pick = rng.random(n_out)
        for k, value in enumerate((np.zeros(n_out, np.int64), lowest, highest,
                                   np.full(n_out, -bound - 7), np.full(n_out, bound + 9))):
            t = np.where((pick >= 0.05 * k) & (pick < 0.05 * (k + 1)), value, t)
    return t.astype(np.int64)


def int_dense_layer(rng: np.random.Generator, n_in: int, n_out: int, input_bits: int, pe: int = 1,
                    simd: int = 1) -> LayerSpec:
    """An int_dense layer on ``input_bits``-bit inputs with random weights and `random_int_thresholds`."""
    weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
    return LayerSpec(n_in, n_out, weights, random_int_thresholds(rng, weights, input_bits), pe, simd,
                     kind="int_dense", input_bits=input_bits)


def sized_network(sizes: list[int], folding: list[tuple[int, int]], seed: int = 0,
                  weight_styles: list[str] | None = None, constant_channels: bool = False,
                  input_bits: int = 1) -> NetworkSpec:
    """Dense layers sizes[0] -> sizes[1] -> ... with random weights and thresholds (the last layer
    none: it gives the scores), the given (PE, SIMD) per layer and optionally a weight memory style.
    With ``input_bits`` b >= 2 the first layer is int_dense on b-bit inputs (and not the last)."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(pairwise(sizes)):
        style = weight_styles[k] if weight_styles else "auto"
        if k == 0 and input_bits > 1:
            layers.append(replace(int_dense_layer(rng, n_in, n_out, input_bits), weight_style=style))
            continue
        weights = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        is_output = k == len(sizes) - 2
        thresholds = None if is_output else random_thresholds(rng, n_in, n_out, constant_channels)
        layers.append(LayerSpec(n_in, n_out, weights, thresholds, weight_style=style))
    spec = NetworkSpec(tuple(layers), name="-".join(map(str, sizes))).with_folding(folding)
    spec.validate()
    return spec


def random_frames(spec: NetworkSpec, frames: int, seed: int = 1) -> np.ndarray:
    """Random input bits for ``frames`` frames of ``spec`` (b-bit input elements: uniform values)."""
    return np.random.default_rng(seed).integers(0, 2, size=(frames, spec.input_bits), dtype=np.uint8)
