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
class RamCell:
    """One memory cell as Yosys' memory_libmap sees it (techlibs: a ``ram`` entry of brams*.txt or
    lutrams*.txt): width ``widths[i]`` gives ``2 ** (abits - i)`` words; a write port takes only
    ``write_widths``, with write enables every ``byte`` bits (0: one for the whole word)."""

    cell: str
    abits: int
    widths: tuple[int, ...]
    write_widths: tuple[int, ...]
    byte: int
    cost: int
    rom: bool = True            # takes initial contents, so can hold a ROM (prune_rom: no)


@dataclass(frozen=True)
class BlockRamShapes:
    """A family's block RAM: its name, bits per block and the cells Yosys maps memories to: ``cells``
    (block RAM, each a mode of the same block, in memory_libmap's order) and ``lut_ram``
    (distributed RAM, RAMs only)."""

    name: str
    bits: int
    cells: tuple[RamCell, ...]
    lut_ram: tuple[RamCell, ...] = ()

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """The (width, depth) shapes one block takes, widest first."""
        return tuple(sorted({(w, 2 ** (c.abits - i)) for c in self.cells for i, w in enumerate(c.widths)},
                            reverse=True))


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
    # Policies, each from measured builds (bench/records.md, the section of the same name)
    first_try_hz: float            # the first PLL clock synthesize_at_best_clock tries
    lut_budget_share: float        # the share of the LUTs a design may take by default
    register_weights: bool         # block RAM weight reads registered before the XNOR
    conv_router: str = "router1"   # nextpnr's router for designs with a sliding-window generator


FAMILIES = {
    "ice40": Family(
        name="ice40", bitstream_suffix=".bin",
        # SB_RAM40_4K: 4 Kbit, 16x256 .. 2x2048 (Yosys techlibs/ice40/brams.txt: its two HAS_BE options)
        block_ram=BlockRamShapes("EBR (SB_RAM40_4K)", 4096, (
            RamCell("$__ICE40_RAM4K_", 11, (2, 4, 8, 16), (2, 4, 8), 0, 64),
            RamCell("$__ICE40_RAM4K_", 11, (2, 4, 8, 16), (16,), 1, 64))),
        pll_limits=PllLimits(f_in=(10e6, 133e6), f_pfd=(10e6, 133e6), f_vco=(533e6, 1066e6), f_out=(16e6, 275e6)),
        pll_primitive="SB_PLL40_PAD",
        cell_types={"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "sprams": "ICESTORM_SPRAM",
                    "dsps": "ICESTORM_DSP"},
        ff_cells=re.compile(r"^SB_DFF\w*$"),
        first_try_hz=45e6, lut_budget_share=0.85, register_weights=False),
    "ecp5": Family(
        name="ecp5", bitstream_suffix=".bit",
        # DP16KD: 18 Kbit, 18x1024 .. 1x16384; PDPW16KD gives 36x512 with one read and one 36-bit write
        # port (Yosys techlibs/lattice/brams_16kd.txt); TRELLIS_DPR16X4 LUT RAM (lutrams_trellis.txt)
        block_ram=BlockRamShapes("EBR (DP16KD)", 18432, (
            RamCell("$__DP16KD_", 14, (1, 2, 4, 9, 18), (1, 2, 4, 9, 18), 9, 128),
            RamCell("$__PDPW16KD_", 14, (1, 2, 4, 9, 18, 36), (36,), 9, 128)),
            lut_ram=(RamCell("$__TRELLIS_DPR16X4_", 4, (4,), (4,), 0, 4, rom=False),)),
        pll_limits=PllLimits(f_in=(8e6, 400e6), f_pfd=(3.125e6, 400e6), f_vco=(400e6, 800e6),
                             f_out=(3.125e6, 400e6)),
        pll_primitive="EHXPLLL",
        cell_types={"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D"},
        ff_cells=re.compile(r"^TRELLIS_FF$"),
        first_try_hz=90e6, lut_budget_share=0.25, register_weights=True, conv_router="router2"),
}


def per_family(attribute: str) -> dict:
    """{family name: that attribute}: the view the older per-family tables gave."""
    return {name: getattr(family, attribute) for name, family in FAMILIES.items()}


__all__ = ["FAMILIES", "BlockRamShapes", "Family", "PllLimits", "RamCell", "per_family"]
