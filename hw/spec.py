"""The lowered network: the vocabulary shared by the compiler, the golden model, the RTL and the boards.

Plain dataclasses of ints and NumPy arrays, nothing else (no torch, no amaranth). The numerics are
those of DESIGN.md section 2:

- bit 1 means +1, bit 0 means -1; element i of a vector is bit i of its packed word (LSB first);
- a layer with N inputs computes ``p = popcount(XNOR(x, w))`` per output channel, ``0 <= p <= N``;
- a hidden layer outputs the bit ``p >= T`` (one integer threshold per channel, ``0 <= T <= N + 1``);
- the output layer has no thresholds: it emits every class's ``p`` and the index of the largest
  (ties go to the lowest index).

Folding: a layer runs ``pe`` output channels and ``simd`` input bits in parallel, and so takes
``ceil(n_out / pe) * ceil(n_in / simd)`` cycles per frame.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xnorflow.errors import XnorflowError

SPEC_FORMAT = "xnorflow-spec"
SPEC_VERSION = 1
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
    """One binary dense layer.

    ``weights`` is a (n_out, n_in) uint8 array of bits (1 = +1). Rows whose batch-norm gamma was
    negative have already been inverted by the compiler, so the hardware only ever compares ``>=``.
    ``thresholds`` is a (n_out,) int64 array for hidden layers and None for the output layer.
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

    @property
    def is_output(self) -> bool:
        return self.thresholds is None

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
        """Cycles the layer's engine needs per frame."""
        return self.neuron_folds * self.synapse_folds

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
        return self.n_out * self.n_in

    def weight_banks(self) -> np.ndarray:
        """Weight memory contents: (pe, neuron_folds * synapse_folds) words of ``simd`` bits.

        Bank r holds output channels r, r + pe, r + 2*pe, ...; word ``nf * synapse_folds + sf`` holds
        input bits ``sf*simd .. sf*simd + simd - 1`` of channel ``nf*pe + r``. Padded input lanes hold
        1-bits (their XNOR with the 0-padded input is 0); padded channels are all 1-bits and their
        outputs are dropped.
        """
        nf, sf = self.neuron_folds, self.synapse_folds
        padded = np.ones((nf * self.pe, sf * self.simd), dtype=np.uint8)
        padded[: self.n_out, : self.n_in] = self.weights
        # (nf, pe, sf, simd) -> (pe, nf, sf, simd)
        blocks = padded.reshape(nf, self.pe, sf, self.simd).transpose(1, 0, 2, 3)
        words = pack_words(blocks.reshape(self.pe * nf * sf, self.simd))
        return words.reshape(self.pe, nf * sf)

    def threshold_banks(self) -> np.ndarray:
        """Threshold contents: (pe, neuron_folds) ints; padded channels get n_in + 1 (always 0)."""
        nf = self.neuron_folds
        padded = np.full(nf * self.pe, self.n_in + 1, dtype=np.int64)
        padded[: self.n_out] = self.thresholds
        return padded.reshape(nf, self.pe).T.copy()

    def validate(self, index: int = 0) -> None:
        where = f"layer {index}"
        if self.n_in < 1 or self.n_out < 1:
            raise SpecError(f"{where} has a zero width ({self.n_in} inputs, {self.n_out} outputs): "
                            "remove it from the model")
        if self.weights.shape != (self.n_out, self.n_in):
            raise SpecError(f"{where}: weights have shape {self.weights.shape}, expected "
                            f"({self.n_out}, {self.n_in}): re-run the compiler on the model")
        if self.weights.size and (self.weights.max() > 1):
            raise SpecError(f"{where}: weights must be bits (0 or 1): re-run the compiler on the model")
        if not (1 <= self.pe <= self.n_out) or not (1 <= self.simd <= self.n_in):
            raise SpecError(f"{where}: folding PE={self.pe}, SIMD={self.simd} does not fit "
                            f"{self.n_out} outputs x {self.n_in} inputs: choose 1 <= PE <= {self.n_out} "
                            f"and 1 <= SIMD <= {self.n_in}")
        for style in (self.weight_style, self.buffer_style):
            if style not in MEMORY_STYLES:
                raise SpecError(f"{where}: memory style {style!r}: choose one of {', '.join(MEMORY_STYLES)}")
        if self.thresholds is not None:
            if self.thresholds.shape != (self.n_out,):
                raise SpecError(f"{where}: {self.thresholds.shape} thresholds for {self.n_out} "
                                "channels: re-run the compiler on the model")
            lo, hi = int(self.thresholds.min()), int(self.thresholds.max())
            if lo < 0 or hi > self.n_in + 1:
                raise SpecError(f"{where}: threshold out of range [{lo}, {hi}], the hardware takes "
                                f"0..{self.n_in + 1}: fold batch-norm with the compiler, which clamps them")


@dataclass(frozen=True)
class NetworkSpec:
    """A chain of binary dense layers; the last one is the output layer."""

    layers: tuple[LayerSpec, ...]
    name: str = "network"
    # Free-form facts carried along for reports (arch, dataset, binarisation rule); never numerics.
    meta: dict = field(default_factory=dict)

    @property
    def input_bits(self) -> int:
        return self.layers[0].n_in

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
        """Steady-state initiation interval: the slowest layer's cycles."""
        return max(layer.cycles for layer in self.layers)

    def with_folding(self, folding: list[tuple[int, int]]) -> NetworkSpec:
        """A copy with (pe, simd) per layer."""
        if len(folding) != len(self.layers):
            raise SpecError(f"folding has {len(folding)} entries for {len(self.layers)} layers: "
                            "give one (PE, SIMD) pair per layer")
        layers = tuple(replace(layer, pe=int(pe), simd=int(simd))
                       for layer, (pe, simd) in zip(self.layers, folding))
        return replace(self, layers=layers)

    def validate(self) -> None:
        if not self.layers:
            raise SpecError("the network has no layers: train or import a model with at least one layer")
        for i, layer in enumerate(self.layers):
            layer.validate(i)
            last = i == len(self.layers) - 1
            if last and not layer.is_output:
                raise SpecError("the last layer has thresholds; the output layer must emit class scores: "
                                "re-run the compiler on the model")
            if not last and layer.is_output:
                raise SpecError(f"layer {i} has no thresholds but is not the last layer: "
                                "re-run the compiler on the model")
            if i and layer.n_in != self.layers[i - 1].n_out:
                raise SpecError(f"layer {i} takes {layer.n_in} inputs but layer {i - 1} gives "
                                f"{self.layers[i - 1].n_out}: the model's layer sizes must chain")

    # --- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the spec as one .npz (arrays) with a JSON header (sizes, folding, meta)."""
        header = {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "name": self.name,
            "meta": self.meta,
            "layers": [{"n_in": l.n_in, "n_out": l.n_out, "pe": l.pe, "simd": l.simd,
                        "weight_style": l.weight_style, "buffer_style": l.buffer_style,
                        "register_weights": l.register_weights} for l in self.layers],
        }
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, layer in enumerate(self.layers):
            arrays[f"w{i}"] = np.packbits(layer.weights, axis=1, bitorder="little")
            if layer.thresholds is not None:
                arrays[f"t{i}"] = layer.thresholds.astype(np.int64)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NetworkSpec:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                if header.get("format") != SPEC_FORMAT:
                    raise SpecError(f"{path} is not an xnorflow spec: run `xnorflow compile` to make one")
                layers = []
                for i, l in enumerate(header["layers"]):
                    weights = np.unpackbits(data[f"w{i}"], axis=1, count=l["n_in"], bitorder="little")
                    thresholds = data.get(f"t{i}")
                    layers.append(LayerSpec(l["n_in"], l["n_out"], weights, thresholds, l["pe"], l["simd"],
                                            l.get("weight_style", "auto"), l.get("buffer_style", "auto"),
                                            bool(l.get("register_weights", False))))
        except SpecError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise SpecError(f"cannot read the spec {path} ({e}): run `xnorflow compile` again") from e
        return cls(tuple(layers), header.get("name", "network"), header.get("meta", {}))


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
