"""The real flow: export_verilog -> Verilator (through cocotb's runner) -> cocotb testbench -> golden.

The default test builds one small net that still has every awkward case (partial input beats,
partial PE folds, a width adapter between layers) and streams it under random gaps and backpressure.
"""
import json

import numpy as np
import pytest
from sim_builds import flipping_threshold, sized_network, with_threshold, write_build_folder

from xnorflow.sim import golden
from xnorflow.sim.layout import SIMULATION_KEYS, SimulationError, module_ports
from xnorflow.sim.runner import simulate

# 24 inputs in beats of 5 (last beat partial), 16 channels in folds of 3 (last fold partial),
# PE 3 -> SIMD 4 needs a width adapter; II = max(6*5, 3*4, 3*3) = 30 cycles.
SMALL = ([24, 16, 12, 6], [(3, 5), (4, 4), (2, 4)])


def test_small_net_is_bit_exact_under_random_flow_control(tmp_path):
    spec = sized_network(*SMALL, seed=11)
    build = write_build_folder(tmp_path / "build", spec, frames=150)
    result = simulate(build, backpressure=0.5, gaps=0.3, seed=3, progress=False, update_report=True)

    assert result["errors"] == []
    assert result["images_simulated"] == 150
    assert result["rtl_mismatches"] == 0 and result["mismatches"] == []
    # A correct design reaches the analytic II with no bubbles (DESIGN.md section 3).
    assert result["cycles_per_frame"] == spec.analytic_cycles_per_frame == 30
    assert result["latency_cycles"] >= sum(layer.synapse_folds for layer in spec.layers)
    assert result["reset_mid_frame_ok"] is True
    labels = np.load(build / "vectors.npz")["labels"]
    predictions = golden.execute(spec, np.load(build / "vectors.npz")["inputs"]).predictions
    assert result["accuracy_rtl"] == pytest.approx(float(np.mean(predictions == labels)))

    saved = json.loads((build / "sim" / "results.json").read_text())
    assert len(saved["frames"]) == 150
    assert [f["index"] for f in saved["frames"]] == [int(p) for p in predictions]
    report = json.loads((build / "report.json").read_text())
    assert {key: report[key] for key in SIMULATION_KEYS} == {key: result[key] for key in SIMULATION_KEYS}

    # Same Verilog: the Verilator model is reused, not rebuilt.
    again = simulate(build, images=10, backpressure=0.0, gaps=0.0, progress=False)
    assert again["verilator_build_seconds"] is None
    assert again["images_simulated"] == 10 and again["rtl_mismatches"] == 0


@pytest.mark.slow
def test_a_changed_threshold_is_caught_and_localised(tmp_path):
    spec = sized_network([24, 16, 12, 10, 6], [(4, 6), (4, 4), (3, 4), (2, 5)], seed=7)
    frames = np.random.default_rng(1).integers(0, 2, size=(60, 24), dtype=np.uint8)
    neuron, threshold = flipping_threshold(spec, frames, layer=1)
    broken = with_threshold(spec, 1, neuron, threshold)
    build = write_build_folder(tmp_path / "build", spec, frames=60, seed=1, verilog_spec=broken)

    result = simulate(build, backpressure=0.3, gaps=0.2, progress=False)

    truth, planted = golden.execute(spec, frames), golden.execute(broken, frames)
    should_fail = {int(f) for f in np.flatnonzero(np.any(truth.scores != planted.scores, axis=1))}
    assert should_fail, "the planted threshold should change some outputs"
    assert {m["image"] for m in result["mismatches"]} == should_fail
    assert result["rtl_mismatches"] == len(should_fail)
    localised = [m for m in result["mismatches"] if m["layer"] is not None]
    assert localised, "the first failing images are re-run and localised"
    for m in localised:
        assert (m["layer"], m["neuron"]) == (1, neuron), m["message"]
        assert m["threshold"] == spec.layers[1].thresholds[neuron]
        assert m["message"].startswith(f"image {m['image']}: layer 1 neuron {neuron} differs")
        assert m["waves"].endswith(f"mismatch_{m['image']}.vcd")
        assert (build / "sim" / f"mismatch_{m['image']}.vcd").stat().st_size > 0
    assert result["waves"] is not None


@pytest.mark.slow
def test_waves_on_request_without_mismatch(tmp_path):
    spec = sized_network([16, 8, 4], [(2, 4), (2, 4)], seed=2)
    build = write_build_folder(tmp_path / "build", spec, frames=12)
    result = simulate(build, waves=True, progress=False)
    assert result["rtl_mismatches"] == 0
    assert result["waves"].endswith("waves.vcd")
    assert "tap0_valid" in (build / "sim" / "waves.vcd").read_text(errors="replace")[:200_000]


@pytest.mark.slow
@pytest.mark.parametrize("folding, ii", [
    ([(8, 8), (8, 8), (8, 8), (2, 8)], 64),
    ([(4, 4), (4, 4), (4, 4), (1, 4)], 256),
])
def test_tfc_sized_net_streams_10000_frames(tmp_path, folding, ii):
    spec = sized_network([64, 64, 64, 64, 10], folding, seed=4)
    assert spec.analytic_cycles_per_frame == ii
    build = write_build_folder(tmp_path / "build", spec, frames=10_000)
    result = simulate(build, progress=False)
    assert result["errors"] == []
    assert result["images_simulated"] == 10_000 and result["rtl_mismatches"] == 0
    assert result["cycles_per_frame"] == ii
    print(f"\nTFC II={ii}: {result['frames_per_second']:.0f} frames/s, simulation "
          f"{result['sim_seconds']:.1f} s, Verilator build {result['verilator_build_seconds']} s")


def _wrap_with_stuck_output(verilog_path):
    """Rename the exported top to xnorflow_core and wrap it in a top whose output never moves:
    the design a deadlocked network would look like from outside."""
    text = verilog_path.read_text()
    ports = module_ports(text)
    text = text.replace("module xnorflow_top(", "module xnorflow_core(", 1)
    decls = []
    for name, width in ports.items():
        direction = "output" if name in ("i__ready", "o__payload", "o__valid") or name.startswith("tap") else "input"
        bits = f"[{width - 1}:0] " if width > 1 else ""
        decls.append(f"  {direction} {bits}{name};")
    conns = [f".{name}({name})" for name in ports if name not in ("o__valid", "o__ready")]
    wrapper = (f"module xnorflow_top({', '.join(ports)});\n" + "\n".join(decls) + "\n"
               "  wire core_valid;\n  assign o__valid = 1'b0;\n"
               f"  xnorflow_core core({', '.join(conns)}, .o__valid(core_valid), .o__ready(1'b0));\n"
               "endmodule\n")
    verilog_path.write_text(text + "\n" + wrapper)


@pytest.mark.slow
def test_a_design_that_never_answers_is_reported_not_hung(tmp_path):
    spec = sized_network([16, 8, 4], [(2, 4), (2, 4)], seed=2)
    build = write_build_folder(tmp_path / "build", spec, frames=20)
    _wrap_with_stuck_output(build / "verilog" / "xnorflow_top.v")
    with pytest.raises(SimulationError, match=r"no output for \d+ cycles after 0 of 20 frames.*stuck"):
        simulate(build, progress=False)
