"""The host driver against the software board on a real pseudo-terminal, through pyserial."""
import os

import numpy as np
import pytest
from board_helpers import random_frames, random_network

from xnorflow.boards.host import BoardModel, HostError, pack_frames, run_on_board
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
    with BoardModel(spec) as board:
        result = run_on_board(board.port, tmp_path, frames, labels, baudrate=115200)
        assert board.frames_answered == len(frames)

    assert result["predictions"].tolist() == golden.tolist()
    assert result["frames"] == 60
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["fps"] > 0


def test_driver_reports_a_silent_board():
    spec = random_network([16, 4], [(1, 8)])
    master, slave = os.openpty()
    try:
        with pytest.raises(HostError, match="no answer from the board after 0 of 3 frames"):
            run_on_board(os.ttyname(slave), spec, random_frames(spec, 3), timeout=0.2)
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
    with pytest.raises(HostError, match="xnorflow compile"):
        run_on_board(str(tmp_path / "no-such-tty"), tmp_path, frames)
