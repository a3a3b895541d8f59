"""Stream width adapter: joins a producer of ``in_width``-bit beats to a consumer of ``out_width``-bit beats.

Both sides are frame-aware. A frame is ``n`` real bits: the producer sends ceil(n / in_width) beats
whose last one holds n - (beats - 1) * in_width real bits (the rest is padding, dropped here); the
consumer receives ceil(n / out_width) beats whose last one is zero-padded.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from xnorflow.hw.counter import wrapping_counter
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import SpecError, bits_for, ceil_div


class AdapterError(SpecError):
    """A width adapter asked for impossible widths."""


def adapter_kind(in_width: int, out_width: int, n: int) -> str:
    """How `WidthAdapter` joins ``in_width``-bit beats to ``out_width``-bit ones for frames of ``n``
    bits, cheapest first:

    - "identity" (equal widths, ``n % in_width == 0``): wires;
    - "mask" (equal widths, a partial last beat): wires plus a mask that zeroes the last beat's padding;
    - "deserializer" (``out_width`` a multiple of ``in_width``): each input beat is written into its
      place of the output beat, no shifter (the frame's last input beat, which may be partial, ends
      the frame's last output beat);
    - "serializer" (``in_width`` a multiple of ``out_width``): each input beat is loaded into a
      register that shifts down by ``out_width`` per output beat, no variable shifter;
    - "gearbox": a bit buffer of ``in_width + 2 * out_width`` bits with a fill count and a shifter.
    """
    if in_width == out_width:
        return "identity" if n % in_width == 0 else "mask"
    if out_width % in_width == 0:
        return "deserializer"
    if in_width % out_width == 0:
        return "serializer"
    return "gearbox"


def landing_shifter_inputs(in_width: int, out_width: int) -> int:
    """Inputs of a gearbox's landing shifter: a beat lands at the fill count (0 .. 2 * out_width), so
    each of the buffer's in_width + 2 * out_width bits picks from up to min(in_width, 2 * out_width + 1)
    input bits."""
    return (in_width + 2 * out_width) * min(in_width, 2 * out_width + 1)


def adapter_terms(in_width: int, out_width: int, n: int) -> dict[str, int]:
    """The adapter's structural terms of the logic estimate (compiler/analysis.py, `LogicModel`),
    with the register slice after it: a gearbox's buffer bits x shifter stages (a narrowing one's
    apart: its landing shifters take a whole, wider input beat), a deserializer's output bits, a
    serializer's input bits; none when the widths match."""
    kind = adapter_kind(in_width, out_width, n)
    if kind == "gearbox":
        capacity = in_width + 2 * out_width
        name = "narrowing_gearbox_bit" if in_width > out_width else "gearbox_bit"
        return {name: capacity * bits_for(capacity)}
    if kind == "deserializer":
        return {"deserializer_bit": out_width}
    if kind == "serializer":
        return {"serializer_bit": in_width}
    return {}


def adapter_flip_flops(in_width: int, out_width: int, n: int) -> int:
    """Flip-flops of the adapter and the register slice after it; none when the widths match."""
    kind = adapter_kind(in_width, out_width, n)
    register_slice = 2 * (out_width + 1)
    if kind == "gearbox":
        capacity = in_width + 2 * out_width
        return capacity + 3 * bits_for(capacity) + register_slice
    if kind == "deserializer":
        out_beats = ceil_div(n, out_width)
        return out_width + bits_for(out_width // in_width) + 2 + bits_for(out_beats) + 2 + register_slice
    if kind == "serializer":
        counters = sum(bits_for(beats) + 2 if beats > 1 else 2 for beats in (ceil_div(n, in_width), ceil_div(n, out_width)))
        return in_width + bits_for(in_width // out_width) + 2 + counters + register_slice
    return 0


class WidthAdapter(wiring.Component):
    """Streaming width adapter between two beat widths, in one of the forms of `adapter_kind`.

    The gearbox accepts and emits in the same cycle. ``i.ready`` is a register (the fill count
    ``count <= 2 * out_width``), so it never waits on the consumer combinationally, and the
    2 * out_width of headroom keeps both sides at full rate: when the consumer is the slower side
    the count never falls below out_width (an output beat is always ready); when the producer is
    slower the count never rises above 2 * out_width (an input beat is always taken).
    """

    def __init__(self, in_width: int, out_width: int, n: int):
        with refusing(self):
            for label, value in (("in_width", in_width), ("out_width", out_width), ("frame bits n", n)):
                if int(value) < 1:
                    raise AdapterError(f"width adapter: {label} is {value}; it must be at least 1")
        self.in_width, self.out_width, self.n = int(in_width), int(out_width), int(n)
        super().__init__({
            "i": In(stream.Signature(unsigned(self.in_width))),
            "o": Out(stream.Signature(unsigned(self.out_width))),
        })

    @property
    def in_beats(self) -> int:
        return ceil_div(self.n, self.in_width)

    @property
    def out_beats(self) -> int:
        return ceil_div(self.n, self.out_width)

    @property
    def kind(self) -> str:
        return adapter_kind(self.in_width, self.out_width, self.n)

    @property
    def is_identity(self) -> bool:
        return self.kind == "identity"

    def elaborate(self, platform):
        m = Module()
        if self.is_identity:
            m.d.comb += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready)]
        elif self.kind == "mask":
            self._mask_last_beat(m)
        elif self.kind == "deserializer":
            self._deserialize(m)
        elif self.kind == "serializer":
            self._serialize(m)
        else:
            self._gearbox(m)
        return m

    def _deserialize(self, m: Module) -> None:
        """Output beats of ``parts`` input beats: input beat j of an output beat is written to bits
        j*in_width.. of the output register, which is ``o.payload`` and is held until taken. The
        frame's last output beat has ``last_parts`` parts, the last of them the frame's last input
        beat with its padding masked off; the parts above stay 0 (cleared when the beat before it is
        taken, and never written in between)."""
        a, b = self.in_width, self.out_width
        parts = b // a
        last_parts = self.in_beats - (self.out_beats - 1) * parts
        in_last_bits = self.n - (self.in_beats - 1) * a      # real bits of the frame's last input beat
        word = Signal(b)
        full = Signal()                  # word is a whole output beat until it is taken
        part = Signal(range(parts))      # the part the next input beat fills
        part_last = Signal(init=self.out_beats == 1 and last_parts == 1)   # it completes the output beat
        accept = self.i.valid & self.i.ready
        emit = self.o.valid & self.o.ready
        word_index = wrapping_counter(m, self.out_beats, accept & part_last, "out_beat")
        next_is_last = word_index.stepped_is_last     # the output beat after this one is the frame's last
        m.d.comb += [self.o.payload.eq(word), self.o.valid.eq(full), self.i.ready.eq(~full | self.o.ready)]
        with m.If(emit):
            m.d.sync += [full.eq(0)] + [word[j * a:(j + 1) * a].eq(0) for j in range(last_parts, parts)]
        with m.If(accept):
            m.d.sync += [
                part.eq(Mux(part_last, 0, part + 1)),
                part_last.eq(Mux(part_last, Mux(next_is_last, last_parts == 1, 0),
                                 part + 2 == Mux(word_index.is_last, last_parts, parts))),
            ]
            in_is_last = part_last & word_index.is_last
            data = Mux(in_is_last, self.i.payload[:in_last_bits], self.i.payload) if in_last_bits < a else self.i.payload
            with m.Switch(part):
                for j in range(parts):
                    with m.Case(j):
                        m.d.sync += word[j * a:(j + 1) * a].eq(data)
            with m.If(part_last):
                m.d.sync += full.eq(1)

    def _serialize(self, m: Module) -> None:
        """Each input beat is loaded into ``word``, which shifts down by out_width per output beat
        taken; ``o.payload`` is its low out_width bits. An input beat gives ``slices`` output beats,
        the frame's last ``last_slices`` (its real bits, rounded up), the last of them masked to the
        frame's real bits. The next input beat is taken in the cycle the last slice is (full rate);
        ``left`` counts the slices still in ``word``, and the flags beside it (left != 0, left == 1)
        are registers, so no compare sits in the handshake."""
        a, b = self.in_width, self.out_width
        slices = a // b
        in_last_bits = self.n - (self.in_beats - 1) * a      # real bits of the frame's last input beat
        last_slices = ceil_div(in_last_bits, b)
        out_last_bits = self.n - (self.out_beats - 1) * b    # real bits of the frame's last output beat
        word = Signal(a)
        left = Signal(range(slices + 1))
        busy = Signal()          # left != 0
        one_left = Signal()      # left == 1
        accept = self.i.valid & self.i.ready
        emit = self.o.valid & self.o.ready
        in_is_last = wrapping_counter(m, self.in_beats, accept, "in_beat").is_last
        out_is_last = wrapping_counter(m, self.out_beats, emit, "out_beat").is_last
        payload = Mux(out_is_last, word[:out_last_bits], word[:b]) if out_last_bits < b else word[:b]
        m.d.comb += [self.o.payload.eq(payload), self.o.valid.eq(busy),
                     self.i.ready.eq(~busy | (one_left & self.o.ready))]
        with m.If(accept):
            loaded = Mux(in_is_last, last_slices, slices)
            m.d.sync += [word.eq(self.i.payload), left.eq(loaded), busy.eq(1), one_left.eq(loaded == 1)]
        with m.Elif(emit):
            m.d.sync += [word.eq(word >> b), left.eq(left - 1), busy.eq(~one_left), one_left.eq(left == 2)]

    def _mask_last_beat(self, m: Module) -> None:
        real_bits = self.n - (self.in_beats - 1) * self.in_width
        is_last = wrapping_counter(m, self.in_beats, self.i.valid & self.i.ready, "in_beat").is_last
        m.d.comb += [
            self.o.payload.eq(Mux(is_last, self.i.payload[:real_bits], self.i.payload)),
            self.o.valid.eq(self.i.valid),
            self.i.ready.eq(self.o.ready),
        ]

    def _gearbox(self, m: Module) -> None:
        a, b = self.in_width, self.out_width
        in_last_bits = self.n - (self.in_beats - 1) * a      # real bits of the producer's last beat
        out_last_bits = self.n - (self.out_beats - 1) * b    # real bits of the consumer's last beat
        capacity = a + 2 * b

        # Bits [0, count) of the buffer are real, in stream order; bits above count are always 0,
        # so a new beat is ORed in at position count. Beside count, registers hold what the next
        # cycle's handshake needs from it, so no adder or comparator sits in front of the shifter:
        # ``take_position`` is the fill count after the pending output beat is taken (count - b, or
        # count - out_last_bits when that beat is the frame's last); the beat is ready when it is
        # >= 0 (its sign bit, so ``o.valid`` is a register bit), and a new beat taken in the same
        # cycle lands there. ``has_room`` is count <= 2b (room for an input beat).
        buffer = Signal(capacity)
        count = Signal(range(capacity + 1))
        take_position = Signal(range(-b, capacity + 1), init=-(out_last_bits if self.out_beats == 1 else b))
        has_room = Signal(init=1)

        accept = self.i.valid & self.i.ready
        emit = self.o.valid & self.o.ready
        in_is_last = wrapping_counter(m, self.in_beats, accept, "in_beat").is_last
        out_beat = wrapping_counter(m, self.out_beats, emit, "out_beat")
        out_is_last = out_beat.is_last

        taken = Mux(out_is_last, out_last_bits, b)           # bits this output beat consumes
        m.d.comb += [
            self.i.ready.eq(has_room),
            self.o.valid.eq(take_position >= 0),
            # The frame's last output beat carries only that frame's bits; the next frame's (which
            # may already sit above them in the buffer) are masked off.
            self.o.payload.eq(Mux(out_is_last, buffer[:out_last_bits], buffer[:b])),
        ]

        in_bits = Mux(in_is_last, in_last_bits, a)
        in_data = Mux(in_is_last, self.i.payload[:in_last_bits], self.i.payload)   # drop padding
        kept = Signal(capacity)
        kept_count = Signal(range(capacity + 1))
        next_count = Signal(range(capacity + 1))
        # The new beat lands at the fill count after this cycle's output, which depends on whether
        # the consumer takes a beat; both positions are shifted from registers and ``emit`` picks
        # one at the end, so the consumer's ready reaches only the last multiplexer.
        landed_if_kept = Signal(capacity)
        landed_if_taken = Signal(capacity)
        shift_width = len(count)
        next_is_last = Mux(emit, out_beat.stepped_is_last, out_is_last)
        m.d.comb += [
            kept.eq(Mux(emit, Mux(out_is_last, buffer >> out_last_bits, buffer >> b), buffer)),
            kept_count.eq(count - Mux(emit, taken, 0)),
            next_count.eq(kept_count + Mux(accept, in_bits, 0)),
            landed_if_kept.eq(in_data << count),
            # take_position is >= 0 whenever a beat is taken, so its low bits are the position.
            landed_if_taken.eq(in_data << take_position.as_unsigned()[:shift_width]),
        ]
        m.d.sync += [
            buffer.eq(kept | Mux(accept, Mux(emit, landed_if_taken, landed_if_kept), 0)),
            count.eq(next_count),
            take_position.eq(next_count - Mux(next_is_last, out_last_bits, b)),
            has_room.eq(next_count <= 2 * b),
        ]


class RegisterSlice(wiring.Component):
    """A stream register slice (skid buffer): ``o`` and ``i.ready`` come straight from registers.

    It cuts the combinational path from a consumer's ``ready`` back into a producer (a gearbox's
    shifter, say), at the cost of one cycle of latency and two words of registers. Full rate: with
    ``o.ready`` high a word goes through every cycle; when ``o`` stalls, the word arriving in the
    same cycle waits in the skid register and ``i.ready`` drops on the next.
    """

    def __init__(self, width: int):
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(width))),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(self.o.ready | ~self.o.valid):      # the output register is free this cycle
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
