"""Sliding-window generator (SWG): a pixel stream in, the K x K windows of a stride-1 conv out.

Stream contract (DESIGN.md section 2a). Input ``i``: one pixel per beat, C channel bits LSB-first,
raster order (y, then x), H x W pixels per frame. Output ``o``: for each output pixel (oy, ox) in
raster order, the window vector of K*K*C bits ordered (ky, kx, c) with c fastest, where element
(ky, kx) is input pixel (oy - P + ky, ox - P + kx), or ``pad_value`` in every channel outside the
image. The window leaves in R beats in one of two geometries, set by ``columns`` J (the window
columns per beat); either way a window's beats, concatenated LSB-first, are its vector:

- rows (J = K): R = ceil(K / G) beats of G*K*C bits, beat g holding window rows g*G .. g*G + G - 1
  (the bits of rows past K - 1 in the last beat are 0);
- pixels (J = 1, G = 1): R = K*K beats of C bits, beat r holding window pixel (ky, kx) =
  (r // K, r % K), so the window vector is exactly R beats with no padding.

The conv engine (hw/ops/conv.py: `ConvEngine`) regears them to the MVTU's SIMD-wide beats.

Structure (a memory-based SWG like FINN's RTL ConvolutionInputGenerator, not a shift register):
the input is written into a circular buffer of ``rows`` image rows; windows are read from it by
address, so padding costs no cycles (the reader substitutes the pad bits) and the writer may run
ahead into the next frame while the reader finishes the current one. The buffer is split into
G x K banks (``amaranth.lib.memory.Memory``, one write and one read port each: Yosys maps the large
ones to block RAM): pixel (slot s, column x) lives in bank (s mod G, x mod K) at word
(s // G) * ceil(W / K) + x // K. Any G consecutive rows and K consecutive columns then sit in G*K
different banks, so one cycle reads one beat. In rows geometry every bank is read and the words are
rotated into (ky, kx) order; in pixels geometry (G = 1) every bank reads the word of the beat's
column x = ox - P + kx in slot top + ky and the pixel is bank x mod K's. Either way the beat is
masked for padding on its way to a small credit queue of beat width (hw/pipeline.py: output_queue).
The beat's width sets the generator's datapath (rotation or bank choice, mask and queue per bit),
so pixel beats are a G*K-th of the rows geometry's. Every bank address is the sum of two registers,
a row's word address (stepped by ceil(W / K) with the slot) and a column's word (stepped with the
column's residue mod K), and the rotation or bank choice and the masks come from registers set at
issue, so no division by K or multiplication by ceil(W / K) sits before or after the banks.

Flow control, by rows. ``full_rows`` counts the complete rows the buffer holds from the oldest one
the reader still needs; the writer starts a row only while a slot is free and the reader releases
rows as its window moves down (after a window's last beat; and the rest of a frame's rows after its
last window). A window's first beat is read once the writer has written its bottom-right real pixel,
so all of its pixels are written and none is released before its last beat. ``rows`` is at least
K + 1 (the writer fills the next row while the K of a window are read) and 2 (K - P) (the next
frame's first window rows fit beside the current frame's last ones), so neither side waits on the
other at row and frame boundaries: the generator takes a pixel every cycle and emits a beat every
cycle while its consumer does.

Rate: the geometry is chosen by the conv op (hw/ops/conv.py: window_beat) so that R <= NF * SF,
the cycles the MVTU spends on a window: pixels when NF * SF >= K*K, else rows with
G = ceil(K / (NF * SF)). The writer takes H * W cycles per frame. So a conv layer takes
max(out pixels x NF x SF, H x W) cycles per frame.
"""
from __future__ import annotations

import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xnorflow.hw.counter import wrapping_counter
from xnorflow.hw.mvtu import memory_style_attrs
from xnorflow.hw.pipeline import output_queue, register
from xnorflow.hw.refusal import refusing
from xnorflow.hw.spec import SpecError, ceil_div, conv_out_shape

# Issue -> word in the queue is one cycle (the banks' synchronous read, rotation and mask after
# it); a queue slot is held from issue until the word is taken, 3 cycles at the least.
QUEUE_DEPTH = 3


def buffer_rows(kernel: int, padding: int, group: int) -> int:
    """Row slots of the circular buffer: K + 1 and 2 (K - P) at least, a multiple of G."""
    rows = max(kernel + 1, 2 * (kernel - padding))
    return ceil_div(rows, group) * group


class SlidingWindowGenerator(wiring.Component):
    """Windows of a K x K, stride-1 conv with padding P of the bit ``pad_value``, read G window rows
    of J = ``columns`` window columns per beat: J = K (the default, rows geometry) or J = 1 with G = 1
    (pixels geometry; see the module docstring)."""

    def __init__(self, channels: int, height: int, width: int, kernel: int, padding: int = 0,
                 pad_value: int = 0, group: int = 1, columns: int | None = None, style: str = "auto"):
        c, h, w, k, p, g = (int(v) for v in (channels, height, width, kernel, padding, group))
        j = k if columns is None else int(columns)
        with refusing(self):
            if not (c >= 1 and h >= 1 and w >= 1 and 0 <= p < k <= h + 2 * p and k <= w + 2 * p
                    and 1 <= g <= k and pad_value in (0, 1) and (j == k or (j == 1 and g == 1))):
                raise SpecError(f"sliding window: C={c}, H={h}, W={w}, K={k}, P={p}, pad {pad_value}, G={g}, "
                                f"J={j} cannot be built: it takes C, H, W >= 1, 0 <= P < K <= H + 2P and W + 2P, "
                                "1 <= G <= K, and J = K (window rows) or J = 1 with G = 1 (window pixels)")
        self.channels, self.height, self.width, self.kernel, self.padding = c, h, w, k, p
        self.pad_value, self.group, self.columns, self.style = int(pad_value), g, j, style
        _, self.out_height, self.out_width = conv_out_shape((c, h, w), c, k, p)
        self.beats = ceil_div(k, g) * (k // j)         # R: beats per window
        self.rows = buffer_rows(k, p, g)
        self.bank_columns = ceil_div(w, k)             # Wb: words per row slot in each bank
        super().__init__({
            "i": In(stream.Signature(unsigned(c))),
            "o": Out(stream.Signature(unsigned(g * j * c))),
        })

    @property
    def pixel_beats(self) -> bool:
        """One window pixel per beat (J = 1), K*K beats per window."""
        return self.columns == 1

    @property
    def bank_depth(self) -> int:
        return self.rows // self.group * self.bank_columns

    def elaborate(self, platform):
        m = Module()
        C, H, W, K, P, G = self.channels, self.height, self.width, self.kernel, self.padding, self.group
        OH, OW, ROWS, WB = self.out_height, self.out_width, self.rows, self.bank_columns
        NQ = ROWS // G

        banks = [[Memory(shape=unsigned(C), depth=self.bank_depth, init=[], attrs=memory_style_attrs(self.style))
                  for _ in range(K)] for _ in range(G)]
        for a in range(G):
            for b in range(K):
                m.submodules[f"bank{a}_{b}"] = banks[a][b]

        # --- writer: one pixel per accepted beat into the slot's next column ``w_x`` ---------------
        full_rows = Signal(range(ROWS + 1))
        release = Signal(range(H + 1))       # rows the reader frees this cycle
        # The slot is kept as its residue mod G (the bank row) and its row's word address
        # (slot // G) * WB, which steps by WB when the residue wraps (modulo NQ * WB); the column as
        # x // K and x mod K.
        w_x = Signal(range(W))
        w_xq, w_xr = Signal(range(WB)), Signal(range(K))
        w_slot_r, w_base = Signal(range(G)), Signal(range(self.bank_depth))
        accept = self.i.valid & self.i.ready
        row_done = accept & (w_x == W - 1)
        m.d.comb += self.i.ready.eq((w_x != 0) | (full_rows != ROWS))
        for a in range(G):
            for b in range(K):
                port = banks[a][b].write_port()
                m.d.comb += [port.addr.eq(w_base + w_xq), port.data.eq(self.i.payload),
                             port.en.eq(accept & (w_slot_r == a) & (w_xr == b))]
        with m.If(accept):
            m.d.sync += [w_x.eq(Mux(row_done, 0, w_x + 1)),
                         w_xr.eq(Mux(row_done | (w_xr == K - 1), 0, w_xr + 1)),
                         w_xq.eq(Mux(row_done, 0, Mux(w_xr == K - 1, w_xq + 1, w_xq)))]
            with m.If(row_done):
                m.d.sync += w_slot_r.eq(Mux(w_slot_r == G - 1, 0, w_slot_r + 1))
                with m.If(w_slot_r == G - 1):
                    m.d.sync += w_base.eq(Mux(w_base == (NQ - 1) * WB, 0, w_base + WB))
        m.d.sync += full_rows.eq(full_rows + row_done - release)

        # --- reader: (oy, ox) windows, R beats each ------------------------------------------------
        # ``band`` counts a window's bands of G rows (rows geometry: one beat each; pixels geometry:
        # the window row ky, of K beats counted by ``kx``).
        may_start = Signal()
        issue = Signal()
        if self.pixel_beats:
            kx = wrapping_counter(m, K, issue, "kx")
            band = wrapping_counter(m, K, issue & kx.is_last, "ky")
            first_beat, last_beat = kx.is_first & band.is_first, kx.is_last & band.is_last
        else:
            band = wrapping_counter(m, self.beats, issue, "beat")
            first_beat, last_beat = band.is_first, band.is_last
        window_done = issue & last_beat
        ox = wrapping_counter(m, OW, window_done, "ox")
        row_end = window_done & ox.is_last
        oy = wrapping_counter(m, OH, row_end, "oy")
        frame_end = row_end & oy.is_last

        # Is the window's bottom-right real pixel written? Rows are counted from the oldest held:
        # the window needs rows max(oy - P, 0) .. min(oy + K - 1 - P, H - 1) and columns up to
        # min(ox + K - 1 - P, W - 1). Both are registers stepped with oy and ox: the newest row steps
        # while oy < H - K + P and the oldest once oy >= P; the column until it is W - 1.
        oy_v, ox_v = oy.value, ox.value
        need_rows = Signal(range(H), init=min(K - 1 - P, H - 1))
        with m.If(row_end):
            m.d.sync += need_rows.eq(Mux(oy.is_last, need_rows.init,
                                         need_rows + (oy_v < H - K + P) - (oy_v >= P)))
        need_x = Signal(range(W), init=min(K - 1 - P, W - 1))
        with m.If(window_done):
            m.d.sync += need_x.eq(Mux(ox.is_last, need_x.init, Mux(need_x == W - 1, W - 1, need_x + 1)))
        written = (full_rows > need_rows) | ((full_rows == need_rows) & (w_x > need_x))
        m.d.comb += issue.eq(may_start & (~first_beat | written))

        # Rows freed: one per output row once the window's top is inside the image, and at a
        # frame's end every row of it still held.
        last_oldest = max(OH - 1 - P, 0)
        m.d.comb += release.eq(Mux(row_end, Mux(frame_end, H - last_oldest, oy_v >= P), 0))

        # Slot of window row 0 (input row oy - P) and of the frame's row -P, modulo ROWS.
        def slot_plus(value, step):
            step %= ROWS
            total = value + step
            return Mux(total >= ROWS, total - ROWS, total)

        frame_top = Signal(range(ROWS), init=(-P) % ROWS)
        top = Signal(range(ROWS), init=(-P) % ROWS)
        with m.If(frame_end):
            m.d.sync += [frame_top.eq(slot_plus(frame_top, H)), top.eq(slot_plus(frame_top, H))]
        with m.Elif(row_end):
            m.d.sync += top.eq(slot_plus(top, 1))
        top_r = Signal(range(G))
        m.d.comb += top_r.eq(top % G)

        # Read addresses. Bank (a, b) reads base[a] + col: the word address of the beat's row in
        # bank row a plus the word of the window column it holds, both registers stepped with the
        # counters, so one adder and no division or multiplication sits in front of the banks.
        #
        # Row bases: of the G rows from slot s, bank row a holds the one with slot residue a, at
        # word address row_base(s, a). A band's first slot is top + band * G (ROWS is a multiple
        # of G), so base[a] steps by WB (modulo NQ * WB) with the band; at a window's end it takes
        # the next window's top's, a table of the (few-bit) slot registers.
        def row_base(s, a):
            return (s // G + (a < s % G)) % NQ * WB

        def row_bases(a, step):                       # row_base((s + step) mod ROWS, a) for slot s
            return Array(Const(row_base((s + step) % ROWS, a), range(self.bank_depth)) for s in range(ROWS))

        band_step = issue & ~last_beat
        if self.pixel_beats:
            band_step &= kx.is_last
        base = [Signal(range(self.bank_depth), init=row_base(top.init, a), name=f"row{a}_base")
                for a in range(G)]
        for a, row in enumerate(base):
            with m.If(window_done):
                m.d.sync += row.eq(Mux(frame_end, row_bases(a, H)[frame_top],
                                       Mux(row_end, row_bases(a, 1)[top], row_bases(a, 0)[top])))
            with m.Elif(band_step):
                m.d.sync += row.eq(Mux(row == (NQ - 1) * WB, 0, row + WB))

        # Window column 0, x0 = ox - P, as x0 mod K and x0 // K + 1 >= 0: registers stepped with ox,
        # the residue wrapping at K and the word stepping on the wrap. A bank holds one column of
        # each residue; stepping ox drops column x0 (residue x_r, word x_q1 - 1) and takes column
        # x0 + K (residue x_r, word x_q1). Column words are kept clamped to 0 .. WB - 1 (a column
        # outside the image is masked).
        x0_r, x0_q1 = (-P) % K, (-P) // K + 1
        x_r = Signal(range(K), init=x0_r)
        x_q1 = Signal(range(ceil_div(OW + K, K) + 1), init=x0_q1)
        x_r_next = Signal.like(x_r)
        x_wrap = x_r == K - 1
        m.d.comb += x_r_next.eq(Mux(window_done, Mux(ox.is_last, x0_r, Mux(x_wrap, 0, x_r + 1)), x_r))
        m.d.sync += x_r.eq(x_r_next)
        with m.If(window_done):
            m.d.sync += x_q1.eq(Mux(ox.is_last, x0_q1, x_q1 + x_wrap))

        def clamp(word):
            return min(max(word, 0), WB - 1)

        next_word = Mux(x_q1 > WB - 1, WB - 1, x_q1)      # column x0 + K's word, clamped

        pad = Const((1 << C) - 1 if self.pad_value else 0, C)
        if self.pixel_beats:
            # The beat's column x0 + kx: its bank (x0 + kx) mod K and its word, stepped with kx from
            # column 0 at each window row. The word is x0's until the bank wraps, then x_q1.
            col0_init = clamp(x0_q1 - 1)
            col0, col0_next = Signal(range(WB), init=col0_init, name="col0_word"), Signal(range(WB))
            m.d.comb += col0_next.eq(Mux(window_done & ox.is_last, col0_init,
                                         Mux(window_done & x_wrap, next_word, col0)))
            m.d.sync += col0.eq(col0_next)
            bank = Signal(range(K), init=x0_r, name="pixel_bank")
            col = Signal(range(WB), init=col0_init, name="pixel_word")
            with m.If(issue & kx.is_last):
                m.d.sync += [bank.eq(x_r_next), col.eq(col0_next)]
            with m.Elif(issue):
                m.d.sync += [bank.eq(Mux(bank == K - 1, 0, bank + 1)),
                             col.eq(Mux(bank == K - 1, next_word, col))]
            data = self._read_pixel(m, banks[0], base[0] + col, bank, band.value, kx.value, oy_v, ox_v, pad)
        else:
            # Bank column b's word: the window column of residue b is x0 + (b - x_r) mod K, in word
            # x_q1 - 1 + (b < x_r).
            cols = []
            for b in range(K):
                col_init = clamp(x0_q1 - 1 + (b < x0_r))
                col = Signal(range(WB), init=col_init, name=f"col{b}_word")
                with m.If(window_done):
                    m.d.sync += col.eq(Mux(ox.is_last, col_init, Mux(x_r == b, next_word, col)))
                cols.append(col)
            addrs = [[base[a] + cols[b] for b in range(K)] for a in range(G)]
            data = self._read_rows(m, banks, addrs, top_r, x_r, band.value, oy_v, ox_v, pad)
        output_queue(m, self.o, QUEUE_DEPTH, write=register(m, issue, "read_valid"), data=data, start=issue,
                     may_start=may_start)
        return m

    def _read_pixel(self, m, banks, addr, bank, ky, kx, oy, ox, pad):
        """Pixels geometry (G = 1): the beat's pixel (ky, kx), one cycle after issue. Window column
        kx is image column x = ox - P + kx in window row ky: every bank reads word ``addr`` (row
        top + ky, column x // K; an out-of-image column clamped) and the pixel is bank ``bank``'s,
        x mod K (masked outside the image)."""
        H, W, K, P = self.height, self.width, self.kernel, self.padding
        words = []
        for b in range(K):
            port = banks[b].read_port()
            m.d.comb += port.addr.eq(addr)
            words.append(port.data)
        y, x = oy + ky, ox + kx                              # input row + P, input column + P
        in_image = Signal(name="pixel_in_image")
        m.d.comb += in_image.eq((y >= P) & (y < H + P) & (x >= P) & (x < W + P))
        d_bank, d_in_image = register(m, bank, "d_pixel_bank"), register(m, in_image, "d_pixel_in_image")
        return Mux(d_in_image, Array(words)[d_bank], pad)

    def _read_rows(self, m, banks, addrs, top_r, x_r, beat, oy_v, ox_v, pad):
        """Rows geometry: the beat's G window rows in (ky, kx) order, one cycle after issue. Bank
        (a, b) reads ``addrs[a][b]``: the word of the beat's row with slot residue a and of the
        window column with column residue b (out-of-image columns are clamped and masked)."""
        H, W, K, P, G = self.height, self.width, self.kernel, self.padding, self.group
        words = [[None] * K for _ in range(G)]
        for a in range(G):
            for b in range(K):
                port = banks[a][b].read_port()
                m.d.comb += port.addr.eq(addrs[a][b])
                words[a][b] = port.data

        # What the beat's words need one cycle later, as registers so that only AND-OR logic sits
        # between the banks and the queue: one-hot selects of window column kx's bank (x_r + kx)
        # mod K, cleared when the column is outside the image, and of window row i's bank row
        # (top_r + i) mod G, cleared when the row is outside the image or past K - 1; with pad bit
        # 1, the (i, kx) elements inside the window but outside the image.
        rows_in_image = [Signal(name=f"row{i}_in_image") for i in range(G)]
        rows_in_window = [Signal(name=f"row{i}_in_window") for i in range(G)]
        for i in range(G):
            y = oy_v + beat * G + i                   # input row + P
            m.d.comb += [rows_in_image[i].eq((y >= P) & (y < H + P)), rows_in_window[i].eq(beat * G + i < K)]
        cols_in_image = [(ox_v + kx >= P) & (ox_v + kx < W + P) for kx in range(K)]

        def rotated(r, offset, n):                    # (r + offset) mod n, for r < n
            return Mux(r + offset >= n, r + offset - n, r + offset)

        col_sel = [register(m, Cat(*((rotated(x_r, kx, K) == b) & cols_in_image[kx] for b in range(K))),
                            f"col{kx}_bank") for kx in range(K)]
        row_sel = [register(m, Cat(*((rotated(top_r, i, G) == a) & rows_in_window[i] & rows_in_image[i]
                                     for a in range(G))), f"row{i}_bank") for i in range(G)]
        by_column = [[reduce(operator.or_, (Mux(col_sel[kx][b], words[a][b], 0) for b in range(K))) for kx in range(K)]
                     for a in range(G)]
        elements = []
        for i in range(G):
            for kx in range(K):
                pixel = reduce(operator.or_, (Mux(row_sel[i][a], by_column[a][kx], 0) for a in range(G)))
                if self.pad_value:
                    padded = rows_in_window[i] & ~(rows_in_image[i] & cols_in_image[kx])
                    pixel = pixel | Mux(register(m, padded, f"pad{i}_{kx}"), pad, 0)
                elements.append(pixel)
        return Cat(*elements)
