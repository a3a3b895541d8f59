"""Fitting a network to a board: where each memory lives, whether the design fits, which folding to use.

All of this runs before any RTL is written, so a design that cannot fit is refused in one line that
names what overflows, by how much, and what would fit instead.
"""
from __future__ import annotations

import itertools
from dataclasses import replace

from xnorflow.hw.spec import NetworkSpec

from .analysis import estimate_resources
from .model import BnnModel, CompileError
from .passes import SetFolding, lower_to_spec, slowest_cycles

# Leave room for the estimate's error, the UART block and routing: nextpnr struggles past ~80%.
LUT_BUDGET_SHARE = 0.75


# Past this many layers the exhaustive placement search (4 ** layers estimates) gives way to a greedy one.
EXHAUSTIVE_PLACEMENT_LAYERS = 6


def place_memories(spec: NetworkSpec, family: str, block_budget: int | None = None) -> NetworkSpec:
    """Decide block RAM or logic for every layer's weight banks and input buffer.

    The RTL passes the choice to Yosys as ram_style/rom_style, so synthesis and the estimate agree
    on block counts. Among all placements whose blocks fit ``block_budget``, the one with the fewest
    estimated logic cells wins: weights in logic cost about 1/16 cell per bit, an input buffer about
    2 cells per bit (measured, compiler/analysis.py), so buffers are worth a block long before weights.
    """
    layers = list(spec.layers)
    options = [("block", "block"), ("block", "logic"), ("logic", "block"), ("logic", "logic")]

    def placed(choice):
        return replace(spec, layers=tuple(replace(layer, weight_style=w, buffer_style=b)
                                          for layer, (w, b) in zip(layers, choice)))

    def cost(candidate):
        estimate = estimate_resources(candidate, family)
        over = block_budget is not None and estimate["brams"] > block_budget
        return (over, estimate["luts"] if not over else estimate["brams"])

    if len(layers) <= EXHAUSTIVE_PLACEMENT_LAYERS:
        candidates = (placed(choice) for choice in itertools.product(options, repeat=len(layers)))
        return min(candidates, key=cost)
    # Greedy: start all in blocks, then move out one layer's group at a time where it helps most.
    choice = [("block", "block")] * len(layers)
    while True:
        current = cost(placed(choice))
        moves = [choice[:i] + [option] + choice[i + 1:] for i in range(len(layers)) for option in options]
        best = min(moves, key=lambda c: cost(placed(c)))
        if cost(placed(best)) >= current:
            return placed(choice)
        choice = best


def overflow(spec: NetworkSpec, board) -> list[str]:
    """What does not fit the board, as phrases like 'block RAM 34 of 30'; empty when it fits."""
    estimate = estimate_resources(spec, board.family)
    problems = []
    if estimate["weight_bits"] > board.bram_bits:
        problems.append(f"weights {estimate['weight_bits'] / 1024:,.0f} Kbit of the {board.bram_bits / 1024:,.0f} Kbit "
                        f"of block RAM")
    lut_budget = int(board.luts * LUT_BUDGET_SHARE)
    if estimate["brams"] > board.bram_blocks:
        problems.append(f"block RAM {estimate['brams']} of {board.bram_blocks} blocks")
    if estimate["luts"] > lut_budget:
        problems.append(f"about {estimate['luts']} LUTs of the {lut_budget} usable "
                        f"({LUT_BUDGET_SHARE:.0%} of {board.luts})")
    return problems


def lower_for_board(model: BnnModel, board) -> NetworkSpec:
    return place_memories(lower_to_spec(model), board.family, board.bram_blocks)


def fits(model: BnnModel, board) -> bool:
    return not overflow(lower_for_board(model, board), board)


def fastest_fitting_target(model: BnnModel, board) -> int | None:
    """The smallest cycles-per-frame target whose cheapest folding fits the board (None: nothing fits).

    Fewer cycles need more parallel lanes and memory banks, so fitting is (close to) monotone in the
    target; a binary search over it finds the fastest design that fits.
    """
    lo, hi = 1, slowest_cycles(model)
    if not fits(SetFolding(target_cycles=hi)(model), board):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(SetFolding(target_cycles=mid)(model), board):
            hi = mid
        else:
            lo = mid + 1
    return lo


def smallest_board_that_fits(model: BnnModel, too_small) -> str | None:
    """The board with the fewest LUTs, bigger than ``too_small``, that takes the model fully folded."""
    from xnorflow.boards.registry import BOARDS

    folded = SetFolding(target_cycles=slowest_cycles(model))(model)
    for board in sorted(BOARDS.values(), key=lambda b: (b.luts, b.bram_bits)):
        if board.luts > too_small.luts and fits(folded, board):
            return board.name
    return None


def fold_for_board(model: BnnModel, board, fps: float | None = None,
                   folding: list[tuple[int, int]] | None = None) -> tuple[BnnModel, str]:
    """Fold the model by hand, to an fps target at the board's clock, or as fast as fits the board.

    Returns the folded model and a sentence saying how the folding was chosen.
    """
    clock = board.clock_hz
    if folding is not None:
        return SetFolding(folding=folding)(model), "folding given by hand"
    best = fastest_fitting_target(model, board)
    if best is None:
        spec = lower_for_board(SetFolding(target_cycles=slowest_cycles(model))(model), board)
        bigger = smallest_board_that_fits(model, board)
        advice = f"choose a bigger board ({bigger} fits it)" if bigger else "no supported board fits it: choose a smaller arch"
        raise CompileError(f"the network does not fit {board.name} even fully folded "
                           f"({'; '.join(overflow(spec, board))}): {advice}")
    if fps is None:
        return SetFolding(target_cycles=best)(model), (
            f"the fastest folding that fits {board.name}: {best} cycles per frame")
    if fps <= 0:
        raise CompileError(f"--fps {fps}: give a positive number of frames per second")
    target = int(clock // fps)
    if target < 1 or target < best:
        best_fps = clock / best
        raise CompileError(f"{fps:,.0f} frames/s needs at most {max(target, 0)} cycles per frame at "
                           f"{clock / 1e6:g} MHz, but the fastest folding that fits {board.name} takes "
                           f"{best} ({best_fps:,.0f} frames/s): lower --fps or choose a bigger board")
    return SetFolding(target_cycles=target)(model), (
        f"the cheapest folding reaching {fps:,.0f} frames/s at {clock / 1e6:g} MHz: "
        f"at most {target} cycles per frame")
