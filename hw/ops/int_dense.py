"""The int_dense op: a dense layer on unsigned b-bit inputs with +-1 weights (the BWN first layer),
on an IntMVU (hw/intmvu.py).

Numerics (DESIGN.md section 2b): ``s_o = sum_i w_oi * x_i`` with x_i unsigned b-bit integers
(b = ``input_bits``, 2..16) and w in {-1, +1} (weight bit 1 = +1; rows of negative gamma already
inverted by the compiler); the output bit is ``s_o >= T_o``. T is any integer (negative too); the
hardware stores it clamped into [-S, S + 1], S = n_in * (2^b - 1), which changes no output bit.
Always a hidden layer (it has thresholds), and only the first: its input is the network's frame.

Streams. In: a frame is the vector of n_in elements, element i at bits [i*b, (i+1)*b), LSB first,
cut into SF = ceil(n_in / SIMD) beats of SIMD*b bits, the last zero-padded (padded lanes are the
value 0, which adds nothing to s). Out: as the dense op, NF beats of PE bits.
"""
from __future__ import annotations

import numpy as np

from xnorflow.hw.intmvu import (
    IntEngineTiming,
    IntMVU,
    element_max,
    int_count_levels,
    int_threshold_banks,
    stored_threshold_shape,
    sum_shape,
)
from xnorflow.hw.ops.base import register
from xnorflow.hw.ops.dense import DenseOp
from xnorflow.hw.spec import SpecError, bits_for


def unpack_elements(bits: np.ndarray, input_bits: int) -> np.ndarray:
    """(frames, n * b) bits, element i at bits [i*b, (i+1)*b) LSB first -> (frames, n) int64 values."""
    bits = np.asarray(bits, dtype=np.int64)
    frames = bits.shape[0]
    place = np.left_shift(np.int64(1), np.arange(input_bits, dtype=np.int64))
    return (bits.reshape(frames, -1, input_bits) * place).sum(axis=2)


def pack_elements(values: np.ndarray, input_bits: int) -> np.ndarray:
    """Inverse of unpack_elements: (frames, n) values in [0, 2^b) -> (frames, n * b) bits."""
    values = np.asarray(values, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= 1 << input_bits):
        raise SpecError(f"input values span [{values.min()}, {values.max()}]; {input_bits}-bit inputs take "
                        f"0..{(1 << input_bits) - 1}: scale or clip the inputs")
    bits = (values[..., None] >> np.arange(input_bits, dtype=np.int64)) & 1
    return bits.reshape(values.shape[0], -1).astype(np.uint8)


def signed_weights(weights: np.ndarray) -> np.ndarray:
    """(n_out, n_in) weight bits -> +-1 int64 (bit 1 = +1)."""
    return 2 * np.asarray(weights, dtype=np.int64) - 1


def check_first(index: int, kind: str) -> None:
    """An integer-input layer takes the network's input frame: it must be layer 0."""
    if index != 0:
        raise SpecError(f"layer {index} ({kind}) takes integer inputs, but only the first layer sees the "
                        "network's (integer) input; later layers take activation bits: make it the first "
                        "layer or a binary one")


@register
class IntDenseOp(DenseOp):
    kind = "int_dense"
    role = "layer"
    integer_inputs = True

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, index: int = 0) -> None:
        check_first(index, self.kind)
        super().validate(index)

    @property
    def in_width(self) -> int:
        """SIMD lanes of b bits."""
        return self.layer.simd * self.layer.input_bits

    @property
    def in_unit(self) -> int:
        """The frame's whole vector: n_in elements of b bits."""
        return self.layer.n_in * self.layer.input_bits

    def submodule_name(self, index: int) -> str:
        return f"intmvu{index}"

    # --- memories and the resource estimate ------------------------------------------------------
    @property
    def timing(self) -> IntEngineTiming:
        return IntEngineTiming(self.layer)

    @property
    def threshold_bits(self) -> int:
        return stored_threshold_shape(self.layer).width

    def threshold_banks(self) -> np.ndarray:
        return int_threshold_banks(self.layer)

    def logic_terms(self) -> dict[str, int]:
        """The adder trees, per lane bit (each PE's gated tree and the shared total): ``int_lane_bit``;
        per PE per accumulator bit the combine, accumulator and signed compare: ``int_acc_bit``."""
        layer = self.layer
        return {"int_lane_bit": (layer.pe + 1) * layer.simd * layer.input_bits,
                "int_acc_bit": layer.pe * self.accumulator_bits, "engine": 1}

    @property
    def accumulator_bits(self) -> int:
        return sum_shape(self.layer).width

    def count_flip_flops(self) -> int:
        """The registered operands, every level of the PE trees and of the shared total, the combine
        registers and the accumulators (see hw/intmvu.py)."""
        layer = self.layer
        top = element_max(layer)
        levels = int_count_levels(layer.simd)
        tree = sum(bits_for(top * most) for level in levels for most in level)
        combine = bits_for(layer.simd * top) + 1
        operands = layer.simd * layer.input_bits + layer.pe * layer.simd
        return operands + (layer.pe + 1) * tree + layer.pe * (combine + self.accumulator_bits)

    # --- RTL -------------------------------------------------------------------------------------
    def component(self, index: int = 0) -> IntMVU:
        return IntMVU(self.layer, index=index)

    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        """For a mismatch message: the golden sum s of one neuron on one frame's input bits, and its
        threshold."""
        values = unpack_elements(np.asarray(layer_input)[None, :], self.layer.input_bits)[0]
        return {"sum": int(values @ signed_weights(self.layer.weights[neuron])),
                "threshold": int(self.layer.thresholds[neuron])}

    # --- numerics --------------------------------------------------------------------------------
    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, n_in * b) input bits -> (frames, n_out) output bits ``s >= T``."""
        sums = unpack_elements(x, self.layer.input_bits) @ signed_weights(self.layer.weights).T
        return (sums >= self.layer.thresholds[None, :]).astype(np.uint8)

