"""PLL settings: the divider values that clock the design as fast as asked, never faster.

Pure arithmetic, no Amaranth: `plan_pll` searches the dividers of the family's PLL the way the
project tools do (IceStorm's ``icepll`` for iCE40, Trellis' ``ecppll`` for ECP5), but keeps only
settings whose output is NOT ABOVE the wanted frequency (the design must never be clocked faster
than the frequency its timing was asked for) and returns the highest of those.

iCE40 (SB_PLL40_*, SIMPLE feedback; limits from icepll, iCE40 sysCLOCK PLL guide TN1251)::

    f_pfd = f_in / (DIVR + 1)          DIVR 0..15,  f_pfd in [10, 133] MHz
    f_vco = f_pfd * (DIVF + 1)         DIVF 0..127, f_vco in [533, 1066] MHz
    f_out = f_vco / 2**DIVQ            DIVQ 1..6,   f_out in [16, 275] MHz
    FILTER_RANGE from f_pfd (icepll's table)

ECP5 (EHXPLLL, feedback from CLKOP; limits from ecppll and the ECP5 data sheet FPGA-DS-02012)::

    f_pfd = f_in / CLKI_DIV            CLKI_DIV 1..128,  f_pfd in [3.125, 400] MHz
    f_out = f_pfd * CLKFB_DIV          CLKFB_DIV 1..80,  f_out in [3.125, 400] MHz
    f_vco = f_out * CLKOP_DIV          CLKOP_DIV 1..128, f_vco in [400, 800] MHz
    CLKOP_CPHASE = CLKOP_DIV - 1 (no phase shift: the output is not aligned to any other clock)

Frequencies are compared as exact fractions, so a plan at exactly the wanted frequency is found
and one a rounding error above it is not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from xnorflow.boards.family import PllLimits, per_family
from xnorflow.errors import XnorflowError

MHZ = 1_000_000


class PllError(XnorflowError):
    """No PLL setting gives the requested clock; the message says which range is possible."""


LIMITS = per_family("pll_limits")
PRIMITIVES = per_family("pll_primitive")

# The values each divider takes.
ICE40_DIVR = range(16)
ICE40_DIVF = range(128)   # SIMPLE feedback; other feedback modes stop at 63
ICE40_DIVQ = range(1, 7)
ECP5_CLKI_DIV = range(1, 129)
ECP5_CLKFB_DIV = range(1, 81)
ECP5_CLKOP_DIV = range(1, 129)
ECP5_VCO_SWEET_SPOT = 600e6  # ecppll prefers the VCO nearest 600 MHz among equal outputs


@dataclass(frozen=True)
class PllPlan:
    """One PLL setting: the frequencies it gives and the dividers that give them.

    ``dividers`` holds (parameter name, value) pairs in the primitive's own names (a tuple so the
    plan stays hashable); `parameters` adds the fixed settings for the Amaranth ``Instance``.
    """

    family: str
    primitive: str
    f_in_hz: float
    f_want_hz: float
    f_out_hz: float
    f_pfd_hz: float
    f_vco_hz: float
    dividers: tuple[tuple[str, int], ...]

    def divider(self, name: str) -> int:
        return dict(self.dividers)[name]

    def parameters(self) -> dict[str, int | str]:
        """The primitive's parameters (without Amaranth's ``p_`` prefix)."""
        if self.family == "ice40":
            return {"FEEDBACK_PATH": "SIMPLE", **dict(self.dividers),
                    "FILTER_RANGE": ice40_filter_range(self.f_pfd_hz)}
        clkop_div = self.divider("CLKOP_DIV")
        return {**dict(self.dividers), "CLKOP_CPHASE": clkop_div - 1, "CLKOP_FPHASE": 0,
                "FEEDBK_PATH": "CLKOP"}

    def as_dict(self) -> dict:
        """The plan for a JSON report: frequencies in MHz and the primitive's parameters."""
        return {
            "primitive": self.primitive,
            "f_in_mhz": self.f_in_hz / MHZ,
            "f_want_mhz": self.f_want_hz / MHZ,
            "f_out_mhz": self.f_out_hz / MHZ,
            "f_pfd_mhz": self.f_pfd_hz / MHZ,
            "f_vco_mhz": self.f_vco_hz / MHZ,
            "parameters": self.parameters(),
        }


def ice40_filter_range(f_pfd_hz: float) -> int:
    """The loop filter setting for a phase detector frequency (icepll's table)."""
    f_pfd_mhz = f_pfd_hz / MHZ
    for bound, setting in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd_mhz < bound:
            return setting
    return 6


def plan_pll(family: str, f_in_hz: float, f_want_hz: float) -> PllPlan:
    """The PLL setting with the highest output frequency not above ``f_want_hz``.

    Raises `PllError` if the family has no PLL support here, the input clock is outside the PLL's
    input range, or ``f_want_hz`` is below the lowest frequency the PLL can make.
    """
    if family not in LIMITS:
        raise PllError(f"no PLL support for the {family!r} family: use one of {', '.join(sorted(LIMITS))} "
                       f"or run at the board clock")
    limits = LIMITS[family]
    if not (math.isfinite(f_want_hz) and f_want_hz > 0):
        raise PllError(f"cannot clock the design at {f_want_hz!r} Hz: give a positive frequency")
    if not limits.f_in[0] <= f_in_hz <= limits.f_in[1]:
        raise PllError(f"the {f_in_hz / MHZ:g} MHz board clock is outside the {family} PLL's input range "
                       f"{_mhz_range(limits.f_in)}: run at the board clock (no PLL)")
    if f_want_hz < limits.f_out[0]:
        raise PllError(f"cannot clock the design at {f_want_hz / MHZ:g} MHz: the {family} PLL makes "
                       f"{_mhz_range(limits.f_out)}; ask for a frequency in that range or run at the "
                       f"{f_in_hz / MHZ:g} MHz board clock (no PLL)")
    search = _ice40_candidates if family == "ice40" else _ecp5_candidates
    best = None
    for candidate in search(Fraction(f_in_hz), Fraction(f_want_hz), limits):
        if best is None or candidate[0] > best[0]:   # strictly better only: the first found wins ties
            best = candidate
    if best is None:
        lowest = min(c[1] for c in search(Fraction(f_in_hz), Fraction(limits.f_out[1]), limits))
        raise PllError(f"cannot clock the design at {f_want_hz / MHZ:g} MHz: the lowest the {family} PLL "
                       f"makes from the {f_in_hz / MHZ:g} MHz board clock is {float(lowest) / MHZ:g} MHz; "
                       f"ask for at least that or run at the board clock (no PLL)")
    _, f_out, f_pfd, f_vco, dividers = best
    return PllPlan(family=family, primitive=PRIMITIVES[family], f_in_hz=float(f_in_hz),
                   f_want_hz=float(f_want_hz), f_out_hz=float(f_out), f_pfd_hz=float(f_pfd),
                   f_vco_hz=float(f_vco), dividers=dividers)


def _within(value: Fraction, bounds: tuple[float, float]) -> bool:
    return Fraction(bounds[0]) <= value <= Fraction(bounds[1])


def _ice40_candidates(f_in: Fraction, f_want: Fraction, limits: PllLimits):
    """(rank, f_out, f_pfd, f_vco, dividers) of every valid setting not above f_want, in icepll's
    search order (lowest DIVR first, so ties go to the highest phase detector frequency)."""
    for divr in ICE40_DIVR:
        f_pfd = f_in / (divr + 1)
        if not _within(f_pfd, limits.f_pfd):
            continue
        for divf in ICE40_DIVF:
            f_vco = f_pfd * (divf + 1)
            if not _within(f_vco, limits.f_vco):
                continue
            for divq in ICE40_DIVQ:
                f_out = f_vco / 2**divq
                if f_out <= f_want and _within(f_out, limits.f_out):
                    yield (f_out,), f_out, f_pfd, f_vco, (("DIVR", divr), ("DIVF", divf), ("DIVQ", divq))


def _ecp5_candidates(f_in: Fraction, f_want: Fraction, limits: PllLimits):
    """As `_ice40_candidates` for the EHXPLLL; among equal outputs the VCO nearest 600 MHz ranks
    higher (ecppll's choice), then the lowest CLKI_DIV (search order)."""
    vco_low, vco_high = (Fraction(f) for f in limits.f_vco)
    sweet_spot = Fraction(ECP5_VCO_SWEET_SPOT)
    for clki_div in ECP5_CLKI_DIV:
        f_pfd = f_in / clki_div
        if not _within(f_pfd, limits.f_pfd):
            continue
        for clkfb_div in ECP5_CLKFB_DIV:
            f_out = f_pfd * clkfb_div
            if f_out > f_want:
                break                      # f_out grows with CLKFB_DIV
            if not _within(f_out, limits.f_out):
                continue
            # The output divider puts the VCO in range; several may: take the one nearest 600 MHz.
            lowest = max(ECP5_CLKOP_DIV.start, math.ceil(vco_low / f_out))
            highest = min(ECP5_CLKOP_DIV.stop - 1, math.floor(vco_high / f_out))
            if lowest > highest:
                continue
            below = min(max(math.floor(sweet_spot / f_out), lowest), highest)
            nearest = (below, min(below + 1, highest))
            clkop_div = min(nearest, key=lambda d: abs(f_out * d - sweet_spot))
            f_vco = f_out * clkop_div
            rank = (f_out, -abs(f_vco - sweet_spot))
            yield rank, f_out, f_pfd, f_vco, (("CLKI_DIV", clki_div), ("CLKFB_DIV", clkfb_div),
                                              ("CLKOP_DIV", clkop_div))


def _mhz_range(bounds: tuple[float, float]) -> str:
    return f"{bounds[0] / MHZ:g}-{bounds[1] / MHZ:g} MHz"


__all__ = ["LIMITS", "PllError", "PllLimits", "PllPlan", "ice40_filter_range", "plan_pll"]
