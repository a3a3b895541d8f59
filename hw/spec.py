"""The lowered network: the vocabulary shared by the compiler, the golden model, the RTL and the boards.

Plain dataclasses of ints and NumPy arrays, nothing else (no torch, no amaranth). The numerics are
those of DESIGN.md section 2:

- bit 1 means +1, bit 0 means -1; element i of a vector is bit i of its packed word (LSB first);
- a layer with N inputs computes ``p = popcount(XNOR(x, w))`` per output channel, ``0 <= p <= N``;
- a hidden layer outputs the bit ``p >= T`` (one integer threshold per channel, ``0 <= T <= N + 1``);
- the last layer has no thresholds: it emits every class's ``p`` to the output op (label-select),
  which adds the index of the largest (ties go to the lowest index).

Every layer names its ``kind``; what a kind means (cycles, memories, RTL, golden execution) is its op
in hw/ops/, looked up by kind. Folding: a dense layer runs ``pe`` output channels and ``simd`` input
bits in parallel, and so takes ``ceil(n_out / pe) * ceil(n_in / simd)`` cycles per frame.

Files: ``save``/``load`` write one .npz with a JSON header; ``SPEC_VERSION`` is checked on load, and a
file of another version is refused in one line naming both versions.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xnorflow.errors import XnorflowError

SPEC_FORMAT = "xnorflow-spec"
# 2: a kind and C x H x W geometry per layer, the output op's kind. 1: dense layers only.
SPEC_VERSION = 2
MEMORY_STYLES = ("auto", "block", "logic")


class SpecError(XnorflowError):
    """A network the hardware cannot take; the message names the cause and the fix."""


def bits_for(max_value: int) -> int:
    """Width of an unsigned integer that holds 0..max_value."""
    return max(1, int(max_value).bit_length())


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network, of kind ``kind`` (its op in hw/ops/ says what that means).

    For every kind that multiplies by weights, ``n_in``/``n_out`` are the widths of one input and one
    output vector of its matrix-vector unit (dense: the layer's; a conv's would be K*K*C and its
    output channels). ``weights`` is a (n_out, n_in) uint8 array of bits (1 = +1). Rows whose
    batch-norm gamma was negative have already been inverted by the compiler, so the hardware only
    ever compares ``>=``. ``thresholds`` is a (n_out,) int64 array for hidden layers and None for
    the last layer, whose scores go to the output op.

    Geometry: ``in_shape``/``out_shape`` are the tensors C x H x W (None: a vector, (n_in, 1, 1) and
    (n_out, 1, 1)); ``kernel``, ``stride``, ``padding`` and ``pad_value`` (the padded bit, 0 = -1 or
    1 = +1) describe a sliding window; a dense layer has K = stride = 1 and no padding.
    """

    n_in: int
    n_out: int
    weights: np.ndarray
    thresholds: np.ndarray | None
    pe: int = 1
    simd: int = 1
    # Where the weight banks and the input buffer live: "block" (block RAM), "logic" (LUTs/FFs) or
    # "auto" (Yosys decides). The RTL passes it to Yosys as the memories' ram_style/rom_style, so the
    # compiler's memory-block count is what synthesis gets.
    weight_style: str = "auto"
    buffer_style: str = "auto"
    # Register the weight words read from the banks before the XNOR. ECP5's DP16KD block RAM has a
    # 5.6 ns clock-to-output without it, the start of its longest path; on iCE40 the registers
    # would each take a logic cell of their own, so the compiler sets this per device family.
    register_weights: bool = False
    kind: str = "dense"
    in_shape: tuple[int, int, int] | None = None
    out_shape: tuple[int, int, int] | None = None
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    pad_value: int = 0
    # Max-pool only: per channel, 1 = the AND of the window's bits (the pool sat before a batch-norm
    # with gamma < 0), 0 = the OR (DESIGN.md section 2a); None for every other kind.
    pool_and: np.ndarray | None = None
    # b, the bits of one input element: 1 for a binary layer (elements are +-1 bits); b >= 2 for the
    # integer-input kinds int_dense and int_conv (unsigned b-bit elements, DESIGN.md section 2b).
    # n_in still counts elements; element i occupies bits [i*b, (i+1)*b) of the input, LSB first.
    input_bits: int = 1
    # Weight memory packing (DESIGN.md section 3): P PEs' weight words side by side in one memory
    # word, so the layer's weights are ceil(PE / P) memories of P x SIMD bits (the last holds the
    # PEs left over), each NF x SF words deep; 1 is one memory per PE.
    weight_packing: int = 1

    def __post_init__(self):
        for name, default in (("in_shape", (self.n_in, 1, 1)), ("out_shape", (self.n_out, 1, 1))):
            value = getattr(self, name)
            object.__setattr__(self, name, default if value is None else tuple(int(v) for v in value))

    @property
    def op(self):
        """This layer's op (hw/ops/), the owner of what its kind means."""
        from xnorflow.hw.ops import op_for
        return op_for(self)

    @property
    def is_output(self) -> bool:
        """The layer emits class scores for the output op (a dense layer without thresholds)."""
        return self.op.emits_scores

    @property
    def vectors_per_frame(self) -> int:
        """Output vectors (pixels) per frame: H x W of the output tensor; 1 for a dense layer."""
        return self.out_shape[1] * self.out_shape[2]

    @property
    def synapse_folds(self) -> int:
        """Input beats per frame: ceil(n_in / simd)."""
        return ceil_div(self.n_in, self.simd)

    @property
    def neuron_folds(self) -> int:
        """Output beats per frame for a hidden layer: ceil(n_out / pe)."""
        return ceil_div(self.n_out, self.pe)

    @property
    def cycles(self) -> int:
        """Cycles the layer's engine needs per frame (its op's)."""
        return self.op.cycles

    @property
    def popcount_width(self) -> int:
        """Bits of an accumulator that holds 0..n_in."""
        return bits_for(self.n_in)

    @property
    def threshold_width(self) -> int:
        """Bits of a threshold in 0..n_in + 1 (DESIGN.md: ceil(log2(N + 2)))."""
        return bits_for(self.n_in + 1)

    @property
    def weight_bits(self) -> int:
        """Bits of the weight matrix: n_out x n_in; a max-pool has none."""
        return 0 if self.kind == "maxpool" else self.n_out * self.n_in

    def weight_groups(self) -> list[range]:
        """The PEs of each weight memory, in order: memory g holds PEs g*P .. g*P + P - 1 (P =
        ``weight_packing``; the last memory the rest)."""
        packing = self.weight_packing
        return [range(first, min(first + packing, self.pe)) for first in range(0, self.pe, packing)]

    def weight_memory_widths(self) -> list[int]:
        """Bits of a word of each weight memory (`weight_groups`: its PEs x SIMD) that synthesis
        keeps: Yosys drops a ROM's bit columns that hold the same bit at every address. Counted for
        memories at most CONSTANT_COLUMN_DEPTH deep; a deeper column of weights is left whole."""
        groups = self.weight_groups()
        if self.weights is None or self.neuron_folds * self.synapse_folds > CONSTANT_COLUMN_DEPTH:
            return [len(group) * self.simd for group in groups]
        kept = kept_columns(self._weight_bank_bits())         # (pe, simd)
        return [int(kept[group.start:group.stop].sum()) for group in groups]

    def _weight_bank_bits(self) -> np.ndarray:
        """Each PE's bank as bits, (pe, NF * SF, simd): see `weight_memories`."""
        nf, sf = self.neuron_folds, self.synapse_folds
        padded = np.ones((nf * self.pe, sf * self.simd), dtype=np.uint8)
        padded[: self.n_out, : self.n_in] = self.weights
        # (nf, pe, sf, simd) -> (pe, nf * sf, simd): each PE's bank, one word per address
        return padded.reshape(nf, self.pe, sf, self.simd).transpose(1, 0, 2, 3).reshape(self.pe, nf * sf, self.simd)

    def weight_memories(self) -> list[np.ndarray]:
        """Weight memory contents, one array of NF * SF words per memory (`weight_groups`), the one
        statement of the layout the RTL and the memory accounting share.

        PE r's bank holds output channels r, r + pe, r + 2*pe, ...; its word ``nf * SF + sf`` holds
        input bits ``sf*simd .. sf*simd + simd - 1`` of channel ``nf*pe + r``, and sits at bits
        ``j*simd .. j*simd + simd - 1`` of that word of its memory, j its place in the memory's group.
        Padded input lanes hold 1-bits (their XNOR with the 0-padded input is 0); padded channels are
        all 1-bits and their outputs are dropped.
        """
        banks = self._weight_bank_bits()
        depth = banks.shape[1]
        return [pack_words(banks[group.start:group.stop].transpose(1, 0, 2).reshape(depth, -1))
                for group in self.weight_groups()]

    def threshold_banks(self, pad: int | None = None) -> np.ndarray:
        """Threshold contents: (pe, neuron_folds) ints; padded channels get ``pad``, a threshold no
        sum reaches (always 0): n_in + 1 unless given."""
        nf = self.neuron_folds
        padded = np.full(nf * self.pe, self.n_in + 1 if pad is None else pad, dtype=np.int64)
        padded[: self.n_out] = self.thresholds
        return padded.reshape(nf, self.pe).T.copy()

    def validate(self, index: int = 0) -> None:
        """Refuse a layer its kind's op cannot build (SpecError naming the cause and the fix)."""
        from xnorflow.hw.ops import op_for
        op_for(self, index).validate(index)


def threshold_words(banks: np.ndarray, width: int) -> list[int]:
    """A threshold ROM's words from its (pe, neuron_folds) ``banks``: word f holds fold f's
    thresholds, PE r's at bits [r * width, (r + 1) * width) (a signed one in two's complement)."""
    mask = (1 << width) - 1
    pe, folds = banks.shape
    return [sum((int(banks[r, f]) & mask) << (r * width) for r in range(pe)) for f in range(folds)]


def threshold_rom_width(banks: np.ndarray, width: int) -> int:
    """Bits of a word of the threshold ROM holding ``banks`` (`threshold_words`) that synthesis
    keeps (`kept_columns`)."""
    stored = np.asarray(banks, dtype=np.int64).T & ((1 << width) - 1)               # (folds, pe)
    bits = (stored[:, :, None] >> np.arange(width)) & 1
    return int(kept_columns(bits.reshape(len(stored), -1)).sum())


@dataclass(frozen=True)
class NetworkSpec:
    """A chain of layers whose last one gives class scores, then the output op of ``output_kind``
    (label-select: the class index and every class's score)."""

    layers: tuple[LayerSpec, ...]
    name: str = "network"
    # Free-form facts carried along for reports (arch, dataset, binarisation rule); never numerics.
    meta: dict = field(default_factory=dict)
    output_kind: str = "label_select"

    @property
    def input_bits(self) -> int:
        """Bits of one input frame: the first layer's C x H x W (a dense layer's n_in) elements of its
        ``input_bits`` bits each, in (y, x, c) order (element j at bits [j*b, (j+1)*b), LSB first)."""
        return int(np.prod(self.layers[0].in_shape)) * self.layers[0].input_bits

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_out

    @property
    def class_index_width(self) -> int:
        return bits_for(self.n_classes - 1)

    @property
    def score_width(self) -> int:
        return self.layers[-1].popcount_width

    @property
    def analytic_cycles_per_frame(self) -> int:
        """Steady-state initiation interval: the slowest op's cycles."""
        from xnorflow.hw.ops import network_ops
        return max(op.cycles for op in network_ops(self))

    def with_folding(self, folding: list[tuple[int, int]]) -> NetworkSpec:
        """A copy with (pe, simd) per layer."""
        if len(folding) != len(self.layers):
            raise SpecError(f"folding has {len(folding)} entries for {len(self.layers)} layers: "
                            "give one (PE, SIMD) pair per layer")
        # The weight packing belongs to a folding: a new one starts from one memory per PE.
        layers = tuple(replace(layer, pe=int(pe), simd=int(simd), weight_packing=1)
                       for layer, (pe, simd) in zip(self.layers, folding))
        return replace(self, layers=layers)

    def validate(self) -> None:
        from xnorflow.hw.ops import op_for, output_op
        if not self.layers:
            raise SpecError("the network has no layers: train or import a model with at least one layer")
        for i, layer in enumerate(self.layers):
            op = op_for(layer, i)
            op.validate(i)
            last = i == len(self.layers) - 1
            if last and not op.emits_scores:
                raise SpecError("the last layer has thresholds; the output layer must emit class scores: "
                                "re-run the compiler on the model")
            if not last and op.emits_scores:
                raise SpecError(f"layer {i} has no thresholds but is not the last layer: "
                                "re-run the compiler on the model")
            if i:
                given, taken = self.layers[i - 1].out_shape, layer.in_shape
                if int(np.prod(given)) != int(np.prod(taken)):
                    raise SpecError(f"layer {i} takes {int(np.prod(taken))} inputs but layer {i - 1} gives "
                                    f"{int(np.prod(given))}: the model's layer sizes must chain")
                if given != taken and given[1:] != (1, 1) and taken[1:] != (1, 1):
                    raise SpecError(f"layer {i} takes C x H x W {taken} but layer {i - 1} gives {given}: "
                                    "between spatial layers (conv, max-pool) the shapes must chain")
        output_op(self).validate(len(self.layers) - 1)

    # --- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the spec as one .npz (arrays) with a JSON header (sizes, folding, meta)."""
        header = {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "name": self.name,
            "meta": self.meta,
            "layers": [{"kind": l.kind, "n_in": l.n_in, "n_out": l.n_out, "pe": l.pe, "simd": l.simd,
                        "in_shape": list(l.in_shape), "out_shape": list(l.out_shape), "kernel": l.kernel,
                        "stride": l.stride, "padding": l.padding, "pad_value": l.pad_value,
                        "weight_style": l.weight_style, "buffer_style": l.buffer_style,
                        "register_weights": l.register_weights, "input_bits": l.input_bits,
                        "weight_packing": l.weight_packing} for l in self.layers],
            "output": {"kind": self.output_kind},
        }
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, layer in enumerate(self.layers):
            if layer.weights is not None:
                arrays[f"w{i}"] = np.packbits(layer.weights, axis=1, bitorder="little")
            if layer.thresholds is not None:
                arrays[f"t{i}"] = layer.thresholds.astype(np.int64)
            if layer.pool_and is not None:
                arrays[f"p{i}"] = layer.pool_and.astype(np.uint8)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NetworkSpec:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                if header.get("format") != SPEC_FORMAT:
                    raise SpecError(f"{path} is not an xnorflow spec: run `xnorflow compile` to make one")
                check_version(path, header.get("version"))
                layers = []
                for i, l in enumerate(header["layers"]):
                    weights = (np.unpackbits(data[f"w{i}"], axis=1, count=l["n_in"], bitorder="little")
                               if f"w{i}" in data else None)
                    thresholds = data.get(f"t{i}")
                    layers.append(LayerSpec(l["n_in"], l["n_out"], weights, thresholds, l["pe"], l["simd"],
                                            l["weight_style"], l["buffer_style"], bool(l["register_weights"]),
                                            kind=l["kind"], in_shape=tuple(l["in_shape"]),
                                            out_shape=tuple(l["out_shape"]), kernel=l["kernel"], stride=l["stride"],
                                            padding=l["padding"], pad_value=l["pad_value"],
                                            pool_and=data.get(f"p{i}"), input_bits=int(l.get("input_bits", 1)),
                                            weight_packing=int(l.get("weight_packing", 1))))
                output_kind = header["output"]["kind"]
        except SpecError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise SpecError(f"cannot read the spec {path} ({e}): run `xnorflow compile` again") from e
        return cls(tuple(layers), header.get("name", "network"), header.get("meta", {}), output_kind)


# Yosys removes a ROM's constant bit columns; a column of random-looking weights is constant with
# probability 2 ** (1 - depth), so the weight accounting looks for them only up to this depth.
CONSTANT_COLUMN_DEPTH = 32


def kept_columns(contents: np.ndarray) -> np.ndarray:
    """The bit columns of a ROM that Yosys keeps, for its {0, 1} contents (..., depth, width): those
    not holding the same bit at every address (it drops the others before mapping the ROM)."""
    return contents.min(axis=-2) != contents.max(axis=-2)


def conv_out_shape(in_shape, out_channels: int, kernel: int, padding: int) -> tuple[int, int, int]:
    """The (O, H', W') output of a K x K stride-1 conv with ``padding`` on a (C, H, W) input."""
    _, h, w = (int(v) for v in in_shape)
    grow = 2 * int(padding) - int(kernel) + 1
    return (int(out_channels), h + grow, w + grow)


def pool_out_shape(in_shape, size: int) -> tuple[int, int, int]:
    """The (C, H // S, W // S) output of an S x S, stride-S max-pool (trailing rows and columns dropped)."""
    c, h, w = (int(v) for v in in_shape)
    return (c, h // int(size), w // int(size))


def conv_layer(in_shape: tuple[int, int, int], weights: np.ndarray, thresholds: np.ndarray, *, kernel: int,
               padding: int = 0, pad_value: int = 0, pe: int = 1, simd: int = 1, input_bits: int = 1) -> LayerSpec:
    """A K x K binary convolution, stride 1, as a LayerSpec (DESIGN.md section 2a); with
    ``input_bits`` b >= 2, the int_conv layer on b-bit pixels (section 2b: ``pad_value`` is then an
    input value, 0).

    ``in_shape`` is (C, H, W); ``weights`` is (O, K*K*C) bits ordered (ky, kx, c) with c fastest
    (``w[o, (ky*K + kx)*C + c] = W[o, c, ky, kx]``), rows of negative gamma already inverted;
    ``thresholds`` (O,). ``padding`` pixels of the bit ``pad_value`` (0 = -1, 1 = +1) surround the
    input. The output is (O, H + 2P - K + 1, W + 2P - K + 1); its matrix-vector unit has
    n_in = K*K*C and n_out = O and runs once per output pixel.
    """
    c, h, w = (int(v) for v in in_shape)
    k, p = int(kernel), int(padding)
    out_shape = conv_out_shape(in_shape, np.asarray(weights).shape[0], k, p)
    return LayerSpec(k * k * c, out_shape[0], np.asarray(weights, dtype=np.uint8),
                     None if thresholds is None else np.asarray(thresholds, dtype=np.int64), pe=pe, simd=simd,
                     kind="conv" if input_bits == 1 else "int_conv", in_shape=(c, h, w), out_shape=out_shape,
                     kernel=k, stride=1, padding=p, pad_value=int(pad_value), input_bits=int(input_bits))


def maxpool_layer(in_shape: tuple[int, int, int], size: int, pool_and: np.ndarray | None = None,
                  pe: int = 1) -> LayerSpec:
    """A size x size max-pool with stride = size (floor) over activation bits, as a LayerSpec: per
    channel the OR of the window's bits, or the AND where ``pool_and`` (C,) is 1. No weights."""
    c, h, w = (int(v) for v in in_shape)
    s = int(size)
    polarity = np.zeros(c, dtype=np.uint8) if pool_and is None else np.asarray(pool_and, dtype=np.uint8)
    return LayerSpec(c, c, None, None, pe=pe, simd=pe, kind="maxpool", in_shape=(c, h, w),
                     out_shape=pool_out_shape(in_shape, s), kernel=s, stride=s, pool_and=polarity)


def check_version(path, version) -> None:
    """Refuse a spec file of another format version, in one line naming both."""
    if version == SPEC_VERSION:
        return
    if isinstance(version, int) and version > SPEC_VERSION:
        fix = "update xnorflow, or re-run `xnorflow compile` with this one to rewrite it"
    else:
        fix = "re-run `xnorflow compile` to rewrite it"
    raise SpecError(f"{path} is an xnorflow spec of format version {version}, this xnorflow reads version "
                    f"{SPEC_VERSION}: {fix}")


def pack_words(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a {0,1} array into words, LSB first.

    Returns an object array of Python ints when the last axis is wider than 64 bits, since words of
    any width (SIMD up to the layer width) must fit; uint64 otherwise.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    width = bits.shape[-1]
    flat = bits.reshape(-1, width)
    if width <= 64:
        weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
        return (flat.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64).reshape(bits.shape[:-1])
    packed = np.packbits(flat, axis=1, bitorder="little")
    words = np.array([int.from_bytes(row.tobytes(), "little") for row in packed], dtype=object)
    return words.reshape(bits.shape[:-1])


def unpack_words(words, width: int) -> np.ndarray:
    """Inverse of pack_words: integers -> {0,1} array with a last axis of ``width`` bits."""
    words = np.asarray(words)
    flat = words.reshape(-1)
    out = np.zeros((flat.size, width), dtype=np.uint8)
    for i, word in enumerate(flat):
        word = int(word)
        out[i] = [(word >> b) & 1 for b in range(width)]
    return out.reshape(words.shape + (width,))
