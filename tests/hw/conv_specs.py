"""Random conv / max-pool networks for the hardware and simulation tests."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
from spec_factory import random_int_thresholds, random_thresholds

from xnorflow.hw.spec import LayerSpec, NetworkSpec, ceil_div, conv_layer, maxpool_layer


def random_conv_folding(rng, n_in: int, n_out: int, max_folds: int, max_simd: int | None = None,
                        min_folds: int = 1) -> tuple[int, int]:
    """A random (PE, SIMD), divisors or not, with min_folds <= NF * SF <= max_folds (and SIMD <=
    max_simd). NF * SF = 1 .. n_out * n_in are all reachable, so any range within that has one."""
    top = n_in if max_simd is None else min(n_in, max_simd)
    while True:
        pe = int(rng.integers(1, n_out + 1))
        simd = int(rng.integers(1, top + 1))
        if min_folds <= ceil_div(n_out, pe) * ceil_div(n_in, simd) <= max_folds:
            return pe, simd


def random_conv_spec(seed: int, *, max_c: int = 8, max_hw: int = 8, max_out: int = 8, max_folds: int = 6,
                     max_features: int = 3, input_bits: int = 1) -> NetworkSpec:
    """Conv and max-pool layers in a random order (at least one conv), then one or two dense layers.

    Input C in 1..max_c, H and W in 3..max_hw; convs K 1..5 (as the padded input allows), padding 0
    or 1 with either bit, random folding (PE and SIMD need not divide) of NF * SF <= max_folds, or for
    about a third of the convs K*K <= NF * SF <= K*K + max_folds, where the window generator emits one
    pixel per beat (hw/ops/conv.py: window_beat); pools of 2 or 3 where they fit.
    With ``input_bits`` b >= 2 the first layer is an int_conv on b-bit pixels (padding with 0).
    """
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, max_c + 1)), int(rng.integers(3, max_hw + 1)), int(rng.integers(3, max_hw + 1)))
    layers: list[LayerSpec] = []
    kinds = ["conv"] + [str(rng.choice(["conv", "maxpool"])) for _ in range(int(rng.integers(0, max_features)))]
    rng.shuffle(kinds)
    if input_bits > 1:
        kinds.remove("conv")
        kinds.insert(0, "conv")
    for kind in kinds:
        c, h, w = shape
        sizes = [s for s in (2, 3) if s <= min(h, w)]
        if kind == "maxpool" and sizes:
            size = int(rng.choice(sizes))
            layers.append(maxpool_layer(shape, size, pool_and=rng.integers(0, 2, size=c)))
        else:
            padding = int(rng.integers(0, 2))
            kernels = [k for k in range(1, 6) if k <= min(h, w) + 2 * padding and padding < k]
            k = int(rng.choice(kernels))
            o = int(rng.integers(1, max_out + 1))
            n_in = k * k * c
            if rng.random() < 1 / 3:
                pe, simd = random_conv_folding(rng, n_in, o, k * k + max_folds, min_folds=k * k)
            else:
                pe, simd = random_conv_folding(rng, n_in, o, max_folds)
            if input_bits > 1 and not layers:
                weights = rng.integers(0, 2, size=(o, n_in), dtype=np.uint8)
                layers.append(conv_layer(shape, weights, random_int_thresholds(rng, weights, input_bits), kernel=k,
                                         padding=padding, pad_value=0, pe=pe, simd=simd, input_bits=input_bits))
                shape = layers[-1].out_shape
                continue
            layers.append(conv_layer(shape, rng.integers(0, 2, size=(o, n_in), dtype=np.uint8),
                                     random_thresholds(rng, n_in, o), kernel=k, padding=padding,
                                     pad_value=int(rng.integers(0, 2)), pe=pe, simd=simd))
        shape = layers[-1].out_shape
    n = int(np.prod(shape))
    widths = [n] + [int(rng.integers(2, 12)) for _ in range(int(rng.integers(1, 3)))]
    for k, (n_in, n_out) in enumerate(pairwise(widths)):
        last = k == len(widths) - 2
        # SIMD up to 256: Amaranth's Python simulator cannot compile a popcount of thousands of lanes.
        pe, simd = random_conv_folding(rng, n_in, n_out, max(64, n_out * ceil_div(n_in, 256)), max_simd=256)
        layers.append(LayerSpec(n_in, n_out, rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8),
                                None if last else random_thresholds(rng, n_in, n_out), pe=pe, simd=simd))
    spec = NetworkSpec(tuple(layers), name=f"conv{seed}")
    spec.validate()
    return spec


def describe_conv(spec: NetworkSpec) -> str:
    parts = []
    for layer in spec.layers:
        if layer.kind in ("conv", "int_conv"):
            parts.append(f"{layer.kind}{layer.in_shape} b{layer.input_bits} K{layer.kernel} P{layer.padding}/{layer.pad_value} "
                         f"O{layer.n_out} pe={layer.pe} simd={layer.simd} packing={layer.weight_packing}")
        elif layer.kind == "maxpool":
            parts.append(f"pool{layer.in_shape} S{layer.kernel}")
        else:
            parts.append(f"dense {layer.n_in}->{layer.n_out} pe={layer.pe} simd={layer.simd} packing={layer.weight_packing}")
    return f"{spec.name} [{', '.join(parts)}]"
