"""The op registry (hw/ops/): every kind has every part, and the label-select op on its own."""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator
from hw_harness import random_spec

from xnorflow.hw.ops import OPS, Op, layer_groups, network_ops, op_for, output_op
from xnorflow.hw.ops.label_select import LabelSelect, LabelSelectOp
from xnorflow.hw.spec import LayerSpec, NetworkSpec, SpecError


@pytest.mark.parametrize("kind", sorted(OPS))
def test_every_registered_kind_defines_every_part(kind):
    cls = OPS[kind]
    assert cls.kind == kind and cls.role in ("layer", "output")
    missing = [part for part in Op.PARTS if getattr(cls, part) is getattr(Op, part)]
    assert not missing, f"op {kind!r} ({cls.__name__}) does not define {missing}"


def test_the_kinds_of_this_part_are_registered():
    assert OPS["dense"].role == "layer" and OPS["label_select"].role == "output"
    assert OPS["conv"].role == "layer" and OPS["maxpool"].role == "layer"


def test_every_part_answers_for_a_real_network():
    spec = random_spec(3)
    ops = network_ops(spec)
    assert [op.kind for op in ops] == ["dense"] * len(spec.layers) + ["label_select"]
    for op in ops:
        assert op.cycles >= 1
        assert isinstance(op.memories(), list) and isinstance(op.logic_terms(), dict)
        assert op.flip_flops() > 0
    # Every op is counted once, the label-select with the last layer.
    groups = layer_groups(spec)
    assert [(type(op), op.layer.n_out) for group in groups for op in group] == [(type(op), op.layer.n_out) for op in ops]
    assert [len(group) for group in groups] == [1] * (len(spec.layers) - 1) + [2]
    assert spec.analytic_cycles_per_frame == max(op.cycles for op in ops)


def test_an_unknown_kind_is_refused_in_one_line_naming_the_known_ones():
    spec = random_spec(1)
    bad = replace(spec, layers=(replace(spec.layers[0], kind="winograd"), *spec.layers[1:]))
    with pytest.raises(SpecError, match=r"layer 0 has kind 'winograd'.*knows conv, dense, int_conv, int_dense, maxpool") as info:
        bad.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="output.*'topk'.*knows label_select"):
        replace(spec, output_kind="topk").validate()


def test_dense_geometry_is_a_vector():
    layer = LayerSpec(12, 5, np.zeros((5, 12), dtype=np.uint8), None)
    assert (layer.in_shape, layer.out_shape, layer.vectors_per_frame) == ((12, 1, 1), (5, 1, 1), 1)
    with pytest.raises(SpecError, match="dense layer takes a vector"):
        replace(layer, kernel=3).validate()
    with pytest.raises(SpecError, match="dense layer takes a vector"):
        replace(layer, in_shape=(3, 2, 2)).validate()


def test_the_threshold_rom_counts_only_its_varying_bit_columns():
    """Yosys drops a ROM's constant bit columns before mapping it to blocks: folds (1, 3) and (2, 0)
    of a PE=2 layer vary in one bit per PE; every other stored bit is 0 in both words."""
    layer = LayerSpec(100, 4, np.zeros((4, 100), dtype=np.uint8), np.array([1, 2, 3, 0]), pe=2, simd=50)
    (rom,) = [m for m in op_for(layer).memories() if m["role"] == "thresholds"]
    assert op_for(layer).threshold_bits == 7 and (rom["width"], rom["depth"]) == (2, 2)
    same = replace(layer, thresholds=np.array([5, 5, 5, 5]))
    (rom,) = [m for m in op_for(same).memories() if m["role"] == "thresholds"]
    assert rom["width"] == 0 and rom["style"] == "logic"      # constants, no memory at all


def test_label_select_refuses_a_layer_that_gives_bits():
    hidden = LayerSpec(8, 4, np.zeros((4, 8), dtype=np.uint8), np.zeros(4, dtype=np.int64))
    with pytest.raises(SpecError, match="not class scores"):
        LabelSelect(hidden)


def test_reference_of_label_select_takes_the_lowest_index_on_ties():
    layer = LayerSpec(4, 5, np.zeros((5, 4), dtype=np.uint8), None)
    op = LabelSelectOp(layer)
    assert op.reference(np.array([[1, 3, 3, 0, 3], [2, 2, 2, 2, 2], [0, 0, 0, 0, 4]])).tolist() == [1, 0, 4]


# --- the label-select component alone, in Amaranth's simulator ------------------------------------
def simulate_label_select(layer: LayerSpec, frames: np.ndarray, *, gap: float, stall: float, seed: int,
                          padding_junk: bool = True) -> list[int]:
    """Drive the scores link as the MVTU does (wait for room, start a frame, then its NF fold beats)
    and collect the output payloads. Padded rows of the last fold carry junk, which must be ignored."""
    dut = LabelSelect(layer)
    rng = random.Random(seed)
    pe, nf, width = layer.pe, layer.neuron_folds, layer.popcount_width
    out: list[int] = []

    async def producer(ctx):
        for scores in frames:
            rows = list(scores) + [rng.randrange(1 << width) if padding_junk else 0
                                   for _ in range(nf * pe - len(scores))]
            while not ctx.get(dut.i.room):
                await ctx.tick()
            ctx.set(dut.i.start, 1)
            await ctx.tick()
            ctx.set(dut.i.start, 0)
            for fold in range(nf):
                while gap and rng.random() < gap:
                    await ctx.tick()
                word = sum(int(rows[fold * pe + r]) << (r * width) for r in range(pe))
                ctx.set(dut.i.scores.as_value(), word)
                ctx.set(dut.i.fold, fold)
                ctx.set(dut.i.valid, 1)
                await ctx.tick()
                ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycles = 0
        ctx.set(dut.o.ready, int(rng.random() >= stall))
        async for _clk, _rst, valid, ready, payload in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                         dut.o.payload.as_value()):
            if valid and ready:
                out.append(int(payload))
            if len(out) == len(frames):
                return
            cycles += 1
            assert cycles < 200 * len(frames) * (nf + 10), f"{len(out)} of {len(frames)} frames came out"
            ctx.set(dut.o.ready, int(rng.random() >= stall))

    top = Module()
    top.domains.sync = ClockDomain("sync")
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return out


def scores_layer(n_in: int, n_classes: int, pe: int) -> LayerSpec:
    return LayerSpec(n_in, n_classes, np.zeros((n_classes, n_in), dtype=np.uint8), None, pe=pe, simd=1)


@pytest.mark.parametrize("pe", [1, 2, 3, 7])
def test_label_select_alone_gives_every_score_and_ties_go_to_the_lowest_index(pe):
    n_in, n_classes = 9, 7
    layer = scores_layer(n_in, n_classes, pe)
    rng = np.random.default_rng(pe)
    frames = [
        np.full(n_classes, 5),                    # all tied: class 0
        np.array([1, 2, 9, 3, 9, 0, 9]),          # tied best in different folds: class 2
        np.array([0, 0, 0, 0, 0, 0, 4]),          # the last class, in the last fold
        np.array([6, 6, 1, 1, 1, 1, 1]),          # tie inside the first fold
        np.zeros(n_classes, dtype=np.int64),      # all zero: class 0 even against padded rows
        *rng.integers(0, n_in + 1, size=(6, n_classes)),
        *rng.integers(0, 3, size=(6, n_classes)),  # few values: many ties
    ]
    frames = np.array(frames, dtype=np.int64)
    op = LabelSelectOp(layer)
    got = op.decode(simulate_label_select(layer, frames, gap=0.3, stall=0.3, seed=pe))
    assert got[:, 1:].tolist() == frames.tolist()
    assert got[:, 0].tolist() == op.reference(frames).tolist()


def test_label_select_takes_fold_beats_back_to_back():
    """Fold beats on consecutive cycles and an always-ready output (an MVTU with SF = 1): every frame
    still comes out right. Its `cycles` is NF, never above the MVTU's NF * SF."""
    layer = scores_layer(16, 10, 2)
    frames = np.random.default_rng(0).integers(0, 17, size=(12, 10))
    assert LabelSelectOp(layer).cycles == layer.neuron_folds == 5
    got = LabelSelectOp(layer).decode(simulate_label_select(layer, frames, gap=0.0, stall=0.0, seed=1))
    assert got[:, 1:].tolist() == frames.tolist()


def test_output_op_of_a_network_is_label_select_from_the_last_layer():
    spec = random_spec(4)
    op = output_op(spec)
    assert isinstance(op, LabelSelectOp) and op.layer is spec.layers[-1]
    assert op_for(spec.layers[-1]).emits_scores
    assert not any(op_for(layer).emits_scores for layer in spec.layers[:-1])
    assert NetworkSpec(spec.layers).output_kind == "label_select"
