"""Bit-exact execution of a NetworkSpec: the truth the RTL is checked against.

Vectors are packed LSB-first into uint64 words (element i is bit i % 64 of word i // 64). Both the
input and the weights are padded with 0-bits, so the padded lanes of ``x XOR w`` are 0 and
``p = popcount(XNOR(x, w)) = N - popcount(x XOR w)`` counts only real lanes. Folding (PE, SIMD)
changes the schedule in hardware, never these numbers, so it is ignored here.

Execution dispatches by kind, like the rest of the toolchain: each op of the network (hw/ops/) runs
through the kernel registered here for its kind (`golden_kernel`); the op's own ``reference`` is
the plain NumPy definition that kernel is checked against (tests/sim/test_golden.py). A kernel
takes the op and the value arriving on its input stream and returns the value it emits plus, for
a hidden layer, its activation bits (which localisation compares with the RTL's taps). Between
layers a bit stream travels packed (`pack_rows`: (frames, ceil(n / 64)) uint64); the last layer
emits (frames, n_classes) int64 scores; the output op emits (frames,) class indices.

The XOR-popcount loop is NumPy arrays run through numba: NumPy's own ``bitwise_xor`` with a
broadcast operand, ``bitwise_count`` and the widening sum take three passes over memory and reach
about 90k SFC images/s, while the compiled loop keeps each frame's counts in registers and uses
the CPU's popcount instruction (LLVM's ctpop), about five times faster on one core. The plain
NumPy formulation stays in the tests as the kernel's cross-check (tests/sim/test_golden.py).

Conv and max-pool work on the packed frames themselves: a window or pool field is read from the
frame's words at its bit offset, and the output bits are appended to the packed output frame, so
no frame is unpacked to bytes on the way (the activations returned are, when they are read).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from xnorflow.hw.ops import Op, network_ops
from xnorflow.hw.ops.conv import padded_images
from xnorflow.hw.spec import LayerSpec, NetworkSpec


@dataclass(frozen=True)
class PackedBits:
    """Activation bits as the packed words the next layer reads, (frames, n) uint8 when asked for
    (``unpack`` or ``np.asarray``)."""

    words: np.ndarray           # (frames, ceil(n / 64)) uint64, `pack_rows` layout
    n: int

    def unpack(self) -> np.ndarray:
        return unpack_rows(self.words, self.n)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        bits = self.unpack()
        return bits if dtype is None else bits.astype(dtype)


class GoldenResult:
    """What the network computes for a batch of frames.

    ``scores``: (frames, n_classes) int64, the output layer's popcounts; ``predictions``: (frames,)
    int64, argmax of scores, ties to the lowest index; ``activations``: per hidden layer, (frames, out
    bits) uint8, n_out for dense, H' * W' * C in (y, x, c) order for conv and max-pool. A conv or
    pool layer's bits stay packed (`PackedBits`) until ``activations`` is first read: unpacked, scnv's
    are about 55 kB a frame, and allocating them cost the golden model half its time.
    """

    def __init__(self, scores: np.ndarray, predictions: np.ndarray, activations: list):
        self.scores = scores
        self.predictions = predictions
        self._activations = list(activations)

    @property
    def activations(self) -> list[np.ndarray]:
        for k, bits in enumerate(self._activations):
            if isinstance(bits, PackedBits):
                self._activations[k] = bits.unpack()
        return self._activations


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


@intrinsic
def _popcount64(typingctx, word):
    """LLVM's ctpop on a uint64: one POPCNT (or VPOPCNTQ across lanes) instead of a bit-twiddling loop."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@intrinsic
def _at_most_64(typingctx, a, a_start, b, b_start):
    """The uint64 whose bit t is ``a[a_start + t] <= b[b_start + t]`` for t < 64 (C-contiguous int64
    arrays, flat indices, 64 elements on from each start): one comparison of two 64-lane vectors,
    its 64 x i1 result read as the word (on AVX-512, compares into mask registers)."""
    def codegen(context, builder, signature, args):
        lanes = ir.VectorType(ir.IntType(64), 64)

        def load(ty, array, start):
            data = context.make_array(ty)(context, builder, array).data
            return builder.load(builder.bitcast(builder.gep(data, [start]), lanes.as_pointer()), align=8)
        mask = builder.icmp_signed("<=", load(signature.args[0], args[0], args[1]),
                                   load(signature.args[2], args[2], args[3]))
        return builder.bitcast(mask, ir.IntType(64))
    return types.uint64(a, a_start, b, b_start), codegen


@njit(inline="always")
def _count_mismatches(x_row, w_t, counts):
    """counts[o] = popcount(x_row XOR w[o]) over all words; w_t is (words, n_out), contiguous per word
    so the innermost loop runs across channels and vectorises."""
    counts[:] = 0
    for j in range(x_row.shape[0]):
        xj = x_row[j]
        for o in range(counts.shape[0]):
            counts[o] += _popcount64(xj ^ w_t[j, o])


@njit(cache=True, nogil=True)
def _popcounts_kernel(x, w_t, n_in, out):
    counts = np.empty(out.shape[1], np.int64)
    for f in range(x.shape[0]):
        _count_mismatches(x[f], w_t, counts)
        for o in range(counts.shape[0]):
            out[f, o] = n_in - counts[o]


@njit(cache=True, nogil=True)
def _threshold_kernel(x, w_t, limits, bits, packed):
    """A hidden layer: bits[f, o] = (p >= T[o]), and the same bits packed as the next layer's input.

    ``limits`` is N - T: p >= T is the same test as mismatches <= N - T, which needs no subtraction
    per channel. Each step is its own simple loop so LLVM vectorises it and no branch is taken per
    channel (the outcome is a coin flip, which a branch would mispredict).
    """
    n_out = bits.shape[1]
    counts = np.empty(n_out, np.int64)
    for f in range(x.shape[0]):
        _count_mismatches(x[f], w_t, counts)
        row = bits[f]
        for o in range(n_out):
            row[o] = counts[o] <= limits[o]
        for word in range(packed.shape[1]):
            value = np.uint64(0)
            first = word * 64
            for k in range(min(64, n_out - first)):
                value |= np.uint64(row[first + k]) << np.uint64(k)
            packed[f, word] = value


def _weights_by_word(layer: LayerSpec) -> np.ndarray:
    """The layer's weights packed like the inputs, transposed to (words, n_out)."""
    return np.ascontiguousarray(pack_rows(layer.weights).T)


def popcounts(x_packed: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """popcount(XNOR(x, w)) for every frame and channel: (frames, n_out) int64."""
    x_packed = np.ascontiguousarray(x_packed, dtype=np.uint64)
    out = np.empty((x_packed.shape[0], layer.n_out), dtype=np.int64)
    _popcounts_kernel(x_packed, _weights_by_word(layer), layer.n_in, out)
    return out


# --- one kernel per kind -------------------------------------------------------------------------
GOLDEN_KERNELS: dict[str, Callable] = {}


def golden_kernel(kind: str):
    """Decorator: the fast golden execution of ops of ``kind``: ``kernel(op, x) -> (y, bits or None)``."""
    def decorate(kernel):
        GOLDEN_KERNELS[kind] = kernel
        return kernel
    return decorate


def kernel_for(op: Op) -> Callable:
    kernel = GOLDEN_KERNELS.get(op.kind)
    if kernel is None:
        raise ValueError(f"the golden model has no kernel for ops of kind {op.kind!r}: register one in "
                         "xnorflow/sim/golden.py with @golden_kernel")
    return kernel


@golden_kernel("dense")
def _dense(op: Op, x: np.ndarray):
    """Packed input bits -> the next layer's packed input and the activation bits (hidden layer), or
    the class scores (the last layer)."""
    layer = op.layer
    if op.emits_scores:
        return popcounts(x, layer), None
    frames = x.shape[0]
    bits = np.empty((frames, layer.n_out), dtype=np.uint8)
    packed = np.empty((frames, -(-layer.n_out // 64)), dtype=np.uint64)
    _threshold_kernel(x, _weights_by_word(layer), _limits(layer), bits, packed)
    return packed, bits


# Frames per chunk of an int_conv's window matrix (frames x output pixels x K*K*C bytes before packing).
CONV_CHUNK_BYTES = 1 << 26


def _conv_windows(layer: LayerSpec, x: np.ndarray, elements: Callable, dtype, per_window: Callable):
    """Every output pixel's window of a conv, in chunks of frames: ``elements`` turns packed frames into
    their (frames, H*W*C) input elements (``dtype``), padded here with pad_value; ``per_window`` turns
    the (windows, K*K*C) rows, (ky, kx, c) order, into their (windows, O) output bits. Returns the
    (y, x, c) output bits, packed, and the bits."""
    _, oh, ow = layer.out_shape
    k = layer.kernel
    frames = x.shape[0]
    bits = np.empty((frames, oh * ow * layer.n_out), dtype=np.uint8)
    chunk = max(1, CONV_CHUNK_BYTES // max(1, oh * ow * layer.n_in * np.dtype(dtype).itemsize))
    for start in range(0, frames, chunk):
        stop = min(frames, start + chunk)
        images = padded_images(elements(x[start:stop]), layer, dtype)
        # (frames, oh, ow, c, ky, kx) -> (frames, oh, ow, ky, kx, c): the (ky, kx, c) window order.
        windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))
        windows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, layer.n_in)
        bits[start:stop] = per_window(windows).reshape(stop - start, -1)
    return pack_rows(bits), bits


# --- conv and max-pool on packed frames ----------------------------------------------------------
# In these kernels arrays are only indexed inside the loops, never sliced or passed to a jitted
# function: numba counts references to a view or an argument with atomic operations, which would run
# per pixel. Computed indices are unsigned, so numba adds no negative-index wraparound (which turns
# LLVM's vector loads into gathers). Output frames are written as consecutive fields via `_append`.
_U1, _U63 = np.uint64(1), np.uint64(63)


@njit(inline="always")
def _ones(n):
    """A uint64 whose n low bits (1 <= n <= 64) are 1, the others 0."""
    return ~np.uint64(0) >> np.uint64(64 - n)


@njit(inline="always")
def _funnel(low, high, offset):
    """Bits [offset, offset + 64) of the 128-bit value high:low (uint64 offset < 64): the 64 bits of a
    packed row from bit ``offset`` of word ``low`` on, ``high`` being the next word."""
    return (low >> offset) | ((high << _U1) << (_U63 - offset))


@njit(inline="always")
def _append(acc, filled, value, n):
    """Append the n <= 64 bits of ``value`` (its other bits 0) to a stream of bits whose unfinished
    word ``acc`` holds ``filled`` < 64 bits. Returns (word, acc, filled, full): ``word`` is the
    current word with the bits in, stored at the stream's current index (at the latest once
    complete), which then moves on by ``full``, 1 when it is complete; ``acc`` and ``filled`` are
    the next unfinished word, stored at the end if ``filled``."""
    word = acc | (value << np.uint64(filled))
    if filled + n < 64:
        return word, word, filled + n, 0
    return word, (value >> _U1) >> np.uint64(63 - filled), filled + n - 64, 1


@njit(cache=True, nogil=True)
def _conv_kernel(x, geometry, pad_mask, w_t, limits, packed):
    """A binary conv (DESIGN.md section 2a) of packed frames x into ``packed``. ``geometry`` is (C, H,
    W, K, P, H', W'); ``pad_mask`` the packed padded frame, (H + 2P) x (W + 2P) pixels holding the
    pad bit in the padding and 0 inside; ``w_t`` the weights as `_weights_by_word`; ``limits`` N - T
    per channel (see `_threshold_kernel`), then -1 (never 1) up to a multiple of 64 channels.

    Per frame the padded frame is built: the pad mask with the input rows ORed in, and one word more
    for `_funnel`. An output pixel's window is K rows of K*C bits, row ky the K*C consecutive bits
    of the padded frame from pixel (y + ky, x) on: appended one after the other they are the window
    vector in (ky, kx, c) order, its bits past N 0 like the weights'. Four pixels at a time (the
    last group repeats the last pixel), their windows go through the dense layer's XOR-popcount (as
    `_count_mismatches`, two words per pass where there are two) and each pixel's O output bits,
    mismatches <= limit, are appended to the output frame: pixel (y, x) lands at bit (y*W' + x)*O."""
    c, h, w, k, pad, oh, ow = geometry
    wp = w + 2 * pad
    n_words, n_out = w_t.shape
    row_bits, segment = w * c, k * c
    frame = np.empty(pad_mask.shape[0] + 1, np.uint64)
    windows = np.empty((4, n_words), np.uint64)
    counts = np.zeros((4, limits.shape[0]), np.int64)         # past O: 0, never counted (limit -1)
    pixels = oh * ow
    last = np.uint64(x.shape[1] - 1)
    for f in range(x.shape[0]):
        for j in range(pad_mask.shape[0]):
            frame[j] = pad_mask[j]
        frame[pad_mask.shape[0]] = 0
        for y in range(h):
            source = np.uint64(y * row_bits)
            target = np.uint64(((y + pad) * wp + pad) * c)
            for done in range(0, row_bits, 64):
                at = source + np.uint64(done)
                i = at >> np.uint64(6)
                value = _funnel(x[f, i], x[f, min(i + _U1, last)], at & _U63) & _ones(min(64, row_bits - done))
                at = target + np.uint64(done)
                i, offset = at >> np.uint64(6), at & _U63
                frame[i] |= value << offset
                frame[i + _U1] |= (value >> _U1) >> (_U63 - offset)
        out, out_filled, out_words = np.uint64(0), 0, 0
        next_y, next_x, oy, ox = 0, 0, 0, 0
        for group in range(0, pixels, 4):
            for q in range(4):
                if group + q < pixels:
                    oy, ox = next_y, next_x
                    next_x += 1
                    if next_x == ow:
                        next_y, next_x = next_y + 1, 0
                acc, filled, n = np.uint64(0), 0, 0
                for ky in range(k):
                    start = np.uint64(((oy + ky) * wp + ox) * c)
                    for done in range(0, segment, 64):
                        m = min(64, segment - done)
                        at = start + np.uint64(done)
                        i = at >> np.uint64(6)
                        value = _funnel(frame[i], frame[i + _U1], at & _U63) & _ones(m)
                        word, acc, filled, full = _append(acc, filled, value, m)
                        if full:
                            windows[q, n] = word
                            n += 1
                if filled:
                    windows[q, n] = acc
            for o in range(n_out):
                counts[0, o] = 0
                counts[1, o] = 0
                counts[2, o] = 0
                counts[3, o] = 0
            for j in range(0, n_words - 1, 2):
                a0, a1, b0, b1 = windows[0, j], windows[0, j + 1], windows[1, j], windows[1, j + 1]
                c0, c1, d0, d1 = windows[2, j], windows[2, j + 1], windows[3, j], windows[3, j + 1]
                for o in range(n_out):
                    w0, w1 = w_t[j, o], w_t[j + 1, o]
                    counts[0, o] += _popcount64(a0 ^ w0) + _popcount64(a1 ^ w1)
                    counts[1, o] += _popcount64(b0 ^ w0) + _popcount64(b1 ^ w1)
                    counts[2, o] += _popcount64(c0 ^ w0) + _popcount64(c1 ^ w1)
                    counts[3, o] += _popcount64(d0 ^ w0) + _popcount64(d1 ^ w1)
            if n_words % 2:
                j = n_words - 1
                a0, b0, c0, d0 = windows[0, j], windows[1, j], windows[2, j], windows[3, j]
                for o in range(n_out):
                    w0 = w_t[j, o]
                    counts[0, o] += _popcount64(a0 ^ w0)
                    counts[1, o] += _popcount64(b0 ^ w0)
                    counts[2, o] += _popcount64(c0 ^ w0)
                    counts[3, o] += _popcount64(d0 ^ w0)
            for q in range(min(4, pixels - group)):
                for first in range(0, n_out, 64):
                    value = _at_most_64(counts, q * limits.shape[0] + first, limits, first)
                    packed[f, out_words], out, out_filled, full = _append(out, out_filled, value,
                                                                          min(64, n_out - first))
                    out_words += full
        if out_filled:
            packed[f, out_words] = out


def _limits(layer: LayerSpec, lanes: int = 1) -> np.ndarray:
    """N - T per output channel, the most mismatches that still give bit 1; with ``lanes``, -1 (bit 0
    whatever the count) for the channels past n_out up to a multiple of ``lanes``."""
    limits = np.full(-(-layer.n_out // lanes) * lanes, -1, dtype=np.int64)
    limits[:layer.n_out] = layer.n_in - layer.thresholds
    return limits


@golden_kernel("conv")
def _conv(op: Op, x: np.ndarray):
    """Packed (y, x, c) pixels -> the (y, x, c) output bits, packed, and the bits."""
    layer = op.layer
    c, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    n = oh * ow * layer.n_out
    pad_mask = pack_rows(padded_images(np.zeros((1, c * h * w), dtype=np.uint8), layer).reshape(1, -1))[0]
    packed = np.empty((x.shape[0], -(-n // 64)), dtype=np.uint64)
    _conv_kernel(np.ascontiguousarray(x, dtype=np.uint64), (c, h, w, layer.kernel, layer.padding, oh, ow), pad_mask,
                 _weights_by_word(layer), _limits(layer, 64), packed)
    return packed, PackedBits(packed, n)


# --- integer inputs (int_dense, int_conv: DESIGN.md section 2b) -----------------------------------
@njit(cache=True, nogil=True)
def _elements_kernel(x, input_bits, out):
    """Packed words (frames, words) -> out (frames, n): element i is bits [i*b, (i+1)*b) of the frame,
    LSB first, possibly straddling two words."""
    mask = np.uint64((1 << input_bits) - 1)
    for f in range(out.shape[0]):
        for i in range(out.shape[1]):
            position = i * input_bits
            word, offset = position >> 6, position & 63
            value = x[f, word] >> np.uint64(offset)
            if offset + input_bits > 64:
                value |= x[f, word + 1] << np.uint64(64 - offset)
            out[f, i] = value & mask


def _elements(x: np.ndarray, n: int, input_bits: int, dtype) -> np.ndarray:
    """Packed (frames, words) uint64 -> (frames, n) b-bit elements as ``dtype``."""
    out = np.empty((x.shape[0], n), dtype=dtype)
    _elements_kernel(np.ascontiguousarray(x, dtype=np.uint64), input_bits, out)
    return out


def _sum_dtype(layer: LayerSpec):
    """A float type whose BLAS matrix product is exact for the layer: every partial sum is an integer
    of magnitude at most n_in * (2^b - 1), exact in float32 below 2^24 (float64 beyond)."""
    return np.float32 if layer.n_in * ((1 << layer.input_bits) - 1) < 1 << 24 else np.float64


def _integer_thresholds(values: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """(rows, n_in) elements (of `_sum_dtype`) -> (rows, n_out) bits ``s >= T``, s = values @ (+-1
    weights) through BLAS, exact (see `_sum_dtype`)."""
    weights = (2 * layer.weights.astype(values.dtype) - 1).T
    # Compared in the float type: thresholds clamped into [-S, S + 1] (the same bits) are exact there too.
    bound = layer.n_in * ((1 << layer.input_bits) - 1)
    thresholds = np.clip(layer.thresholds, -bound, bound + 1).astype(values.dtype)
    return np.greater_equal(values @ weights, thresholds[None, :]).view(np.uint8)


@golden_kernel("int_dense")
def _int_dense(op: Op, x: np.ndarray):
    """Packed frames of b-bit elements -> the next layer's packed input and the activation bits."""
    layer = op.layer
    bits = _integer_thresholds(_elements(x, layer.n_in, layer.input_bits, _sum_dtype(layer)), layer)
    return pack_rows(bits), bits


@golden_kernel("int_conv")
def _int_conv(op: Op, x: np.ndarray):
    """Packed (y, x, c) pixels of b-bit elements -> every output pixel's window (padded with 0), its
    sums through BLAS -> the (y, x, c) output bits, packed."""
    layer = op.layer
    c, h, w = layer.in_shape
    dtype = _sum_dtype(layer)
    return _conv_windows(layer, x, lambda frames: _elements(frames, c * h * w, layer.input_bits, dtype), dtype,
                         lambda windows: _integer_thresholds(windows, layer))


@njit(cache=True, nogil=True)
def _maxpool_kernel(x, geometry, and_words, packed):
    """An S x S, stride-S max-pool of packed frames x into ``packed``; ``geometry`` is (C, W, S, H', W').
    Per output pixel and slice of at most 64 channels, the OR and the AND of the window's pixels
    (pixel (y, x) at bit (y*W + x)*C), a channel taking the AND where its bit of ``and_words``
    (pool_and, packed) is 1, appended to the output frame: pixel (y', x') lands at bit (y'*W' + x')*C."""
    c, w, s, oh, ow = geometry
    last = np.uint64(x.shape[1] - 1)
    for f in range(x.shape[0]):
        out, out_filled, out_words = np.uint64(0), 0, 0
        for oy in range(oh):
            for ox in range(ow):
                for first in range(0, c, 64):
                    any_one, all_one = np.uint64(0), _ones(64)
                    for dy in range(s):
                        for dx in range(s):
                            at = np.uint64(((oy * s + dy) * w + ox * s + dx) * c + first)
                            i = at >> np.uint64(6)
                            value = _funnel(x[f, i], x[f, min(i + _U1, last)], at & _U63)
                            any_one |= value
                            all_one &= value
                    use_and = and_words[first // 64]
                    m = min(64, c - first)
                    value = ((all_one & use_and) | (any_one & ~use_and)) & _ones(m)
                    packed[f, out_words], out, out_filled, full = _append(out, out_filled, value, m)
                    out_words += full
        if out_filled:
            packed[f, out_words] = out


@golden_kernel("maxpool")
def _maxpool(op: Op, x: np.ndarray):
    """Packed (y, x, c) pixels -> the pooled (y, x, c) pixels, packed, and their bits."""
    layer = op.layer
    c, _, w = layer.in_shape
    _, oh, ow = layer.out_shape
    n = oh * ow * c
    packed = np.empty((x.shape[0], -(-n // 64)), dtype=np.uint64)
    and_words = pack_rows(np.asarray(layer.pool_and, dtype=np.uint8)[None, :])[0]
    _maxpool_kernel(np.ascontiguousarray(x, dtype=np.uint64), (c, w, layer.kernel, oh, ow), and_words, packed)
    return packed, PackedBits(packed, n)


@golden_kernel("label_select")
def _label_select(op: Op, scores: np.ndarray):
    """Scores -> the index of the largest per frame; np.argmax takes the first, the lowest index."""
    return np.argmax(scores, axis=1), None


def execute(spec: NetworkSpec, input_bits: np.ndarray) -> GoldenResult:
    """Run frames through the network. ``input_bits`` is (frames, input_bits) of {0,1}."""
    input_bits = np.asarray(input_bits)
    if input_bits.ndim != 2 or input_bits.shape[1] != spec.input_bits:
        raise ValueError(f"input has shape {input_bits.shape}; the network takes (frames, {spec.input_bits}) bits")
    x = pack_rows(input_bits)
    activations = []
    *layers, output = network_ops(spec)
    for op in layers:
        x, bits = kernel_for(op)(op, x)
        if bits is not None:
            activations.append(bits)
    predictions, _ = kernel_for(output)(output, x)
    return GoldenResult(scores=x, predictions=predictions, activations=activations)


def reference_execute(spec: NetworkSpec, input_bits: np.ndarray) -> GoldenResult:
    """The same through every op's plain NumPy ``reference`` (slow; the kernels' cross-check)."""
    x, activations = np.asarray(input_bits, dtype=np.uint8), []
    *layers, output = network_ops(spec)
    for op in layers:
        x = op.reference(x)
        if not op.emits_scores:
            activations.append(x)
    return GoldenResult(scores=x, predictions=output.reference(x), activations=activations)

