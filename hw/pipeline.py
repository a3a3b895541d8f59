"""Building blocks shared by the engines: stage registers and the credit-based output queue.

Every engine's datapath moves every cycle and never stalls (see hw/mvtu.py): instead it issues a
new *unit* of work only when its output queue has a slot free for the unit's result. The queue
below is that slot accounting plus the storage; an op that ends a pipeline (a hidden MVTU, the
label-select after the last one) owns one.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value


def register(m: Module, value, name: str) -> Signal:
    """``value`` one cycle later."""
    reg = Signal.like(Value.cast(value), name=name)
    m.d.sync += reg.eq(value)
    return reg


def register_stage(m: Module, name: str, source: dict) -> dict:
    """Every value of ``source`` one cycle later, as registers named ``{name}_{key}``."""
    return {key: register(m, value, f"{name}_{key}") for key, value in source.items()}


def output_queue(m: Module, o, depth: int, *, write, data, start, may_start) -> None:
    """A shift-register FIFO of ``depth`` entries driving the stream ``o`` (entry 0 is o.payload).

    ``start`` reserves a slot for a unit that begins issuing; a slot is freed when its entry is
    taken. ``may_start`` is high while a slot is free, so ``write`` always finds room.
    """
    width = len(Value.cast(o.payload))
    entries = [Signal(width, name=f"queue{k}") for k in range(depth)]
    count = Signal(range(depth + 1))
    reserved = Signal(range(depth + 1))
    take = o.valid & o.ready
    m.d.comb += [
        o.valid.eq(count != 0),
        o.payload.eq(entries[0]),
        may_start.eq(reserved != depth),
    ]
    # A written entry lands at count - take. Both outcomes are decoded from registers and
    # ``take`` picks one in the last multiplexer: the consumer's ready (a comparator in the
    # next gearbox) reached every entry through the subtraction and decoder before, the
    # longest path of TFC on the iCE40UP5K (42.3 MHz).
    for k, entry in enumerate(entries):
        above = entries[k + 1] if k + 1 < depth else entry   # the last has nothing above it
        if_taken = Mux(write & (count == k + 1), data, above)
        if_kept = Mux(write & (count == k), data, entry)
        m.d.sync += entry.eq(Mux(take, if_taken, if_kept))
    m.d.sync += [count.eq(count + write - take), reserved.eq(reserved + start - take)]
