"""The boards xnorflow builds for: amaranth-boards platforms plus the capacities the compiler fits to.

Pins, clocks and I/O standards come from the amaranth-boards package (never copied here); this module
adds what amaranth-boards does not say: the FPGA's logic and memory capacities and which UART the
accelerator talks through.

Capacities are from the Lattice family data sheets (iCE40 UltraPlus FPGA-DS-02008 table 1.1, ECP5
FPGA-DS-02012 table 1.1) and agree with the totals nextpnr prints in its device utilisation (checked
by tests/boards/test_synth.py):

=========== ============ ======= ==================== ============== ======
board        device       LUT4s   block RAM            SPRAM          DSPs
=========== ============ ======= ==================== ============== ======
icebreaker   iCE40UP5K    5280    30 EBR x 4 Kbit      4 x 256 Kbit   8
ulx3s-25f    LFE5U-25F    24288   56 EBR x 18 Kbit     -              28
ulx3s-45f    LFE5U-45F    43848   108 EBR x 18 Kbit    -              72
ulx3s-85f    LFE5U-85F    83640   208 EBR x 18 Kbit    -              156
orangecrab   LFE5U-25F    24288   56 EBR x 18 Kbit     -              28
=========== ============ ======= ==================== ============== ======
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_45F_Platform, ULX3S_85F_Platform

from xnorflow.boards.family import FAMILIES, per_family
from xnorflow.boards.uart import DEFAULT_BAUD
from xnorflow.errors import XnorflowError


class BoardError(XnorflowError):
    """An unknown board name; the message lists the known ones."""


@dataclass(frozen=True)
class Board:
    """One FPGA board: its amaranth-boards platform and the capacities the compiler fits a network to.

    ``bram_blocks`` x ``bram_block_bits`` is the block RAM (EBR) that holds weights and thresholds.
    ``sprams`` counts the iCE40 UltraPlus single-port RAMs: they cannot be initialised by the
    bitstream, so weights (which must be there at power-up) never live in them; they are listed only
    so reports can show what the device has.
    """

    name: str
    make_platform: Callable[[], object]
    family: str                 # "ice40" or "ecp5"
    device: str                 # as nextpnr and the vendor name it, e.g. "iCE40UP5K", "LFE5U-85F"
    package: str
    luts: int                   # LUT4s
    bram_blocks: int
    bram_block_bits: int
    sprams: int
    spram_bits: int
    dsps: int
    uart: tuple[str, int] = ("uart", 0)   # (resource name, number) on the platform
    # The fastest baud rate the board's USB-serial bridge takes; the board top runs its UART at the
    # fastest rate not above it that the design's clock makes (boards/uart.py: fastest_baud).
    max_baud: int = DEFAULT_BAUD
    pll_first_try_hz: float | None = None   # first PLL clock synthesize_at_best_clock tries (FIRST_TRY_HZ)
    notes: str = ""

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.bram_block_bits

    @property
    def bitstream_suffix(self) -> str:
        return FAMILIES[self.family].bitstream_suffix

    def platform(self):
        """A fresh amaranth platform instance (platforms carry per-build state, so never share one)."""
        return self.make_platform()

    @property
    def clock_hz(self) -> float:
        """The board oscillator: the design's clock without a PLL, and the PLL's input with one."""
        return float(self.platform().default_clk_frequency)


# --- build-only platforms ----------------------------------------------------------------------
# Some amaranth-boards platforms add their loader to the tools a *build* requires (ULX3S wants
# openFPGALoader, OrangeCrab runs dfu-suffix after ecppack), so building a bitstream would fail on a
# machine without them although they only matter for loading. The subclass keeps the board's pins,
# clock and toolchain options and requires exactly the family's synthesis tools; programming
# (`toolchain_program`) is untouched and still needs the loader.
_FAMILY_BASE = {"ice40": LatticeICE40Platform, "ecp5": LatticeECP5Platform}   # amaranth's platform per family


def _build_only(platform_class: type, family: str) -> type:
    base = _FAMILY_BASE[family]
    return type(f"{platform_class.__name__}BuildOnly", (platform_class,), {
        "required_tools": property(lambda self: base.required_tools.fget(self)),
        "command_templates": property(lambda self: base.command_templates.fget(self)),
    })


# OrangeCrab r0.2 has no UART resource (its USB goes straight into the FPGA): add one on the Feather
# header pins labelled 0 (RX) and 1 (TX), by connector name, not by ball. Its `dfu-suffix` step is
# dropped by _build_only: run `dfu-suffix -v 1209 -p 5af0 -a xnorflow.bit` before `dfu-util`.
def _orangecrab_platform():
    platform = _build_only(OrangeCrabR0_2_25FPlatform, "ecp5")()
    platform.add_resources([
        Resource("uart", 0,
                 Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
                 Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
                 Attrs(IO_TYPE="LVCMOS33")),
    ])
    return platform


# FTDI's FT2232H (iCEBreaker) and FT231X (ULX3S) both make 3 Mbaud exactly (3 MHz / 1; the FT231X's
# data sheet limit, the FT2232H takes more but 3 Mbaud is already 4 clocks a bit at 12 MHz).
FTDI_BAUD = 3_000_000

_ICE40_EBR_BITS = 4096
_ECP5_EBR_BITS = 18432

# First PLL clock to try when building as fast as timing allows (synthesize_at_best_clock): where most
# builds meet timing, since a rebuild costs as much as the first build (boards/family.py; the builds
# behind each value: bench/records.md, "First PLL clock").
FIRST_TRY_HZ = per_family("first_try_hz")

BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        "icebreaker", _build_only(ICEBreakerPlatform, "ice40"), "ice40", "iCE40UP5K", "SG48",
        luts=5280, bram_blocks=30, bram_block_bits=_ICE40_EBR_BITS,
        sprams=4, spram_bits=256 * 1024, dsps=8, pll_first_try_hz=FIRST_TRY_HZ["ice40"],
        max_baud=FTDI_BAUD, notes="UART through the FT2232H's second channel; SPRAM unusable for weights (no init)"),
    "ulx3s-25f": Board(
        "ulx3s-25f", _build_only(ULX3S_25F_Platform, "ecp5"), "ecp5", "LFE5U-25F", "BG381",
        luts=24288, bram_blocks=56, bram_block_bits=_ECP5_EBR_BITS, sprams=0, spram_bits=0, dsps=28,
        pll_first_try_hz=FIRST_TRY_HZ["ecp5"], max_baud=FTDI_BAUD,
        notes="UART through the FT231X (US1 USB port)"),
    "ulx3s-45f": Board(
        "ulx3s-45f", _build_only(ULX3S_45F_Platform, "ecp5"), "ecp5", "LFE5U-45F", "BG381",
        luts=43848, bram_blocks=108, bram_block_bits=_ECP5_EBR_BITS, sprams=0, spram_bits=0, dsps=72,
        pll_first_try_hz=FIRST_TRY_HZ["ecp5"], max_baud=FTDI_BAUD,
        notes="UART through the FT231X (US1 USB port)"),
    "ulx3s-85f": Board(
        "ulx3s-85f", _build_only(ULX3S_85F_Platform, "ecp5"), "ecp5", "LFE5U-85F", "BG381",
        luts=83640, bram_blocks=208, bram_block_bits=_ECP5_EBR_BITS, sprams=0, spram_bits=0, dsps=156,
        pll_first_try_hz=FIRST_TRY_HZ["ecp5"], max_baud=FTDI_BAUD,
        notes="UART through the FT231X (US1 USB port)"),
    "orangecrab": Board(
        "orangecrab", _orangecrab_platform, "ecp5", "LFE5U-25F", "MG285",
        luts=24288, bram_blocks=56, bram_block_bits=_ECP5_EBR_BITS, sprams=0, spram_bits=0, dsps=28,
        pll_first_try_hz=FIRST_TRY_HZ["ecp5"],
        notes="OrangeCrab r0.2 (25F); UART on Feather pins 0 (RX) / 1 (TX) via a 3.3 V USB-serial "
              "adapter (115200 baud unless --baud says what it takes); run dfu-suffix on the .bit before loading it with dfu-util"),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}: choose one of {', '.join(sorted(BOARDS))}") from None
