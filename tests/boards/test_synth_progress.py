"""Live synthesis progress: the phases read from the tools' logs, the estimate from earlier builds."""
import json

from xnorflow.boards.registry import get_board
from xnorflow.boards.synth import (
    SynthProgress,
    estimate_build_seconds,
    parse_phase,
    record_build_time,
)


def test_phases_from_yosys_and_nextpnr_log_lines():
    assert parse_phase("2.43. Executing ABC9 pass.") == ("synthesis", "Yosys abc9")
    assert parse_phase("Info: Packing LUT-FFs..") == ("packing", "nextpnr packing cells")
    assert parse_phase("Info:     at iteration #7, type ALL: wirelen solved = 1296, spread = 4200") == \
        ("placement", "analytic placer, iteration 7")
    assert parse_phase("Info:   at iteration #25: temp = 0.000000, timing cost = 671, wirelen = 3829") == \
        ("placement", "annealing, iteration 25")
    # router1's table row: iteration count, arcs ripped up, arcs left.
    assert parse_phase("Info:       7000 |      905       5827 |   69   887 |       164|       0.17       1.02|") == \
        ("routing", "iteration 7000, 164 arcs left, 905 ripped up")
    # router2's per-pass line: overused wires.
    assert parse_phase("Info:     iter=12 wires=40213 overused=87 overuse=93 archfail=NA") == \
        ("routing", "iteration 12, 87 overused wires")
    assert parse_phase("Info: Max frequency for clock 'clk': 48.04 MHz (PASS at 24.00 MHz)") == \
        ("timing", "Fmax 48.04 MHz (PASS)")
    assert parse_phase("Info: Checksum: 0x1fc81a12") is None


def test_estimate_from_earlier_builds_of_similar_size(synth_history):
    synth_history.unlink(missing_ok=True)
    assert estimate_build_seconds("iCE40UP5K", 4000) == (None, 0)
    record_build_time("iCE40UP5K", 4000, 30.0)
    record_build_time("iCE40UP5K", 5000, 50.0)
    record_build_time("iCE40UP5K", 500, 5.0)        # far smaller: not similar
    record_build_time("LFE5U-85F", 4000, 900.0)     # another device
    seconds, builds = estimate_build_seconds("iCE40UP5K", 4000)
    assert builds == 2 and seconds in (30.0, 40.0)     # each scaled to 4000 LUTs: 30 and 40
    assert all(json.loads(line)["seconds"] for line in synth_history.read_text().splitlines())


def test_progress_events_carry_phase_clock_and_elapsed_against_the_estimate(synth_history):
    synth_history.unlink(missing_ok=True)
    record_build_time("iCE40UP5K", 2000, 60.0)
    events = []
    live = SynthProgress(get_board("icebreaker"), 45.0, 3, 2000, on_progress=events.append)
    live.stage("nextpnr-ice40")
    live.line("nextpnr-ice40", "Info: Routing..")
    live.line("nextpnr-ice40", "Info: Routing..")                 # no change: no event
    assert [e["phase"] for e in events] == ["placement", "routing"]
    line = events[-1]["line"]
    assert "45 MHz" in line and "seed 3" in line and "routing" in line and "of ~1:00" in line
    assert events[-1]["estimate_s"] == 60.0
