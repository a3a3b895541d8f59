"""The op interface and the registry of layer kinds (FINN's HWCustomOp, for xnorflow's engines).

An op is one layer kind's hardware: everything the rest of the toolchain needs to know about it,
owned in one class. The compiler, the fit, the resource estimate, the golden model, the network top
and mismatch localisation ask the op of a layer (`op_for`) instead of testing the layer's fields.

Two roles:

- ``"layer"`` ops stand for one entry of ``NetworkSpec.layers`` (dense today; conv and max-pool
  next). Their output is a stream of activation bits, except the last layer's, which emits class
  scores (`Op.emits_scores`) to the output op.
- ``"output"`` ops come after the last layer (``NetworkSpec.output_kind``; label-select today) and
  are built from that layer's spec, whose scores they consume. Their output is the network's.

The parts every op defines (`Op.PARTS`; tests/hw/test_ops.py checks each registered kind has them,
tests/sim/test_golden.py that sim/golden.py has a kernel for it matching ``reference``):

============== ================================================================================
validate       refuse a LayerSpec this kind cannot build (SpecError naming the cause and the fix)
cycles         cycles the op's engine needs per frame (the network's II is the max over ops)
memories       the memories its RTL instantiates (role, width, depth, count, style, kind); the
               compiler maps them to blocks per device family and places them
logic_terms    its structural terms of the calibrated logic model (compiler/analysis.py), without
               the memories' terms, which the estimate derives from `memories`
flip_flops     its flip-flops, counted from its RTL (without memories kept in logic)
component      its Amaranth component; ``i`` and ``o`` are what the network top connects
decode         an output stream's beats (as ints) -> per frame values: what taps and the output mean
reference      the numerics in plain NumPy: the definition sim/golden.py's fast kernel must match
============== ================================================================================
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from xnorflow.hw.spec import LayerSpec, SpecError


class Op:
    """One layer kind's hardware op; subclasses set ``kind`` and ``role`` and define `PARTS`."""

    kind: ClassVar[str] = ""
    role: ClassVar[str] = "layer"       # "layer" or "output"
    PARTS: ClassVar[tuple[str, ...]] = ("validate", "cycles", "memories", "logic_terms", "flip_flops",
                                        "component", "decode", "reference")

    def __init__(self, layer: LayerSpec):
        # A layer op's own layer; an output op's is the last layer, whose scores it takes.
        self.layer = layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layer.n_in}->{self.layer.n_out}, pe={self.layer.pe}, simd={self.layer.simd})"

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, index: int = 0) -> None:
        raise NotImplementedError

    @property
    def emits_scores(self) -> bool:
        """A layer op whose output is class scores for the output op (the last layer), not bits."""
        return False

    @property
    def in_width(self) -> int:
        """Bits per beat of the input stream ``i`` (what a width adapter in front must produce)."""
        raise NotImplementedError

    @property
    def out_width(self) -> int:
        """Bits per beat of a bit stream ``o`` (taps, and what the next op's adapter takes)."""
        raise NotImplementedError

    @property
    def beats_per_frame(self) -> int:
        """Beats per frame on ``o``."""
        raise NotImplementedError

    @property
    def in_unit(self) -> int:
        """Real bits of one unit of the input stream: a unit arrives as ceil(in_unit / in_width)
        beats, the last zero-padded. A dense layer's unit is its whole vector; a conv's or a
        max-pool's is one pixel (C bits), H x W of them per frame."""
        return self.layer.n_in

    @property
    def out_unit(self) -> int:
        """Real bits of one unit of the output stream (ceil(out_unit / out_width) beats, padding in
        the last): a dense layer's vector, a conv's or a max-pool's pixel. The network top joins
        units of different sizes with width adapters (hw/network.py)."""
        return self.layer.n_out

    def submodule_name(self, index: int) -> str:
        """The component's name in the network top (and so in the netlist's hierarchy)."""
        return f"{self.kind}{index}"

    # --- schedule --------------------------------------------------------------------------------
    @property
    def cycles(self) -> int:
        raise NotImplementedError

    # --- memories and the resource estimate ------------------------------------------------------
    def memories(self) -> list[dict]:
        raise NotImplementedError

    def logic_terms(self) -> dict[str, int]:
        raise NotImplementedError

    def flip_flops(self) -> int:
        raise NotImplementedError

    # --- RTL -------------------------------------------------------------------------------------
    def component(self, index: int = 0):
        raise NotImplementedError

    def decode(self, beats: list[int]) -> np.ndarray:
        raise NotImplementedError

    def neuron_detail(self, neuron: int, layer_input: np.ndarray) -> dict:
        """Optional, for a mismatch message: golden facts about one output channel on one frame's
        input (a dense layer's popcount and threshold)."""
        return {}

    # --- numerics --------------------------------------------------------------------------------
    def reference(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: make ``cls`` the op of its ``kind``."""
    if not cls.kind or cls.role not in ("layer", "output"):
        raise TypeError(f"{cls.__name__}: an op needs a kind and the role 'layer' or 'output'")
    if cls.kind in OPS and OPS[cls.kind] is not cls:
        raise TypeError(f"two ops for kind {cls.kind!r}: {OPS[cls.kind].__name__} and {cls.__name__}")
    OPS[cls.kind] = cls
    return cls


def kinds(role: str) -> list[str]:
    return sorted(kind for kind, cls in OPS.items() if cls.role == role)


def op_class(kind: str, role: str, where: str) -> type[Op]:
    cls = OPS.get(kind)
    if cls is None or cls.role != role:
        raise SpecError(f"{where} has kind {kind!r}, which this xnorflow does not build as a {role} "
                        f"(it knows {', '.join(kinds(role))}): re-run `xnorflow compile` on the model")
    return cls


def op_for(layer: LayerSpec, index: int = 0) -> Op:
    """The op of one of a network's layers."""
    return op_class(layer.kind, "layer", f"layer {index}")(layer)


def output_op(spec) -> Op:
    """The op after the last layer (label-select), built from that layer."""
    return op_class(spec.output_kind, "output", "the network's output")(spec.layers[-1])


def network_ops(spec) -> list[Op]:
    """Every op of a network in stream order: one per layer, then the output op."""
    return [op_for(layer, i) for i, layer in enumerate(spec.layers)] + [output_op(spec)]


def layer_ops(layer: LayerSpec, output_kind: str = "label_select", index: int = 0) -> list[Op]:
    """The ops one layer brings into the network: its own, and when it emits class scores (the last
    layer) the output op that takes them. The estimate and the fit count them together: the output
    op's cost follows that layer's folding."""
    op = op_for(layer, index)
    if not op.emits_scores:
        return [op]
    return [op, op_class(output_kind, "output", "the network's output")(layer)]


def layer_groups(spec) -> list[list[Op]]:
    """`layer_ops` of every layer of a (validated) network: every op once, grouped by layer."""
    return [layer_ops(layer, spec.output_kind, i) for i, layer in enumerate(spec.layers)]
