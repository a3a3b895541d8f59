"""hw/stream_format.py, the one statement of the exported top's stream format: frames -> input beats
and bytes, the output beat, tap beats. Pure Python: no simulator."""
import subprocess
import sys

import numpy as np
import pytest
from spec_factory import sized_network

from xnorflow.hw.ops.label_select import class_scores_layout
from xnorflow.hw.stream_format import (
    beats_per_frame,
    decode_output,
    fold_beats_to_bits,
    frames_to_beats,
    frames_to_bytes,
    output_width,
    split_frames,
)


def test_element_i_is_bit_i_of_the_concatenated_beats_and_the_last_beat_is_zero_padded():
    bits = np.zeros((1, 10), dtype=np.uint8)
    bits[0, [0, 4, 9]] = 1
    assert frames_to_beats(bits, 4) == [[0b0001, 0b0001, 0b0010]]
    assert beats_per_frame(10, 4) == 3


@pytest.mark.parametrize("width", [1, 5, 8, 13, 64, 70])
def test_beats_read_back_bit_by_bit_give_the_frame(width):
    frames = np.random.default_rng(width).integers(0, 2, size=(5, 67), dtype=np.uint8)
    beats = frames_to_beats(frames, width)
    for frame, frame_beats in zip(frames, beats):
        assert len(frame_beats) == beats_per_frame(67, width)
        assert all(0 <= beat < (1 << width) for beat in frame_beats)
        stream = [(beat >> b) & 1 for beat in frame_beats for b in range(width)]
        assert stream[:67] == frame.tolist() and not any(stream[67:])


def test_frame_bytes_are_the_input_stream_in_beats_of_eight():
    bits = np.zeros((2, 11), dtype=np.uint8)
    bits[0, 0] = bits[0, 9] = bits[1, 7] = bits[1, 10] = 1
    assert frames_to_bytes(bits) == [bytes([0x01, 0x02]), bytes([0x80, 0x04])]
    frames = np.random.default_rng(0).integers(0, 2, size=(4, 67), dtype=np.uint8)
    assert frames_to_bytes(frames) == [bytes(beats) for beats in frames_to_beats(frames, 8)]


def test_decode_output_reads_the_layout_label_select_declares():
    spec = sized_network([16, 12, 10], [(4, 4), (5, 4)])
    layout = class_scores_layout(spec.layers[-1])
    assert layout.size == output_width(spec)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = int(rng.integers(0, spec.n_classes))
        scores = [int(s) for s in rng.integers(0, 1 << spec.score_width, size=spec.n_classes)]
        payload = layout.const({"index": index, "scores": scores}).as_value().value
        assert decode_output(payload, spec.n_classes, spec.class_index_width, spec.score_width) == (index, scores)


def test_fold_beats_drop_padded_channels_and_keep_whole_units():
    bits = np.random.default_rng(1).integers(0, 2, size=(2, 10), dtype=np.uint8)   # 10 channels, PE 4
    beats = []
    for unit in bits:
        padded = np.zeros(12, dtype=np.uint8)
        padded[:10] = unit
        beats += [int(sum(int(b) << r for r, b in enumerate(padded[nf * 4:(nf + 1) * 4]))) for nf in range(3)]
    assert np.array_equal(fold_beats_to_bits(beats, 10, 4), bits)
    assert np.array_equal(fold_beats_to_bits(beats[:5], 10, 4), bits[:1])      # a unit cut short is dropped


def test_split_frames_cuts_beats_into_frames():
    assert split_frames([1, 2, 3, 4, 5], 2, 3) == [[1, 2], [3, 4], [5]]


def test_the_format_imports_without_amaranth():
    code = ("import sys; import xnorflow.hw.stream_format; "
            "assert not [m for m in sys.modules if m.startswith('amaranth')], 'amaranth imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
