"""The FPGA families xnorflow builds for, one record each: every per-family fact in one place.

Device facts come from the vendor data and the tools (Yosys' techlibs, nextpnr's cell names, the PLL
data sheets); the policies (the first PLL clock, the LUT share a design may take, registered weight
reads) come from measured builds, recorded in bench/records.md with the figures behind each choice.
Other modules read these records; none keeps a per-family table of its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PllLimits:
    """Allowed frequency ranges (Hz, inclusive) of one PLL family."""

    f_in: tuple[float, float]
    f_pfd: tuple[float, float]
    f_vco: tuple[float, float]
    f_out: tuple[float, float]


@dataclass(frozen=True)
class BlockRamShapes:
    """A family's block RAM: its name, bits per block and the (width, depth) shapes one block takes."""

    name: str
    bits: int
    shapes: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Family:
    name: str
    bitstream_suffix: str
    block_ram: BlockRamShapes
    pll_limits: PllLimits
    pll_primitive: str
    # nextpnr's cell type per report figure, and Yosys' flip-flop cells (for iCE40, where nextpnr
    # does not count them)
    cell_types: dict
    ff_cells: re.Pattern
    # Yosys' memory_libmap cost of one block (techlibs): it weighs a memory kept in logic against it
    yosys_block_cost: int
    # Policies, each from measured builds (bench/records.md, the section of the same name)
    first_try_hz: float            # the first PLL clock synthesize_at_best_clock tries
    lut_budget_share: float        # the share of the LUTs a design may take by default
    register_weights: bool         # block RAM weight reads registered before the XNOR


FAMILIES = {
    "ice40": Family(
        name="ice40", bitstream_suffix=".bin",
        # SB_RAM40_4K: 4 Kbit, 16x256 .. 2x2048 (Yosys techlibs/ice40/brams.txt)
        block_ram=BlockRamShapes("EBR (SB_RAM40_4K)", 4096, ((16, 256), (8, 512), (4, 1024), (2, 2048))),
        pll_limits=PllLimits(f_in=(10e6, 133e6), f_pfd=(10e6, 133e6), f_vco=(533e6, 1066e6), f_out=(16e6, 275e6)),
        pll_primitive="SB_PLL40_PAD",
        cell_types={"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "sprams": "ICESTORM_SPRAM",
                    "dsps": "ICESTORM_DSP"},
        ff_cells=re.compile(r"^SB_DFF\w*$"),
        yosys_block_cost=64,
        first_try_hz=45e6, lut_budget_share=0.85, register_weights=False),
    "ecp5": Family(
        name="ecp5", bitstream_suffix=".bit",
        # DP16KD: 18 Kbit, 18x1024 .. 1x16384; PDPW16KD gives 36x512 with one read and one write port
        block_ram=BlockRamShapes("EBR (DP16KD)", 18432,
                                 ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))),
        pll_limits=PllLimits(f_in=(8e6, 400e6), f_pfd=(3.125e6, 400e6), f_vco=(400e6, 800e6),
                             f_out=(3.125e6, 400e6)),
        pll_primitive="EHXPLLL",
        cell_types={"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D"},
        ff_cells=re.compile(r"^TRELLIS_FF$"),
        yosys_block_cost=128,
        first_try_hz=90e6, lut_budget_share=0.25, register_weights=True),
}


def per_family(attribute: str) -> dict:
    """{family name: that attribute}: the view the older per-family tables gave."""
    return {name: getattr(family, attribute) for name, family in FAMILIES.items()}


__all__ = ["FAMILIES", "BlockRamShapes", "Family", "PllLimits", "per_family"]
