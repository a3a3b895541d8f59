"""Matrix-vector-threshold unit (MVTU): one binary dense layer as a folded streaming engine.

A layer with ``pe`` rows and ``simd`` columns takes SF = ceil(n_in / simd) input beats per frame
and computes NF = ceil(n_out / pe) folds of ``pe`` output channels, re-reading its buffered input
for each fold, so a frame costs exactly NF * SF cycles (DESIGN.md section 3).

Pipeline (every register moves on one ``advance`` signal, so the whole engine stalls as one when
its output is held; valid never depends on ready)::

    S0 issue   (nf, sf) counters drive the read addresses of the input buffer and weight banks
    S1 fetch   synchronous memory data: input word x and one weight word per PE
    S2 count   registered popcount(XNOR(x, w_r)) per PE (balanced adder tree)
    S3 acc     accumulated popcount per PE; complete at the last sf of a fold
    hidden:    output register  o.payload[r] = acc_r >= T_r
    output:    S4 fold argmax, then the class scores and running argmax -> one beat per frame

Input: a ping-pong buffer of two banks of SF words. The producer fills one bank while the engine
reads the other, so the engine is decoupled from its producer's pace and starts the next frame
with no bubble as soon as its bank is full.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xnorflow.hw.popcount import argmax_tree, xnor_popcount
from xnorflow.hw.spec import LayerSpec, SpecError, bits_for


def class_scores_layout(layer: LayerSpec) -> data.StructLayout:
    """Payload of the output layer's stream: the contract read by testbenches and boards.

    Bits [0, iw) hold the class index (iw = bits_for(n_classes - 1)); the score of class c sits at
    bits [iw + c*sw, iw + (c+1)*sw) with sw = the layer's popcount width.
    """
    return data.StructLayout({
        "index": unsigned(bits_for(layer.n_out - 1)),
        "scores": data.ArrayLayout(unsigned(layer.popcount_width), layer.n_out),
    })


def memory_style_attrs(style: str) -> dict[str, str]:
    """Yosys attributes placing a memory in block RAM or in logic; none for "auto" (Yosys decides).

    Yosys reads ``ram_style`` for RAMs and ``rom_style`` for ROMs (the weight banks have no write
    port), so both are set.
    """
    if style == "auto":
        return {}
    return {"ram_style": style, "rom_style": style}


class MVTU(wiring.Component):
    """One binary dense layer. Hidden layers (with thresholds) emit NF beats of ``pe`` bits per frame;
    the output layer (``layer.thresholds is None``) emits one beat per frame holding the class index
    and every class's popcount (see :func:`class_scores_layout`).

    Ports: ``i`` takes SF beats of ``simd`` bits per frame (padded lanes of the last beat are 0).
    """

    def __init__(self, layer: LayerSpec, index: int = 0):
        try:
            layer.validate(index)
        except SpecError:
            self._MustUse__silence = True   # refused, not forgotten: no UnusedElaboratable warning
            raise
        self.layer = layer
        payload = class_scores_layout(layer) if layer.is_output else unsigned(layer.pe)
        super().__init__({
            "i": In(stream.Signature(unsigned(layer.simd))),
            "o": Out(stream.Signature(payload)),
        })

    # --- building blocks ---------------------------------------------------------------------
    def _input_buffer(self, m: Module, *, advance, read_bank_full, release, read_sf):
        """Ping-pong input buffer; returns the S1 input word. Drives i.ready and ``read_bank_full``
        (the bank the engine reads next holds a whole frame)."""
        sf_count = self.layer.synapse_folds
        m.submodules.input_buffer = buf = Memory(shape=unsigned(self.layer.simd), depth=2 * sf_count, init=[],
                                                 attrs=memory_style_attrs(self.layer.buffer_style))
        write, read = buf.write_port(), buf.read_port()

        full = [Signal(name="bank0_full"), Signal(name="bank1_full")]
        write_bank = Signal()
        write_addr = Signal(range(sf_count))
        read_bank = Signal()

        accept = self.i.valid & self.i.ready
        last_write = accept & (write_addr == sf_count - 1)
        m.d.comb += [
            self.i.ready.eq(~Mux(write_bank, full[1], full[0])),
            write.addr.eq(Mux(write_bank, write_addr + sf_count, write_addr)),
            write.data.eq(self.i.payload),
            write.en.eq(accept),
            read_bank_full.eq(Mux(read_bank, full[1], full[0])),
            read.addr.eq(Mux(read_bank, read_sf + sf_count, read_sf)),
            read.en.eq(advance),
        ]
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

    def _weight_words(self, m: Module, *, advance, address):
        """One weight Memory per PE (so Yosys infers a BRAM each); returns the S1 words."""
        words = []
        for r, bank in enumerate(self.layer.weight_banks()):
            mem = Memory(shape=unsigned(self.layer.simd), depth=len(bank), init=[int(w) for w in bank],
                         attrs=memory_style_attrs(self.layer.weight_style))
            m.submodules[f"weights_pe{r}"] = mem
            port = mem.read_port()
            m.d.comb += [port.addr.eq(address), port.en.eq(advance)]
            words.append(port.data)
        return words

    def _thresholds(self, m: Module, *, advance, fold):
        """Threshold ROM, one word per fold holding the ``pe`` thresholds; read one stage ahead so
        the thresholds arrive together with the completed accumulators."""
        layer = self.layer
        width = layer.threshold_width
        banks = layer.threshold_banks()          # (pe, nf)
        init = [sum(int(banks[r, nf]) << (r * width) for r in range(layer.pe))
                for nf in range(layer.neuron_folds)]
        m.submodules.thresholds = rom = Memory(shape=unsigned(layer.pe * width), depth=len(init), init=init)
        port = rom.read_port()
        m.d.comb += [port.addr.eq(fold), port.en.eq(advance)]
        return [port.data[r * width:(r + 1) * width] for r in range(layer.pe)]

    # --- the engine --------------------------------------------------------------------------
    def elaborate(self, platform):
        layer = self.layer
        pe, sf_count, nf_count = layer.pe, layer.synapse_folds, layer.neuron_folds
        acc_width = layer.popcount_width
        m = Module()

        # One stall signal for the whole pipeline: the output register may be overwritten when it
        # is empty or being taken this cycle.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # S0: issue counters.
        nf = Signal(range(nf_count))
        sf = Signal(range(sf_count))
        weight_addr = Signal(range(nf_count * sf_count))
        bank_full = Signal()
        issue = Signal()
        last_sf = sf == sf_count - 1
        last_nf = nf == nf_count - 1
        release = Signal()
        m.d.comb += [issue.eq(advance & bank_full), release.eq(issue & last_sf & last_nf)]
        x = self._input_buffer(m, advance=advance, read_bank_full=bank_full, release=release, read_sf=sf)
        weights = self._weight_words(m, advance=advance, address=weight_addr)
        with m.If(issue):
            m.d.sync += [
                sf.eq(Mux(last_sf, 0, sf + 1)),
                weight_addr.eq(Mux(release, 0, weight_addr + 1)),
            ]
            with m.If(last_sf):
                m.d.sync += nf.eq(Mux(last_nf, 0, nf + 1))

        # Stage control: valid, first/last beat of a fold, the fold number. S3 is valid only when
        # its accumulators hold a completed fold.
        def stage(name, *fields):
            shapes = {"valid": 1, "first": 1, "last": 1, "nf": range(nf_count)}
            return {f: Signal(shapes[f], name=f"{name}_{f}") for f in fields}

        s1 = stage("s1", "valid", "first", "last", "nf")
        s2 = stage("s2", "valid", "first", "last", "nf")
        s3 = stage("s3", "valid", "nf")
        with m.If(advance):
            m.d.sync += [s1["valid"].eq(bank_full), s1["first"].eq(sf == 0), s1["last"].eq(last_sf),
                         s1["nf"].eq(nf)]
            m.d.sync += [s2[k].eq(s1[k]) for k in s2]
            m.d.sync += [s3["valid"].eq(s2["valid"] & s2["last"]), s3["nf"].eq(s2["nf"])]

        # S1 -> S2: XNOR-popcount per PE, registered (the adder tree is the deepest logic).
        counts = [Signal(bits_for(layer.simd), name=f"count_pe{r}") for r in range(pe)]
        with m.If(advance):
            m.d.sync += [counts[r].eq(xnor_popcount(m, x, weights[r], name=f"agree_pe{r}")) for r in range(pe)]

        # S2 -> S3: accumulate over the synapse folds; restart at the first beat of each fold.
        accs = [Signal(acc_width, name=f"acc_pe{r}") for r in range(pe)]
        with m.If(advance & s2["valid"]):
            m.d.sync += [accs[r].eq(Mux(s2["first"], counts[r], accs[r] + counts[r])) for r in range(pe)]

        if layer.is_output:
            self._emit_scores(m, advance=advance, valid=s3["valid"], fold=s3["nf"], accs=accs)
        else:
            thresholds = self._thresholds(m, advance=advance, fold=s2["nf"])
            with m.If(advance):
                m.d.sync += self.o.valid.eq(s3["valid"])
                with m.If(s3["valid"]):
                    m.d.sync += self.o.payload.eq(Cat(*(accs[r] >= thresholds[r] for r in range(pe))))
        return m

    def _emit_scores(self, m: Module, *, advance, valid, fold, accs):
        """Output layer: per fold, the argmax of its ``pe`` scores (S3 -> S4), then the class scores
        and the running argmax across folds, emitted as one beat at the last fold."""
        layer = self.layer
        pe, nf_count, n_classes = layer.pe, layer.neuron_folds, layer.n_out
        last_fold = fold == nf_count - 1
        real_in_last_fold = n_classes - (nf_count - 1) * pe
        # Padded classes (only in the last fold) score 0: with ties going to the lower index they
        # can never beat the real class that precedes them in the same fold.
        scores = [Mux(last_fold, 0, accs[r]) if r >= real_in_last_fold else accs[r] for r in range(pe)]
        best_value, best_row = argmax_tree(scores)

        # S4: the fold's scores and its best.
        width = layer.popcount_width
        fold_scores = [Signal(width, name=f"fold_score{r}") for r in range(pe)]
        fold_best = Signal(width)
        fold_best_class = Signal(range(nf_count * pe))
        s4_valid, s4_fold = Signal(), Signal(range(nf_count))
        with m.If(advance):
            m.d.sync += [s4_valid.eq(valid), s4_fold.eq(fold),
                         fold_best.eq(best_value), fold_best_class.eq(fold * pe + best_row)]
            m.d.sync += [fold_scores[r].eq(scores[r]) for r in range(pe)]

        # Running argmax: a later fold's best wins only when strictly greater (ties -> lowest index).
        run_best = Signal(width)
        run_class = Signal(range(nf_count * pe))
        take = (s4_fold == 0) | (fold_best > run_best)
        new_best = Mux(take, fold_best, run_best)
        new_class = Mux(take, fold_best_class, run_class)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(s4_valid & (s4_fold == nf_count - 1))
            with m.If(s4_valid):
                m.d.sync += [run_best.eq(new_best), run_class.eq(new_class),
                             self.o.payload.index.eq(new_class)]
                for c in range(n_classes):
                    with m.If(s4_fold == c // pe):
                        m.d.sync += self.o.payload.scores[c].eq(fold_scores[c % pe])

