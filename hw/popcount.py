"""Combinational arithmetic for the XNOR-popcount datapath."""
from __future__ import annotations

from amaranth.hdl import Mux, Value


def popcount(bits: Value) -> Value:
    """Number of 1-bits of ``bits`` as a balanced adder tree.

    A balanced tree keeps the logic depth at ceil(log2(width)) adders instead of the width-long
    chain a Python ``sum()`` would build, which is what limits Fmax in a wide SIMD engine.
    Each level's adders are one bit wider than the level below, so the result is exactly wide
    enough to hold ``len(bits)``.
    """
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        raise ValueError("popcount of a zero-width value: give it at least one bit")
    while len(terms) > 1:
        paired = [a + b for a, b in zip(terms[0::2], terms[1::2])]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


# Lanes per registered partial popcount, and partial counts per registered sum. A popcount of 4
# XNORed lanes is two LUT4 levels; 8 took four plus a carry chain and, after the input word's
# fan-out, set the iCE40UP5K's Fmax (TFC/Fashion-MNIST at II 147: 41.3 MHz with 8, 44.9 with 4).
POPCOUNT_GROUP = 4


def group_slices(width: int, group: int = POPCOUNT_GROUP) -> list[tuple[int, int]]:
    """[start, stop) of each group of ``group`` lanes in a ``width``-lane vector (the last may be short)."""
    return [(start, min(start + group, width)) for start in range(0, width, group)]


def argmax_level(nodes: list[tuple]) -> list[tuple]:
    """One level of an argmax tree: (value, position) pairs merged two by two. The right (later)
    candidate wins only when strictly greater, so among equal values the earliest survives."""
    merged = []
    for (lo_val, lo_pos), (hi_val, hi_pos) in zip(nodes[0::2], nodes[1::2]):
        hi_wins = hi_val > lo_val
        merged.append((Mux(hi_wins, hi_val, lo_val), Mux(hi_wins, hi_pos, lo_pos)))
    if len(nodes) % 2:
        merged.append(nodes[-1])
    return merged


def count_levels(width: int, group: int = POPCOUNT_GROUP, first_group: int | None = None) -> list[list[int]]:
    """The registered levels of a ``width``-lane popcount, as the largest value each register holds:
    first one per group of ``first_group`` lanes (default ``group``), then sums of up to ``group`` of
    those, until one is left."""
    level = [stop - start for start, stop in group_slices(width, first_group or group)]
    levels = [level]
    while len(level) > 1:
        level = [sum(level[start:stop]) for start, stop in group_slices(len(level), group)]
        levels.append(level)
    return levels

