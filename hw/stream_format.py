"""The stream and frame format of the exported network top, stated once.

Everything that packs frames for the network or reads its beats back uses these functions: the
network top's helpers (hw/network.py), both simulation benches (sim/cocotb_tb.py, sim/harness.py),
localisation and the board host (boards/host.py). The module imports NumPy and hw/spec.py only, no
Amaranth, so a testbench inside the simulator or a host talking to a board reads it without
building any hardware.

- Input (the ``i`` stream, and the board's UART in beats of 8 bits): a frame of n bits travels as
  ``beats_per_frame(n, width)`` beats of ``width`` bits; element j of the frame is bit j % width of
  beat j // width (LSB first), the last beat zero-padded. :func:`frames_to_beats` packs frames so,
  :func:`frames_to_bytes` packs them into the bytes the host sends.
- Output (the ``o`` stream): one beat per frame, bits [0, iw) the class index, then the score of
  class c at bits [iw + c*sw, iw + (c+1)*sw) (iw = spec.class_index_width, sw = spec.score_width);
  label-select declares this layout in Amaranth (hw/ops/label_select.py, class_scores_layout) and
  :func:`decode_output` reads it.
- Taps and the streams between layers: a layer's output vector (or pixel) of n_out channels in
  NF = ceil(n_out / pe) beats of ``pe`` bits, channel nf*pe + r at bit r of beat nf, the padded
  channels of the last beat 0. :func:`fold_beats_to_bits` reads them; :func:`split_frames` cuts a
  stream's beats into frames.
"""
from __future__ import annotations

import numpy as np

from xnorflow.hw.spec import ceil_div, pack_words, unpack_words

BYTE_BITS = 8


def beats_per_frame(frame_bits: int, width: int) -> int:
    """Beats of ``width`` bits that carry a frame of ``frame_bits`` bits."""
    return ceil_div(frame_bits, width)


def frames_to_beat_array(frames_bits: np.ndarray, width: int) -> np.ndarray:
    """(frames, n) array of {0, 1} -> (frames, ``beats_per_frame(n, width)``) beats, as `pack_words`
    gives them (uint64 up to 64 bits, Python ints above)."""
    frames_bits = np.asarray(frames_bits, dtype=np.uint8)
    frames, n = frames_bits.shape
    beats = beats_per_frame(n, width)
    padded = np.zeros((frames, beats * width), dtype=np.uint8)
    padded[:, :n] = frames_bits
    return pack_words(padded.reshape(frames, beats, width))


def frames_to_beats(frames_bits: np.ndarray, width: int) -> list[list[int]]:
    """(frames, n) array of {0, 1} -> per frame, its ``beats_per_frame(n, width)`` beats as ints."""
    return [[int(word) for word in row] for row in frames_to_beat_array(frames_bits, width)]


def frames_to_bytes(frames_bits: np.ndarray) -> list[bytes]:
    """(frames, n) array of {0, 1} -> the bytes of each frame: its beats of 8 bits."""
    return [bytes(beats) for beats in frames_to_beats(frames_bits, BYTE_BITS)]


def output_width(spec) -> int:
    """Bits of the output beat of the network of ``spec`` (a NetworkSpec)."""
    return spec.class_index_width + spec.n_classes * spec.score_width


def decode_output(payload: int, n_classes: int, index_width: int, score_width: int) -> tuple[int, list[int]]:
    """One output beat -> (class index, [score of each class])."""
    payload = int(payload)
    index = payload & ((1 << index_width) - 1)
    mask = (1 << score_width) - 1
    scores = [(payload >> (index_width + c * score_width)) & mask for c in range(n_classes)]
    return index, scores


def fold_beats_to_bits(beats, n_out: int, pe: int) -> np.ndarray:
    """Beats of ``pe`` bits, NF = ceil(n_out / pe) per unit -> (units, n_out) bits of the whole
    units among them; padded channels are dropped."""
    nf = ceil_div(n_out, pe)
    units = len(beats) // nf
    bits = unpack_words(np.array([int(b) for b in beats[:units * nf]], dtype=object), pe)
    return bits.reshape(units, nf * pe)[:, :n_out].copy()


def split_frames(beats: list[int], per_frame: int, frames: int) -> list[list[int]]:
    """The first ``frames`` frames of a stream's beats, ``per_frame`` beats each (a frame the stream
    did not finish is short)."""
    return [beats[f * per_frame:(f + 1) * per_frame] for f in range(frames)]
