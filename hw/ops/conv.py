"""The conv op: a K x K, stride-1 binary convolution = sliding-window generator + MVTU.

Numerics (DESIGN.md section 2a): the layer is the dense layer of N = K*K*C inputs and O outputs
applied once per output pixel to the window vector ordered (ky, kx, c), c fastest, pixels outside
the image being ``pad_value`` in every channel; p, thresholds and SIMD-lane padding are the dense
layer's. A conv always ends in thresholds: the scores layer is dense.

Streams. In: one pixel per beat, C bits, raster order, H x W per frame. Out: per output pixel
(raster order) NF = ceil(O / PE) beats of PE bits, channel nf*PE + r at bit r of beat nf, the padded
channels of the last beat 0; H' x W' pixels per frame, H' = H + 2P - K + 1. Decoded, a frame's
activations are (H' * W' * O) bits in (y, x, c) order.

Hardware: `ConvEngine` = `SlidingWindowGenerator` (hw/swg.py: line buffers in block-RAM-able
memories, padding inserted on the read side) -> width adapter (beat -> SIMD bits, one window = one
adapter frame of K*K*C elements) -> register slice -> `MVTU` (hw/mvtu.py, unchanged: its "frame" is
one output pixel). `window_beat` picks the generator's beat from the folding: one window pixel
(C elements) per beat, K*K beats per window, when the MVTU spends NF * SF >= K*K cycles on a
window; else G = ceil(K / (NF * SF)) window rows (G*K*C elements) per beat, ceil(K / G) beats.
Either way the generator reads a window in at most NF * SF cycles and the MVTU never waits for it:
a frame takes max(H' * W' * NF * SF, H * W) cycles (the second term: the generator takes one input
pixel per cycle; it binds only for valid convs folded to about one cycle per window). The
generator's datapath (bank choice or rotation, padding mask, output queue) and the adapter scale
with the beat's width, so a layer folded to K*K or more cycles per window pays for C elements of
it, not G*K*C.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from xnorflow.hw.adapters import RegisterSlice, WidthAdapter, adapter_flip_flops, adapter_terms
from xnorflow.hw.mvtu import MVTU
from xnorflow.hw.ops.base import Op, register
from xnorflow.hw.ops.dense import DenseOp, check_matrix, fold_beats_to_bits
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import LayerSpec, SpecError, bits_for, ceil_div, conv_out_shape
from xnorflow.hw.swg import QUEUE_DEPTH, SlidingWindowGenerator, buffer_rows


def window_beat(layer: LayerSpec) -> tuple[int, int]:
    """(G, J): the window rows and columns of one generator beat, so that the R = ceil(K / G) * K / J
    beats of a window take at most the MVTU's NF * SF cycles per window. (1, 1), one pixel per beat,
    when NF * SF >= K*K; else (ceil(K / (NF * SF)), K), G window rows per beat."""
    k = layer.kernel
    folds = layer.neuron_folds * layer.synapse_folds
    if folds >= k * k:
        return 1, 1
    return min(k, ceil_div(k, folds)), k


def padded_images(x: np.ndarray, layer: LayerSpec, dtype=np.uint8) -> np.ndarray:
    """(frames, H*W*C) elements (bits; int_conv: integers) in (y, x, c) order -> (frames, H + 2P,
    W + 2P, C), padded with pad_value."""
    c, h, w = layer.in_shape
    p = layer.padding
    x = np.asarray(x, dtype=dtype).reshape(-1, h, w, c)
    out = np.full((x.shape[0], h + 2 * p, w + 2 * p, c), layer.pad_value, dtype=dtype)
    out[:, p:p + h, p:p + w] = x
    return out


class ConvEngine(wiring.Component):
    """One conv layer: pixels (C elements of ``input_bits`` bits) in, NF beats of PE threshold bits
    per output pixel out. ``matrix_unit`` is the engine run on each window (int_conv: the IntMVU)."""

    matrix_unit = MVTU

    def __init__(self, layer: LayerSpec, index: int = 0):
        with refusing(self):
            layer.validate(index)
        self.layer = layer
        self.index = index
        self.group, self.columns = window_beat(layer)
        super().__init__({
            "i": In(stream.Signature(unsigned(layer.in_shape[0] * layer.input_bits))),
            "o": Out(stream.Signature(unsigned(layer.pe))),
        })

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        c, h, w = layer.in_shape
        # The generator sees a pixel as C*b bits (element c at bits [c*b, (c+1)*b)), so a window
        # vector is the K*K*C elements in (ky, kx, c) order; a pad value of 0 pads every bit with 0.
        m.submodules.swg = swg = SlidingWindowGenerator(c * layer.input_bits, h, w, layer.kernel, layer.padding,
                                                        layer.pad_value, self.group, self.columns,
                                                        style=layer.buffer_style)
        m.submodules.mvtu = mvtu = self.matrix_unit(layer, index=self.index)
        m.submodules.regear = adapter = WidthAdapter(swg.o.payload.shape().width, mvtu.word_width,
                                                     layer.n_in * layer.input_bits)
        wiring.connect(m, wiring.flipped(self.i), swg.i)
        wiring.connect(m, swg.o, adapter.i)
        if adapter.is_identity:
            wiring.connect(m, adapter.o, mvtu.i)
        else:
            # The MVTU's ready would otherwise run through the gearbox's shifter (see network.py).
            m.submodules.slice = pipe = RegisterSlice(mvtu.word_width)
            wiring.connect(m, adapter.o, pipe.i)
            wiring.connect(m, pipe.o, mvtu.i)
        wiring.connect(m, mvtu.o, wiring.flipped(self.o))
        return m


@register
class ConvOp(Op):
    kind = "conv"
    role = "layer"
    # The op of one window's matrix-vector product and the component (int_conv changes both).
    matrix_op = DenseOp
    engine = ConvEngine

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, index: int = 0) -> None:
        layer = self.layer
        where = f"layer {index} ({self.kind})"
        c, h, w = layer.in_shape
        k, p = layer.kernel, layer.padding
        if min(c, h, w) < 1 or layer.n_out < 1:
            raise SpecError(f"{where}: input C x H x W {layer.in_shape} with {layer.n_out} output channels has a "
                            "zero size: remove the layer from the model")
        if layer.stride != 1:
            raise SpecError(f"{where}: stride {layer.stride}; the conv op builds stride 1 only: use a stride-1 "
                            "conv followed by a max-pool")
        if k < 1 or not (0 <= p < k):
            raise SpecError(f"{where}: kernel {k} with padding {p}; supported: K >= 1 and 0 <= padding < K")
        if k > h + 2 * p or k > w + 2 * p:
            raise SpecError(f"{where}: kernel {k} is larger than the padded input {h + 2 * p} x {w + 2 * p}: "
                            "use a smaller kernel or more padding")
        if layer.pad_value not in (0, 1):
            raise SpecError(f"{where}: pad value {layer.pad_value}; padding is the bit 0 (-1) or 1 (+1)")
        if layer.n_in != k * k * c:
            raise SpecError(f"{where}: n_in = {layer.n_in}, a {k} x {k} window of {c} channels has {k * k * c}: "
                            "re-run the compiler on the model")
        out_shape = conv_out_shape(layer.in_shape, layer.n_out, k, p)
        if layer.out_shape != out_shape:
            raise SpecError(f"{where}: output shape {layer.out_shape}, a stride-1 {k} x {k} conv with padding {p} "
                            f"on {layer.in_shape} gives {out_shape} (dilation is not supported): "
                            "re-run the compiler on the model")
        if layer.thresholds is None:
            raise SpecError(f"{where} has no thresholds: a conv gives activation bits, the network's last "
                            "(scores) layer must be dense")
        check_matrix(layer, where, self.matrix_op.integer_inputs)

    @property
    def in_width(self) -> int:
        """One pixel per beat: C elements of ``input_bits`` bits."""
        return self.layer.in_shape[0] * self.layer.input_bits

    @property
    def in_unit(self) -> int:
        return self.in_width

    @property
    def out_width(self) -> int:
        return self.layer.pe

    @property
    def out_unit(self) -> int:
        return self.layer.n_out

    @property
    def out_pixels(self) -> int:
        return self.layer.out_shape[1] * self.layer.out_shape[2]

    @property
    def beats_per_frame(self) -> int:
        return self.out_pixels * self.layer.neuron_folds

    def submodule_name(self, index: int) -> str:
        return f"conv{index}"

    # --- schedule --------------------------------------------------------------------------------
    @property
    def cycles(self) -> int:
        """max(output pixels x NF x SF, input pixels): the MVTU's work, or the generator taking one
        input pixel per cycle, whichever is longer (see the module docstring)."""
        layer = self.layer
        return max(self.out_pixels * layer.neuron_folds * layer.synapse_folds,
                   layer.in_shape[1] * layer.in_shape[2])

    # --- folding ---------------------------------------------------------------------------------
    def _per_window(self, target_cycles: int) -> tuple[DenseOp, int]:
        """The dense op of one window's matrix-vector product and its cycle budget per window."""
        return self.matrix_op(replace(self.layer, kind=self.matrix_op.kind, in_shape=None, out_shape=None)), max(
            1, target_cycles // self.out_pixels)

    def cheapest_folding(self, target_cycles: int) -> tuple[int, int]:
        """The dense rule for one window, with the target divided among the output pixels."""
        dense, budget = self._per_window(target_cycles)
        return dense.cheapest_folding(budget)

    def folding_candidates(self, target_cycles: int, widths: list[int]) -> list[tuple[int, int]]:
        dense, budget = self._per_window(target_cycles)
        return dense.folding_candidates(budget, widths)

    # --- memories and the resource estimate ------------------------------------------------------
    # Terms of the calibrated model (compiler/analysis.py: LogicModel); the generator's own
    # (window_bit and its two engines) were measured on synthesized scnv designs.
    def _window_bits(self) -> int:
        """Bits of one generator beat: G window rows of J pixels of C elements (`window_beat`)."""
        g, j = window_beat(self.layer)
        return g * j * self.in_width

    def memories(self) -> list[dict]:
        """The MVTU's (weights, input ping-pong buffer, thresholds) and the generator's line buffer:
        G x K banks of C-bit words, each ``rows / G x ceil(W / K)`` deep."""
        layer = self.layer
        _, _, w = layer.in_shape
        (g, _), k = window_beat(layer), layer.kernel
        rows = buffer_rows(k, layer.padding, g)
        line = {"role": "line buffer", "width": self.in_width, "depth": rows // g * ceil_div(w, k), "count": g * k,
                "style": layer.buffer_style, "kind": "ram"}
        return self.matrix_op(layer).memories() + [line]

    def logic_terms(self) -> dict[str, int]:
        """The MVTU's terms; the generator's control (counters, row accounting, address registers)
        as two more engines, its beat bits (column rotation or a pixel's choice of bank, padding
        mask, output queue) as window bits and, when G > 1, the row rotation's log2 G multiplexer
        stages per beat bit as gearbox bits; and the beat -> SIMD width adapter's terms
        (`adapter_terms`)."""
        layer = self.layer
        matrix = self.matrix_op(layer)
        terms = matrix.logic_terms()
        beat_bits = self._window_bits()
        g, _ = window_beat(layer)
        terms["engine"] += 2
        terms["window_bit"] = terms.get("window_bit", 0) + beat_bits
        if g > 1:
            terms["gearbox_bit"] = terms.get("gearbox_bit", 0) + beat_bits * bits_for(g - 1)
        for name, value in adapter_terms(beat_bits, matrix.in_width, matrix.in_unit).items():
            terms[name] = terms.get(name, 0) + value
        return terms

    def flip_flops(self) -> int:
        """The MVTU's, plus the generator's counters, row accounting, address registers, delayed
        selects and masks and output queue, and the gearbox and register slice in front of the MVTU."""
        layer = self.layer
        _, h, w = layer.in_shape
        k, (g, j) = layer.kernel, window_beat(layer)
        oh, ow = layer.out_shape[1:]
        rows = buffer_rows(k, layer.padding, g)
        beat_bits = self._window_bits()
        matrix = self.matrix_op(layer)

        def span(n):                                   # bits of a register counting 0 .. n - 1
            return bits_for(n - 1) if n > 1 else 0

        depth, words = rows // g * ceil_div(w, k), ceil_div(w, k)
        ffs = matrix.flip_flops()
        ffs += 2 * bits_for(w) + bits_for(k) + bits_for(rows) + bits_for(h)                  # writer, rows held
        ffs += span(g) + span(depth)                                                         # write row, address
        beat_counters = bits_for(ceil_div(k, g)) + (bits_for(k) if j == 1 else 0)             # band (ky), kx
        ffs += 3 * (beat_counters + bits_for(ow) + bits_for(oh)) + 2 * bits_for(rows)
        ffs += span(h) + span(w)                                                             # rows, column needed
        ffs += g * span(depth) + span(k) + bits_for(ceil_div(ow + k, k))                     # row bases, column 0
        if j == 1:
            ffs += 2 * span(words) + span(k)                                                 # column 0, beat's column
            ffs += 1 + bits_for(k) + 1                                                          # mask, bank, valid
        else:
            ffs += k * span(words)                                                           # banks' column words
            ffs += k * k + g * g + (g * k if layer.pad_value else 0) + 1                     # selects, pad flags
        ffs += QUEUE_DEPTH * beat_bits + 2 * bits_for(QUEUE_DEPTH)                              # output queue
        return ffs + adapter_flip_flops(beat_bits, matrix.in_width, matrix.in_unit)        # adapter, slice

    # --- RTL -------------------------------------------------------------------------------------
    def component(self, index: int = 0) -> ConvEngine:
        return self.engine(self.layer, index)

    def decode(self, beats: list[int]) -> np.ndarray:
        """Output beats -> (frames, H' * W' * O) activation bits in (y, x, c) order (whole frames)."""
        pixels = fold_beats_to_bits(beats, self.layer.n_out, self.layer.pe)      # (pixels, O)
        frames = pixels.shape[0] // self.out_pixels
        return pixels[:frames * self.out_pixels].reshape(frames, -1)

    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        """Output bit ``neuron`` (flat (y, x, c) index) on one frame's input: its pixel, channel,
        golden popcount and threshold."""
        layer = self.layer
        o = layer.n_out
        pixel, channel = divmod(int(neuron), o)
        y, x = divmod(pixel, layer.out_shape[2])
        k = layer.kernel
        window = padded_images(np.asarray(layer_input)[None, :], layer)[0, y:y + k, x:x + k].reshape(-1)
        return {"popcount": int(np.count_nonzero(window == layer.weights[channel])),
                "threshold": int(layer.thresholds[channel]), "pixel": (y, x), "channel": channel}

    # --- numerics --------------------------------------------------------------------------------
    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, H*W*C) bits in (y, x, c) order -> (frames, H'*W'*O) bits in (y, x, c) order."""
        layer = self.layer
        k = layer.kernel
        _, oh, ow = layer.out_shape
        images = padded_images(x, layer)
        out = np.empty((images.shape[0], oh, ow, layer.n_out), dtype=np.uint8)
        for y in range(oh):
            for xx in range(ow):
                window = images[:, y:y + k, xx:xx + k, :].reshape(images.shape[0], -1)     # (ky, kx, c)
                counts = (window[:, None, :] == layer.weights[None, :, :]).sum(axis=2)
                out[:, y, xx] = counts >= layer.thresholds[None, :]
        return out.reshape(images.shape[0], -1)
