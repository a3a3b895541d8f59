"""PLL planning (pure arithmetic): ranges obeyed, never above the wanted clock, as close as the PLL
allows; and the PLL in the board top as amaranth writes it out for the tools."""
import bisect
import math
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_factory import sized_network

from xnorflow.boards.pll import LIMITS, PllError, plan_pll
from xnorflow.boards.registry import get_board
from xnorflow.boards.top import BoardTop
from xnorflow.boards.uart import uart_divisor

MHZ = 1e6


# --- the formulas, written out again here so the tests do not trust the module's own search ------
def ice40_frequencies(f_in, divr, divf, divq):
    f_pfd = Fraction(f_in) / (divr + 1)
    f_vco = f_pfd * (divf + 1)
    return f_pfd, f_vco, f_vco / 2**divq


def ecp5_frequencies(f_in, clki_div, clkfb_div, clkop_div):
    f_pfd = Fraction(f_in) / clki_div
    f_out = f_pfd * clkfb_div
    return f_pfd, f_out * clkop_div, f_out


def recomputed(plan):
    """(f_pfd, f_vco, f_out) from the plan's dividers by the data-sheet formulas."""
    p = plan.parameters()
    if plan.family == "ice40":
        return ice40_frequencies(plan.f_in_hz, p["DIVR"], p["DIVF"], p["DIVQ"])
    return ecp5_frequencies(plan.f_in_hz, p["CLKI_DIV"], p["CLKFB_DIV"], p["CLKOP_DIV"])


def within(value, bounds):
    return Fraction(bounds[0]) <= value <= Fraction(bounds[1])


def all_outputs(family, f_in):
    """Every output frequency a valid setting makes from f_in (brute force over all dividers)."""
    limits = LIMITS[family]
    outputs = set()
    if family == "ice40":
        for divr, divf, divq in ((r, f, q) for r in range(16) for f in range(128) for q in range(1, 7)):
            f_pfd, f_vco, f_out = ice40_frequencies(f_in, divr, divf, divq)
            if within(f_pfd, limits.f_pfd) and within(f_vco, limits.f_vco) and within(f_out, limits.f_out):
                outputs.add(f_out)
        return sorted(outputs)
    for clki_div in range(1, 129):
        for clkfb_div in range(1, 81):
            f_pfd, _, f_out = ecp5_frequencies(f_in, clki_div, clkfb_div, 1)
            # Some CLKOP_DIV in 1..128 puts the VCO (f_out * CLKOP_DIV) in range.
            lowest_div = max(1, math.ceil(Fraction(limits.f_vco[0]) / f_out))
            vco_fits = lowest_div <= 128 and within(f_out * lowest_div, limits.f_vco)
            if within(f_pfd, limits.f_pfd) and within(f_out, limits.f_out) and vco_fits:
                outputs.add(f_out)
    return sorted(outputs)


def assert_valid(plan, f_want):
    limits = LIMITS[plan.family]
    f_pfd, f_vco, f_out = recomputed(plan)
    assert (float(f_pfd), float(f_vco), float(f_out)) == (plan.f_pfd_hz, plan.f_vco_hz, plan.f_out_hz)
    assert within(f_pfd, limits.f_pfd) and within(f_vco, limits.f_vco) and within(f_out, limits.f_out)
    assert f_out <= Fraction(f_want)   # never clocked faster than asked


# --- reference points worked out by hand -----------------------------------------------------------
def test_icebreaker_24mhz_by_hand():
    # 12 MHz in. PFD = 12/(DIVR+1) must be >= 10 MHz, so DIVR = 0 and PFD = 12 MHz (FILTER_RANGE 1,
    # PFD < 17 MHz). VCO = 12*(DIVF+1) in [533, 1066] means DIVF+1 in [45, 88]. f_out = VCO / 2**DIVQ
    # = 24 needs VCO = 24 * 2**DIVQ: of 48, 96, 192, 384, 768, 1536 only 768 is in range, so DIVQ = 5
    # and DIVF + 1 = 64: DIVF = 63 (icepll -i 12 -o 24 gives the same).
    plan = plan_pll("ice40", 12 * MHZ, 24 * MHZ)
    assert plan.f_out_hz == 24 * MHZ and plan.f_vco_hz == 768 * MHZ
    assert plan.parameters() == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1}
    assert plan.primitive == "SB_PLL40_PAD"


def test_icebreaker_below_an_unreachable_target_by_hand():
    # 32.5 MHz from 12 MHz: with DIVR = 0, f_out = 12*n / 2**DIVQ for n = DIVF+1 in [45, 88].
    # DIVQ = 5: 0.375*n <= 32.5 gives n = 86, 32.25 MHz (VCO 1032, in range); DIVQ = 4: 0.75*n is at
    # least 33.75 (too fast); DIVQ = 6: at most 16.5. So 32.25 MHz, DIVF = 85, DIVQ = 5.
    plan = plan_pll("ice40", 12 * MHZ, 32.5 * MHZ)
    assert plan.f_out_hz == 32.25 * MHZ
    assert (plan.divider("DIVR"), plan.divider("DIVF"), plan.divider("DIVQ")) == (0, 85, 5)


def test_ulx3s_50mhz_by_hand():
    # 25 MHz in, CLKOP feedback: f_out = 25/CLKI_DIV * CLKFB_DIV. CLKI_DIV = 1, CLKFB_DIV = 2 gives
    # 50 MHz (the first of the equal settings, all with PFD >= 3.125 MHz). VCO = 50 * CLKOP_DIV in
    # [400, 800]: CLKOP_DIV in [8, 16], nearest 600 MHz is 12 (VCO 600); CLKOP_CPHASE = 12 - 1.
    plan = plan_pll("ecp5", 25 * MHZ, 50 * MHZ)
    assert plan.f_out_hz == 50 * MHZ and plan.f_vco_hz == 600 * MHZ
    assert plan.parameters() == {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 11,
                                 "CLKOP_FPHASE": 0, "FEEDBK_PATH": "CLKOP"}
    assert plan.primitive == "EHXPLLL"


def test_ulx3s_just_above_50mhz_stays_at_50_by_hand():
    # 51.8 MHz from 25 MHz: PFD >= 3.125 MHz allows CLKI_DIV <= 8, and for each k <= 8 the largest
    # CLKFB_DIV with 25*fb/k <= 51.8 is fb = 2k (fb/k <= 2.072 < (2k+1)/k): 50 MHz, never 51.8.
    assert plan_pll("ecp5", 25 * MHZ, 51.8 * MHZ).f_out_hz == 50 * MHZ


def test_orangecrab_52mhz_by_hand():
    # 48 MHz in: CLKI_DIV <= 15 (PFD >= 3.125). 52 = 48 * 13/12: CLKI_DIV 12 (PFD 4 MHz), CLKFB_DIV 13.
    # VCO = 52 * CLKOP_DIV in [400, 800]: CLKOP_DIV 8..15; 11 gives 572, 12 gives 624: 624 is nearer
    # 600 (24 vs 28 MHz off), so CLKOP_DIV = 12.
    plan = plan_pll("ecp5", 48 * MHZ, 52 * MHZ)
    assert plan.f_out_hz == 52 * MHZ and plan.f_vco_hz == 624 * MHZ
    assert (plan.divider("CLKI_DIV"), plan.divider("CLKFB_DIV"), plan.divider("CLKOP_DIV")) == (12, 13, 12)


# --- sweeps: valid, never above, and the best the PLL can do ----------------------------------------
@pytest.mark.parametrize("family, f_in_mhz, worst_gap, gap_holds_below_mhz", [
    # iCE40 from 12 MHz: neighbouring outputs are 12/2**DIVQ apart, at most 0.375 MHz at 16.5 MHz: < 2.5 %.
    ("ice40", 12, lambda f_want: 0.025 * f_want, 275),
    # ECP5: the multiples of the lowest PFD (25/8 = 3.125 MHz, 48/15 = 3.2 MHz) are all reachable as
    # long as CLKFB_DIV <= 80 gets there: up to 80 * 3.125 = 250 MHz (256 MHz); coarser above.
    ("ecp5", 25, lambda f_want: 3.125 * MHZ, 250),
    ("ecp5", 48, lambda f_want: 48 * MHZ / 15, 256),
])
def test_sweep_gives_the_highest_frequency_not_above_the_target(family, f_in_mhz, worst_gap, gap_holds_below_mhz):
    f_in = f_in_mhz * MHZ
    outputs = all_outputs(family, f_in)
    high = LIMITS[family].f_out[1]
    targets = [float(outputs[0]) + k * (high - float(outputs[0])) / 80 for k in range(81)]
    targets += [float(f) for f in outputs[::97]]     # exactly reachable ones too
    for f_want in targets:
        plan = plan_pll(family, f_in, f_want)
        assert_valid(plan, f_want)
        best = outputs[bisect.bisect_right(outputs, Fraction(f_want)) - 1]
        assert recomputed(plan)[2] == best, (f_want, plan)
        if f_want <= gap_holds_below_mhz * MHZ:
            assert f_want - plan.f_out_hz <= worst_gap(f_want), (f_want, plan.f_out_hz)


@settings(max_examples=30, deadline=None)
@given(family=st.sampled_from(sorted(LIMITS)), data=st.data())
def test_any_input_and_target_in_range_gives_a_valid_plan(family, data):
    limits = LIMITS[family]
    f_in = data.draw(st.floats(limits.f_in[0], limits.f_in[1]))
    f_want = data.draw(st.floats(limits.f_out[0] * 1.1, limits.f_out[1] * 1.5))
    try:
        plan = plan_pll(family, f_in, f_want)
    except PllError as error:   # possible just above the minimum for some inputs: says the lowest
        assert "the lowest" in str(error)
        return
    assert_valid(plan, f_want)
    assert plan.f_in_hz == f_in and plan.f_want_hz == f_want


def test_plan_as_dict_reports_megahertz_and_parameters():
    report = plan_pll("ice40", 12 * MHZ, 30 * MHZ).as_dict()
    assert report["f_out_mhz"] == 30.0 and report["f_in_mhz"] == 12.0 and report["f_want_mhz"] == 30.0
    assert report["parameters"]["DIVQ"] == 5 and report["primitive"] == "SB_PLL40_PAD"


# --- impossible requests -------------------------------------------------------------------------
@pytest.mark.parametrize("family, f_in, f_want, words", [
    ("ice40", 12 * MHZ, 10 * MHZ, ["10 MHz", "16-275 MHz", "board clock"]),
    # 16 MHz is in the data-sheet range, but from 12 MHz the lowest output is 12*86/64 = 16.125 MHz.
    ("ice40", 12 * MHZ, 16 * MHZ, ["16 MHz", "lowest", "16.125 MHz"]),
    ("ecp5", 25 * MHZ, 3 * MHZ, ["3 MHz", "3.125-400 MHz"]),
    ("ecp5", 25 * MHZ, 0.0, ["positive"]),
    ("ecp5", 25 * MHZ, float("nan"), ["positive"]),
    ("ice40", 5 * MHZ, 24 * MHZ, ["5 MHz board clock", "input range 10-133 MHz"]),
    ("gowin", 27 * MHZ, 50 * MHZ, ["'gowin'", "ice40"]),
])
def test_impossible_requests_say_what_is_possible(family, f_in, f_want, words):
    with pytest.raises(PllError) as info:
        plan_pll(family, f_in, f_want)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    for word in words:
        assert word in message, message


# --- the PLL in the board top (Amaranth elaboration and the constraint files, no tools) -------------
def build_files(board_name: str, clock_hz):
    """The RTLIL and constraint files amaranth writes for the board top (tools not run)."""
    board = get_board(board_name)
    spec = sized_network([37, 24, 16, 5], [(6, 5), (8, 8), (1, 16)], seed=3)
    top = BoardTop(spec, board, clock_hz=clock_hz)
    plan = board.platform().build(top, name="xnorflow", do_build=False)
    return top, plan.files


def test_icebreaker_top_with_pll_instantiates_it_and_constrains_its_output():
    top, files = build_files("icebreaker", 24 * MHZ)
    assert top.clk_hz == 24 * MHZ and top.pll.f_out_hz == 24 * MHZ
    # The UART at the PLL clock, as fast as the iCEBreaker's FT2232H takes: 8 clocks a bit.
    assert top.baud == 3_000_000 and top.core.divisor == uart_divisor(24 * MHZ, top.baud) == 8
    rtlil = files["xnorflow.il"]
    assert "cell \\SB_PLL40_PAD" in rtlil
    assert re.search(r"parameter \\DIVF 63\b", rtlil) and re.search(r"parameter \\DIVQ 5\b", rtlil)
    # nextpnr checks timing at the PLL output (the oscillator pin keeps its own 12 MHz constraint).
    assert re.search(r"^set_frequency clocking\.clk 24\.0$", files["xnorflow.pcf"], re.MULTILINE)


def test_ulx3s_top_with_pll_uses_the_ehxplll_and_the_global_reset():
    top, files = build_files("ulx3s-25f", 52 * MHZ)
    assert top.clk_hz == 50 * MHZ      # the highest the PLL makes from 25 MHz without going above 52
    assert top.core.divisor == uart_divisor(50 * MHZ, top.baud)
    rtlil = files["xnorflow.il"]
    assert "cell \\EHXPLLL" in rtlil and "cell \\SGSR" in rtlil
    assert re.search(r"parameter \\CLKOP_DIV 12\b", rtlil)
    assert re.search(r'^FREQUENCY NET "clocking\.clk[$\d]*" 50000000\.0 HZ;$', files["xnorflow.lpf"], re.MULTILINE)


def test_board_top_without_clock_runs_at_the_oscillator():
    top, files = build_files("icebreaker", None)
    assert top.pll is None and top.clk_hz == 12 * MHZ
    assert top.baud == 3_000_000 and top.core.divisor == uart_divisor(12 * MHZ, top.baud) == 4
    assert "SB_PLL40" not in files["xnorflow.il"]
    assert "set_frequency clocking" not in files["xnorflow.pcf"]


def test_board_top_refuses_an_impossible_clock_before_building():
    spec = sized_network([37, 24, 5], [(6, 5), (1, 24)], seed=3)
    with pytest.raises(PllError, match="16-275 MHz"):
        BoardTop(spec, get_board("icebreaker"), clock_hz=8 * MHZ)
