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
so pixel beats are a G*K-th of the rows geometry's.

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

        # --- writer: one pixel per accepted beat into slot ``w_slot``, column ``w_x`` --------------
        full_rows = Signal(range(ROWS + 1))
        release = Signal(range(H + 1))       # rows the reader frees this cycle
        w_x = Signal(range(W))
        w_xq, w_xr = Signal(range(WB)), Signal(range(K))
        w_slot = Signal(range(ROWS))
        accept = self.i.valid & self.i.ready
        row_done = accept & (w_x == W - 1)
        m.d.comb += self.i.ready.eq((w_x != 0) | (full_rows != ROWS))
        write_addr = (w_slot // G) * WB + w_xq
        for a in range(G):
            for b in range(K):
                port = banks[a][b].write_port()
                m.d.comb += [port.addr.eq(write_addr), port.data.eq(self.i.payload),
                             port.en.eq(accept & (w_slot % G == a) & (w_xr == b))]
        with m.If(accept):
            m.d.sync += [w_x.eq(Mux(row_done, 0, w_x + 1)),
                         w_xr.eq(Mux(row_done | (w_xr == K - 1), 0, w_xr + 1)),
                         w_xq.eq(Mux(row_done, 0, Mux(w_xr == K - 1, w_xq + 1, w_xq)))]
            with m.If(row_done):
                m.d.sync += w_slot.eq(Mux(w_slot == ROWS - 1, 0, w_slot + 1))
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
        # The band's first slot is top + band * G (ROWS is a multiple of G): same residue, the
        # quotient stepped by the band number.
        top_r = Signal(range(G))
        beat_q = Signal(range(NQ))
        q_sum = top // G + band.value
        m.d.comb += [top_r.eq(top % G), beat_q.eq(Mux(q_sum >= NQ, q_sum - NQ, q_sum))]
        # Column of window column 0 (ox - P), kept as ox + K - P >= 1 to stay unsigned.
        x_off = Signal(range(OW + K), init=K - P)
        with m.If(window_done):
            m.d.sync += x_off.eq(Mux(ox.is_last, K - P, x_off + 1))
        x_q1, x_r = Signal(range(ceil_div(OW + K, K) + 1)), Signal(range(K))
        m.d.comb += [x_q1.eq(x_off // K), x_r.eq(x_off % K)]      # (ox - P) // K + 1, (ox - P) mod K

        # Is the window's bottom-right real pixel written? Rows are counted from the oldest held.
        oy_v, ox_v = oy.value, ox.value
        newest_row = Mux(oy_v + (K - 1) >= H - 1 + P, H - 1, oy_v + (K - 1) - P)
        oldest_row = Mux(oy_v >= P, oy_v - P, 0)
        need_rows = Signal(range(H))
        m.d.comb += need_rows.eq(newest_row - oldest_row)
        need_x = Signal(range(W))
        m.d.comb += need_x.eq(Mux(ox_v + (K - 1) >= W - 1 + P, W - 1, ox_v + (K - 1) - P))
        written = (full_rows > need_rows) | ((full_rows == need_rows) & (w_x > need_x))
        m.d.comb += issue.eq(may_start & (~first_beat | written))

        # Rows freed: one per output row once the window's top is inside the image, and at a
        # frame's end every row of it still held.
        last_oldest = max(OH - 1 - P, 0)
        m.d.comb += release.eq(Mux(row_end, Mux(frame_end, H - last_oldest, oy_v >= P), 0))

        pad = Const((1 << C) - 1 if self.pad_value else 0, C)
        if self.pixel_beats:
            data = self._read_pixel(m, banks[0], beat_q, x_q1, x_r, band.value, kx.value, oy_v, ox_v, pad)
        else:
            data = self._read_rows(m, banks, beat_q, top_r, x_q1, x_r, band.value, oy_v, ox_v, pad)
        output_queue(m, self.o, QUEUE_DEPTH, write=register(m, issue, "read_valid"), data=data, start=issue,
                     may_start=may_start)
        return m

    def _read_pixel(self, m, banks, slot, x_q1, x_r, ky, kx, oy, ox, pad):
        """Pixels geometry (G = 1): the beat's pixel (ky, kx), one cycle after issue. Window row ky
        is slot ``slot`` (top + ky); window column kx is image column x = ox - P + kx, held by bank
        (x_r + kx) mod K at word x // K, the word every bank reads (an out-of-image column is clamped
        and masked)."""
        H, W, K, P, WB = self.height, self.width, self.kernel, self.padding, self.bank_columns
        column_r = x_r + kx                                  # x mod K, plus K on a carry
        carry = column_r >= K
        bank = Signal(range(K), name="pixel_bank")
        m.d.comb += bank.eq(Mux(carry, column_r - K, column_r))
        col_plus1 = x_q1 + carry                             # x // K + 1
        col = Mux(col_plus1 == 0, 0, Mux(col_plus1 > WB, WB - 1, col_plus1 - 1))
        words = []
        for b in range(K):
            port = banks[b].read_port()
            m.d.comb += port.addr.eq(slot * WB + col)
            words.append(port.data)
        y, x = oy + ky, ox + kx                              # input row + P, input column + P
        in_image = Signal(name="pixel_in_image")
        m.d.comb += in_image.eq((y >= P) & (y < H + P) & (x >= P) & (x < W + P))
        d_bank, d_in_image = register(m, bank, "d_pixel_bank"), register(m, in_image, "d_pixel_in_image")
        return Mux(d_in_image, Array(words)[d_bank], pad)

    def _read_rows(self, m, banks, beat_q, top_r, x_q1, x_r, beat, oy_v, ox_v, pad):
        """Rows geometry: the beat's G window rows in (ky, kx) order, one cycle after issue."""
        H, W, K, P, G, WB = self.height, self.width, self.kernel, self.padding, self.group, self.bank_columns
        NQ = self.rows // G
        # Bank (a, b) reads the word of the beat's row with slot residue a and of the window
        # column with column residue b (out-of-image columns are clamped and masked).
        words = [[None] * K for _ in range(G)]
        for a in range(G):
            row_addr = Mux(a < top_r, Mux(beat_q == NQ - 1, 0, beat_q + 1), beat_q)
            for b in range(K):
                col_plus1 = x_q1 + (b < x_r)                 # the column's word + 1
                col = Mux(col_plus1 == 0, 0, Mux(col_plus1 > WB, WB - 1, col_plus1 - 1))
                port = banks[a][b].read_port()
                m.d.comb += port.addr.eq(row_addr * WB + col)
                words[a][b] = port.data

        # What the beat's words need one cycle later: rotations and the padding masks.
        rows_in_image = [Signal(name=f"row{i}_in_image") for i in range(G)]
        rows_in_window = [Signal(name=f"row{i}_in_window") for i in range(G)]
        for i in range(G):
            y = oy_v + beat * G + i                   # input row + P
            m.d.comb += [rows_in_image[i].eq((y >= P) & (y < H + P)), rows_in_window[i].eq(beat * G + i < K)]
        cols_in_image = [(ox_v + kx >= P) & (ox_v + kx < W + P) for kx in range(K)]
        d_top_r, d_x_r = register(m, top_r, "rot_rows"), register(m, x_r, "rot_cols")
        d_rows_image = [register(m, v, f"d_row{i}_in_image") for i, v in enumerate(rows_in_image)]
        d_rows_window = [register(m, v, f"d_row{i}_in_window") for i, v in enumerate(rows_in_window)]
        d_cols_image = [register(m, v, f"d_col{kx}_in_image") for kx, v in enumerate(cols_in_image)]

        by_column = [[Array(words[a])[Mux(d_x_r + kx >= K, d_x_r + kx - K, d_x_r + kx)] for kx in range(K)]
                     for a in range(G)]
        elements = []
        for i in range(G):
            for kx in range(K):
                pixel = Array(by_column[a][kx] for a in range(G))[Mux(d_top_r + i >= G, d_top_r + i - G, d_top_r + i)]
                elements.append(Mux(d_rows_window[i], Mux(d_rows_image[i] & d_cols_image[kx], pixel, pad), 0))
        return Cat(*elements)
