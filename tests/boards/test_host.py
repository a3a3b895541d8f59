"""The host driver against the software board on a real pseudo-terminal, through pyserial."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import run_cli
from spec_factory import random_frames, sized_network

from xnorflow.boards.host import BoardModel, HostError, pack_frames, run_on_board
from xnorflow.boards.protocol import answer
from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim.golden import execute


def test_pack_frames_is_lsb_first_and_zero_padded():
    spec = sized_network([11, 3], [(1, 11)])
    bits = np.zeros((2, 11), dtype=np.uint8)
    bits[0, [0, 9]] = 1          # byte 0 bit 0, byte 1 bit 1
    bits[1, [7, 10]] = 1         # byte 0 bit 7, byte 1 bit 2
    assert pack_frames(spec, bits) == [bytes([0x01, 0x02]), bytes([0x80, 0x04])]


def test_pack_frames_refuses_wrong_shapes_and_non_bits():
    spec = sized_network([11, 3], [(1, 11)])
    with pytest.raises(HostError, match=r"\(frames, 11\)"):
        pack_frames(spec, np.zeros((2, 12), dtype=np.uint8))
    with pytest.raises(HostError, match="bits"):
        pack_frames(spec, np.full((1, 11), 2))


def test_driver_gets_the_golden_classes_from_the_board_model(tmp_path):
    spec = sized_network([70, 32, 10], [(4, 8), (2, 8)], seed=5)
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
    spec = sized_network([16, 4], [(1, 8)])
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        with pytest.raises(HostError, match=f"no answer from the board on {name} after 0 of 3 answers"):
            run_on_board(name, spec, random_frames(spec, 3), timeout=0.2)
    finally:
        os.close(master)
        os.close(slave)


def test_driver_refuses_a_missing_port_and_mismatched_labels(tmp_path):
    spec = sized_network([16, 4], [(1, 8)])
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
    spec = sized_network([20, 16, 6], [(4, 4), (2, 4)], seed=2)
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
    spec = sized_network([20, 16, 6], [(4, 4), (2, 4)], seed=2)
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


# --- `xnorflow run` through the real command line, against software boards on real ptys ------------
@pytest.fixture(scope="module")
def tfc_build(tfc_digits_model, tmp_path_factory):
    build = tmp_path_factory.mktemp("run") / "build"
    result = run_cli("compile", tfc_digits_model, "-o", build)
    assert result.returncode == 0, result.stderr
    with np.load(build / "vectors.npz") as v:
        return build, NetworkSpec.load(build / "spec.npz"), v["golden_predictions"], v["labels"]


def one_error_line(result) -> str:
    """The CLI's stderr when it is exactly one `xnorflow: error:` line (no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xnorflow: error: "), result.stderr
    return lines[0]


class StrayByteBoard(BoardModel):
    """A board whose line picks up one stray byte, a valid-looking class, after its answer to frame
    ``after`` (counting from 0)."""

    def __init__(self, spec, after: int, **kw):
        super().__init__(spec, **kw)
        self.after = after

    def reply(self, frame):
        data = super().reply(frame)
        return data + bytes([3]) if self.frames_answered == self.after else data


class WrongClassBoard(BoardModel):
    """A board that computes a different class for every 7th frame (a bitstream of another build)."""

    def reply(self, frame):
        data = super().reply(frame)
        return data[:1] + bytes([(data[1] + 1) % self.spec.n_classes]) if self.frames_answered % 7 == 3 else data


class UnpluggedBoard(BoardModel):
    """A board unplugged after ``after`` answers (the frame after them gets none)."""

    def __init__(self, spec, after: int, **kw):
        super().__init__(spec, **kw)
        self.after = after

    def reply(self, frame):
        return None if self.frames_answered == self.after else super().reply(frame)


def test_run_checks_every_answer_against_the_golden_model(tfc_build):
    build, spec, golden, labels = tfc_build
    with BoardModel(spec, first_count=110) as board:     # tags wrap from 0xff to 0x80 during the run
        result = run_cli("run", build, "--port", board.port, "--images", "40")
    assert result.returncode == 0, result.stderr
    assert f"accuracy                 {np.mean(golden[:40] == labels[:40]):.4f}" in result.stdout
    assert "golden agreement         1.0000 (0 frames differ from the golden model)" in result.stdout
    # Not synthesized: no rate recorded, so the rate of builds from before it was.
    assert "over the UART at 115,200 baud" in result.stdout


def test_run_talks_at_the_baud_rate_the_bitstream_was_built_for(tfc_build, tmp_path):
    build, spec, _, _ = tfc_build
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    report = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(json.dumps({**report, "baud": 3_000_000}))
    with BoardModel(spec) as board:
        result = run_cli("run", copy, "--port", board.port, "--images", "5")
        assert board.line_baud == 3_000_000     # what the host set on the line
    assert result.returncode == 0, result.stderr
    assert "over the UART at 3,000,000 baud" in result.stdout
    with BoardModel(spec) as board:
        result = run_cli("run", copy, "--port", board.port, "--images", "5", "--baud", "115200")
        assert board.line_baud == 115_200
    assert "over the UART at 115,200 baud" in result.stdout


def test_run_stops_at_a_stray_byte_instead_of_shifting_the_answers(tfc_build):
    build, spec, _, _ = tfc_build
    with StrayByteBoard(spec, after=10) as board:
        result = run_cli("run", build, "--port", board.port, "--images", "30")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "out of step" in line and board.port in line
    # Frame 10's answer was followed by the stray, not by frame 11's tag: frames 0-9 are confirmed.
    assert "(byte 0x03 where the tag of frame 11 was due) after 10 of 30 answers confirmed" in line


def test_run_fails_when_the_board_disagrees_with_the_golden_model(tfc_build):
    build, spec, golden, _ = tfc_build
    with WrongClassBoard(spec) as board:
        result = run_cli("run", build, "--port", board.port, "--images", "30")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "disagrees with the golden model on 4 of 30 frames" in line
    assert f"first: frame 3, board class {(golden[3] + 1) % 10}, golden {golden[3]}" in line
    assert "golden agreement         0.8667 (4 frames differ" in result.stdout


def test_run_names_the_port_when_the_board_is_unplugged_mid_run(tfc_build):
    build, spec, _, _ = tfc_build
    with UnpluggedBoard(spec, after=12) as board:
        result = run_cli("run", build, "--port", board.port, "--images", "30")
        port = board.port
    assert result.returncode == 2
    line = one_error_line(result)
    # The 12th answer was written just before the hang-up; whether the host read it before the
    # pty closed depends on scheduling (Linux drops a closed master's unread bytes).
    assert (f"lost the connection to the board on {port} after 12 of 30 answers" in line
            or f"lost the connection to the board on {port} after 11 of 30 answers" in line), line


def test_run_names_the_port_of_a_silent_board(tfc_build):
    build, _, _, _ = tfc_build
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        result = run_cli("run", build, "--port", name, "--images", "5")
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 2
    assert f"no answer from the board on {name} after 0 of 5 answers" in one_error_line(result)


@pytest.mark.parametrize("baud", ["-5", "0", "fast"])
def test_run_refuses_a_bad_baud_rate_in_one_line(tfc_build, baud):
    build, _, _, _ = tfc_build
    result = run_cli("run", build, "--port", "/dev/null", "--baud", baud)
    assert result.returncode == 2
    assert "--baud" in one_error_line(result)


def test_run_names_a_missing_port(tfc_build, tmp_path):
    build, _, _, _ = tfc_build
    result = run_cli("run", build, "--port", tmp_path / "ttyUSB9")
    assert result.returncode == 2
    assert f"cannot open {tmp_path / 'ttyUSB9'}" in one_error_line(result)
