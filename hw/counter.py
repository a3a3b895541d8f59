"""A wrapping counter whose first/last flags are registers of their own.

Comparing a counter with its last value costs two LUT levels on a LUT4 FPGA for a 6-bit count;
those levels sat in front of every stream handshake that used them (an engine's issue, a gearbox's
frame end). Stepping the flags with the counter moves the compare onto the counter's own update.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, Value


@dataclass(frozen=True)
class Counter:
    value: Signal      # 0 .. length - 1
    is_first: Signal   # value == 0, registered
    is_last: Signal    # value == length - 1, registered
    stepped_is_last: Value   # what is_last becomes when the counter steps (combinational)


def wrapping_counter(m: Module, length: int, step: Value, name: str) -> Counter:
    """Counts 0, 1, ..., length - 1, 0, ... advancing on ``step``."""
    value = Signal(range(length), name=name)
    is_first = Signal(name=f"{name}_first", init=1)
    is_last = Signal(name=f"{name}_last", init=length == 1)
    stepped_is_last = Mux(is_last, length == 1, value == length - 2)
    with m.If(step):
        m.d.sync += [
            value.eq(Mux(is_last, 0, value + 1)),
            is_first.eq(is_last),
            is_last.eq(stepped_is_last),
        ]
    return Counter(value, is_first, is_last, stepped_is_last)
