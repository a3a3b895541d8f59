"""A conv net through the real command line: train scnv, compile, simulate every test image in Verilator."""
import json

from conftest import run_cli


def test_scnv_trains_compiles_and_simulates_bit_exact(tmp_path):
    model = tmp_path / "scnv.pt"
    assert run_cli("train", "--arch", "scnv", "--dataset", "digits", "--epochs", "2", "-o", model).returncode == 0
    small = run_cli("compile", model, "-o", tmp_path / "ice", "--board", "icebreaker")
    assert small.returncode == 2 and "does not fit icebreaker" in small.stderr   # the fit says why
    build = tmp_path / "b"
    compiled = run_cli("compile", model, "-o", build, "--board", "ulx3s-85f")
    assert compiled.returncode == 0, compiled.stderr
    simulated = run_cli("simulate", build, "--images", "120")
    assert simulated.returncode == 0, simulated.stderr
    report = json.loads((build / "report.json").read_text())
    assert report["torch_golden_agreement"] >= 0.999
    assert report["rtl_mismatches"] == 0 and report["images_simulated"] == 120
    assert report["cycles_per_frame"] == report["analytic_cycles_per_frame"]
    kinds = [layer.get("kind") for layer in report["layers"]]
    assert kinds.count("conv") == 4 and kinds.count("maxpool") == 2, kinds
