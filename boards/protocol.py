"""The bytes of the board protocol, shared by the RTL (`xnorflow.boards.top`) and the host driver
(`xnorflow.boards.host`); plain Python, so the host side imports no HDL.

Host to board, per frame: ceil(input_bits / 8) bytes, element i of the input vector being bit i % 8 of
byte i // 8 (LSB first, the last byte zero-padded).

Board to host, per frame, two bytes:

- the tag, ``TAG_MARK | (n mod TAG_MODULUS)``, n counting the frames the board has answered since it
  was configured (so the first tag a host sees need not be 0x80: a run continues where the last ended);
- the class index, below ``MAX_CLASSES``, so its top bit is clear.

A tag's top bit is set and a class's is not, and consecutive tags count up by one, so a byte lost,
duplicated or added on the line is caught at the next byte the host reads: the answers can never be
silently shifted onto the wrong frames.
"""
from __future__ import annotations

TAG_MARK = 0x80
TAG_BITS = 7
TAG_MODULUS = 1 << TAG_BITS
# The class byte has its top bit clear, so a class index fits in 7 bits.
MAX_CLASSES = TAG_MODULUS
ANSWER_BYTES = 2


def is_tag(byte: int) -> bool:
    return bool(byte & TAG_MARK)


def tag(count: int) -> int:
    """The tag byte of the answer to the board's frame number ``count``."""
    return TAG_MARK | (count % TAG_MODULUS)


def answer(count: int, class_index: int) -> bytes:
    """The two bytes the board sends for its frame number ``count``."""
    if not 0 <= class_index < MAX_CLASSES:
        raise ValueError(f"class index {class_index} does not fit the 7-bit class byte")
    return bytes([tag(count), class_index])


__all__ = ["ANSWER_BYTES", "MAX_CLASSES", "TAG_BITS", "TAG_MARK", "TAG_MODULUS", "answer", "is_tag", "tag"]
