"""The board registry: amaranth-boards platforms, capacities, UARTs, and build-only tool lists."""
import pytest

from xnorflow.boards.registry import BOARDS, BoardError, get_board

SYNTHESIS_TOOLS = {"ice40": {"yosys", "nextpnr-ice40", "icepack"}, "ecp5": {"yosys", "nextpnr-ecp5", "ecppack"}}


def test_known_boards():
    assert set(BOARDS) == {"icebreaker", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f", "orangecrab"}


def test_unknown_board_names_the_known_ones():
    with pytest.raises(BoardError) as info:
        get_board("arty")
    message = str(info.value)
    assert "'arty'" in message and "icebreaker" in message and "ulx3s-85f" in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_matches_its_platform(name):
    board = get_board(name)
    platform = board.platform()
    assert (platform.device, platform.package) == (board.device, board.package)
    assert board.family == ("ice40" if board.device.startswith("iCE40") else "ecp5")
    assert board.clock_hz == platform.default_clk_frequency > 1e6
    # The UART the accelerator talks through exists, with an input and an output line.
    uart = platform.lookup(*board.uart)
    assert {io.name for io in uart.ios if hasattr(io, "name")} >= {"rx", "tx"}
    # Building needs only the synthesis tools, never the board's loader.
    assert set(platform.required_tools) == SYNTHESIS_TOOLS[board.family]
    assert all("dfu" not in " ".join(t.split()) for t in platform.command_templates)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_capacities_are_consistent(name):
    """The figures themselves are checked against nextpnr's device totals in test_synth.py."""
    board = get_board(name)
    assert board.luts > 0 and board.bram_blocks > 0
    assert board.bram_bits == board.bram_blocks * board.bram_block_bits
    # iCE40 EBR: 4 Kbit; ECP5 EBR: 18 Kbit. Only the UltraPlus has SPRAM (never used for weights).
    assert board.bram_block_bits == {"ice40": 4096, "ecp5": 18432}[board.family]
    assert (board.sprams > 0) == (board.device == "iCE40UP5K")
    assert board.bitstream_suffix == {"ice40": ".bin", "ecp5": ".bit"}[board.family]


def test_platforms_are_fresh_instances():
    board = get_board("icebreaker")
    assert board.platform() is not board.platform()
