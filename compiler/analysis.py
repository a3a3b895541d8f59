"""Analyses: pure functions of a NetworkSpec that return dicts (FINN style).

- ``cycles_per_layer``: each engine's cycles per frame and the initiation interval they imply.
- ``estimate_resources``: memory blocks (exact, given where each memory is placed) and a logic/FF
  estimate per device family for the synthesized board top (UART + network), to refuse a design that
  cannot fit before any RTL is written. The logic figure is calibrated against Yosys + nextpnr
  (bench/calibrate_estimate.py, bench/calibration.json): within 4% on the 12 calibration designs.

What each op contributes comes from the op itself (hw/ops/: its memories, structural logic terms and
flip-flops); this module adds what follows from where memories are placed and from the width
adapters between ops, and weighs the terms per device family. Figures are per layer: a layer's ops
(`xnorflow.hw.ops.layer_ops`: the last layer's includes the label-select after it) are counted
together and rounded once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from xnorflow.boards.family import FAMILIES, BlockRamShapes, RamCell
from xnorflow.hw.adapters import adapter_flip_flops, adapter_terms
from xnorflow.hw.ops import Op, layer_groups, layer_ops
from xnorflow.hw.spec import LayerSpec, NetworkSpec, ceil_div


def cycles_per_layer(spec: NetworkSpec) -> dict:
    layers = [{"kind": l.kind, "n_in": l.n_in, "n_out": l.n_out, "pe": l.pe, "simd": l.simd, "cycles": l.cycles}
              for l in spec.layers]
    ii = spec.analytic_cycles_per_frame
    bottleneck = max(range(len(layers)), key=lambda i: layers[i]["cycles"])
    return {"layers": layers, "analytic_cycles_per_frame": ii, "bottleneck_layer": bottleneck}


# --- where Yosys puts a memory -------------------------------------------------------------------
# Yosys' memory_libmap (passes/memory/memory_libmap.cc) maps each memory on its own: for every cell
# of the family's libraries and every data width the cell takes, the memory's address range is cut
# into slices of that width's depth, the slices are laid side by side and the result is cut into
# cells of that width; the slice is picked by a LUT multiplexer on the read data. It keeps the
# cheapest by cost = cell cost x cells + 0.5 x multiplexer bits + 0.5 x write decoder + 2 x emulation
# score, and leaves the memory in logic when that is cheaper (1/16 per ROM bit, 1 per RAM bit) unless a
# ram_style/rom_style forces a kind. This mirrors it for xnorflow's memories: one synchronous read port,
# and for a RAM one write port with one enable; tests/boards/test_block_count.py checks it against Yosys.
MUX_FACTOR = 0.5
EMULATION_FACTOR = 2
# memory_libmap's emulation scores for those memories (its debug dump: the read port's reset and
# enable, for a RAM also the read-write behaviour, emulated in logic), per (cell kind, memory kind).
EMULATION = {("block", "rom"): 1, ("block", "ram"): 7, ("distributed", "ram"): 1}
YOSYS_LOGIC_COST = {"rom": 1 / 16, "ram": 1.0}


@dataclass(frozen=True)
class Mapping:
    """A memory as Yosys maps it: ``style`` "block", "distributed" or "logic", its RAM ``cells`` and
    ``mux_bits`` (read bits x extra address slices: the LUT multiplexer after the cells)."""

    style: str
    cells: int = 0
    mux_bits: int = 0
    cost: float = 0.0


def cell_mapping(cell: RamCell, style: str, width: int, depth: int, kind: str) -> Mapping | None:
    """The cheapest way memory_libmap's geometry search finds to build a ``kind`` memory of
    width x depth from ``cell`` (None: the cell cannot hold it)."""
    if kind == "rom" and not cell.rom:
        return None
    best = None
    widest_write = max(cell.widths.index(w) for w in cell.write_widths)
    narrowest_write = min(cell.widths.index(w) for w in cell.write_widths)
    byte_index = max((i for i, w in enumerate(cell.widths) if cell.byte >= w), default=0)
    if cell.byte == 0:
        byte_index = len(cell.widths) - 1
    for base in range(len(cell.widths)):
        unit = min(base, widest_write) if kind == "ram" else base
        if unit != base and best is not None:
            break
        if kind == "ram" and base < narrowest_write and base < byte_index:
            continue        # a write port narrower than the cell's takes, below its byte width
        unit_width = cell.widths[unit]
        byte = 1 if kind == "rom" else (cell.byte if 0 < cell.byte <= unit_width else unit_width)
        slices = ceil_div(depth, 2 ** (cell.abits - base))
        cells = ceil_div(slices * ceil_div(width, byte) * byte, unit_width)
        mux_bits = (slices - 1) * width
        decoder = slices if kind == "ram" and slices != 1 else 0
        cost = (cell.cost * cells + MUX_FACTOR * (mux_bits + decoder)
                + EMULATION_FACTOR * EMULATION[(style, kind)])
        if best is None or cost < best.cost:
            best = Mapping(style, cells, mux_bits, cost)
    return best


@dataclass(frozen=True)
class BlockRam(BlockRamShapes):
    """A family's memory cells (boards/family.py) and how Yosys maps memories to them."""

    @functools.lru_cache(maxsize=65536)     # noqa: B019  (the records live as long as the module)
    def mapping(self, width: int, depth: int, kind: str = "rom", style: str = "block") -> Mapping:
        """Where Yosys puts a ``kind`` memory of width x depth with ``style`` ("block", "logic", or
        "auto": Yosys' choice by cost), and how many cells it takes."""
        if style == "logic" or depth <= 1:
            return Mapping("logic")     # one word: a register (or constants), never a memory
        kinds = {"block": self.cells, "distributed": self.lut_ram}
        options = [m for cell_style in (kinds if style == "auto" else (style,)) for cell in kinds[cell_style]
                   if (m := cell_mapping(cell, cell_style, width, depth, kind)) is not None]
        # memory_libmap starts from the logic cost truncated to an integer and takes the first option
        # strictly cheaper; a forced style takes the first option and then any cheaper one.
        best = Mapping("logic", cost=int(width * depth * YOSYS_LOGIC_COST[kind])) if style == "auto" else None
        for option in options:
            if best is None or option.cost < best.cost:
                best = option
        return best

    def blocks_for(self, width: int, depth: int, kind: str = "rom") -> int:
        """Blocks of a width x depth memory placed in block RAM."""
        return self.mapping(width, depth, kind).cells

    def mux_bits(self, width: int, depth: int, kind: str = "rom") -> int:
        """Read bits x extra address slices of a width x depth memory in block RAM: a memory deeper
        than a block's width mode needs a LUT multiplexer on its read data."""
        return self.mapping(width, depth, kind).mux_bits


# Each family's memory cells (boards/family.py).
BLOCK_RAMS = {name: BlockRam(**vars(f.block_ram)) for name, f in FAMILIES.items()}

def layer_memories(layer: LayerSpec, family: str | None = None) -> list[dict]:
    """The memories one layer's ops instantiate (`Op.memories`: a dense layer's weight memories, one
    per group of `LayerSpec.weight_packing` PEs, its input ping-pong buffer and, hidden layers, its
    threshold ROM). ``kind`` is "rom" or "ram" (written at run time).

    With a ``family``, each memory's ``style`` says where synthesis puts it: the layer's weight/buffer
    style when set, else (and always for the thresholds) what Yosys chooses (`yosys_auto_style`).
    """
    return ops_memories(layer_ops(layer), family)


def ops_memories(ops: list[Op], family: str | None = None) -> list[dict]:
    memories = [dict(memory) for op in ops for memory in op.memories()]
    if family is not None:
        for memory in memories:
            if memory["style"] == "auto":
                memory["style"] = yosys_auto_style(memory["width"], memory["depth"], family, memory["kind"])
    return memories


# --- weight memory packing and bandwidth ----------------------------------------------------------
def best_weight_packing(layer: LayerSpec, family: str) -> int:
    """The weight packing (PEs per memory word, `LayerSpec.weight_packing`) whose weight memories
    take the fewest blocks, then the fewest multiplexer bits, then the fewest PEs per word.

    Packing costs no logic: every PE's bank is read at the same address, so packed words are the
    same reads; it only changes how the words fill the blocks' widths."""
    return _best_packing(layer.pe, layer.simd, layer.neuron_folds * layer.synapse_folds, family)


@functools.lru_cache(maxsize=65536)
def _best_packing(pe: int, simd: int, depth: int, family: str) -> int:
    bram = BLOCK_RAMS[family]

    def cost(packing: int) -> tuple[int, int, int]:
        full, rest = divmod(pe, packing)
        maps = [(full, bram.mapping(packing * simd, depth))] + ([(1, bram.mapping(rest * simd, depth))] if rest else [])
        return (sum(n * m.cells for n, m in maps), sum(n * m.mux_bits for n, m in maps), packing)

    # One packing per number of memories: the fewest PEs per word that gives it.
    return min(sorted({ceil_div(pe, memories) for memories in range(1, pe + 1)}), key=cost)


def weight_blocks(layer: LayerSpec, family: str) -> int:
    """Blocks holding one layer's weights (its ops' "weights" memories placed in block RAM)."""
    bram = BLOCK_RAMS[family]
    return sum(memory["count"] * bram.blocks_for(memory["width"], memory["depth"], memory["kind"])
               for memory in layer_memories(layer, family) if memory["role"] == "weights" and memory["style"] == "block")


def memory_bandwidth(spec: NetworkSpec, family: str, blocks: int) -> dict:
    """Weight bits read per cycle against what the blocks can give, per layer, and the network's
    memory-bandwidth bound: the fewest cycles per frame in which ``blocks`` blocks (the board's),
    each read at its widest mode every cycle, deliver every weight bit as often as a frame reads it
    (once per output pixel for a conv: ``weight_reads_per_frame``).

    Per layer: ``weight_bits_per_cycle`` (PE x SIMD: the weight words of one cycle),
    ``weight_blocks`` and ``block_bits_per_cycle`` (those blocks x the widest mode)."""
    widest = max(width for width, _ in BLOCK_RAMS[family].shapes)
    layers = []
    for layer in spec.layers:
        count = weight_blocks(layer, family)
        layers.append({"weight_bits_per_cycle": layer.pe * layer.simd if layer.weight_bits else 0,
                       "weight_blocks": count, "block_bits_per_cycle": count * widest,
                       "weight_packing": layer.weight_packing})
    weight_bits = sum(layer.weight_bits for layer in spec.layers)
    reads = sum(layer.weight_bits * layer.vectors_per_frame for layer in spec.layers)
    return {"layers": layers, "weight_bits": weight_bits, "weight_reads_per_frame": reads, "blocks": blocks,
            "block_width": widest, "bound_cycles_per_frame": ceil_div(reads, blocks * widest),
            "cycles_per_frame": spec.analytic_cycles_per_frame}


# --- logic ---------------------------------------------------------------------------------------
# The logic estimate predicts what synthesis reports as ``luts``: nextpnr's ICESTORM_LC on iCE40 (a
# logic cell holds one LUT4, one FF and one carry, so an FF or a carry that cannot share a cell with a
# LUT costs a cell of its own: the input buffer's storage FFs, the score registers, the threshold
# comparators' carry chains) and TRELLIS_COMB on ECP5 (LUT4 slots: a CCU2C carry takes about three).
# The design is counted in structural terms (`logic_terms`) weighted by per-family coefficients that
# bench/calibrate_estimate.py fits to real Yosys + nextpnr runs of the board top (UART + network),
# whose figures are in bench/calibration.json and checked by tests/boards/test_estimate.py.


# Coefficients of the integer-input engine's terms (see `LogicModel`), the same on both families. Set
# from Yosys synth_ice40 of five int_dense engines alone (b 4 and 8, PE 2-16, SIMD 7-25, weights and
# buffer in block RAM), their SB_LUT4 counts scaled by the calibrated model's cells per SB_LUT4 on two
# binary MVTUs synthesized the same way (1.39); int_acc_bit is confounded with the lanes there and
# set low. Not yet checked against nextpnr or on ECP5.
INT_LANE_BIT = 3.1
INT_ACC_BIT = 1.0
# Per sliding-window generator beat bit (see `LogicModel.window_bit`).
WINDOW_BIT = 8.0
# Width adapters outside the calibration designs, set from Yosys synth_ecp5 of an adapter and its
# register slice alone (bench/records.md, "Narrowing adapters"); the same LUT4 mapping is taken for iCE40.
# A serializer is its word's load-or-shift multiplexer per input bit plus counters (32 -> 4 bits: 56
# slots, 256 -> 8: 288). A narrowing gearbox's two landing shifters take the whole input beat, so it
# costs 1.5-3.2 slots per (buffer bit x shift stage) over eight (in, out) pairs from (30, 7) to
# (256, 9), median 2.1, where widening ones cost the calibrated `gearbox_bit`.
SERIALIZER_BIT = 1.1
NARROWING_GEARBOX_BIT = 2.1


@dataclass(frozen=True)
class LogicModel:
    """Logic cells (iCE40) or LUT slots (ECP5) per unit of each structural term of `logic_terms`.

    Coefficients are least-squares fits (relative error, non-negative) over every engine of the
    calibration designs, from each engine's cells in the Yosys netlist (cell names keep the
    hierarchy): 10 iCE40 designs (64- and 784-input TFCs, 40 engines) and 2 ECP5 SFCs (8 engines),
    bench/calibration.json (bench/records.md, "Estimate calibration").
    What the data cannot separate is set from the structure instead (see bench/calibrate_estimate.py):
    ``ram_bit`` on iCE40 (every 64-input layer's buffer holds ~128 bits, confounded with ``engine``);
    on ECP5 the terms its two SFCs share with each other (engine, acc_bit, score_bit, block_mux,
    rom_lut, gearbox_bit) come from the iCE40 fit, the same RTL mapped to the same LUT4s, and
    ``deserializer_bit`` from the structure. ``packing`` is nextpnr's total over the netlist-counted
    total.
    """

    simd_lane: float    # per PE per SIMD bit: XNOR folded into the popcount adder tree (2.4-2.9 LUTs
                        #   per input measured), count register
    acc_bit: float      # per PE per accumulator bit: accumulator adder; hidden layers' threshold
                        #   compare (a carry chain of its own: ~A+1 cells) and output bit
    engine: float       # per engine: fold counters, ping-pong flags, pipeline valid/first/last/fold
    score_bit: float    # output layer, per (PE + class) per score bit: argmax tree, fold/class scores
    block_mux: float    # per read bit per extra block of a block-RAM memory tiled in depth (measured
                        #   ~0.9 LUTs per bit and block: 2 banks of 16 x 1568 bits, 7 blocks deep)
    rom_lut: float      # per LUT4 of a ROM kept in logic (`logic_memory_luts`) with its read register
    ram_bit: float      # per bit of a RAM kept in logic: its storage FF and share of the read mux
    gearbox_bit: float  # per (buffer bit x shift stage) of a width adapter (hw/adapters.py: `adapter_terms`)
    top: float          # UART RX/TX, reset timer, FIFO and I/O of the board top (iCE40 186-242)
    packing: float = 1.0
    # Per output bit of a deserializing width adapter (input beats written side by side, no shifter)
    # with its register slice: fitted on iCE40 (the word's and the slice's flip-flops take cells of
    # their own there); on ECP5 set from the structure, the slice's output multiplexer per bit.
    deserializer_bit: float = 1.0
    # Per bit of a sliding-window generator's beat (hw/swg.py: G*K*C bits, or C for pixel beats): the
    # column rotation or the pixel's choice of bank (a K:1 multiplexer), the padding mask and the
    # 3-entry output queue (a 3-way multiplexer per entry).
    # Not in the calibration designs: set from Yosys synth_ecp5 of the two scnv designs built
    # (bench/records.md, "Conv estimate"), per generator 354 + 7.9 per beat bit, 8 generators; the
    # control's 354 is two `engine`s (hw/ops/conv.py). The same LUT4 mapping is taken for iCE40.
    window_bit: float = WINDOW_BIT
    # Adapters to a narrower beat (hw/adapters.py `adapter_terms`): per input bit of a serializer,
    # per (buffer bit x shift stage) of a narrowing gearbox.
    serializer_bit: float = SERIALIZER_BIT
    narrowing_gearbox_bit: float = NARROWING_GEARBOX_BIT
    # The integer-input engine (hw/intmvu.py) is not in the calibration designs, so these are not
    # fitted there (see `INT_LANE_BIT`).
    int_lane_bit: float = INT_LANE_BIT  # per input bit of each adder tree (every PE's gated tree and
                                        #   the shared total): adders, gating, level registers
    int_acc_bit: float = INT_ACC_BIT    # per PE per accumulator bit: 2P - X, accumulator, signed compare


LOGIC_MODELS = {
    # bench/calibrate_estimate.py --fit on the designs of bench/calibration.json, rounded.
    "ice40": LogicModel(simd_lane=4.09, acc_bit=0.64, engine=160, score_bit=0.12, block_mux=1.19,
                        rom_lut=1.23, ram_bit=2.0, gearbox_bit=0.62, top=299, packing=1.031,
                        deserializer_bit=3.42),
    # ECP5: the terms its two SFCs cannot separate come from the iCE40 fit (bench/calibrate_estimate.py).
    "ecp5": LogicModel(simd_lane=4.5, acc_bit=0.64, engine=160, score_bit=0.12, block_mux=1.19,
                       rom_lut=1.23, ram_bit=0.86, gearbox_bit=0.62, top=400, packing=1.007,
                       deserializer_bit=1.0),
}

def yosys_auto_style(width: int, depth: int, family: str, kind: str) -> str:
    """Where Yosys puts a ``kind`` ("rom" or "ram") memory that has no ram_style/rom_style: the
    cheapest of 'logic', 'block' and (ECP5 RAMs) 'distributed' LUT RAM (`BlockRam.mapping`). That
    decides where the memories given no style go: the threshold ROMs and the board top's UART FIFO."""
    return BLOCK_RAMS[family].mapping(width, depth, kind, "auto").style


def logic_memory_luts(width: int, depth: int) -> int:
    """A ROM kept in logic: a LUT4 holds 16 words of one bit, plus the multiplexer joining the LUTs of
    a deeper ROM (measured: 2.5 LUTs per bit at depth 25, 1 at depth 16). A one-word ROM is constants."""
    if depth <= 1:
        return 0
    return ceil_div(width * depth, 16) + width * max(0, ceil_div(depth, 16) - 1)


def fifo_memory(spec: NetworkSpec) -> dict:
    """The board top's UART FIFO (boards/top.py: one frame of bytes; amaranth's SyncFIFOBuffered keeps
    depth - 1 entries in a memory and one in its output register)."""
    frame_bytes = ceil_div(spec.input_bits, 8)
    return {"role": "uart fifo", "width": 8, "depth": max(1, frame_bytes - 1), "count": 1, "style": "auto"}


def logic_terms(layer: LayerSpec, in_width: int, family: str) -> dict[str, int]:
    """The structural terms of one layer's ops (`layer_ops`) and of the width adapter feeding it from
    ``in_width``-bit beats: each op's own terms (`Op.logic_terms`) plus those of its memories as placed."""
    return ops_logic_terms(layer_ops(layer), in_width, family)


# A layer's structural terms: every coefficient of `LogicModel` but the board top's and the packing factor.
TERMS = tuple(name for name in LogicModel.__dataclass_fields__ if name not in ("top", "packing"))


def ops_logic_terms(ops: list[Op], in_width: int, family: str) -> dict[str, int]:
    terms = dict.fromkeys(TERMS, 0)
    for op in ops:
        for name, value in op.logic_terms().items():
            terms[name] += value
    for name, value in adapter_terms(in_width, ops[0].in_width, ops[0].in_unit).items():
        terms[name] += value    # the adapter feeding the layer, beside the ops' own adapters (in their terms)
    for memory in ops_memories(ops, family):
        if memory["style"] == "block":
            terms["block_mux"] += memory["count"] * BLOCK_RAMS[family].mux_bits(memory["width"], memory["depth"],
                                                                                 memory["kind"])
        if memory["style"] != "logic":
            continue
        if memory["kind"] == "rom":
            terms["rom_lut"] += memory["count"] * logic_memory_luts(memory["width"], memory["depth"])
        else:
            terms["ram_bit"] += memory["count"] * memory["width"] * memory["depth"]
    return terms


def logic_estimate(terms: dict[str, int], model: LogicModel) -> int:
    return round(model.packing * sum(getattr(model, name) * value for name, value in terms.items()))


def lut_estimate(layer: LayerSpec, family: str = "ice40", in_width: int | None = None) -> int:
    """Logic cells (iCE40) / LUT slots (ECP5) of one layer's ops and its input adapter (see `LogicModel`)."""
    ops = layer_ops(layer)
    in_width = ops[0].in_width if in_width is None else in_width
    return logic_estimate(ops_logic_terms(ops, in_width, family), LOGIC_MODELS[family])


def ff_estimate(layer: LayerSpec, in_width: int, family: str) -> int:
    """Flip-flops of one layer's ops and its input adapter, counted from the RTL: each op's own
    (`Op.flip_flops`), its memories kept in logic, the gearbox and register slice (adapters.py)."""
    ops = layer_ops(layer)
    return ops_flip_flops(ops, in_width, family)


def ops_flip_flops(ops: list[Op], in_width: int, family: str) -> int:
    ffs = sum(op.flip_flops() for op in ops)
    for memory in ops_memories(ops, family):
        if memory["style"] == "logic" and memory["depth"] > 1:
            read_register = memory["count"] * memory["width"]
            storage = memory["width"] * memory["depth"] if memory["kind"] == "ram" else 0
            ffs += read_register + storage
    return ffs + adapter_flip_flops(in_width, ops[0].in_width, ops[0].in_unit)


def layer_blocks(layer: LayerSpec, family: str) -> int:
    """Memory blocks of one layer's ops: their memories placed in block RAM, each tiled into blocks."""
    return ops_blocks(layer_ops(layer), family)


def ops_blocks(ops: list[Op], family: str) -> int:
    bram = BLOCK_RAMS[family]
    return sum(memory["count"] * bram.blocks_for(memory["width"], memory["depth"], memory["kind"])
               for memory in ops_memories(ops, family) if memory["style"] == "block")


def layer_estimate(layer: LayerSpec, family: str, in_width: int | None = None, output_kind: str = "label_select") -> dict:
    """One layer's ops (the last layer's with the output op after it) and the adapter feeding them
    ``in_width``-bit beats (none when omitted)."""
    return ops_estimate(layer_ops(layer, output_kind), family, in_width)


def ops_estimate(ops: list[Op], family: str, in_width: int | None = None) -> dict:
    in_width = ops[0].in_width if in_width is None else in_width
    return {"brams": ops_blocks(ops, family),
            "luts": logic_estimate(ops_logic_terms(ops, in_width, family), LOGIC_MODELS[family]),
            "ffs": ops_flip_flops(ops, in_width, family),
            "weight_bits": sum(op.layer.weight_bits for op in ops if op.role == "layer"),
            "ops": [op.kind for op in ops]}


# UART RX/TX, the FIFO's pointers, the power-on reset timer, the register slices on each side of the
# network and before the transmitter (3 x 18), and the answer framing (boards/top.py: a 7-bit frame
# counter and a flag, 8); the count behind it: bench/records.md, "Board top flip-flops".
TOP_FFS = 142
# The board top's beats into the first layer (boards/top.py: the UART's bytes).
HOST_BEAT_BITS = 8


def estimate_resources(spec: NetworkSpec, family: str) -> dict:
    """Memory blocks (exact given each memory's style), logic (``luts``: what synthesis reports, see
    `LogicModel`) and flip-flops, per layer and in total for the board top (UART + network).

    ``top`` holds the board top's share: the UART, the reset timer and the UART FIFO (which Yosys puts
    in a block RAM on iCE40 once a frame is more than 9 bytes). ``layers`` align with ``spec.layers``.
    """
    bram = BLOCK_RAMS[family]
    model = LOGIC_MODELS[family]
    per_layer = []
    in_width = HOST_BEAT_BITS    # the first layer gets the board top's bytes, each next one the previous op's beats
    for ops in layer_groups(spec):
        per_layer.append(ops_estimate(ops, family, in_width))
        in_width = ops[0].out_width
    fifo = fifo_memory(spec)
    fifo_style = yosys_auto_style(fifo["width"], fifo["depth"], family, "ram")
    # The FIFO's logic is in the `top` constant: in FFs (small frames) it costs about what the
    # block RAM's address and flag logic costs (measured on iCE40: 230-240 cells vs 190).
    top = {"brams": bram.blocks_for(fifo["width"], fifo["depth"], "ram") if fifo_style == "block" else 0,
           "luts": round(model.packing * model.top),
           "ffs": TOP_FFS + (fifo["width"] * fifo["depth"] if fifo_style == "logic" else 0)}
    return {
        "family": family,
        "block_ram": bram.name,
        "layers": per_layer,
        "top": top,
        "brams": sum(l["brams"] for l in per_layer) + top["brams"],
        "luts": sum(l["luts"] for l in per_layer) + top["luts"],
        "ffs": sum(l["ffs"] for l in per_layer) + top["ffs"],
        "weight_bits": sum(l["weight_bits"] for l in per_layer),
    }
