"""The dense op: a binary fully connected layer on one MVTU (hw/mvtu.py).

Numerics (DESIGN.md section 2): ``p = popcount(XNOR(x, w))`` per output channel; a hidden layer
outputs the bit ``p >= T``, the last layer (no thresholds) emits every channel's ``p`` as class
scores to the output op. Geometry: a vector in, a vector out: C = n_in, H = W = 1, one vector per
frame, K = stride = 1, no padding.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from xnorflow.hw.mvtu import MVTU, EngineTiming
from xnorflow.hw.ops.base import Op, register
from xnorflow.hw.popcount import count_levels
from xnorflow.hw.spec import MEMORY_STYLES, SpecError, bits_for, ceil_div, threshold_rom_width
from xnorflow.hw.stream_format import fold_beats_to_bits

# The widest integer input element (int_dense, int_conv) the engine and the golden model take.
MAX_INPUT_BITS = 16


def check_matrix(layer, where: str, integer: bool = False) -> None:
    """The matrix-vector unit's part of `validate` (dense and conv; ``integer``: int_dense and
    int_conv): bit weights of shape (n_out, n_in), a folding that fits, memory styles, thresholds
    in range (binary) or present (integer inputs, whose thresholds may be any integer)."""
    bits = layer.input_bits
    if not integer and bits != 1:
        raise SpecError(f"{where}: input_bits {bits} on a binary layer; a layer on {bits}-bit integer inputs "
                        "is of kind int_dense or int_conv: re-run the compiler on the model")
    if integer and not 2 <= bits <= MAX_INPUT_BITS:
        raise SpecError(f"{where}: input_bits {bits}; integer inputs take 2 to {MAX_INPUT_BITS} bits "
                        "(1-bit inputs are a binary layer, kind dense or conv): re-run the compiler on the model")
    if integer and layer.thresholds is None:
        raise SpecError(f"{where} has no thresholds: an integer-input layer gives activation bits, the "
                        "network's last (scores) layer must be a binary dense layer after it")
    if layer.weights is None or layer.weights.shape != (layer.n_out, layer.n_in):
        shape = None if layer.weights is None else layer.weights.shape
        raise SpecError(f"{where}: weights have shape {shape}, expected "
                        f"({layer.n_out}, {layer.n_in}): re-run the compiler on the model")
    if layer.weights.size and (layer.weights.max() > 1):
        raise SpecError(f"{where}: weights must be bits (0 or 1): re-run the compiler on the model")
    if not (1 <= layer.pe <= layer.n_out) or not (1 <= layer.simd <= layer.n_in):
        raise SpecError(f"{where}: folding PE={layer.pe}, SIMD={layer.simd} does not fit "
                        f"{layer.n_out} outputs x {layer.n_in} inputs: choose 1 <= PE <= {layer.n_out} "
                        f"and 1 <= SIMD <= {layer.n_in}")
    if not 1 <= layer.weight_packing <= layer.pe:
        raise SpecError(f"{where}: weight packing {layer.weight_packing} (PEs per weight memory word) with "
                        f"PE={layer.pe}: choose 1 <= packing <= {layer.pe}")
    for style in (layer.weight_style, layer.buffer_style):
        if style not in MEMORY_STYLES:
            raise SpecError(f"{where}: memory style {style!r}: choose one of {', '.join(MEMORY_STYLES)}")
    if layer.thresholds is not None:
        if layer.thresholds.shape != (layer.n_out,):
            raise SpecError(f"{where}: {layer.thresholds.shape} thresholds for {layer.n_out} "
                            "channels: re-run the compiler on the model")
        if integer:
            return
        lo, hi = int(layer.thresholds.min()), int(layer.thresholds.max())
        if lo < 0 or hi > layer.n_in + 1:
            raise SpecError(f"{where}: threshold out of range [{lo}, {hi}], the hardware takes "
                            f"0..{layer.n_in + 1}: fold batch-norm with the compiler, which clamps them")


@register
class DenseOp(Op):
    kind = "dense"
    role = "layer"
    # Inputs are +-1 bits; int_dense (hw/ops/int_dense.py) is this op on b-bit integers.
    integer_inputs = False

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, index: int = 0) -> None:
        layer = self.layer
        where = f"layer {index}" if self.kind == "dense" else f"layer {index} ({self.kind})"
        if layer.n_in < 1 or layer.n_out < 1:
            raise SpecError(f"{where} has a zero width ({layer.n_in} inputs, {layer.n_out} outputs): "
                            "remove it from the model")
        geometry = (layer.in_shape, layer.out_shape, layer.kernel, layer.stride, layer.padding)
        if geometry != ((layer.n_in, 1, 1), (layer.n_out, 1, 1), 1, 1, 0):
            raise SpecError(f"{where}: a dense layer takes a vector of n_in = {layer.n_in} bits and gives "
                            f"n_out = {layer.n_out} (C x H x W {layer.in_shape} -> {layer.out_shape}, "
                            f"K={layer.kernel}, stride {layer.stride}, padding {layer.padding}): "
                            "re-run the compiler on the model")
        check_matrix(layer, where, self.integer_inputs)

    @property
    def emits_scores(self) -> bool:
        return self.layer.thresholds is None

    @property
    def in_width(self) -> int:
        return self.layer.simd

    @property
    def out_width(self) -> int:
        return self.layer.pe

    @property
    def beats_per_frame(self) -> int:
        return self.layer.neuron_folds

    def submodule_name(self, index: int) -> str:
        return f"mvtu{index}"

    # --- schedule and folding --------------------------------------------------------------------
    @property
    def cycles(self) -> int:
        """ceil(n_out / PE) * ceil(n_in / SIMD) per frame (DESIGN.md section 3)."""
        return self.layer.neuron_folds * self.layer.synapse_folds

    @property
    def weight_depth(self) -> int:
        """Words per weight bank: NF * SF."""
        return self.layer.neuron_folds * self.layer.synapse_folds

    def cheapest_folding(self, target_cycles: int) -> tuple[int, int]:
        """The (PE, SIMD) with the fewest parallel lanes whose cycles fit target_cycles.

        For each PE, the smallest SIMD meeting the target is computed directly; among equal lane
        counts the one with fewer cycles (less padding) wins, then the one with smaller PE (fewer
        memory banks).
        """
        n_in, n_out = self.layer.n_in, self.layer.n_out
        best = None
        for pe in range(1, n_out + 1):
            folds = ceil_div(n_out, pe)
            synapse_budget = target_cycles // folds
            if synapse_budget < 1:
                continue
            simd = ceil_div(n_in, min(synapse_budget, n_in))
            cycles = folds * ceil_div(n_in, simd)
            key = (pe * simd, cycles, pe)
            if best is None or key < best[0]:
                best = (key, pe, simd)
        if best is None:
            return n_out, n_in
        return best[1], best[2]

    def folding_candidates(self, target_cycles: int, widths: list[int]) -> list[tuple[int, int]]:
        """(PE, SIMD) pairs worth considering within ``target_cycles``.

        For each number of neuron folds NF, the smallest PE giving it; with it, the smallest SIMD
        that meets the target, and that SIMD rounded up to each of ``widths`` (the widths a memory
        block takes), so weight banks can fill blocks instead of spilling a few bits into another.
        """
        n_in, n_out = self.layer.n_in, self.layer.n_out
        pairs = set()
        for nf in range(1, n_out + 1):
            pe = ceil_div(n_out, nf)
            if ceil_div(n_out, pe) != nf:
                continue
            budget = target_cycles // nf
            if budget < 1:
                break
            simd = ceil_div(n_in, min(budget, n_in))
            pairs.add((pe, simd))
            for width in widths:
                rounded = ceil_div(simd, width) * width
                if rounded < n_in:
                    pairs.add((pe, rounded))
        return sorted(pairs)

    # --- memories and the resource estimate ------------------------------------------------------
    @property
    def timing(self) -> EngineTiming:
        """The engine's pipeline depth and output queue."""
        return EngineTiming(self.layer)

    @property
    def threshold_bits(self) -> int:
        """Bits of one stored threshold."""
        return self.layer.threshold_width

    def threshold_banks(self) -> np.ndarray:
        """The threshold ROM's contents, (pe, neuron_folds), as the engine stores them."""
        return self.layer.threshold_banks()

    def memories(self) -> list[dict]:
        """The weight memories (`LayerSpec.weight_memories`: one per group of ``weight_packing`` PEs,
        one entry per word width), the input ping-pong buffer and (hidden layers) the threshold ROM
        (one word of ``pe`` thresholds per fold, no style: Yosys decides)."""
        layer = self.layer
        widths = Counter(layer.weight_memory_widths())
        memories = [{"role": "weights", "width": width, "depth": self.weight_depth, "count": count,
                     "style": layer.weight_style, "kind": "rom"} for width, count in sorted(widths.items())]
        memories += [{"role": "input buffer", "width": self.in_width, "depth": 2 * layer.synapse_folds, "count": 1,
                      "style": layer.buffer_style, "kind": "ram"}]
        if not self.emits_scores:
            # Yosys drops a ROM's constant bit columns before mapping it (a threshold's high bits are
            # often 0 in every fold): the memory it maps is that many bits narrower.
            width = threshold_rom_width(self.threshold_banks(), self.threshold_bits)
            memories.append({"role": "thresholds", "width": width, "depth": layer.neuron_folds, "count": 1,
                             "style": "auto" if width else "logic", "kind": "rom"})
        return memories

    def logic_terms(self) -> dict[str, int]:
        layer = self.layer
        return {"simd_lane": layer.pe * layer.simd, "acc_bit": layer.pe * layer.popcount_width, "engine": 1}

    def flip_flops(self) -> int:
        """Popcount levels, accumulators, input and weight words, counters, stage control; for a
        hidden layer the threshold compare and the output queue (the scores layer's frame result
        and queue are the label-select's)."""
        layer = self.layer
        pe, simd = layer.pe, layer.simd
        nf, sf = layer.neuron_folds, layer.synapse_folds
        timing = self.timing
        ffs = self.count_flip_flops()                                         # count levels, accumulators
        ffs += self.in_width + (pe * simd if layer.register_weights else 0)   # input word, weight words
        ffs += 2 * bits_for(nf - 1) + bits_for(sf - 1) + bits_for(nf * sf - 1)   # counters
        stages = timing.accumulate_latency + 2
        if not self.emits_scores:
            stages += timing.result_latency
        ffs += stages * (3 + bits_for(nf - 1))                                # stage control
        if not self.emits_scores:
            ffs += pe + 1                                                     # registered threshold compare
            ffs += timing.queue_depth * pe + 2 * bits_for(timing.queue_depth)   # output queue
        return ffs

    def count_flip_flops(self) -> int:
        """The popcount levels and accumulator of every PE."""
        layer = self.layer
        levels = count_levels(layer.simd)
        return layer.pe * (sum(bits_for(most) for level in levels for most in level) + layer.popcount_width)

    # --- RTL -------------------------------------------------------------------------------------
    def component(self, index: int = 0) -> MVTU:
        return MVTU(self.layer, index=index)

    def decode(self, beats: list[int]) -> np.ndarray:
        """A hidden layer's output beats -> (frames, n_out) activation bits (whole frames only)."""
        return fold_beats_to_bits(beats, self.layer.n_out, self.layer.pe)

    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        """For a mismatch message: the golden popcount of one neuron on one frame's input bits, and
        its threshold."""
        weights = self.layer.weights[neuron]
        detail = {"popcount": int(np.count_nonzero(np.asarray(layer_input, dtype=np.uint8) == weights))}
        if self.layer.thresholds is not None:
            detail["threshold"] = int(self.layer.thresholds[neuron])
        return detail

    # --- numerics --------------------------------------------------------------------------------
    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, n_in) bits -> popcounts (frames, n_out) for the scores layer, else output bits."""
        x = np.asarray(x, dtype=np.uint8)
        counts = (x[:, None, :] == self.layer.weights[None, :, :]).sum(axis=2, dtype=np.int64)
        if self.emits_scores:
            return counts
        return (counts >= self.layer.thresholds[None, :]).astype(np.uint8)
