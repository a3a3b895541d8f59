"""Matrix-vector-threshold unit (MVTU): one binary dense layer as a folded streaming engine.

A layer with ``pe`` rows and ``simd`` columns takes SF = ceil(n_in / simd) input beats per frame
and computes NF = ceil(n_out / pe) folds of ``pe`` output channels, re-reading its buffered input
for each fold, so a frame costs exactly NF * SF cycles (DESIGN.md section 3).

Pipeline. The datapath never stalls: every stage register moves every cycle and carries a valid
bit, so the consumer's ``ready`` reaches no memory enable, popcount or accumulator (on a 5k-LUT
iCE40 that fan-out, not the arithmetic, set Fmax). Instead each engine ends in a small output
queue and issues a new *unit* (a fold of a hidden layer, a frame of the output layer) only when a
queue slot is free for its result: credit-based flow control, as FINN's MVAU streams do::

    S0 issue   (nf, sf) counters drive the read address of the input buffer
    S1 fetch   the input word from the buffer; the weight banks' read address
    S1x        the input word registered (it fans out to every PE); one weight word per PE
    count      registered popcount(XNOR(x, w_r)) per group of POPCOUNT_GROUP lanes per PE, then
               registered sums of up to POPCOUNT_GROUP of those, until one count per PE is left
    acc        accumulated popcount per PE; complete at the last sf of a fold
    hidden:    registered (acc >= T) for each PE -> queue
    scores:    (the last layer, no thresholds) each fold's accumulators go out on the scores link
               to the label-select op (hw/ops/label_select.py), which owns the frame's queue slot

Input: a ping-pong buffer of two banks of SF words. The producer fills one bank while the engine
reads the other, so the engine is decoupled from its producer's pace and starts the next frame
with no bubble as soon as its bank is full.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xnorflow.hw.counter import wrapping_counter
from xnorflow.hw.pipeline import output_queue, register, register_stage
from xnorflow.hw.popcount import count_levels, group_slices, popcount
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import LayerSpec, bits_for, ceil_div, threshold_words


def fold_scores_signature(layer: LayerSpec) -> wiring.Signature:
    """The scores layer's link to the op after it (label-select), as the engine sees it.

    Not a stream but a credit interface, so that neither side needs a queue of its own: ``valid``
    pulses when a fold's ``pe`` popcounts are complete (``scores``, fold number ``fold``); ``start``
    pulses when the engine begins issuing a frame, taking one of the consumer's result slots;
    ``room`` (from the consumer) is high while a slot is free, and the engine starts a frame only
    then. The consumer therefore takes every ``valid`` beat.
    """
    return wiring.Signature({
        "valid": Out(1),
        "fold": Out(range(layer.neuron_folds)),
        "scores": Out(data.ArrayLayout(unsigned(layer.popcount_width), layer.pe)),
        "start": Out(1),
        "room": In(1),
    })


def registered_sums(m: Module, first_level: list[list[tuple]], control: dict, rows: list[str]):
    """Registered adder trees, one per row: ``first_level[r]`` holds row r's (expression, largest
    value) terms, all rows the same number of them.

    Level 0 registers every term; each next level registers sums of up to POPCOUNT_GROUP terms of
    the level below, until one is left per row (`count_levels`), so every level is a shallow adder
    tree however wide SIMD is. ``control`` (a `register_stage` dict) moves along one stage per level.
    Returns (one sum per row, the control of the last level). Registers are named
    ``count_{rows[r]}_l{level}_g{g}``, stages ``count{level}``.
    """
    def register_level(level, terms_per_row):
        registered = []
        for name, terms in zip(rows, terms_per_row):
            row = []
            for g, (value, most) in enumerate(terms):
                reg = Signal(bits_for(most), name=f"count_{name}_l{level}_g{g}")
                m.d.sync += reg.eq(value)
                row.append((reg, most))
            registered.append(row)
        return registered

    def grouped_sums(terms):
        chunks = [terms[start:stop] for start, stop in group_slices(len(terms))]
        return [(sum(value for value, _ in chunk), sum(most for _, most in chunk)) for chunk in chunks]

    counted = register_level(0, first_level)
    control = register_stage(m, "count0", control)
    level = 0
    while len(counted[0]) > 1:
        level += 1
        counted = register_level(level, [grouped_sums(terms) for terms in counted])
        control = register_stage(m, f"count{level}", control)
    return [row[0][0] for row in counted], control


def memory_style_attrs(style: str) -> dict[str, str]:
    """Yosys attributes placing a memory in block RAM or in logic; none for "auto" (Yosys decides).

    Yosys reads ``ram_style`` for RAMs and ``rom_style`` for ROMs (the weight banks have no write
    port), so both are set.
    """
    if style == "auto":
        return {}
    return {"ram_style": style, "rom_style": style}


@dataclass(eq=False)
class EngineTiming:
    """An MVTU's pipeline depth and output queue, which follow from its layer alone (the compiler's
    resource estimate reads them without building the engine)."""

    layer: LayerSpec

    @property
    def count_stages(self) -> int:
        """Registered levels of the popcount (`count_levels`): with groups of 4, 1 level up to 4
        lanes, 2 up to 16, 3 up to 64, 5 for 392."""
        return len(count_levels(self.layer.simd))

    @property
    def argmax_levels(self) -> int:
        """Registered levels of the output layer's per-fold argmax tree: ceil(log2(PE))."""
        return (self.layer.pe - 1).bit_length()

    @property
    def unit_cycles(self) -> int:
        """Issue cycles per queue entry: a fold (SF) for a hidden layer, a frame (NF * SF) for the output."""
        layer = self.layer
        return layer.synapse_folds * (layer.neuron_folds if layer.is_output else 1)

    @property
    def accumulate_latency(self) -> int:
        """Cycles from the issue of a fold's last beat to its complete accumulators (the scores
        link's ``valid``): the buffer read and input register, the popcount levels, the accumulator."""
        fetch, acc = 2, 1
        return fetch + self.count_stages + acc

    @property
    def result_latency(self) -> int:
        """Cycles from the complete accumulators to the result at the output (o.valid): for a hidden
        layer the registered threshold compare and the queue; for the scores layer the label-select
        after it (the fold's scores, the argmax tree, the frame's result, the queue)."""
        queue = 1
        if self.layer.is_output:
            return 2 + self.argmax_levels + queue
        return 1 + queue

    @property
    def latency(self) -> int:
        """Cycles from the issue of a unit's last beat to its result at the output (o.valid)."""
        return self.accumulate_latency + self.result_latency

    @property
    def queue_depth(self) -> int:
        """Output queue entries for full rate with an always-ready consumer.

        A unit holds its slot from its first issue until its result is taken, U + latency cycles
        later (U = unit_cycles); a new unit starts every U cycles, so ceil((U + latency) / U) slots
        keep issue from ever waiting on a slot.
        """
        return ceil_div(self.unit_cycles + self.latency, self.unit_cycles)


class MVTU(wiring.Component, EngineTiming):
    """One binary dense layer. Hidden layers (with thresholds) emit NF beats of ``pe`` bits per frame
    on the stream ``o``; the scores layer (``layer.thresholds is None``, the last) drives ``o`` as the
    scores link of :func:`fold_scores_signature`, which the label-select op turns into the class
    index and every class's popcount.

    Ports: ``i`` takes SF beats of ``simd`` bits per frame (padded lanes of the last beat are 0).

    An engine on other inputs (hw/intmvu.py: b-bit integers) subclasses this one and changes only
    what its numerics change: the lanes' width (``layer.input_bits`` bits each), `_count` (the
    per-beat sums), `accumulator_shape`, `threshold_shape` and `threshold_banks`. Issue, buffers,
    weight banks, accumulation and the output queue are these.
    """

    def __init__(self, layer: LayerSpec, index: int = 0):
        with refusing(self):
            layer.validate(index)
        self.layer = layer
        out = fold_scores_signature(layer) if layer.is_output else stream.Signature(unsigned(layer.pe))
        super().__init__({
            "i": In(stream.Signature(unsigned(self.word_width))),
            "o": Out(out),
        })

    # --- what the engine's numerics decide (hw/intmvu.py changes these) ---------------------
    @property
    def word_width(self) -> int:
        """Bits of an input beat and of a buffer word: SIMD lanes of ``input_bits`` bits."""
        return self.layer.simd * self.layer.input_bits

    @property
    def accumulator_shape(self) -> Shape:
        """A fold's accumulated count: a popcount in 0..n_in."""
        return unsigned(self.layer.popcount_width)

    @property
    def threshold_shape(self) -> Shape:
        """A stored threshold: 0..n_in + 1."""
        return unsigned(self.layer.threshold_width)

    def threshold_banks(self):
        """The threshold ROM's contents, (pe, neuron_folds), as `LayerSpec.threshold_banks`."""
        return self.layer.threshold_banks()

    def _count(self, m: Module, x, weights, control):
        """One beat's count per PE, registered in levels: popcount(XNOR(x, w_r)) per group of
        POPCOUNT_GROUP lanes, then sums of those (`registered_sums`). Returns (counts, control)."""
        layer = self.layer
        # The XNOR goes into a named signal first: the tree slices it bit by bit, and slicing an
        # expression would re-emit the whole XNOR once per bit (Amaranth does not share subexpressions).
        agree = [Signal(layer.simd, name=f"agree_pe{r}") for r in range(layer.pe)]
        m.d.comb += [agree[r].eq(~(x ^ weights[r])) for r in range(layer.pe)]
        first = [[(popcount(agree[r][start:stop]), stop - start) for start, stop in group_slices(layer.simd)]
                 for r in range(layer.pe)]
        return registered_sums(m, first, control, [f"pe{r}" for r in range(layer.pe)])

    # --- building blocks ---------------------------------------------------------------------
    def _input_buffer(self, m: Module, *, read_bank_full, issue, last_sf, release):
        """Ping-pong input buffer; returns the S1 input word. Drives i.ready and ``read_bank_full``
        (the bank the engine reads next holds a whole frame). Each ``issue`` reads the next word of
        the bank; ``last_sf`` wraps to the bank's first, ``release`` moves to the other bank."""
        sf_count = self.layer.synapse_folds
        m.submodules.input_buffer = buf = Memory(shape=unsigned(self.word_width), depth=2 * sf_count, init=[],
                                                 attrs=memory_style_attrs(self.layer.buffer_style))
        write, read = buf.write_port(), buf.read_port()

        full = [Signal(name="bank0_full"), Signal(name="bank1_full")]
        write_bank = Signal()
        write_addr = Signal(range(sf_count))
        read_bank = Signal()
        # The read address is a register of its own, stepped with the issue counters, rather than
        # bank * SF + sf: a small buffer sits in logic as a multiplexer tree, and the address
        # arithmetic in front of it was the longest path of TFC's output layer on the iCE40UP5K.
        read_addr = Signal(range(2 * sf_count))

        accept = self.i.valid & self.i.ready
        last_write = accept & (write_addr == sf_count - 1)
        m.d.comb += [
            self.i.ready.eq(~Mux(write_bank, full[1], full[0])),
            write.addr.eq(Mux(write_bank, write_addr + sf_count, write_addr)),
            write.data.eq(self.i.payload),
            write.en.eq(accept),
            read_bank_full.eq(Mux(read_bank, full[1], full[0])),
            read.addr.eq(read_addr),
        ]
        with m.If(issue):
            m.d.sync += read_addr.eq(Mux(release, Mux(read_bank, 0, sf_count),
                                         Mux(last_sf, read_addr - (sf_count - 1), read_addr + 1)))
        with m.If(accept):
            m.d.sync += write_addr.eq(Mux(write_addr == sf_count - 1, 0, write_addr + 1))
            with m.If(last_write):
                m.d.sync += write_bank.eq(~write_bank)
        with m.If(release):
            m.d.sync += read_bank.eq(~read_bank)
        # A bank is set full by its last write and freed by the last issue of its frame; the two
        # never hit the same bank in one cycle (a bank being written is not full, one being read is).
        for bank, flag in enumerate(full):
            with m.If(last_write & (write_bank == bank)):
                m.d.sync += flag.eq(1)
            with m.Elif(release & (read_bank == bank)):
                m.d.sync += flag.eq(0)
        return read.data

    def _weight_words(self, m: Module, *, address):
        """The weight memories (`LayerSpec.weight_memories`: one per group of ``weight_packing``
        PEs, so Yosys maps each to block RAM at its full width); returns each PE's S1 word, its
        slice of its memory's word."""
        layer = self.layer
        words = []
        for group, contents in zip(layer.weight_groups(), layer.weight_memories()):
            mem = Memory(shape=unsigned(len(group) * layer.simd), depth=len(contents),
                         init=[int(w) for w in contents], attrs=memory_style_attrs(layer.weight_style))
            name = f"weights_pe{group.start}" if len(group) == 1 else f"weights_pe{group.start}_{group.stop - 1}"
            m.submodules[name] = mem
            port = mem.read_port()
            m.d.comb += port.addr.eq(address)
            words += [port.data[j * layer.simd:(j + 1) * layer.simd] for j in range(len(group))]
        return words

    def _thresholds(self, m: Module, *, fold):
        """Threshold ROM, one word per fold holding the ``pe`` thresholds; read one stage ahead so
        the thresholds arrive together with the completed accumulators."""
        layer = self.layer
        shape = self.threshold_shape
        width = shape.width
        init = threshold_words(self.threshold_banks(), width)
        m.submodules.thresholds = rom = Memory(shape=unsigned(layer.pe * width), depth=len(init), init=init)
        port = rom.read_port()
        m.d.comb += port.addr.eq(fold)
        words = [port.data[r * width:(r + 1) * width] for r in range(layer.pe)]
        return [word.as_signed() for word in words] if shape.signed else words

    # --- the engine --------------------------------------------------------------------------
    def elaborate(self, platform):
        layer = self.layer
        pe, sf_count, nf_count = layer.pe, layer.synapse_folds, layer.neuron_folds
        m = Module()

        # S0: issue counters, whose first/last flags are registers (they gate ``issue``, which
        # fans out to the whole engine). A unit's first beat needs a free queue slot; its other
        # beats follow.
        issue = Signal()
        sf_counter = wrapping_counter(m, sf_count, issue, "sf")
        last_sf = sf_counter.is_last
        nf_counter = wrapping_counter(m, nf_count, issue & last_sf, "nf")
        nf, last_nf = nf_counter.value, nf_counter.is_last
        weight_addr = Signal(range(nf_count * sf_count))
        bank_full = Signal()
        release = Signal()
        unit_first = sf_counter.is_first & nf_counter.is_first if layer.is_output else sf_counter.is_first
        slot_taken = Signal()   # set by the queue: a unit may start this cycle
        m.d.comb += [issue.eq(bank_full & (~unit_first | slot_taken)), release.eq(issue & last_sf & last_nf)]
        # The input word fans out to every PE across the chip, so it gets a register of its own
        # after the buffer's read: the weight banks are addressed one cycle later to stay aligned.
        # With register_weights the banks are read at once and their words registered like x.
        buffered = self._input_buffer(m, read_bank_full=bank_full, issue=issue, last_sf=last_sf, release=release)
        x = Signal(self.word_width)
        m.d.sync += x.eq(buffered)
        if layer.register_weights:
            weights = [Signal(layer.simd, name=f"weight_pe{r}") for r in range(pe)]
            m.d.sync += [reg.eq(word) for reg, word in zip(weights, self._weight_words(m, address=weight_addr))]
        else:
            weight_addr_s1 = Signal.like(weight_addr)
            m.d.sync += weight_addr_s1.eq(weight_addr)
            weights = self._weight_words(m, address=weight_addr_s1)
        with m.If(issue):
            m.d.sync += weight_addr.eq(Mux(release, 0, weight_addr + 1))

        # Stage control: valid, first/last beat of a fold, the fold number; moved every cycle.
        s0 = {"valid": issue, "first": sf_counter.is_first, "last": last_sf, "nf": nf}
        s0 = {key: Value.cast(value) for key, value in s0.items()}
        s1 = register_stage(m, "s1", s0)
        fetched = register_stage(m, "x", s1)      # x and the weight words are both valid here

        counts, count_stage = self._count(m, x, weights, fetched)

        # Accumulate over the synapse folds; restart at the first beat of each fold.
        accs = [Signal(self.accumulator_shape, name=f"acc_pe{r}") for r in range(pe)]
        with m.If(count_stage["valid"]):
            m.d.sync += [accs[r].eq(Mux(count_stage["first"], counts[r], accs[r] + counts[r])) for r in range(pe)]
        done = register_stage(m, "acc", {"valid": count_stage["valid"] & count_stage["last"], "nf": count_stage["nf"]})

        if layer.is_output:
            # The scores link: the label-select after this engine holds the frame's result slot.
            m.d.comb += [
                self.o.valid.eq(done["valid"]),
                self.o.fold.eq(done["nf"]),
                self.o.start.eq(issue & unit_first),
                slot_taken.eq(self.o.room),
            ]
            m.d.comb += [self.o.scores[r].eq(accs[r]) for r in range(pe)]
            return m
        # Thresholds are read one stage ahead so they arrive with the completed accumulators.
        # The compare is registered: a carry chain from the threshold ROM into the queue's
        # multiplexers was the longest path of TFC on the iCE40UP5K (45.9 MHz).
        thresholds = self._thresholds(m, fold=count_stage["nf"])
        result = register(m, Cat(*(accs[r] >= thresholds[r] for r in range(pe))), "above_threshold")
        result_valid = register(m, done["valid"], "above_threshold_valid")
        output_queue(m, self.o, self.queue_depth, write=result_valid, data=result, start=issue & unit_first,
                     may_start=slot_taken)
        return m
