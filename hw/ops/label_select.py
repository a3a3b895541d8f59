"""The label-select op: the network's output, after the last layer (FINN's LabelSelect, top-1).

It takes the scores layer's fold beats on the scores link (`xnorflow.hw.mvtu.fold_scores_signature`:
``pe`` popcounts per fold, NF folds per frame) and emits one beat per frame: the index of the largest
score, ties to the lowest index, and every class's score (:func:`class_scores_layout`, DESIGN.md
section 2). Its pipeline and queue are the ones the output MVTU used to end in, so latency, II and
logic are what they were:

    rows       the fold's scores (padded classes of the last fold forced to 0) and class numbers
    argmax     a tree over the ``pe`` rows, a register after every level, ceil(log2 PE) levels
    running    the running best across folds (a later fold wins only when strictly greater) and
               the frame's class scores, filled fold by fold
    queue      the frame's result; a slot is taken when the engine starts the frame (credit)
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from xnorflow.hw.mvtu import EngineTiming, fold_scores_signature
from xnorflow.hw.ops.base import Op, op_for, register
from xnorflow.hw.pipeline import output_queue, register_stage
from xnorflow.hw.pipeline import register as register_value
from xnorflow.hw.popcount import argmax_level
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import LayerSpec, SpecError, bits_for
from xnorflow.hw.stream_format import decode_output


def class_scores_layout(layer: LayerSpec) -> data.StructLayout:
    """Payload of the network's output stream, from its scores layer: the contract read by
    testbenches and boards.

    Bits [0, iw) hold the class index (iw = bits_for(n_classes - 1)); the score of class c sits at
    bits [iw + c*sw, iw + (c+1)*sw) with sw = the layer's popcount width.
    """
    return data.StructLayout({
        "index": unsigned(bits_for(layer.n_out - 1)),
        "scores": data.ArrayLayout(unsigned(layer.popcount_width), layer.n_out),
    })


class LabelSelect(wiring.Component):
    """Fold scores of the last layer (``layer``, no thresholds) -> class index and scores per frame.

    Ports: ``i`` the scores link (credit: takes every valid beat, grants ``room`` while a result
    slot is free); ``o`` a stream of :func:`class_scores_layout` beats, one per frame.
    """

    def __init__(self, layer: LayerSpec, index: int = 0):
        with refusing(self):
            LabelSelectOp(layer).validate(index)
        self.layer = layer
        self.timing = EngineTiming(layer)
        super().__init__({
            "i": In(fold_scores_signature(layer)),
            "o": Out(stream.Signature(class_scores_layout(layer))),
        })

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        pe, nf_count, n_classes = layer.pe, layer.neuron_folds, layer.n_out
        valid, fold = self.i.valid, self.i.fold
        last_fold = fold == nf_count - 1
        real_in_last_fold = n_classes - (nf_count - 1) * pe
        # Padded classes (only in the last fold) score 0: with ties going to the lower index they
        # can never beat the real class that precedes them in the same fold.
        accs = [self.i.scores[r] for r in range(pe)]
        scores = [Mux(last_fold, 0, accs[r]) if r >= real_in_last_fold else accs[r] for r in range(pe)]

        # Stage 1: the fold's scores and the class number of each row, registered.
        width = layer.popcount_width
        row_scores = [Signal(width, name=f"row_score{r}") for r in range(pe)]
        row_classes = [Signal(range(nf_count * pe), name=f"row_class{r}") for r in range(pe)]
        rows_valid, rows_fold = Signal(), Signal(range(nf_count))
        # Whether this is the frame's first or last fold travels as flags: a compare of the fold
        # number sat in the running argmax's loop below, the longest path of TFC on the iCE40UP5K.
        rows_first, rows_last = Signal(), Signal()
        m.d.sync += [rows_valid.eq(valid), rows_fold.eq(fold), rows_first.eq(fold == 0), rows_last.eq(last_fold)]
        m.d.sync += [row_scores[r].eq(scores[r]) for r in range(pe)]
        m.d.sync += [row_classes[r].eq(fold * pe + r) for r in range(pe)]

        # Then the fold's best: an argmax tree with a register after every level, the fold's
        # scores and number travelling alongside.
        nodes = list(zip(row_scores, row_classes))
        fold_scores = row_scores
        stage = {"valid": rows_valid, "number": rows_fold, "first": rows_first, "last": rows_last}
        for level in range(self.timing.argmax_levels):
            nodes = [(register_value(m, value, f"best{level}_{k}"), register_value(m, where, f"best_class{level}_{k}"))
                     for k, (value, where) in enumerate(argmax_level(nodes))]
            fold_scores = [register_value(m, score, f"fold{level}_score{r}") for r, score in enumerate(fold_scores)]
            stage = register_stage(m, f"fold{level}", stage)
        (fold_best, fold_best_class), = nodes

        # Running argmax: a later fold's best wins only when strictly greater (ties -> lowest index).
        run_best = Signal(width)
        run_class = Signal(range(nf_count * pe))
        take = stage["first"] | (fold_best > run_best)
        frame_scores = [Signal(width, name=f"frame_score{c}") for c in range(n_classes)]
        with m.If(stage["valid"]):
            m.d.sync += [run_best.eq(Mux(take, fold_best, run_best)), run_class.eq(Mux(take, fold_best_class, run_class))]
            for c in range(n_classes):
                with m.If(stage["number"] == c // pe):
                    m.d.sync += frame_scores[c].eq(fold_scores[c % pe])

        # The cycle after the last fold, run_class and frame_scores hold the frame's result: the
        # queue takes it from those registers (taking the last fold's straight from the compare
        # put the running argmax's loop in front of the queue, TFC/digits' longest path, 36.7 MHz).
        result = Signal(class_scores_layout(layer))
        m.d.comb += [result.index.eq(run_class)]
        m.d.comb += [result.scores[c].eq(frame_scores[c]) for c in range(n_classes)]
        result_valid = register_value(m, stage["valid"] & stage["last"], "frame_valid")
        output_queue(m, self.o, self.timing.queue_depth, write=result_valid, data=result,
                     start=self.i.start, may_start=self.i.room)
        return m


@register
class LabelSelectOp(Op):
    """Top-1 of the last layer's scores. ``layer`` is that (scores) layer."""

    kind = "label_select"
    role = "output"

    def validate(self, index: int = 0) -> None:
        if not op_for(self.layer, index).emits_scores:
            raise SpecError(f"layer {index} gives activation bits, not class scores, so label-select "
                            "cannot follow it: the last layer must have no thresholds; re-run the compiler")

    @property
    def n_classes(self) -> int:
        return self.layer.n_out

    @property
    def in_width(self) -> int:
        return self.layer.pe * self.layer.popcount_width

    @property
    def payload_layout(self) -> data.StructLayout:
        """The network's output beat (:func:`class_scores_layout`)."""
        return class_scores_layout(self.layer)

    @property
    def out_width(self) -> int:
        return self.payload_layout.size

    @property
    def beats_per_frame(self) -> int:
        return 1

    def submodule_name(self, index: int) -> str:
        return "label_select"

    @property
    def cycles(self) -> int:
        """One fold beat per cycle: NF cycles per frame, never more than the layer before it."""
        return self.layer.neuron_folds

    def memories(self) -> list[dict]:
        return []

    def logic_terms(self) -> dict[str, int]:
        """Per (PE + class) per score bit: the argmax tree, the fold's and the frame's scores."""
        return {"score_bit": (self.layer.pe + self.layer.n_out) * self.layer.popcount_width}

    def flip_flops(self) -> int:
        layer = self.layer
        pe, acc, nf = layer.pe, layer.popcount_width, layer.neuron_folds
        timing = EngineTiming(layer)
        levels = timing.argmax_levels
        class_bits = bits_for(layer.n_out - 1)
        ffs = timing.result_latency * (3 + bits_for(nf - 1))                # stage control
        ffs += (layer.n_out + 2 + pe * (1 + levels)) * acc                   # frame, row and fold scores
        ffs += pe * (acc + class_bits) + 2 * class_bits                      # argmax tree, running best
        ffs += 2 * (1 + levels)                                              # first/last fold flags
        payload = class_bits + layer.n_out * acc
        ffs += timing.queue_depth * payload + 2 * bits_for(timing.queue_depth)   # output queue
        return ffs

    def component(self, index: int = 0) -> LabelSelect:
        return LabelSelect(self.layer, index)

    def decode(self, beats: list[int]) -> np.ndarray:
        """Output beats -> (frames, 1 + n_classes) int64: the class index, then every class's score."""
        iw, sw = bits_for(self.n_classes - 1), self.layer.popcount_width
        out = np.empty((len(beats), 1 + self.n_classes), dtype=np.int64)
        for f, payload in enumerate(beats):
            index, scores = decode_output(payload, self.n_classes, iw, sw)
            out[f] = [index, *scores]
        return out

    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, n_classes) scores -> (frames,) index of the largest, ties to the lowest index."""
        x = np.asarray(x)
        best = x.max(axis=1, keepdims=True)
        return np.argmax(x == best, axis=1).astype(np.int64)
