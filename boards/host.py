"""The host side of the board protocol, and a software board that speaks it on a pseudo-terminal.

Protocol (`xnorflow.boards.protocol`): per frame the host sends ceil(input_bits / 8) bytes, element i
of the input vector being bit i % 8 of byte i // 8 (LSB first, last byte zero-padded: the network's
input stream in beats of 8 bits, `xnorflow.hw.stream_format.frames_to_bytes`); the board
answers two bytes in frame order, a tag (0x80 | its frame counter mod 128) and the class index.

`run_on_board` drives a real board (or anything on a serial port) and measures accuracy and frames/s.
`BoardModel` answers like the board, computing with the golden model, on a pty: it lets the driver be
tested end to end through a real serial port without an FPGA.
"""
from __future__ import annotations

import os
import re
import select
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Self

import numpy as np

from xnorflow.boards import protocol
from xnorflow.errors import XnorflowError
from xnorflow.hw.spec import NetworkSpec
from xnorflow.hw.stream_format import BYTE_BITS, beats_per_frame, frames_to_bytes
from xnorflow.sim.golden import execute

DEFAULT_BAUD = 115200
# How long the line must stay silent before the first frame (what an earlier run left in flight is
# dropped), and after the last answer (a byte there means the answers were out of step); at most
# DRAIN_LIMIT bytes are dropped before the board is declared to be chattering.
QUIET_SECONDS = 0.05
DRAIN_LIMIT = 4096
# The board queues one frame in its UART FIFO and one in the network's input buffer while a third is
# being computed; two frames in flight keep the line busy without ever overrunning it.
FRAMES_IN_FLIGHT = 2
# The spec inside a build folder written by `xnorflow compile` (sim/layout.py SPEC_FILE).
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
    return frames_to_bytes(input_bits)


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
                 timeout: float = 2.0, golden=None) -> dict:
    """Classify ``inputs`` (frames, input_bits) on the board at ``port`` (a device path or an open
    pyserial-like object); return ``{"accuracy", "fps", "frames", "predictions", "golden_mismatches",
    "golden_agreement", "mismatched_frames"}``.

    Every answer's tag is checked (see `xnorflow.boards.protocol`): a byte lost, duplicated or added on
    the line stops the run with a `HostError` saying how many answers were confirmed, instead of
    shifting later answers onto the wrong frames. So do a board that stays silent for ``timeout``
    seconds and a port that fails or disappears, each named in the message.

    ``accuracy`` is None without ``labels``; the golden figures are None without ``golden`` (the
    golden model's predictions for ``inputs``; ``mismatched_frames`` lists the frames whose answer
    differs). ``fps`` is frames over the wall time from the first byte sent to the last answer read,
    so it includes the UART.
    """
    spec = load_spec(spec_or_build)
    frames = pack_frames(spec, inputs)
    if labels is not None and len(labels) != len(frames):
        raise HostError(f"{len(labels)} labels for {len(frames)} frames: give one label per frame")
    if golden is not None and len(golden) != len(frames):
        raise HostError(f"{len(golden)} golden predictions for {len(frames)} frames: give one per frame")
    if int(baudrate) != baudrate or baudrate <= 0:
        raise HostError(f"baud rate {baudrate} must be a positive whole number, e.g. {DEFAULT_BAUD}")
    where = _port_name(port)
    serial_port, owned = _open(port, baudrate, timeout)
    link = _Link(serial_port, where, len(frames), timeout)
    try:
        link.drain()
        start = time.perf_counter()
        predictions = _exchange(link, frames, spec.n_classes)
        elapsed = time.perf_counter() - start
        link.check_quiet_after_last(baudrate)
    except (OSError, termios.error) as e:   # pyserial's SerialException is an OSError; tcdrain raises termios.error
        raise HostError(f"lost the connection to the board on {where} after {link.answers} of {len(frames)} "
                        f"answers ({e}): check the cable and that no other program uses the port") from e
    finally:
        if owned:
            try:
                serial_port.close()
            except (OSError, termios.error):
                pass
    predictions = np.array(predictions, dtype=np.int64)
    accuracy = None
    if labels is not None and len(frames):
        accuracy = float(np.mean(predictions == np.asarray(labels)))
    mismatched = agreement = None
    if golden is not None:
        mismatched = np.flatnonzero(predictions != np.asarray(golden)).tolist()
        agreement = 1.0 - len(mismatched) / len(frames) if frames else None
    return {
        "accuracy": accuracy,
        "fps": len(frames) / elapsed if frames and elapsed > 0 else None,
        "frames": len(frames),
        "predictions": predictions,
        "golden_agreement": agreement,
        "golden_mismatches": None if mismatched is None else len(mismatched),
        "mismatched_frames": mismatched,
    }


def _port_name(port) -> str:
    if isinstance(port, (str, os.PathLike)):
        return os.fspath(port)
    return str(getattr(port, "port", None) or getattr(port, "name", None) or "the serial port")


def _open(port, baudrate: int, timeout: float):
    """(serial object, whether we opened it)."""
    if not isinstance(port, (str, os.PathLike)):
        return port, False
    import serial  # pyserial; imported here so the protocol helpers work without it

    try:
        return serial.Serial(os.fspath(port), baudrate=baudrate, timeout=timeout), True
    except (serial.SerialException, OSError, ValueError) as e:
        raise HostError(f"cannot open {port} ({e}): check the board is plugged in, the port name and "
                        "that you may use it (the dialout group)") from e


class _Link:
    """The serial port, read byte by byte, with the counts an error message needs."""

    def __init__(self, serial_port, where: str, frames: int, timeout: float):
        self.port = serial_port
        self.where = where
        self.frames = frames
        self.timeout = timeout
        self.answers = 0      # complete answers read (tag and class)
        self.confirmed = 0    # answers known to be in step: the next frame's tag followed them

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def flush(self) -> None:
        self.port.flush()

    def read_byte(self, what: str) -> int:
        data = self.port.read(1)
        if not data:
            raise HostError(f"no answer from the board on {self.where} after {self.answers} of {self.frames} "
                            f"answers (waited {self.timeout:g} s for {what}): check that the bitstream is "
                            "loaded and the baud rate matches")
        return data[0]

    def out_of_step(self, detail: str) -> HostError:
        return HostError(f"the board's answers on {self.where} are out of step ({detail}) after "
                         f"{self.confirmed} of {self.frames} answers confirmed: a byte was lost, duplicated "
                         "or added on the line; check the cable and the baud rate, then run again")

    def _read_within(self, seconds: float) -> bytes:
        saved = self.port.timeout
        self.port.timeout = seconds
        try:
            return self.port.read(1)
        finally:
            self.port.timeout = saved

    def drain(self) -> None:
        """Drop what is on the line before the first frame: answers to frames a run that was stopped
        left in flight would otherwise be taken for this run's first answers."""
        self.port.reset_input_buffer()
        for _ in range(DRAIN_LIMIT):
            if not self._read_within(QUIET_SECONDS):
                return
        raise HostError(f"the board on {self.where} keeps sending without being asked: check the port is "
                        "the board's UART and the bitstream is an xnorflow board top")

    def check_quiet_after_last(self, baudrate: int) -> None:
        """The last answer has no next tag to confirm it: nothing more may follow it."""
        extra = self._read_within(QUIET_SECONDS + 20 * 10 / baudrate)
        if extra:
            raise self.out_of_step(f"byte 0x{extra[0]:02x} after the last answer")
        self.confirmed = self.answers


def _exchange(link: _Link, frames: list[bytes], n_classes: int) -> list[int]:
    """Send frames keeping FRAMES_IN_FLIGHT unanswered; read and check one (tag, class) per frame.

    The first tag says where the board's frame counter stands; every later one must count up by one
    (modulo TAG_MODULUS). A class byte where a tag is due, a tag where a class is due, or a tag out of
    sequence is a lost, duplicated or stray byte: the run stops there rather than misalign.
    """
    predictions: list[int] = []
    sent = 0
    expected = None
    while len(predictions) < len(frames):
        while sent < len(frames) and sent - len(predictions) < FRAMES_IN_FLIGHT:
            link.write(frames[sent])
            sent += 1
        link.flush()
        i = len(predictions)
        tag = link.read_byte(f"the tag of frame {i}")
        if not protocol.is_tag(tag):
            raise link.out_of_step(f"byte 0x{tag:02x} where the tag of frame {i} was due")
        count = tag & ~protocol.TAG_MARK
        if expected is not None and count != expected:
            raise link.out_of_step(f"tag 0x{tag:02x} where 0x{protocol.tag(expected):02x} (frame {i}) was due")
        link.confirmed = i
        expected = (count + 1) % protocol.TAG_MODULUS
        class_index = link.read_byte(f"the class of frame {i}")
        if protocol.is_tag(class_index):
            raise link.out_of_step(f"tag 0x{class_index:02x} where the class of frame {i} was due")
        if class_index >= n_classes:
            raise HostError(f"the board on {link.where} answered class {class_index} for frame {i} but the "
                            f"network has {n_classes} classes: a byte corrupted on the line, or a bitstream built "
                            "from another network")
        predictions.append(class_index)
        link.answers = len(predictions)
    return predictions


# --- a software board on a pty -------------------------------------------------------------------
class BoardModel:
    """Answers the board protocol with the golden model, on a pseudo-terminal served by a thread.

    Use as a context manager; ``port`` is the device path to open with pyserial::

        with BoardModel(spec) as board:
            run_on_board(board.port, spec, inputs)

    ``first_count`` is where its frame counter starts (a board answering its first run starts at 0).
    Tests make faulty boards by overriding `reply` (change, add or drop bytes; None hangs up).
    """

    def __init__(self, spec: NetworkSpec, first_count: int = 0):
        spec.validate()
        self.spec = spec
        self.frame_bytes = beats_per_frame(spec.input_bits, BYTE_BITS)
        self.frames_answered = 0
        self.count = first_count
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
        self.hang_up()
        os.close(self._slave)   # held open until now so the master never sees a hang-up

    @property
    def line_baud(self) -> int | None:
        """The baud rate the host set on the line (the pty's speed), None if not a standard rate."""
        speed = termios.tcgetattr(self._slave)[5]
        rates = {getattr(termios, name): int(name[1:]) for name in dir(termios) if re.fullmatch(r"B\d+", name)}
        return rates.get(speed)

    def hang_up(self) -> None:
        """Close the board's end of the line, as a board unplugged: the host's port fails."""
        if self._master is not None:
            os.close(self._master)
            self._master = None

    def answer(self, frame: bytes) -> int:
        """The class the board gives for one frame's bytes."""
        bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8), count=self.spec.input_bits,
                             bitorder="little")
        return int(execute(self.spec, bits[None, :]).predictions[0])

    def reply(self, frame: bytes) -> bytes | None:
        """The bytes the board sends for one frame, its tag and class; None hangs up instead."""
        data = protocol.answer(self.count, self.answer(frame))
        self.count += 1
        return data

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
                data = self.reply(frame)
                if data is None:
                    self.hang_up()
                    return
                self.frames_answered += 1   # counted before the host can see the answer
                os.write(self._master, data)


__all__ = ["DEFAULT_BAUD", "BoardModel", "HostError", "load_spec", "pack_frames", "run_on_board"]
