"""The host side of the board protocol, and a software board that speaks it on a pseudo-terminal.

Protocol (see `xnorflow.boards.top`): per frame the host sends ceil(input_bits / 8) bytes, element i
of the input vector being bit i % 8 of byte i // 8 (LSB first, last byte zero-padded); the board
answers one byte, the class index, in frame order.

`run_on_board` drives a real board (or anything on a serial port) and measures accuracy and frames/s.
`BoardModel` answers like the board, computing with the golden model, on a pty: it lets the driver be
tested end to end through a real serial port without an FPGA.
"""
from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path
from typing import Self

import numpy as np

from xnorflow.errors import XnorflowError
from xnorflow.hw.spec import NetworkSpec, ceil_div
from xnorflow.sim.golden import execute

DEFAULT_BAUD = 115200
# The board queues one frame in its UART FIFO and one in the network's input buffer while a third is
# being computed; two frames in flight keep the line busy without ever overrunning it.
FRAMES_IN_FLIGHT = 2
# The spec inside a build folder written by `xnorflow compile` (compiler/build.py SPEC_FILE).
SPEC_FILE_NAME = "spec.npz"


class HostError(XnorflowError):
    """The board did not answer as the protocol says; the message names what to check."""


# --- protocol ------------------------------------------------------------------------------------
def pack_frames(spec: NetworkSpec, input_bits: np.ndarray) -> list[bytes]:
    """(frames, input_bits) of {0, 1} -> the bytes of each frame, as the host sends them."""
    input_bits = np.asarray(input_bits)
    if input_bits.ndim != 2 or input_bits.shape[1] != spec.input_bits:
        raise HostError(f"inputs have shape {input_bits.shape}; the network takes (frames, "
                        f"{spec.input_bits}) bits: binarise the images with the model's rule first")
    if input_bits.size and not np.isin(input_bits, (0, 1)).all():
        raise HostError("inputs must be bits (0 or 1): binarise the images with the model's rule first")
    packed = np.packbits(input_bits.astype(np.uint8), axis=1, bitorder="little")
    assert packed.shape[1] == ceil_div(spec.input_bits, 8)
    return [row.tobytes() for row in packed]


def load_spec(spec_or_build: NetworkSpec | str | Path) -> NetworkSpec:
    """A NetworkSpec, a spec .npz, or a build folder holding spec.npz."""
    if isinstance(spec_or_build, NetworkSpec):
        return spec_or_build
    path = Path(spec_or_build)
    if path.is_dir():
        path = path / SPEC_FILE_NAME
    if not path.is_file():
        raise HostError(f"{path} does not exist: give a spec file or a build folder made by `xnorflow compile`")
    return NetworkSpec.load(path)


# --- the driver ----------------------------------------------------------------------------------
def run_on_board(port, spec_or_build, inputs, labels=None, baudrate: int = DEFAULT_BAUD,
                 timeout: float = 2.0) -> dict:
    """Classify ``inputs`` (frames, input_bits) on the board at ``port`` (a device path or an open
    pyserial-like object); return ``{"accuracy", "fps", "frames", "predictions"}``.

    ``accuracy`` is None without ``labels``. ``fps`` is frames over the wall time from the first byte
    sent to the last answer read, so it includes the UART; ``timeout`` is how long one answer may
    take before the board is declared silent.
    """
    spec = load_spec(spec_or_build)
    frames = pack_frames(spec, inputs)
    if labels is not None and len(labels) != len(frames):
        raise HostError(f"{len(labels)} labels for {len(frames)} frames: give one label per frame")
    serial_port, owned = _open(port, baudrate, timeout)
    try:
        serial_port.reset_input_buffer()
        start = time.perf_counter()
        predictions = _exchange(serial_port, frames, spec.n_classes)
        elapsed = time.perf_counter() - start
    finally:
        if owned:
            serial_port.close()
    predictions = np.array(predictions, dtype=np.int64)
    accuracy = None
    if labels is not None and len(frames):
        accuracy = float(np.mean(predictions == np.asarray(labels)))
    return {
        "accuracy": accuracy,
        "fps": len(frames) / elapsed if frames and elapsed > 0 else None,
        "frames": len(frames),
        "predictions": predictions,
    }


def _open(port, baudrate: int, timeout: float):
    """(serial object, whether we opened it)."""
    if not isinstance(port, (str, os.PathLike)):
        return port, False
    import serial  # pyserial; imported here so the protocol helpers work without it

    try:
        return serial.Serial(os.fspath(port), baudrate=baudrate, timeout=timeout), True
    except (serial.SerialException, OSError) as e:
        raise HostError(f"cannot open {port} ({e}): check the board is plugged in and the port name") from e


def _exchange(serial_port, frames: list[bytes], n_classes: int) -> list[int]:
    """Send frames keeping FRAMES_IN_FLIGHT unanswered, and read one class byte per frame."""
    predictions: list[int] = []
    sent = 0
    while len(predictions) < len(frames):
        while sent < len(frames) and sent - len(predictions) < FRAMES_IN_FLIGHT:
            serial_port.write(frames[sent])
            sent += 1
        serial_port.flush()
        answer = serial_port.read(1)
        if not answer:
            raise HostError(f"no answer from the board after {len(predictions)} of {len(frames)} frames: "
                            "check that the bitstream is loaded and the baud rate matches")
        if answer[0] >= n_classes:
            raise HostError(f"the board answered class {answer[0]} but the network has {n_classes} "
                            "classes: the bitstream was built from another network")
        predictions.append(answer[0])
    return predictions


# --- a software board on a pty -------------------------------------------------------------------
class BoardModel:
    """Answers the board protocol with the golden model, on a pseudo-terminal served by a thread.

    Use as a context manager; ``port`` is the device path to open with pyserial::

        with BoardModel(spec) as board:
            run_on_board(board.port, spec, inputs)
    """

    def __init__(self, spec: NetworkSpec):
        spec.validate()
        self.spec = spec
        self.frame_bytes = ceil_div(spec.input_bits, 8)
        self.frames_answered = 0
        self._master = self._slave = None
        self._thread = None
        self._stop = threading.Event()
        self.port: str | None = None

    def __enter__(self) -> Self:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)   # bytes pass untouched (no echo, no CR/LF or ^C handling)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, name="xnorflow-board-model", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._master)
        os.close(self._slave)   # held open until now so the master never sees a hang-up

    def answer(self, frame: bytes) -> int:
        """The class the board gives for one frame's bytes."""
        bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8), count=self.spec.input_bits,
                             bitorder="little")
        return int(execute(self.spec, bits[None, :]).predictions[0])

    def _serve(self) -> None:
        pending = b""
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], 0.05)
            if not readable:
                continue
            try:
                pending += os.read(self._master, 4096)
            except OSError:   # the pty went away
                return
            while len(pending) >= self.frame_bytes:
                frame, pending = pending[:self.frame_bytes], pending[self.frame_bytes:]
                answer = self.answer(frame)
                self.frames_answered += 1   # counted before the host can see the answer
                os.write(self._master, bytes([answer]))


__all__ = ["DEFAULT_BAUD", "BoardModel", "HostError", "load_spec", "pack_frames", "run_on_board"]
