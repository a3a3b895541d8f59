"""Analyses: cycles per layer and the memory-block count the fitting relies on."""

from dataclasses import replace

import pytest
from nets import net
from spec_factory import sized_network

from xnorflow.compiler.analysis import BLOCK_RAMS, cycles_per_layer, estimate_resources, weight_blocks
from xnorflow.compiler.fit import place_memories


def test_cycles_and_bottleneck():
    spec = net([784, 64, 64, 10], [(4, 16), (8, 8), (1, 8)])
    result = cycles_per_layer(spec)
    assert [l["cycles"] for l in result["layers"]] == [16 * 49, 8 * 8, 10 * 8]
    assert result["analytic_cycles_per_frame"] == 784 and result["bottleneck_layer"] == 0


# Yosys lays a memory's address slices side by side before cutting it into blocks (1 x 4096 is two
# 1-bit slices in one 2 x 2048 block, 24 x 2752 three 24-bit slices in four 18 x 1024 blocks);
# tests/boards/test_block_count.py checks these counts against Yosys itself.
@pytest.mark.parametrize("family, width, depth, blocks", [
    ("ice40", 16, 256, 1), ("ice40", 16, 257, 2), ("ice40", 32, 256, 2), ("ice40", 1, 4096, 1),
    ("ice40", 8, 512, 1), ("ice40", 49, 64, 4),
    ("ecp5", 36, 512, 1), ("ecp5", 18, 1024, 1), ("ecp5", 64, 100, 2), ("ecp5", 1, 16384, 1),
    ("ecp5", 24, 2752, 4),
])
def test_block_ram_tiling(family, width, depth, blocks):
    assert BLOCK_RAMS[family].blocks_for(width, depth) == blocks


def test_small_memories_go_to_logic_and_big_ones_to_blocks():
    spec = place_memories(net([784, 256, 10], [(16, 49), (10, 64)]), "ice40", block_budget=80)
    first, last = spec.layers
    assert first.weight_style == "block"       # 16 banks of 49 x 256 bits: 64 blocks (+ 8 for the input buffers), plus 40 would not fit 80...
    assert last.weight_style == "logic"        # ... so the worst-used blocks (10 banks of 4 x 64) move out
    # Its 16 banks packed side by side: one 784-bit word per address, 49 blocks of 16 x 256 (4 each unpacked).
    assert first.weight_packing == 16 and weight_blocks(first, "ice40") == 49 < 16 * BLOCK_RAMS["ice40"].blocks_for(49, 256)
    estimate = estimate_resources(spec, "ice40")
    assert estimate["weight_bits"] == 784 * 256 + 256 * 10


def test_each_layer_is_estimated_with_its_ops_and_the_label_select_with_the_last():
    from xnorflow.compiler.analysis import logic_terms
    from xnorflow.hw.ops import layer_groups

    spec = net([64, 32, 10], [(4, 16), (2, 8)])
    estimate = estimate_resources(spec, "ice40")
    assert [row["ops"] for row in estimate["layers"]] == [["dense"], ["dense", "label_select"]]
    # The label-select's terms (its argmax tree and scores) are counted with the last layer's.
    last_ops = layer_groups(spec)[-1]
    assert logic_terms(spec.layers[-1], 4, "ice40")["score_bit"] == last_ops[1].logic_terms()["score_bit"] > 0
    assert logic_terms(spec.layers[0], 8, "ice40")["score_bit"] == 0
    assert estimate["ffs"] == sum(row["ffs"] for row in estimate["layers"]) + estimate["top"]["ffs"]


def test_an_integer_first_layer_is_estimated_and_folded_by_its_op():
    """int_dense on 8-bit inputs: the estimate counts its own terms and b-bit input buffer, the fit
    folds it by the dense rule, and the UART FIFO holds the 8-bit frame."""
    from xnorflow.compiler.analysis import LOGIC_MODELS, fifo_memory, layer_memories, logic_terms
    from xnorflow.compiler.fit import cheapest_design

    spec = sized_network([64, 32, 10], [(4, 16), (2, 8)], input_bits=8)
    first = spec.layers[0]
    assert first.kind == "int_dense" and spec.input_bits == 512
    terms = logic_terms(first, 8, "ice40")
    assert terms["int_lane_bit"] == 5 * 16 * 8 and terms["int_acc_bit"] > 0 and terms["simd_lane"] == 0
    buffer = next(m for m in layer_memories(first) if m["role"] == "input buffer")
    assert buffer["width"] == 16 * 8
    estimate = estimate_resources(spec, "ice40")
    binary = estimate_resources(replace(spec, layers=(replace(first, kind="dense", input_bits=1,
                                                              thresholds=first.thresholds.clip(0, 65)),
                                                      *spec.layers[1:])), "ice40")
    assert estimate["layers"][0]["luts"] > binary["layers"][0]["luts"]
    assert LOGIC_MODELS["ecp5"].int_lane_bit > 0
    assert fifo_memory(spec)["depth"] == 64 - 1
    design = cheapest_design(spec, "ice40", target_cycles=64, block_budget=30)
    assert design is not None and design.layers[0].kind == "int_dense"
    design.validate()
    assert design.analytic_cycles_per_frame <= 64
