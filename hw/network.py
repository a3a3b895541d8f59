"""The whole accelerator: the ops of a NetworkSpec in a chain, joined by width adapters.

Each layer is built by its op (hw/ops/: dense -> an MVTU, conv -> a sliding-window generator and
an MVTU, maxpool -> a streaming pool), and the output op (label-select) after
the last layer; this module only joins them. Stream contract of :class:`Network` (also what the
exported Verilog and the boards see):

- ``i``: ``in_width``-bit beats (default: the first op's input width, a dense layer's SIMD), a frame
  packed as hw/stream_format.py states (element j of the input vector is bit j % in_width of beat
  j // in_width; the last beat is zero-padded). :func:`input_beats` packs frames this way.
- ``o``: one beat per frame with the payload :func:`output_layout` (the stream format's output beat:
  the class index, then every class's score). :func:`decode_output` unpacks it.
- ``tap{k}_data`` / ``tap{k}_valid`` for each hidden layer k: that layer's output beat and a strobe
  that is high on the cycle the beat is transferred; its op decodes them (`Op.decode`), and
  :func:`taps_to_activations` does so for every hidden layer: a dense layer's (n_out,) bits, a
  conv's or max-pool's H x W x C bits in (y, x, c) order.
- Between ops, a conv or max-pool stream carries one pixel per unit (a conv: NF beats of PE bits;
  a pool: one beat of C bits), a dense layer one vector; the flatten from pixels to a dense layer's
  vector is (y, x, c) order, the pixels' bits concatenated in raster order (`Network._join`).
"""
from __future__ import annotations

from itertools import pairwise

import numpy as np
from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from xnorflow.hw.adapters import RegisterSlice, WidthAdapter
from xnorflow.hw.ops import op_for, output_op
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import NetworkSpec, SpecError
from xnorflow.hw.stream_format import frames_to_beats


def output_layout(spec: NetworkSpec) -> data.StructLayout:
    """The output stream's payload, the output op's: for label-select ``index`` (class_index_width
    bits) then ``scores[n_classes]``."""
    return output_op(spec).payload_layout


def decode_output(spec: NetworkSpec, payload: int) -> tuple[int, list[int]]:
    """An output payload as an integer -> (class index, [score of each class])."""
    index, *scores = output_op(spec).decode([payload])[0].tolist()
    return index, scores


def input_beats(spec: NetworkSpec, frames_bits: np.ndarray, in_width: int | None = None) -> list[int]:
    """Frames of input bits, (frames, input_bits) of {0,1}, as the beats the host sends, in order."""
    in_width = in_width or op_for(spec.layers[0]).in_width
    frames_bits = np.asarray(frames_bits, dtype=np.uint8)
    if frames_bits.ndim != 2 or frames_bits.shape[1] != spec.input_bits:
        raise SpecError(f"input has shape {frames_bits.shape}; the network takes "
                        f"(frames, {spec.input_bits}) bits")
    return [beat for frame in frames_to_beats(frames_bits, in_width) for beat in frame]


def taps_to_activations(spec: NetworkSpec, beats_per_layer: list[list[int]]) -> list[np.ndarray]:
    """Tap beats of each hidden layer (in transfer order) -> per layer (frames, out bits) uint8 bits,
    decoded by the layer's op. Only whole frames are returned; padded channels are dropped."""
    return [op_for(layer, k).decode(beats) for k, (layer, beats) in enumerate(zip(spec.layers[:-1], beats_per_layer))]


def join_plan(width: int, unit: int, op, where: str = "") -> str:
    """How a stream of ``width``-bit beats in units of ``unit`` real bits reaches ``op``'s input
    (see `Network._join`): "direct", "same unit" (one adapter), "gather" (pixels -> a vector) or
    "split" (a vector -> pixels); SpecError when the units do not chain."""
    taken, width_in = op.in_unit, op.in_width
    if unit == taken:
        return "direct" if width == width_in else "same unit"
    if taken % unit == 0:
        return "gather"
    if unit % taken == 0 and width_in == taken:
        return "split"
    raise SpecError(f"layer {where} ({op.kind}) takes units of {taken} bits but its input comes in units of "
                    f"{unit}: the layers' shapes must chain (pixels of C channels, or whole vectors)")


class Network(wiring.Component):
    """The streaming accelerator of a validated NetworkSpec (see the module docstring for the ports)."""

    def __init__(self, spec: NetworkSpec, in_width: int | None = None):
        with refusing(self):
            spec.validate()
            if in_width is not None and int(in_width) < 1:
                raise SpecError(f"input width {in_width} is not positive: give in_width >= 1 or leave "
                                "it unset to use the first layer's SIMD")
        self.spec = spec
        self.ops = [op_for(layer, k) for k, layer in enumerate(spec.layers)]
        self.output_op = output_op(spec)
        self.in_width = int(in_width) if in_width is not None else self.ops[0].in_width
        with refusing(self):
            join_plan(self.in_width, spec.input_bits, self.ops[0], "0")
            for k, (made, taken) in enumerate(pairwise(self.ops)):
                join_plan(made.out_width, made.out_unit, taken, str(k + 1))
        ports = {
            "i": In(stream.Signature(unsigned(self.in_width))),
            "o": Out(stream.Signature(output_layout(spec))),
        }
        for k, op in enumerate(self.ops[:-1]):
            ports[f"tap{k}_data"] = Out(unsigned(op.out_width))
            ports[f"tap{k}_valid"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        engines = []
        for k, op in enumerate(self.ops):
            engine = op.component(k)
            m.submodules[op.submodule_name(k)] = engine
            engines.append(engine)
        first = self.ops[0]
        # Host -> first layer, then layer k -> layer k+1, each through `_join`.
        self._join(m, wiring.flipped(self.i), self.in_width, self.spec.input_bits, engines[0], first, "in")
        for k, ((producer, consumer), (made, taken)) in enumerate(zip(pairwise(engines), pairwise(self.ops))):
            self._join(m, producer.o, made.out_width, made.out_unit, consumer, taken, str(k))
            m.d.comb += [
                getattr(self, f"tap{k}_data").eq(producer.o.payload),
                getattr(self, f"tap{k}_valid").eq(producer.o.valid & producer.o.ready),
            ]

        # Last layer -> the output op (label-select) over the scores link, then out.
        m.submodules[self.output_op.submodule_name(len(self.ops))] = head = self.output_op.component(len(self.ops))
        wiring.connect(m, engines[-1].o, head.i)
        wiring.connect(m, head.o, wiring.flipped(self.o))
        return m

    def _join(self, m: Module, source, width: int, unit: int, engine, op, name: str) -> None:
        """Connect ``source`` (beats of ``width`` bits, units of ``unit`` real bits, the last beat of
        each unit zero-padded) to ``engine``, the component of ``op``.

        - Same unit (dense -> dense, pixel -> pixel): equal widths connect directly (a hidden
          engine's padded channels are 0, the padding the next one needs); otherwise one width
          adapter of that unit.
        - The consumer's unit is several of the source's (conv or pool pixels -> a dense layer's
          flattened (y, x, c) vector): the pixels' padding is dropped first (an adapter to one
          unit per beat, unless the beats are whole units already), then they are packed into the
          consumer's beats.
        - The source's unit is several of the consumer's (a frame from the host or a dense layer
          -> pixels): one adapter cuts it into the consumer's one-pixel beats.
        """
        taken, width_in = op.in_unit, op.in_width
        suffix = "" if name == "in" else name
        plan = join_plan(width, unit, op, name)
        if plan == "direct":
            wiring.connect(m, source, engine.i)
            return
        if plan == "same unit":
            adapter = WidthAdapter(width, width_in, unit)
        elif plan == "gather":
            if width != unit:
                m.submodules[f"unpad{suffix}"] = unpad = WidthAdapter(width, unit, unit)
                wiring.connect(m, source, unpad.i)
                source = unpad.o
            adapter = WidthAdapter(unit, width_in, taken)
        else:   # "split"
            adapter = WidthAdapter(width, width_in, unit)
        m.submodules[f"adapter{suffix}" if name != "in" else "adapter_in"] = adapter
        wiring.connect(m, source, adapter.i)
        self._connect_through_slice(m, adapter, engine, f"slice{suffix}" if name != "in" else "slice_in")

    @staticmethod
    def _connect_through_slice(m: Module, adapter: WidthAdapter, engine, name: str) -> None:
        """adapter -> register slice -> engine: the engine's ready would otherwise run through the
        gearbox's shifter into its buffer, the longest path of a small iCE40 design."""
        if adapter.is_identity:
            wiring.connect(m, adapter.o, engine.i)
            return
        m.submodules[name] = pipe = RegisterSlice(adapter.out_width)
        wiring.connect(m, adapter.o, pipe.i)
        wiring.connect(m, pipe.o, engine.i)
