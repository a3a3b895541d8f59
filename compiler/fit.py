"""Fitting a network to a board: where each memory lives, whether the design fits, which folding to use.

All of this runs before any RTL is written, so a design that cannot fit is refused in one line that
names what overflows, by how much, and what would fit instead.
"""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from xnorflow.boards.family import per_family
from xnorflow.hw.adapters import adapter_kind, adapter_terms, landing_shifter_inputs
from xnorflow.hw.ops import op_for
from xnorflow.hw.spec import LayerSpec, NetworkSpec

from .analysis import (
    BLOCK_RAMS,
    HOST_BEAT_BITS,
    LOGIC_MODELS,
    best_weight_packing,
    estimate_resources,
    layer_estimate,
    logic_estimate,
)
from .model import BnnModel, CompileError
from .passes import SetFolding, lower_to_spec, slowest_cycles

# The share of a device's LUTs a design may take: room for the estimate's error and for routing, so
# place and route takes minutes (boards/family.py; the builds behind it: bench/records.md, "LUT share").
LUT_BUDGET_SHARE = per_family("lut_budget_share")


# Past this many layers the exhaustive placement search (4 ** layers estimates) gives way to a greedy one.
EXHAUSTIVE_PLACEMENT_LAYERS = 6


# Weight ROMs deeper than this stay out of logic. A LUT4 holds 16 words of one bit, so a deeper ROM
# needs a multiplexer tree per bit on top of its LUTs; the estimate of such ROMs was 30% low on LFC
# (41k LUT4s + 14k PFUMX in Yosys against 28.6k estimated) and the designs did not route on the 85F.
MAX_LOGIC_ROM_DEPTH = 32

PLACEMENTS = (("block", "block"), ("block", "logic"), ("logic", "block"), ("logic", "logic"))


def placement_options(layer: LayerSpec) -> list[tuple[str, str]]:
    """(weight_style, buffer_style) pairs allowed for a layer: weights in logic only when shallow."""
    weights = [memory for memory in op_for(layer).memories() if memory["role"] == "weights"]
    shallow = all(memory["depth"] <= MAX_LOGIC_ROM_DEPTH for memory in weights)
    return [(w, b) for w, b in PLACEMENTS if w == "block" or shallow]


def placed_layer(layer: LayerSpec, family: str, weight_style: str, buffer_style: str) -> LayerSpec:
    """``layer`` with its memories placed: weights in block RAM packed to the fewest blocks
    (`best_weight_packing`), in logic one memory per PE."""
    placed = replace(layer, weight_style=weight_style, buffer_style=buffer_style, weight_packing=1)
    if weight_style == "block" and layer.weights is not None:
        placed = replace(placed, weight_packing=best_weight_packing(placed, family))
    return placed


def place_memories(spec: NetworkSpec, family: str, block_budget: int | None = None) -> NetworkSpec:
    """Decide block RAM or logic for every layer's weight banks and input buffer, and the packing
    of weights in block RAM (`placed_layer`).

    The RTL passes the choice to Yosys as ram_style/rom_style, so synthesis and the estimate agree
    on block counts. Among all placements whose blocks fit ``block_budget``, the one with the fewest
    estimated logic cells wins: weights in logic cost about 1/16 cell per bit, an input buffer about
    2 cells per bit (measured, compiler/analysis.py), so buffers are worth a block long before weights.
    """
    layers = list(spec.layers)
    options = [placement_options(layer) for layer in layers]

    def placed(choice):
        return replace(spec, layers=tuple(placed_layer(layer, family, w, b) for layer, (w, b) in zip(layers, choice)))

    def cost(candidate):
        estimate = estimate_resources(candidate, family)
        over = block_budget is not None and estimate["brams"] > block_budget
        return (over, estimate["luts"], estimate["brams"]) if not over else (over, estimate["brams"])

    if len(layers) <= EXHAUSTIVE_PLACEMENT_LAYERS:
        candidates = (placed(choice) for choice in itertools.product(*options))
        return min(candidates, key=cost)
    # Greedy: start all in blocks, then move out one layer's group at a time where it helps most.
    choice = [("block", "block")] * len(layers)
    while True:
        current = cost(placed(choice))
        moves = [choice[:i] + [option] + choice[i + 1:] for i in range(len(layers)) for option in options[i]]
        best = min(moves, key=lambda c: cost(placed(c)))
        if cost(placed(best)) >= current:
            return placed(choice)
        choice = best


# --- folding for a board ------------------------------------------------------------------------
def block_widths(family: str) -> list[int]:
    """The widths of a ``family``'s memory block shapes (at least 4 bits) that a layer's SIMD is worth
    rounding up to, so weight banks fill blocks instead of spilling a few bits into another block
    (a 24-bit bank costs two 16-bit EBRs on iCE40, a 16-bit one costs one)."""
    return sorted({w for w, _ in BLOCK_RAMS[family].shapes if w >= 4})


def folding_candidates(n_in: int, n_out: int, target_cycles: int, family: str) -> list[tuple[int, int]]:
    """(PE, SIMD) pairs worth considering for a dense layer of these sizes within ``target_cycles``
    (`DenseOp.folding_candidates`; `cheapest_design` asks each layer's own op)."""
    return op_for(LayerSpec(n_in, n_out, None, None)).folding_candidates(target_cycles, block_widths(family))


def _pareto_indices(blocks: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Indices of the (blocks, luts) pairs that no other beats on both, by blocks ascending."""
    order = np.lexsort((luts, blocks))
    ordered = luts[order]
    best_before = np.minimum.accumulate(np.concatenate(([np.iinfo(np.int64).max], ordered[:-1])))
    return order[ordered < best_before]


# Inputs of a gearbox's landing shifter (hw/adapters.py `landing_shifter_inputs`). Alone on the
# ECP5-85F, gearboxes of 315 to 4.6k (7 -> 19, 8 -> 147, 43 -> 32 bits) reached 119 to 155 MHz and one
# of 18.5k (256 -> 29) 69.9 MHz (bench/records.md, "Gearbox timing"): the fit chooses none past this
# many, as one would hold the whole network's clock down.
MAX_GEARBOX_SHIFTER_INPUTS = 8192

# The widest weight word one PE reads per cycle, in blocks of the family's widest mode. SFC's designs
# with 392-bit PE words on the 85F, (6,392)... and (11,392)..., placed at 76-82 and 91 MHz and took
# 20-35+ minutes to route; every design built here with PE words of at most 256 bits (LFC's, SFC's at
# --lut-share 0.5 with (6,256)) routed in 6-25 minutes (bench/records.md, "PE word width").
MAX_PE_WEIGHT_BLOCKS = 8


def simd_limit(family: str) -> int:
    """The widest SIMD the fit chooses on ``family`` (MAX_PE_WEIGHT_BLOCKS blocks at their widest)."""
    return MAX_PE_WEIGHT_BLOCKS * max(width for width, _ in BLOCK_RAMS[family].shapes)


def gearbox_meets_timing(in_width: int, out_width: int, n: int) -> bool:
    """Whether the width adapter from ``in_width``-bit beats to ``out_width``-bit ones (frames of
    ``n`` bits) is one the fit may choose: anything but a gearbox past MAX_GEARBOX_SHIFTER_INPUTS."""
    if adapter_kind(in_width, out_width, n) != "gearbox":
        return True
    return landing_shifter_inputs(in_width, out_width) <= MAX_GEARBOX_SHIFTER_INPUTS


def cheapest_design(spec: NetworkSpec, family: str, target_cycles: int, block_budget: int,
                    estimates: dict | None = None) -> NetworkSpec | None:
    """The folding, memory placement and weight packing with the fewest estimated LUTs whose II is at most
    ``target_cycles`` and whose blocks fit ``block_budget``; None when no design does.

    Blocks are the scarce resource shared by the layers, so this is a multiple-choice knapsack over
    each layer's (blocks, LUTs) Pareto front, solved exactly by dynamic programming over blocks used.
    The width adapter feeding a layer depends on its choice and on the previous layer's output width,
    so each layer's options are kept per pair of beat widths (in, out), the front of partial designs per
    output width of its last layer, and each step adds the adapter's LUTs: exact for the estimate up to
    its rounding. Adapters that `gearbox_meets_timing` refuses are never chosen, nor a SIMD past
    `simd_limit` unless the layer has no other option within the target.

    ``estimates``, when given, keeps each layer option's estimate across calls on the same ``spec``
    (the fit's search over targets asks for the same options again).
    """
    estimates = {} if estimates is None else estimates
    widest_simd = simd_limit(family)
    fronts = []     # per layer: its options, and their groups of equal beat widths
    for index, layer in enumerate(spec.layers):
        # A layer's options are costed with its ops (the last layer's include the label-select).
        by_widths: dict[tuple[int, int, int], list] = {}
        candidates = op_for(layer).folding_candidates(target_cycles, block_widths(family))
        for pe, simd in [c for c in candidates if c[1] <= widest_simd] or candidates:
            folded = replace(layer, pe=pe, simd=simd)
            for weight_style, buffer_style in placement_options(folded):
                key = (index, pe, simd, weight_style, buffer_style)
                if key not in estimates:
                    candidate = placed_layer(folded, family, weight_style, buffer_style)
                    estimate = layer_estimate(candidate, family, output_kind=spec.output_kind)
                    op = op_for(candidate)
                    estimates[key] = ((op.in_width, op.in_unit, op.out_width), estimate["brams"], estimate["luts"], candidate)
                widths, brams, luts, candidate = estimates[key]
                by_widths.setdefault(widths, []).append((brams, luts, candidate))
        # The adapters around a layer depend only on its beat widths: a front per group of equal widths.
        options, groups = [], []
        for widths, same in by_widths.items():
            blocks, luts = (np.array(column, dtype=np.int64) for column in zip(*((b, l) for b, l, _ in same)))
            kept = _pareto_indices(blocks, luts)
            groups.append((widths, len(options), blocks[kept], luts[kept]))
            options += [same[k][2] for k in kept]
        fronts.append((options, groups))

    # Partial designs as a Pareto front per width of the beats they emit: arrays of blocks and LUTs,
    # with, per layer, where each entry came from (the previous front's width and entry, the option).
    designs = {HOST_BEAT_BITS: (np.zeros(1, np.int64), np.zeros(1, np.int64))}
    came_from = []
    for options, groups in fronts:
        parts: dict[int, list] = {}
        for width, (blocks, luts) in designs.items():
            for (in_width, in_unit, out_width), first, group_blocks, group_luts in groups:
                if not gearbox_meets_timing(width, in_width, in_unit):
                    continue
                adapter = logic_estimate(adapter_terms(width, in_width, in_unit), LOGIC_MODELS[family])
                total_blocks = blocks[:, None] + group_blocks[None, :]
                previous, option = np.nonzero(total_blocks <= block_budget)
                parts.setdefault(out_width, []).append(
                    (total_blocks[previous, option], luts[previous] + group_luts[option] + adapter,
                     np.full(previous.size, width), previous, first + option))
        designs, origins = {}, {}
        for width, pieces in parts.items():
            blocks, luts, *origin = (np.concatenate(column) for column in zip(*pieces, strict=True))
            if not blocks.size:
                continue
            kept = _pareto_indices(blocks, luts)
            designs[width] = (blocks[kept], luts[kept])
            origins[width] = tuple(column[kept] for column in origin)
        if not designs:
            return None
        came_from.append(origins)
    width, index = min(((w, int(np.argmin(luts))) for w, (_, luts) in designs.items()),
                       key=lambda wi: designs[wi[0]][1][wi[1]])
    chosen = []
    for (options, _), origins in zip(reversed(fronts), reversed(came_from), strict=True):
        previous_width, previous_index, option = (int(column[index]) for column in origins[width])
        chosen.append(options[option])
        width, index = previous_width, previous_index
    return replace(spec, layers=tuple(reversed(chosen)))


def lut_budget_share(board, lut_share: float | None = None) -> float:
    """The share of the board's LUTs a design may take: ``lut_share`` when given (the user trades
    place-and-route time for speed), else the family's LUT_BUDGET_SHARE."""
    if lut_share is None:
        return LUT_BUDGET_SHARE[board.family]
    if not 0 < lut_share <= 1:
        raise CompileError(f"--lut-share {lut_share:g}: give the share of the board's LUTs the design may "
                           f"take, above 0 and at most 1 (default {LUT_BUDGET_SHARE[board.family]:g} on {board.family})")
    return float(lut_share)


def overflow(spec: NetworkSpec, board, lut_share: float | None = None) -> list[str]:
    """What does not fit the board, as phrases like 'block RAM 34 of 30'; empty when it fits."""
    estimate = estimate_resources(spec, board.family)
    problems = []
    if estimate["weight_bits"] > board.bram_bits:
        problems.append(f"weights {estimate['weight_bits'] / 1024:,.0f} Kbit of the {board.bram_bits / 1024:,.0f} Kbit "
                        f"of block RAM")
    share = lut_budget_share(board, lut_share)
    lut_budget = int(board.luts * share)
    if estimate["brams"] > board.bram_blocks:
        problems.append(f"block RAM {estimate['brams']} of {board.bram_blocks} blocks")
    if estimate["luts"] > lut_budget:
        problems.append(f"about {estimate['luts']} LUTs of the {lut_budget} usable "
                        f"({share:.0%} of {board.luts})")
    return problems


# Families whose block RAM outputs are registered before the XNOR (LayerSpec.register_weights): on
# ECP5 the flip-flops are plentiful and the DP16KD's unregistered output starts the longest path.
REGISTER_WEIGHTS = per_family("register_weights")


def with_weight_registers(spec: NetworkSpec, board) -> NetworkSpec:
    """``spec`` with the weight registers the board's family gets (REGISTER_WEIGHTS)."""
    registered = REGISTER_WEIGHTS[board.family]
    return replace(spec, layers=tuple(replace(layer, register_weights=registered) for layer in spec.layers))


def place_for_board(spec: NetworkSpec, board) -> NetworkSpec:
    """A folded spec as the compiler builds it for ``board``: memories placed, weight registers set."""
    return with_weight_registers(place_memories(spec, board.family, board.bram_blocks), board)


def lower_for_board(model: BnnModel, board) -> NetworkSpec:
    return place_for_board(lower_to_spec(model), board)


def fits(model: BnnModel, board, lut_share: float | None = None) -> bool:
    return not overflow(lower_for_board(model, board), board, lut_share)


def aligned_simd(layer: LayerSpec, in_width: int) -> int | None:
    """The SIMD that lets ``in_width``-bit beats reach ``layer`` through a deserializer instead of a
    shifting gearbox (hw/adapters.py: `adapter_kind`): its SIMD rounded up to a multiple of
    ``in_width``; None when no SIMD does (a dense layer only: a conv's input is pixels)."""
    if layer.kind != "dense":
        return None
    simd = min(layer.n_in, -(-layer.simd // in_width) * in_width)
    return simd if adapter_kind(in_width, simd, layer.n_in) != "gearbox" else None


def align_adapters(spec: NetworkSpec, family: str, block_budget: int) -> NetworkSpec:
    """``spec`` with each dense layer's SIMD rounded up to a multiple of the beats it receives where
    that lowers the estimated LUTs within ``block_budget``: a deserializer has no shifter, a gearbox
    one per bit (`cheapest_design` costs adapters, but only among the ops' folding candidates, which
    need not hold the aligned SIMD). A wider SIMD never adds cycles."""
    for k, layer in enumerate(spec.layers):
        in_width = HOST_BEAT_BITS if k == 0 else op_for(spec.layers[k - 1]).out_width
        simd = aligned_simd(layer, in_width)
        if simd is None or simd == layer.simd:
            continue
        candidate = placed_layer(replace(layer, simd=simd), family, layer.weight_style, layer.buffer_style)
        aligned = replace(spec, layers=spec.layers[:k] + (candidate,) + spec.layers[k + 1:])
        before, after = estimate_resources(spec, family), estimate_resources(aligned, family)
        if after["luts"] < before["luts"] and after["brams"] <= block_budget:
            spec = aligned
    return spec


def design_for_board(model: BnnModel, board, target_cycles: int, lut_share: float | None = None,
                     estimates: dict | None = None) -> NetworkSpec | None:
    """The cheapest design (folding, memory placement and packing, adapters aligned) within
    ``target_cycles`` that fits the board, checked with the full estimate; None when there is none."""
    spec = lower_to_spec(model)
    top_blocks = estimate_resources(spec, board.family)["top"]["brams"]
    design = cheapest_design(spec, board.family, target_cycles, board.bram_blocks - top_blocks, estimates)
    if design is None:
        return None
    design = align_adapters(design, board.family, board.bram_blocks)
    # Checked as built: with the weight registers `design_for_compile` adds.
    if overflow(with_weight_registers(design, board), board, lut_share):
        return None
    return design


def fastest_fitting_design(model: BnnModel, board, lut_share: float | None = None) -> NetworkSpec | None:
    """The design of the smallest cycles-per-frame target that fits the board (None: nothing fits).

    Fewer cycles need more parallel lanes and memory banks, so fitting is (close to) monotone in the
    target; a binary search over it finds the fastest design that fits.
    """
    lo, hi = 1, slowest_cycles(model)
    estimates: dict = {}    # each layer option's estimate, shared by the targets tried
    fastest = design_for_board(model, board, hi, lut_share, estimates)
    if fastest is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        design = design_for_board(model, board, mid, lut_share, estimates)
        if design is not None:
            hi, fastest = mid, design
        else:
            lo = mid + 1
    return fastest


def fastest_fitting_target(model: BnnModel, board, lut_share: float | None = None) -> int | None:
    """The fewest cycles per frame of a design that fits the board (None: nothing fits)."""
    design = fastest_fitting_design(model, board, lut_share)
    return None if design is None else design.analytic_cycles_per_frame


def smallest_board_that_fits(model: BnnModel, too_small) -> str | None:
    """The board with the fewest LUTs, bigger than ``too_small``, that takes the model fully folded."""
    from xnorflow.boards.registry import BOARDS

    folded = SetFolding(target_cycles=slowest_cycles(model))(model)
    for board in sorted(BOARDS.values(), key=lambda b: (b.luts, b.bram_bits)):
        if board.luts > too_small.luts and fits(folded, board):
            return board.name
    return None


def expected_clock_hz(board) -> float:
    """The clock a board's bitstream is first built at: its PLL's first try (synthesize_at_best_clock),
    or the oscillator on a board without one. An --fps target is turned into cycles at this clock."""
    from xnorflow.boards.pll import plan_pll

    if board.pll_first_try_hz is None:
        return board.clock_hz
    return plan_pll(board.family, board.clock_hz, board.pll_first_try_hz).f_out_hz


def design_for_compile(model: BnnModel, board, fps: float | None = None,
                       folding: list[tuple[int, int]] | None = None,
                       lut_share: float | None = None) -> tuple[NetworkSpec, str]:
    """The design compile builds for ``board``: folded by hand (memories placed by `place_for_board`),
    to an fps target at the board's clock, or as fast as fits the board (within ``lut_share`` of its
    LUTs, default `LUT_BUDGET_SHARE`). A design the fit chose keeps the memory placement the fit
    checked it with, so what fitted is what is built.

    Returns the spec and a sentence saying how the folding was chosen.
    """
    clock = expected_clock_hz(board)
    if folding is not None:
        return lower_for_board(SetFolding(folding=folding)(model), board), "folding given by hand"
    share = lut_budget_share(board, lut_share)
    fastest = fastest_fitting_design(model, board, share)
    if fastest is None:
        spec = lower_for_board(SetFolding(target_cycles=slowest_cycles(model))(model), board)
        problems = overflow(spec, board, share)
        if not problems:    # the fully folded design fits, but no design the fit's rules allow does
            raise CompileError(f"the fit found no design for {board.name} within its rules (width adapters "
                               f"and weight words it can route): give a folding by hand with --folding")
        bigger = smallest_board_that_fits(model, board)
        advice = f"choose a bigger board ({bigger} fits it)" if bigger else "no supported board fits it: choose a smaller arch"
        raise CompileError(f"the network does not fit {board.name} even fully folded ({'; '.join(problems)}): {advice}")
    best = fastest.analytic_cycles_per_frame
    if fps is None:
        return with_weight_registers(fastest, board), (
            f"the fastest folding that fits {board.name}: {best} cycles per frame")
    if fps <= 0:
        raise CompileError(f"--fps {fps}: give a positive number of frames per second")
    target = int(clock // fps)
    if target < 1 or target < best:
        best_fps = clock / best
        raise CompileError(f"{fps:,.0f} frames/s needs at most {max(target, 0)} cycles per frame at "
                           f"{clock / 1e6:g} MHz, but the fastest folding that fits {board.name} takes "
                           f"{best} ({best_fps:,.0f} frames/s within {share:.0%} of its LUTs): lower --fps, "
                           "allow more LUTs with --lut-share (longer place and route) or choose a bigger board")
    # Fitting is close to, not exactly, monotone in the target: the fastest design reaches it too.
    design = design_for_board(model, board, target, share) or fastest
    return with_weight_registers(design, board), (
        f"the cheapest folding reaching {fps:,.0f} frames/s at {clock / 1e6:g} MHz: "
        f"at most {target} cycles per frame")
