"""The compiler's memory-block count against real Yosys: one memory, synthesized alone.

Each case builds a width x depth memory as the RTL does (`lib.memory.Memory`, a synchronous read
port; a RAM also has a write port), runs Yosys' synth_ice40 / synth_ecp5 on it and counts the block
RAM cells (SB_RAM40_4K, DP16KD) and LUT RAM cells (TRELLIS_DPR16X4) it placed, which must equal
`BLOCK_RAMS[family].mapping` (compiler/analysis.py). A few seconds per case: a fast subset runs by
default, the whole grid is marked slow.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from xnorflow.boards.synth import find_tool
from xnorflow.compiler.analysis import BLOCK_RAMS
from xnorflow.hw.mvtu import memory_style_attrs

CELLS = {"ice40": {"block": "SB_RAM40_4K"}, "ecp5": {"block": "DP16KD", "distributed": "TRELLIS_DPR16X4"}}


class OneMemory(wiring.Component):
    """A ``kind`` ("rom" with random contents, or "ram") memory of width x depth and its ports."""

    def __init__(self, width: int, depth: int, kind: str, style: str):
        self.width, self.depth, self.kind, self.style = width, depth, kind, style
        ports = {"addr": In(range(max(depth, 2))), "data": Out(width)}
        if kind == "ram":
            ports |= {"write_addr": In(range(max(depth, 2))), "write_data": In(width), "write_en": In(1)}
        super().__init__(ports)

    @property
    def init(self) -> list[int]:
        if self.kind == "ram":
            return []
        rng = np.random.default_rng(self.width * 7919 + self.depth)
        return [int.from_bytes(rng.bytes(self.width // 8 + 1), "little") % (1 << self.width) for _ in range(self.depth)]

    @property
    def kept_width(self) -> int:
        """The bits Yosys keeps: a ROM's columns that are not the same in every word."""
        init = self.init
        if not init:
            return self.width
        return sum(len({(word >> bit) & 1 for word in init}) > 1 for bit in range(self.width))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=self.init,
                                        attrs=memory_style_attrs(self.style))
        if self.kind == "ram":
            write = mem.write_port()
            m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data), write.en.eq(self.write_en)]
        read = mem.read_port()
        m.d.comb += [read.addr.eq(self.addr), self.data.eq(read.data)]
        return m


def yosys_cells(tmp_path, memory: OneMemory, family: str) -> dict[str, int]:
    """Memory cells of each style Yosys' synth_<family> makes of the memory."""
    (tmp_path / "top.il").write_text(rtlil.convert(memory, name="top"))
    script = f"read_rtlil top.il; synth_{family} -top top; tee -q -o stat.json stat -json"
    subprocess.run([find_tool("yosys"), "-q", "-p", script], cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    return {style: int(cells.get(cell, 0)) for style, cell in CELLS[family].items()}


def check(tmp_path, family, width, depth, kind="rom", style="block"):
    memory = OneMemory(width, depth, kind, style)
    # Yosys drops a ROM's constant columns first (LayerSpec.weight_memory_widths counts the same).
    expected = BLOCK_RAMS[family].mapping(memory.kept_width, depth, kind, style)
    counted = {cell_style: expected.cells if expected.style == cell_style else 0 for cell_style in CELLS[family]}
    assert yosys_cells(tmp_path, memory, family) == counted, (family, width, depth, kind, style)


# Weight banks as the fit makes them: packed words (PE x SIMD bits) and depths NF x SF that do not
# fill a block's depth; a memory's slices laid side by side (24 x 2752: 4 blocks, not 6 tiles).
FAST = [("ecp5", 24, 2752), ("ecp5", 392, 2048), ("ecp5", 72, 700), ("ecp5", 1, 5000),
        ("ice40", 24, 700), ("ice40", 49, 64), ("ice40", 1, 4096)]
WIDTHS = [1, 3, 8, 9, 16, 17, 24, 36, 40, 64, 100]
DEPTHS = [2, 16, 100, 256, 257, 512, 700, 1024, 1500, 2048, 2752]
GRID = [(family, w, d) for family in ("ice40", "ecp5") for w in WIDTHS for d in DEPTHS
        if (family, w, d) not in FAST]


@pytest.mark.parametrize("family, width, depth", FAST)
def test_weight_rom_blocks_match_yosys(tmp_path, family, width, depth):
    check(tmp_path, family, width, depth)


@pytest.mark.parametrize("family, width, depth, kind, style", [
    ("ecp5", 20, 100, "ram", "block"), ("ecp5", 392, 4, "ram", "block"), ("ice40", 20, 100, "ram", "block"),
    ("ecp5", 8, 20, "ram", "auto"), ("ecp5", 64, 8, "ram", "auto"), ("ice40", 8, 20, "ram", "auto"),
    ("ecp5", 48, 43, "rom", "auto"), ("ice40", 40, 64, "rom", "auto"),
])
def test_buffers_and_unstyled_memories_match_yosys(tmp_path, family, width, depth, kind, style):
    check(tmp_path, family, width, depth, kind, style)


@pytest.mark.slow
@pytest.mark.parametrize("family, width, depth", GRID)
def test_block_count_grid_matches_yosys(tmp_path, family, width, depth):
    check(tmp_path, family, width, depth)


@pytest.mark.slow
@pytest.mark.parametrize("family, width, depth", [(f, w, d) for f in ("ice40", "ecp5") for w in (8, 20, 64)
                                                  for d in (4, 40, 300, 1100)])
def test_ram_block_count_grid_matches_yosys(tmp_path, family, width, depth):
    check(tmp_path, family, width, depth, "ram", "block")
