"""Fitting a network to a board: the folding and memory placement chosen before any RTL exists."""

import itertools

import numpy as np
import pytest
from nets import net

from xnorflow.compiler.analysis import estimate_resources
from xnorflow.compiler.fit import (
    MAX_LOGIC_ROM_DEPTH,
    cheapest_design,
    folding_candidates,
    place_memories,
    placement_options,
)
from xnorflow.compiler.passes import cheapest_folding
from xnorflow.hw.spec import LayerSpec, NetworkSpec


def test_candidates_meet_the_target_and_include_block_widths():
    candidates = folding_candidates(784, 64, 150, "ice40")
    assert candidates and all(LayerSpec(784, 64, None, None, pe, simd).cycles <= 150 for pe, simd in candidates)
    assert any(simd % 16 == 0 for _, simd in candidates)            # a bank that fills 16-bit EBRs
    assert cheapest_folding(784, 64, 150) in candidates              # and the fewest-lanes folding


def test_deep_weight_roms_never_go_to_logic():
    deep = LayerSpec(64, 64, None, None, pe=1, simd=1)                # 4096 words deep
    shallow = LayerSpec(64, 64, None, None, pe=16, simd=32)           # 4 x 2 = 8 words deep
    assert deep.neuron_folds * deep.synapse_folds > MAX_LOGIC_ROM_DEPTH
    assert all(w == "block" for w, _ in placement_options(deep))
    assert any(w == "logic" for w, _ in placement_options(shallow))


@pytest.mark.parametrize("family, budget, target", [("ice40", 30, 150), ("ice40", 30, 400), ("ecp5", 208, 60)])
def test_cheapest_design_meets_target_and_blocks(family, budget, target):
    spec = net([784, 64, 64, 64, 10] if family == "ice40" else [784, 256, 256, 256, 10])
    design = cheapest_design(spec, family, target, budget)
    assert design is not None
    assert design.analytic_cycles_per_frame <= target
    assert sum(estimate_resources(design, family)["layers"][k]["brams"] for k in range(len(design.layers))) <= budget
    # Same numbers: the design only changes the schedule and where memories live.
    for before, after in zip(spec.layers, design.layers, strict=True):
        assert np.array_equal(before.weights, after.weights)


def test_cheapest_design_beats_fewest_lanes_when_blocks_are_scarce():
    # TFC on Fashion-MNIST on the UP5K: the fewest-lanes folding at II 150 needs 24-bit banks (two
    # EBRs each) and runs out of the 30 blocks; the block-aware search fills 16-bit banks instead.
    spec = net([784, 64, 64, 64, 10])
    lanes = spec.with_folding([cheapest_folding(l.n_in, l.n_out, 150) for l in spec.layers])
    placed = place_memories(lanes, "ice40", block_budget=30)
    design = cheapest_design(spec, "ice40", 150, 30)
    assert design is not None
    ours = estimate_resources(design, "ice40")
    theirs = estimate_resources(placed, "ice40")
    assert sum(layer["brams"] for layer in ours["layers"]) <= 30
    assert theirs["brams"] > ours["brams"] or ours["luts"] < theirs["luts"]


def test_a_larger_lut_share_admits_a_faster_design_and_a_bad_share_is_refused():
    from xnorflow.boards.registry import get_board
    from xnorflow.compiler.fit import LUT_BUDGET_SHARE, lut_budget_share, overflow, place_for_board
    from xnorflow.compiler.model import CompileError

    board = get_board("ulx3s-85f")
    # SFC at II 48 (the 85F's fastest at half its LUTs): about 41k LUTs, over the default 25%.
    spec = place_for_board(net([784, 256, 256, 256, 10], [(11, 392), (43, 32), (43, 32), (10, 8)]), board)
    assert spec.analytic_cycles_per_frame == 48
    default = overflow(spec, board)
    assert len(default) == 1 and "LUTs" in default[0] and f"{LUT_BUDGET_SHARE['ecp5']:.0%}" in default[0]
    assert overflow(spec, board, lut_share=0.5) == []
    assert lut_budget_share(board) == LUT_BUDGET_SHARE["ecp5"] and lut_budget_share(board, 0.5) == 0.5
    for bad in (0, -0.1, 1.5):
        with pytest.raises(CompileError, match="--lut-share"):
            overflow(spec, board, lut_share=bad)


def scnv_shaped_model(rng):
    """scnv's layer shapes (8 layers: more than the exhaustive placement search takes), random numbers."""
    from xnorflow.compiler.model import BatchNorm, BnnModel, ConvLayer, DenseLayer, MaxPoolLayer
    from xnorflow.compiler.passes import streamline

    def bn(channels):
        return BatchNorm(gamma=rng.normal(size=channels), beta=rng.normal(size=channels), mean=rng.normal(size=channels),
                         var=rng.uniform(0.5, 4, size=channels), eps=1e-5)

    layers, shape = [], (1, 28, 28)
    for item in (32, 32, "pool", 64, 64, "pool"):
        if item == "pool":
            layers.append(MaxPoolLayer(in_shape=shape, size=2, before_bn=False))
        else:
            layers.append(ConvLayer(weights=rng.integers(0, 2, size=(item, 9 * shape[0]), dtype=np.uint8),
                                    in_shape=shape, kernel=3, bn=bn(item)))
        shape = layers[-1].out_shape
    n = int(np.prod(shape))
    layers.append(DenseLayer(weights=rng.integers(0, 2, size=(256, n), dtype=np.uint8), bn=bn(256),
                             is_output=False))
    layers.append(DenseLayer(weights=rng.integers(0, 2, size=(10, 256), dtype=np.uint8), is_output=True))
    return streamline(BnnModel(tuple(layers)))


def test_the_design_the_fit_finds_is_the_design_compile_builds():
    """The fastest fitting design keeps the placement it was checked with (the compiler used to
    re-place its folding by another search and built a design over the LUT budget: scnv, cnv)."""
    from xnorflow.boards.registry import get_board
    from xnorflow.compiler.fit import design_for_compile, fastest_fitting_design, overflow

    board = get_board("ulx3s-85f")
    model = scnv_shaped_model(np.random.default_rng(0))
    spec, reason = design_for_compile(model, board)
    assert overflow(spec, board) == [] and "fastest folding that fits" in reason
    fastest = fastest_fitting_design(model, board)
    assert [(l.pe, l.simd, l.weight_style, l.buffer_style) for l in spec.layers] == \
        [(l.pe, l.simd, l.weight_style, l.buffer_style) for l in fastest.layers]
    assert all(layer.register_weights for layer in spec.layers)       # ECP5: as built


def test_the_fit_packs_weights_into_fewer_blocks():
    # 16 PEs of 24 lanes, 2 x 43 words deep: a 24-bit bank per PE takes a 36 x 512 block each (16);
    # packed, 11 (the fewest PEs per word that gets there: 3, five 72-bit words in two blocks each
    # and one 24-bit word in one; all 16 in one 384-bit word also takes 11).
    from dataclasses import replace

    from xnorflow.compiler.analysis import weight_blocks
    from xnorflow.compiler.fit import placed_layer

    layer = net([1024, 32, 10], [(16, 24), (1, 8)]).layers[0]
    packed = placed_layer(layer, "ecp5", "block", "logic")
    assert weight_blocks(replace(layer, weight_style="block"), "ecp5") == 16
    assert packed.weight_packing == 3 and weight_blocks(packed, "ecp5") == 11
    assert weight_blocks(replace(packed, weight_packing=16), "ecp5") == 11
    assert placed_layer(layer, "ecp5", "logic", "logic").weight_packing == 1
    assert np.array_equal(packed.weights, layer.weights)


def test_adapters_are_aligned_to_deserializers_when_that_saves_logic():
    from xnorflow.compiler.fit import align_adapters, aligned_simd
    from xnorflow.hw.adapters import adapter_kind

    spec = place_memories(net([784, 256, 256, 10], [(8, 98), (4, 30), (1, 32)]), "ecp5", 208)
    assert aligned_simd(spec.layers[1], 8) == 32 and aligned_simd(spec.layers[2], 4) == 32
    aligned = align_adapters(spec, "ecp5", 208)
    # The host's bytes reach 104 = 8 x 13 lanes through a deserializer; 98 needed a shifting gearbox.
    assert [layer.simd for layer in aligned.layers] == [104, 32, 32]
    assert adapter_kind(8, 32, 256) == "deserializer" and adapter_kind(8, 30, 256) == "gearbox"
    assert estimate_resources(aligned, "ecp5")["luts"] < estimate_resources(spec, "ecp5")["luts"]
    assert aligned.analytic_cycles_per_frame <= spec.analytic_cycles_per_frame


def test_memory_bandwidth_gives_each_layers_reads_and_the_bound():
    from xnorflow.compiler.analysis import memory_bandwidth

    spec = place_memories(net([784, 256, 10], [(4, 196), (1, 32)]), "ecp5", 208)
    bandwidth = memory_bandwidth(spec, "ecp5", 208)
    first = bandwidth["layers"][0]
    assert first["weight_bits_per_cycle"] == 4 * 196
    assert first["block_bits_per_cycle"] == 36 * first["weight_blocks"] >= first["weight_bits_per_cycle"]
    assert bandwidth["bound_cycles_per_frame"] == -(-(784 * 256 + 256 * 10) // (208 * 36))
    assert bandwidth["cycles_per_frame"] == spec.analytic_cycles_per_frame


def test_cheapest_design_counts_the_adapters_between_layers_as_a_search_of_every_design_does():
    """The knapsack's answer costs what the cheapest of all designs (every folding and placement of
    every layer, adapters included, slow gearboxes excluded) costs in the full estimate, up to its
    rounding per layer; and it never chooses a gearbox `gearbox_meets_timing` refuses."""
    from dataclasses import replace

    from xnorflow.compiler.analysis import HOST_BEAT_BITS
    from xnorflow.compiler.fit import block_widths, gearbox_meets_timing, placed_layer
    from xnorflow.hw.ops import op_for

    spec = net([64, 24, 10])
    family, target, budget = "ice40", 12, 4

    def adapters_meet_timing(design):
        widths = [HOST_BEAT_BITS] + [op_for(layer).out_width for layer in design.layers[:-1]]
        return all(gearbox_meets_timing(w, op_for(l).in_width, op_for(l).in_unit) for w, l in zip(widths, design.layers))

    choices = []
    for layer in spec.layers:
        options = []
        for pe, simd in op_for(layer).folding_candidates(target, block_widths(family)):
            folded = replace(layer, pe=pe, simd=simd)
            options += [placed_layer(folded, family, w, b) for w, b in placement_options(folded)]
        choices.append(options)
    best = None
    for layers in itertools.product(*choices):
        design = replace(spec, layers=layers)
        estimate = estimate_resources(design, family)
        if estimate["brams"] - estimate["top"]["brams"] <= budget and adapters_meet_timing(design):
            best = estimate["luts"] if best is None else min(best, estimate["luts"])

    design = cheapest_design(spec, family, target, budget)
    assert design is not None and best is not None and adapters_meet_timing(design)
    assert abs(estimate_resources(design, family)["luts"] - best) <= len(spec.layers)


def test_the_fit_refuses_a_gearbox_whose_landing_shifter_is_too_wide():
    from xnorflow.compiler.fit import MAX_GEARBOX_SHIFTER_INPUTS, gearbox_meets_timing

    assert not gearbox_meets_timing(256, 29, 256)                     # 314 bits x 59: 69.9 MHz alone
    assert all(gearbox_meets_timing(i, o, 256) for i, o in ((43, 32), (7, 19), (8, 147), (8, 1)))
    assert not gearbox_meets_timing(256, 30, 256)                     # (256 + 60) x 61 inputs
    assert (256 + 60) * 61 > MAX_GEARBOX_SHIFTER_INPUTS
    assert gearbox_meets_timing(32, 256, 256)                          # a deserializer, whatever its size
    assert gearbox_meets_timing(256, 32, 256)                          # a serializer, whatever its size


def test_a_conv_layers_weights_count_once_per_output_pixel_in_the_bandwidth_bound():
    from xnorflow.compiler.analysis import memory_bandwidth
    from xnorflow.hw.spec import conv_layer

    rng = np.random.default_rng(0)
    conv = conv_layer((2, 6, 6), rng.integers(0, 2, (8, 18), dtype=np.uint8), rng.integers(0, 20, 8), kernel=3,
                      padding=0, pad_value=0, pe=2, simd=9)                 # 4 x 4 output pixels
    bandwidth = memory_bandwidth(NetworkSpec((conv,)), "ecp5", 10)
    assert bandwidth["weight_reads_per_frame"] == 8 * 18 * 16
    assert bandwidth["bound_cycles_per_frame"] == -(-(8 * 18 * 16) // (10 * 36))


def test_the_fit_keeps_pe_weight_words_within_the_simd_limit_unless_the_target_needs_wider():
    from xnorflow.compiler.fit import simd_limit

    assert simd_limit("ecp5") == 8 * 36 and simd_limit("ice40") == 8 * 16
    spec = net([784, 256, 10])
    design = cheapest_design(spec, "ecp5", 96, 200)
    assert design is not None and all(layer.simd <= simd_limit("ecp5") for layer in design.layers)
    # One cycle a frame: SIMD 784 is the only way, so the limit gives way.
    fastest = cheapest_design(net([784, 4, 10]), "ecp5", 1, 200)
    assert fastest is not None and fastest.layers[0].simd == 784
