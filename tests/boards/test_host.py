"""The host driver against the software board on a real pseudo-terminal, through pyserial."""
import os

import numpy as np
import pytest
from board_helpers import random_frames, random_network

from xnorflow.boards.host import BoardModel, HostError, pack_frames, run_on_board
from xnorflow.boards.protocol import answer
from xnorflow.sim.golden import execute


def test_pack_frames_is_lsb_first_and_zero_padded():
    spec = random_network([11, 3], [(1, 11)])
    bits = np.zeros((2, 11), dtype=np.uint8)
    bits[0, [0, 9]] = 1          # byte 0 bit 0, byte 1 bit 1
    bits[1, [7, 10]] = 1         # byte 0 bit 7, byte 1 bit 2
    assert pack_frames(spec, bits) == [bytes([0x01, 0x02]), bytes([0x80, 0x04])]


def test_pack_frames_refuses_wrong_shapes_and_non_bits():
    spec = random_network([11, 3], [(1, 11)])
    with pytest.raises(HostError, match=r"\(frames, 11\)"):
        pack_frames(spec, np.zeros((2, 12), dtype=np.uint8))
    with pytest.raises(HostError, match="bits"):
        pack_frames(spec, np.full((1, 11), 2))


def test_driver_gets_the_golden_classes_from_the_board_model(tmp_path):
    spec = random_network([70, 32, 10], [(4, 8), (2, 8)], seed=5)
    frames = random_frames(spec, 60, seed=6)
    golden = execute(spec, frames).predictions
    assert len(set(golden.tolist())) > 2
    labels = golden.copy()
    labels[::4] = (labels[::4] + 1) % spec.n_classes    # every 4th label wrong: accuracy exactly 0.75

    spec.save(tmp_path / "spec.npz")
    # A board that has answered 100 frames before this run: the tags start at 0xe4 and wrap past 0xff.
    with BoardModel(spec, first_count=100) as board:
        result = run_on_board(board.port, tmp_path, frames, labels, baudrate=115200, golden=golden)
        assert board.frames_answered == len(frames)

    assert result["predictions"].tolist() == golden.tolist()
    assert result["frames"] == 60
    assert result["accuracy"] == pytest.approx(0.75)
    assert (result["golden_agreement"], result["golden_mismatches"], result["mismatched_frames"]) == (1.0, 0, [])
    assert result["fps"] > 0


def test_driver_reports_a_silent_board_naming_the_port():
    spec = random_network([16, 4], [(1, 8)])
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        with pytest.raises(HostError, match=f"no answer from the board on {name} after 0 of 3 answers"):
            run_on_board(name, spec, random_frames(spec, 3), timeout=0.2)
    finally:
        os.close(master)
        os.close(slave)


def test_driver_refuses_a_missing_port_and_mismatched_labels(tmp_path):
    spec = random_network([16, 4], [(1, 8)])
    frames = random_frames(spec, 3)
    with pytest.raises(HostError, match="cannot open"):
        run_on_board(str(tmp_path / "no-such-tty"), spec, frames)
    with pytest.raises(HostError, match="one label per frame"):
        run_on_board(str(tmp_path / "no-such-tty"), spec, frames, labels=[0, 1])
    with pytest.raises(HostError, match="one per frame"):
        run_on_board(str(tmp_path / "no-such-tty"), spec, frames, golden=[0, 1])
    with pytest.raises(HostError, match="baud rate -5 must be a positive"):
        run_on_board(str(tmp_path / "no-such-tty"), spec, frames, baudrate=-5)
    with pytest.raises(HostError, match="xnorflow compile"):
        run_on_board(str(tmp_path / "no-such-tty"), tmp_path, frames)


# --- every single-byte fault on the answer line is caught, never shifts answers ------------------
class ScriptedPort:
    """A pyserial-like port whose answers are scripted per frame: frame k's chunk becomes readable once
    frame k has been written in full; a read with nothing readable returns b"" (a timeout)."""

    def __init__(self, frame_bytes: int, chunks: list[bytes], before: bytes = b""):
        self.frame_bytes, self.chunks = frame_bytes, chunks
        self.written = 0
        self.readable = bytearray(before)
        self.timeout = 1.0
        self.port = "scripted"

    def write(self, data: bytes) -> None:
        done = self.written // self.frame_bytes
        self.written += len(data)
        for k in range(done, min(self.written // self.frame_bytes, len(self.chunks))):
            self.readable += self.chunks[k]

    def read(self, n: int) -> bytes:
        data, self.readable = bytes(self.readable[:n]), self.readable[n:]
        return data

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self.readable.clear()


def single_byte_faults(chunks: list[bytes], n_classes: int):
    """(description, faulted chunks): one byte added (class-like or tag-like), lost or changed from a
    tag, or one whole answer lost or repeated, at every place in the answer stream."""
    def with_chunk(k, new):
        return chunks[:k] + [new] + chunks[k + 1:]

    tags = sorted({c[0] for c in chunks})
    strays = {0x00, 0x03, n_classes - 1, 0x7f, 0xff} | {tags[0], tags[-1], (tags[-1] + 1) | 0x80}
    for k, chunk in enumerate(chunks):
        for at in range(len(chunk) + 1):
            for stray in sorted(strays):
                yield f"0x{stray:02x} added at byte {at} of answer {k}", \
                    with_chunk(k, chunk[:at] + bytes([stray]) + chunk[at:])
        for at in range(len(chunk)):
            yield f"byte {at} of answer {k} lost", with_chunk(k, chunk[:at] + chunk[at + 1:])
        yield f"answer {k} lost", with_chunk(k, b"")
        yield f"answer {k} repeated", with_chunk(k, chunk + chunk)
        for other in (chunks[k - 1][0] if k else 0xff, chunk[0] ^ 0x01, chunk[0] & 0x7f):
            if other != chunk[0]:
                yield f"tag of answer {k} changed to 0x{other:02x}", with_chunk(k, bytes([other]) + chunk[1:])


def test_no_single_byte_fault_shifts_answers_onto_the_wrong_frames():
    spec = random_network([20, 16, 6], [(4, 4), (2, 4)], seed=2)
    frames = random_frames(spec, 6, seed=3)
    golden = execute(spec, frames).predictions.tolist()
    chunks = [answer(120 + k, c) for k, c in enumerate(golden)]    # the counter wraps mid-run
    clean = run_on_board(ScriptedPort(3, chunks), spec, frames)
    assert clean["predictions"].tolist() == golden

    faults = list(single_byte_faults(chunks, spec.n_classes))
    outcomes = {"stopped": 0}
    for description, faulted in faults:
        try:
            result = run_on_board(ScriptedPort(3, faulted), spec, frames, golden=golden)
        except HostError as e:
            assert any(why in str(e) for why in ("out of step", "no answer", "classes")), (description, str(e))
            assert "scripted" in str(e)
            outcomes["stopped"] += 1
            continue
        # Not stopped: only when the fault left every answer right.
        assert result["predictions"].tolist() == golden, description
        outcomes[description] = "answers intact"
    # Every one of these faults stops the run.
    assert outcomes == {"stopped": len(faults)} and len(faults) > 150, outcomes


def test_a_stray_byte_reports_how_many_answers_were_confirmed():
    spec = random_network([20, 16, 6], [(4, 4), (2, 4)], seed=2)
    frames = random_frames(spec, 6, seed=3)
    golden = execute(spec, frames).predictions.tolist()
    chunks = [answer(k, c) for k, c in enumerate(golden)]
    chunks[3] = chunks[3][:1] + bytes([(golden[3] + 1) % 6]) + chunks[3][1:]    # a class-like byte
    with pytest.raises(HostError, match=r"where the tag of frame 4 was due\) after 3 of 6 answers confirmed"):
        run_on_board(ScriptedPort(3, chunks), spec, frames)
    # Leftovers of an earlier run that was stopped are dropped before the first frame.
    result = run_on_board(ScriptedPort(3, [answer(k, c) for k, c in enumerate(golden)],
                                       before=answer(50, 1) + answer(51, 2)), spec, frames)
    assert result["predictions"].tolist() == golden

