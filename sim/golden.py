"""Bit-exact NumPy execution of a NetworkSpec: the truth the RTL is checked against.

Vectors are packed LSB-first into uint64 words (element i is bit i % 64 of word i // 64). Both the
input and the weights are padded with 0-bits, so the padded lanes of ``x XOR w`` are 0 and
``p = popcount(XNOR(x, w)) = N - popcount(x XOR w)`` counts only real lanes. Folding (PE, SIMD)
changes the schedule in hardware, never these numbers, so it is ignored here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xnorflow.hw.spec import LayerSpec, NetworkSpec

# Images per block: small enough that a block's (images, words, channels) scratch stays in cache.
_BLOCK = 16


@dataclass
class GoldenResult:
    """What the network computes for a batch of frames."""

    scores: np.ndarray          # (frames, n_classes) int64: the output layer's popcounts
    predictions: np.ndarray     # (frames,) int64: argmax of scores, ties to the lowest index
    activations: list[np.ndarray]  # per hidden layer, (frames, n_out) uint8 output bits


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """(rows, n) {0,1} -> (rows, ceil(n / 64)) uint64, LSB first, zero-padded."""
    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    rows, n = bits.shape
    words = -(-n // 64)
    padded = np.zeros((rows, words * 64), dtype=np.uint8)
    padded[:, :n] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(rows, words)


def unpack_rows(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_rows."""
    as_bytes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, count=n, bitorder="little")


def popcounts(x_packed: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """popcount(XNOR(x, w)) for every frame and channel: (frames, n_out) int64."""
    w_packed = pack_rows(layer.weights)           # (n_out, words)
    w_t = np.ascontiguousarray(w_packed.T)        # (words, n_out): contiguous per word
    frames, words = x_packed.shape
    mismatches = np.empty((frames, layer.n_out), dtype=np.uint16)
    scratch = np.empty((_BLOCK, words, layer.n_out), dtype=np.uint64)
    counts = np.empty((_BLOCK, words, layer.n_out), dtype=np.uint8)
    for start in range(0, frames, _BLOCK):
        block = x_packed[start:start + _BLOCK]
        n = block.shape[0]
        np.bitwise_xor(block[:, :, None], w_t[None], out=scratch[:n])
        np.bitwise_count(scratch[:n], out=counts[:n])
        counts[:n].sum(axis=1, dtype=np.uint16, out=mismatches[start:start + n])
    return layer.n_in - mismatches.astype(np.int64)


def execute(spec: NetworkSpec, input_bits: np.ndarray) -> GoldenResult:
    """Run frames through the network. ``input_bits`` is (frames, input_bits) of {0,1}."""
    input_bits = np.asarray(input_bits)
    if input_bits.ndim != 2 or input_bits.shape[1] != spec.input_bits:
        raise ValueError(f"input has shape {input_bits.shape}; the network takes (frames, {spec.input_bits}) bits")
    x = pack_rows(input_bits)
    activations = []
    for layer in spec.layers[:-1]:
        out_bits = (popcounts(x, layer) >= layer.thresholds[None, :]).astype(np.uint8)
        activations.append(out_bits)
        x = pack_rows(out_bits)
    scores = popcounts(x, spec.layers[-1])
    return GoldenResult(scores=scores, predictions=np.argmax(scores, axis=1), activations=activations)
