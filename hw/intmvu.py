"""Integer-input matrix-vector-threshold unit: the MVTU (hw/mvtu.py) on SIMD lanes of b-bit inputs.

Numerics (DESIGN.md section 2b): element i of the input is an unsigned b-bit integer x_i, weight
w_i is +-1 (bit 1 = +1), and output channel o is the bit ``s_o >= T_o`` with
``s = sum_i w_i * x_i = 2 * P - X``, ``P = sum(x_i where w_i = +1)``, ``X = sum(x_i)``.

No multipliers: a weight bit only gates its lane into its PE's adder tree (P); X, the sum of every
lane, is one adder tree shared by all PEs; ``2P - X`` adds the lanes of weight +1 and subtracts
those of weight -1. A lane holding 0 adds nothing whatever its weight, so SIMD-lane padding (the
input's last beat is zero-padded; padded weight lanes are 1-bits, as the MVTU's) contributes
nothing, and padded output channels (all weights +1) get the threshold ``S + 1``, above any sum.

Pipeline: the MVTU's stages, issue, ping-pong input buffer, weight banks (`LayerSpec.weight_banks`),
accumulation, registered compare and credit-based output queue, so a frame still takes NF * SF
cycles with no bubbles. Only the count differs::

    count      registered gated sums per pair of lanes (INT_LANE_GROUP), per PE and for the shared
               total X, then registered sums of up to POPCOUNT_GROUP of those: `int_count_levels(simd)`
    combine    registered 2P_r - X per PE (signed)
    acc        the signed sum s per PE, complete at the last beat of a fold; then s >= T (signed)

Widths: with M = 2^b - 1 and S = n_in * M, every s is in [-S, S]; the accumulator holds that range
and a threshold is stored clamped into [-S, S + 1], which changes no output bit.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal

from xnorflow.hw.mvtu import MVTU, EngineTiming, registered_sums
from xnorflow.hw.pipeline import register, register_stage
from xnorflow.hw.popcount import count_levels, group_slices


def element_max(layer) -> int:
    """M = 2^b - 1, the largest input element."""
    return (1 << layer.input_bits) - 1


# b-bit lanes per registered first-level sum: one adder after the weight gating. With four (the
# popcount's group) the weight RAM's output went through the gate and a chain of three carry adders
# before a register: TFC with 8-bit inputs on the iCE40UP5K reached 34 MHz, the 1-bit TFC 47.
INT_LANE_GROUP = 2


def int_count_levels(simd: int) -> list[list[int]]:
    """The registered levels of an integer engine's sums, in lanes (`count_levels`): pairs, then
    groups of POPCOUNT_GROUP."""
    return count_levels(simd, first_group=INT_LANE_GROUP)


def sum_bound(layer) -> int:
    """S = n_in * M: every sum s of the layer lies in [-S, S]."""
    return layer.n_in * element_max(layer)


def sum_shape(layer) -> Shape:
    """The accumulator's shape: a sum s in [-S, S]."""
    return Shape.cast(range(-sum_bound(layer), sum_bound(layer) + 1))


def stored_threshold_shape(layer) -> Shape:
    """A threshold as stored: clamped into [-S, S + 1]."""
    return Shape.cast(range(-sum_bound(layer), sum_bound(layer) + 2))


class IntEngineTiming(EngineTiming):
    """An IntMVU's pipeline depth and queue: the MVTU's with two more count stages (the registered
    operands and the combine)."""

    @property
    def count_stages(self) -> int:
        return len(int_count_levels(self.layer.simd)) + 2


def int_threshold_banks(layer) -> np.ndarray:
    """An integer-input layer's threshold ROM contents, (pe, neuron_folds): thresholds clamped into
    [-S, S + 1] (the same output bits), padded channels S + 1 (always 0)."""
    bound = sum_bound(layer)
    clamped = np.clip(np.asarray(layer.thresholds, dtype=np.int64), -bound, bound + 1)
    return replace(layer, thresholds=clamped).threshold_banks(pad=bound + 1)


class IntMVU(MVTU, IntEngineTiming):
    """One integer-input layer (kind int_dense, or the matrix unit of int_conv): SF beats of SIMD
    lanes of ``input_bits`` bits in (lane j of a beat at bits [j*b, (j+1)*b)), NF beats of PE
    threshold bits out, as the MVTU. It always has thresholds (it is never the scores layer)."""

    @property
    def accumulator_shape(self) -> Shape:
        return sum_shape(self.layer)

    @property
    def threshold_shape(self) -> Shape:
        return stored_threshold_shape(self.layer)

    def threshold_banks(self) -> np.ndarray:
        return int_threshold_banks(self.layer)

    def _count(self, m: Module, x, weights, control):
        """Per beat and PE, 2P - X (see the module docstring): the operands registered as they leave
        their memories, gated lane sums per PE and the total X in registered levels
        (`registered_sums`), then one registered combine stage."""
        layer = self.layer
        b, top = layer.input_bits, element_max(layer)
        # The block RAMs' outputs reach the gates only through a register: on the iCE40 their routing
        # alone took a quarter of the clock period in front of the first adders.
        x = register(m, x, "operand_x")
        weights = [register(m, word, f"operand_w{r}") for r, word in enumerate(weights)]
        control = register_stage(m, "operands", control)
        lanes = [x[j * b:(j + 1) * b] for j in range(layer.simd)]
        groups = group_slices(layer.simd, INT_LANE_GROUP)
        gated = [[(sum(Mux(weights[r][j], lanes[j], 0) for j in range(start, stop)), top * (stop - start))
                  for start, stop in groups] for r in range(layer.pe)]
        total = [(sum(lanes[j] for j in range(start, stop)), top * (stop - start)) for start, stop in groups]
        sums, control = registered_sums(m, gated + [total], control,
                                        [f"pe{r}" for r in range(layer.pe)] + ["total"])
        *positive, everything = sums
        # 2P - X lies in [-X, X] since 0 <= P <= X, and each register holds [-simd*M, simd*M]: the
        # unsigned difference (one bit wider than the register) truncates to its two's complement.
        span = layer.simd * top
        combined = [Signal(range(-span, span + 1), name=f"combined_pe{r}") for r in range(layer.pe)]
        m.d.sync += [combined[r].eq(positive[r] * 2 - everything) for r in range(layer.pe)]
        return combined, register_stage(m, "combine", control)
