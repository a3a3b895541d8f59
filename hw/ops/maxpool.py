"""The max-pool op: S x S windows, stride S, floor, over activation bits (DESIGN.md section 2a).

Per channel the OR of the window's bits (max over {-1, +1}), or the AND where the spec's
``pool_and`` is 1 (the pool sat before a batch-norm with gamma < 0). Trailing rows and columns that
do not fill a window are dropped (floor). Streams: one pixel (C bits, LSB-first) per beat in raster
order on both sides, H x W pixels in and (H // S) x (W // S) out per frame; the pool takes a pixel
every cycle, so a frame costs H x W cycles. Folding (the spec's PE) is not used.

`MaxPool` keeps the running pool of the current window row segment in a register and the partial
results of the output row in a line buffer (one C-bit word per output column, a ``Memory``): the
last pixel of a window's first S - 1 rows writes it, the last pixel of its last row emits it.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xnorflow.hw.counter import wrapping_counter
from xnorflow.hw.mvtu import memory_style_attrs
from xnorflow.hw.ops.base import Op, register
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import MEMORY_STYLES, LayerSpec, SpecError, bits_for, pool_out_shape


def pool_bits(a, b, and_mask):
    """Per channel a AND b where ``and_mask`` has a 1, a OR b elsewhere."""
    return (a & b & and_mask) | ((a | b) & ~and_mask)


class MaxPool(wiring.Component):
    """S x S, stride S max-pool over a pixel stream (see the module docstring)."""

    def __init__(self, layer: LayerSpec, index: int = 0):
        with refusing(self):
            MaxPoolOp(layer).validate(index)
        self.layer = layer
        c = layer.in_shape[0]
        super().__init__({"i": In(stream.Signature(unsigned(c))), "o": Out(stream.Signature(unsigned(c)))})

    def elaborate(self, platform):
        m = Module()
        layer = self.layer
        c, h, w = layer.in_shape
        s = layer.kernel
        _, oh, ow = layer.out_shape
        if s == 1:       # the identity
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        and_mask = Const(sum(int(bit) << ch for ch, bit in enumerate(layer.pool_and)), c)

        accept = self.i.valid & self.i.ready
        x = wrapping_counter(m, w, accept, "x")
        y = wrapping_counter(m, h, accept & x.is_last, "y")
        kx = Signal(range(s))
        ky = Signal(range(s))
        ox = Signal(range(ow))
        in_x = Signal(init=1)      # the pixel's column and row lie inside the pooled area
        in_y = Signal(init=1)
        with m.If(accept):
            with m.If(x.is_last):
                m.d.sync += [kx.eq(0), ox.eq(0), in_x.eq(1)]
                with m.If(y.is_last):
                    m.d.sync += [ky.eq(0), in_y.eq(1)]
                with m.Else():
                    m.d.sync += [ky.eq(Mux(ky == s - 1, 0, ky + 1)), in_y.eq(y.value + 1 < oh * s)]
            with m.Else():
                m.d.sync += [kx.eq(Mux(kx == s - 1, 0, kx + 1)), in_x.eq(x.value + 1 < ow * s)]
                with m.If((kx == s - 1) & in_x & (ox != ow - 1)):
                    m.d.sync += ox.eq(ox + 1)

        m.submodules.line_buffer = line = Memory(shape=unsigned(c), depth=ow, init=[],
                                                 attrs=memory_style_attrs(layer.buffer_style))
        read, write = line.read_port(), line.write_port()
        # ox is stable since the segment's first pixel (S >= 2 pixels), so the word read is ox's.
        m.d.comb += read.addr.eq(ox)

        run = Signal(c)
        segment = pool_bits(run, self.i.payload, and_mask)
        window = Mux(ky == 0, segment, pool_bits(segment, read.data, and_mask))
        use = accept & in_x & in_y
        end_segment = use & (kx == s - 1)
        with m.If(use):
            m.d.sync += run.eq(Mux(kx == 0, self.i.payload, segment))
        m.d.comb += [write.addr.eq(ox), write.data.eq(window), write.en.eq(end_segment & (ky != s - 1))]

        emit = end_segment & (ky == s - 1)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(emit):
            m.d.sync += [self.o.payload.eq(window), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


@register
class MaxPoolOp(Op):
    kind = "maxpool"
    role = "layer"

    def validate(self, index: int = 0) -> None:
        layer = self.layer
        where = f"layer {index} (maxpool)"
        c, h, w = layer.in_shape
        s = layer.kernel
        if min(c, h, w) < 1:
            raise SpecError(f"{where}: input C x H x W {layer.in_shape} has a zero size: remove the layer")
        if s < 1 or layer.stride != s or layer.padding != 0:
            raise SpecError(f"{where}: size {s}, stride {layer.stride}, padding {layer.padding}; supported: "
                            "size S >= 1 with stride S and no padding")
        if s > h or s > w:
            raise SpecError(f"{where}: a {s} x {s} pool of a {h} x {w} input has no output: use a smaller pool")
        if layer.out_shape != pool_out_shape(layer.in_shape, s) or layer.n_in != c or layer.n_out != c:
            raise SpecError(f"{where}: shapes {layer.in_shape} -> {layer.out_shape} (n_in {layer.n_in}, n_out "
                            f"{layer.n_out}); a {s} x {s} pool gives {pool_out_shape(layer.in_shape, s)}: "
                            "re-run the compiler")
        polarity = layer.pool_and
        if polarity is None or np.shape(polarity) != (c,) or (polarity.size and polarity.max() > 1):
            raise SpecError(f"{where}: pool_and must be {c} bits (1 = AND, 0 = OR per channel): re-run the compiler")
        if layer.weights is not None or layer.thresholds is not None:
            raise SpecError(f"{where}: a max-pool has no weights or thresholds: re-run the compiler")
        if layer.input_bits != 1:
            raise SpecError(f"{where}: input_bits {layer.input_bits}; a max-pool takes activation bits: "
                            "re-run the compiler")
        if layer.buffer_style not in MEMORY_STYLES:
            raise SpecError(f"{where}: memory style {layer.buffer_style!r}: choose one of {', '.join(MEMORY_STYLES)}")

    @property
    def in_width(self) -> int:
        return self.layer.in_shape[0]

    @property
    def in_unit(self) -> int:
        return self.layer.in_shape[0]

    @property
    def out_width(self) -> int:
        return self.layer.in_shape[0]

    @property
    def out_unit(self) -> int:
        return self.layer.in_shape[0]

    @property
    def beats_per_frame(self) -> int:
        return self.layer.out_shape[1] * self.layer.out_shape[2]

    def submodule_name(self, index: int) -> str:
        return f"maxpool{index}"

    @property
    def cycles(self) -> int:
        """One input pixel per cycle: H x W."""
        return self.layer.in_shape[1] * self.layer.in_shape[2]

    # A pool has no folding: one input pixel per cycle, whatever the target.
    def cheapest_folding(self, target_cycles: int) -> tuple[int, int]:
        return self.layer.pe, self.layer.simd

    def folding_candidates(self, target_cycles: int, widths: list[int]) -> list[tuple[int, int]]:
        return [(self.layer.pe, self.layer.simd)]

    # First-order terms, not yet calibrated on synthesized designs (a later step, as for conv).
    def memories(self) -> list[dict]:
        c, _, ow = self.layer.out_shape
        if self.layer.kernel == 1:
            return []
        return [{"role": "line buffer", "width": c, "depth": ow, "count": 1, "style": self.layer.buffer_style,
                 "kind": "ram"}]

    def logic_terms(self) -> dict[str, int]:
        """Per channel the two pooling gates and the running register (counted like accumulator
        bits), and the counters as one engine's control."""
        if self.layer.kernel == 1:
            return {}
        return {"acc_bit": 2 * self.layer.in_shape[0], "engine": 1}

    def flip_flops(self) -> int:
        c, h, w = self.layer.in_shape
        s = self.layer.kernel
        if s == 1:
            return 0
        ow = self.layer.out_shape[2]
        return 2 * c + 1 + bits_for(w - 1) + bits_for(h - 1) + 4 + 2 * bits_for(s - 1) + bits_for(ow - 1) + 2

    def component(self, index: int = 0) -> MaxPool:
        return MaxPool(self.layer, index)

    def decode(self, beats: list[int]) -> np.ndarray:
        """Output beats -> (frames, H' * W' * C) bits in (y, x, c) order (whole frames)."""
        c = self.layer.in_shape[0]
        per_frame = self.beats_per_frame
        frames = len(beats) // per_frame
        words = np.array([int(b) for b in beats[:frames * per_frame]], dtype=object)
        bits = np.array([[(int(word) >> ch) & 1 for ch in range(c)] for word in words], dtype=np.uint8)
        return bits.reshape(frames, per_frame * c)

    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        c = self.layer.in_shape[0]
        pixel, channel = divmod(int(neuron), c)
        y, x = divmod(pixel, self.layer.out_shape[2])
        return {"pixel": (y, x), "channel": channel}

    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, H*W*C) bits -> (frames, H'*W'*C) bits, both in (y, x, c) order."""
        layer = self.layer
        c, h, w = layer.in_shape
        s = layer.kernel
        _, oh, ow = layer.out_shape
        images = np.asarray(x, dtype=np.uint8).reshape(-1, h, w, c)[:, :oh * s, :ow * s]
        windows = images.reshape(-1, oh, s, ow, s, c)
        pooled_or = windows.max(axis=(2, 4))
        pooled_and = windows.min(axis=(2, 4))
        out = np.where(np.asarray(layer.pool_and, dtype=bool)[None, None, None, :], pooled_and, pooled_or)
        return out.astype(np.uint8).reshape(images.shape[0], -1)
