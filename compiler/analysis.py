"""Analyses: pure functions of a NetworkSpec that return dicts (FINN style).

- ``cycles_per_layer``: each engine's cycles per frame and the initiation interval they imply.
- ``estimate_resources``: memory blocks (exact, given where each memory is placed) and a LUT/FF
  estimate per device family, to refuse a design that cannot fit before any RTL is written.
"""
from __future__ import annotations

from dataclasses import dataclass

from xnorflow.hw.spec import LayerSpec, NetworkSpec, bits_for, ceil_div


def cycles_per_layer(spec: NetworkSpec) -> dict:
    layers = [{"n_in": l.n_in, "n_out": l.n_out, "pe": l.pe, "simd": l.simd, "cycles": l.cycles}
              for l in spec.layers]
    ii = spec.analytic_cycles_per_frame
    bottleneck = max(range(len(layers)), key=lambda i: layers[i]["cycles"])
    return {"layers": layers, "analytic_cycles_per_frame": ii, "bottleneck_layer": bottleneck}


@dataclass(frozen=True)
class BlockRam:
    """A family's block RAM: the (width, depth) shapes one block can take."""

    name: str
    bits: int
    shapes: tuple[tuple[int, int], ...]

    def blocks_for(self, width: int, depth: int) -> int:
        """Blocks for a width x depth memory: the best single shape, tiled in width and depth."""
        return min(ceil_div(width, w) * ceil_div(depth, d) for w, d in self.shapes)


BLOCK_RAMS = {
    # SB_RAM40_4K: 4 Kbit, 16x256 .. 2x2048 (Yosys techlibs/ice40/brams.txt).
    "ice40": BlockRam("EBR (SB_RAM40_4K)", 4096, ((16, 256), (8, 512), (4, 1024), (2, 2048))),
    # DP16KD: 18 Kbit, 18x1024 .. 1x16384; PDPW16KD gives 36x512 with one read and one write port.
    "ecp5": BlockRam("EBR (DP16KD)", 18432,
                     ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))),
}

# A memory smaller than this share of one block is cheaper in LUTs than in a whole block RAM.
LOGIC_BELOW_BLOCK_SHARE = 1 / 8


def choose_memory_style(width: int, depth: int, family: str) -> str:
    """'block' or 'logic' for a memory of width x depth bits (the RTL passes it to Yosys as ram_style)."""
    return "logic" if width * depth < BLOCK_RAMS[family].bits * LOGIC_BELOW_BLOCK_SHARE else "block"


def layer_memories(layer: LayerSpec) -> list[dict]:
    """The memories one layer's engine instantiates: one weight bank per PE and the input ping-pong buffer."""
    depth = layer.neuron_folds * layer.synapse_folds
    memories = [{"role": "weights", "width": layer.simd, "depth": depth, "count": layer.pe,
                 "style": layer.weight_style},
                {"role": "input buffer", "width": layer.simd, "depth": 2 * layer.synapse_folds, "count": 1,
                 "style": layer.buffer_style}]
    return memories


def lut_estimate(layer: LayerSpec) -> int:
    """LUT4-equivalents of one engine's datapath, fitted to nextpnr results (tests/boards compare).

    Per PE: SIMD XNORs feeding a popcount tree (about one LUT per input bit once XNOR folds into the
    first adder level), an accumulator and a threshold compare; plus the counters and stream control.
    """
    per_pe = layer.simd + 2 * layer.popcount_width + (layer.threshold_width if not layer.is_output else 0)
    control = 4 * (bits_for(layer.neuron_folds) + bits_for(layer.synapse_folds)) + 20
    argmax = 3 * layer.popcount_width * layer.n_out if layer.is_output else 0
    return layer.pe * per_pe + control + argmax


def logic_memory_luts(width: int, depth: int) -> int:
    """A memory kept in logic: a LUT4 holds 16 bits of a ROM, plus the read multiplexer."""
    return ceil_div(width * depth, 16) + width * max(0, ceil_div(depth, 16) - 1)


def estimate_resources(spec: NetworkSpec, family: str) -> dict:
    """Memory blocks (exact given each memory's style) and LUTs (an estimate) per layer and in total."""
    bram = BLOCK_RAMS[family]
    per_layer = []
    for layer in spec.layers:
        blocks = luts = 0
        for memory in layer_memories(layer):
            style = memory["style"]
            if style == "auto":
                style = choose_memory_style(memory["width"], memory["depth"], family)
            if style == "block":
                blocks += memory["count"] * bram.blocks_for(memory["width"], memory["depth"])
            else:
                luts += memory["count"] * logic_memory_luts(memory["width"], memory["depth"])
        luts += lut_estimate(layer)
        per_layer.append({"brams": blocks, "luts": luts, "weight_bits": layer.weight_bits})
    return {
        "family": family,
        "block_ram": bram.name,
        "layers": per_layer,
        "brams": sum(l["brams"] for l in per_layer),
        "luts": sum(l["luts"] for l in per_layer),
        "weight_bits": sum(l["weight_bits"] for l in per_layer),
    }
