"""The int_conv op: a K x K, stride-1 conv on unsigned b-bit pixels with +-1 weights (the BWN first
layer of a conv net) = the sliding-window generator (hw/swg.py) on C*b-bit pixels + an IntMVU.

Numerics (DESIGN.md sections 2a, 2b): the int_dense layer of N = K*K*C inputs applied once per
output pixel to the window vector of b-bit elements ordered (ky, kx, c), c fastest; pixels outside
the image are the value ``pad_value`` in every channel, which must be 0 (the generator pads with
0-bits). The output bit is ``s >= T``, T any integer.

Streams. In: one pixel per beat, C*b bits (channel c at bits [c*b, (c+1)*b), LSB first), raster
order, H x W per frame. Out: the conv op's, NF beats of PE bits per output pixel. Geometry,
cycles, folding and the generator's sizing are the conv op's (hw/ops/conv.py), with the
generator's "channels" being C*b bits wide.
"""
from __future__ import annotations

import numpy as np

from xnorflow.hw.intmvu import IntMVU
from xnorflow.hw.ops.base import register
from xnorflow.hw.ops.conv import ConvEngine, ConvOp, padded_images
from xnorflow.hw.ops.int_dense import IntDenseOp, check_first, signed_weights, unpack_elements
from xnorflow.hw.spec import SpecError


class IntConvEngine(ConvEngine):
    """The conv engine with an IntMVU on each window (pixels of C elements of b bits)."""

    matrix_unit = IntMVU


def window_sums(layer, x: np.ndarray) -> np.ndarray:
    """(frames, H*W*C*b) input bits -> (frames, H', W', O) int64 sums s of every output pixel."""
    k = layer.kernel
    images = padded_images(unpack_elements(x, layer.input_bits), layer, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))   # (f, oh, ow, c, ky, kx)
    windows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(*windows.shape[:3], -1)    # (ky, kx, c) order
    return windows @ signed_weights(layer.weights).T


@register
class IntConvOp(ConvOp):
    kind = "int_conv"
    role = "layer"
    matrix_op = IntDenseOp
    engine = IntConvEngine

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, index: int = 0) -> None:
        check_first(index, self.kind)
        if self.layer.pad_value != 0:
            raise SpecError(f"layer {index} ({self.kind}): pad value {self.layer.pad_value}; an integer-input conv "
                            "pads with the input value 0 only: pad the image with zeros (a normalised "
                            "input's zero is folded into the thresholds by the compiler)")
        super().validate(index)

    def submodule_name(self, index: int) -> str:
        return f"intconv{index}"

    # --- RTL -------------------------------------------------------------------------------------
    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        """Output bit ``neuron`` (flat (y, x, c) index) on one frame's input: its pixel, channel,
        golden sum s and threshold."""
        layer = self.layer
        pixel, channel = divmod(int(neuron), layer.n_out)
        y, x = divmod(pixel, layer.out_shape[2])
        sums = window_sums(layer, np.asarray(layer_input)[None, :])
        return {"sum": int(sums[0, y, x, channel]), "threshold": int(layer.thresholds[channel]),
                "pixel": (y, x), "channel": channel}

    # --- numerics --------------------------------------------------------------------------------
    def reference(self, x: np.ndarray) -> np.ndarray:
        """(frames, H*W*C*b) input bits in (y, x, c) order -> (frames, H'*W'*O) bits in (y, x, c) order."""
        sums = window_sums(self.layer, x)
        bits = sums >= self.layer.thresholds
        return bits.reshape(bits.shape[0], -1).astype(np.uint8)
