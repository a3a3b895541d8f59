"""The command line: compile writes a complete build folder; bad input ends in one clear line."""
import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from xnorflow.hw.spec import NetworkSpec
from xnorflow.sim import golden


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("xnorflow: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_compile_writes_spec_vectors_verilog_and_report(tfc_digits_model, tmp_path):
    build = tmp_path / "build"
    result = run_cli("compile", tfc_digits_model, "-o", build, "--board", "icebreaker")
    assert result.returncode == 0, result.stderr
    report = json.loads((build / "report.json").read_text())
    spec = NetworkSpec.load(build / "spec.npz")
    with np.load(build / "vectors.npz") as v:
        inputs, labels, golden_pred, torch_pred = v["inputs"], v["labels"], v["golden_predictions"], v["torch_predictions"]
    # The report's figures are measured on the whole test split, and agree with the vectors.
    assert len(labels) == report["test_images"] == 360
    rerun = golden.execute(spec, inputs)
    np.testing.assert_array_equal(rerun.predictions, golden_pred)
    assert report["accuracy_golden"] == pytest.approx(np.mean(golden_pred == labels))
    assert report["torch_golden_agreement"] == pytest.approx(np.mean(torch_pred == golden_pred))
    assert report["torch_golden_agreement"] >= 0.999
    assert report["accuracy_golden"] > 0.5
    assert [l["cycles"] for l in report["layers"]] == [l.cycles for l in spec.layers]
    assert report["analytic_cycles_per_frame"] == spec.analytic_cycles_per_frame
    # Not measured by compile: null, never made up.
    for key in ("images_simulated", "rtl_mismatches", "fmax_mhz", "fps", "luts"):
        assert report[key] is None
    assert "module xnorflow_top" in (build / "verilog" / "xnorflow_top.v").read_text()


def test_compile_with_folding_by_hand_and_recompile_keeps_the_model(tfc_digits_model, tmp_path):
    build = tmp_path / "b"
    build.mkdir()
    (build / "model.pt").write_bytes(tfc_digits_model.read_bytes())
    result = run_cli("compile", build / "model.pt", "-o", build, "--folding", "4,8;4,8;2,16;1,64")
    assert result.returncode == 0, result.stderr
    report = json.loads((build / "report.json").read_text())
    assert [(l["pe"], l["simd"]) for l in report["layers"]] == [(4, 8), (4, 8), (2, 16), (1, 64)]
    assert report["analytic_cycles_per_frame"] == max(16 * 8, 16 * 8, 32 * 4, 10)
    assert (build / "model.pt").exists()


def test_missing_model_file(tmp_path):
    assert_one_line_error(run_cli("compile", tmp_path / "nope.pt", "-o", tmp_path / "b"), "not found", "xnorflow train")
    assert not (tmp_path / "b").exists()


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00this is not a model" * 10)
    assert_one_line_error(run_cli("compile", bad, "-o", tmp_path / "b"), str(bad))
    assert not (tmp_path / "b").exists()


def test_a_torch_file_that_is_not_an_xnorflow_model(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert_one_line_error(run_cli("compile", other, "-o", tmp_path / "b"), "not an xnorflow model file")


def test_unknown_arch_and_dataset(tmp_path):
    assert_one_line_error(run_cli("train", "--arch", "resnet", "--dataset", "digits", "-o", tmp_path / "m.pt"),
                          "resnet")
    assert_one_line_error(run_cli("train", "--arch", "tfc", "--dataset", "cifar", "-o", tmp_path / "m.pt"), "cifar")
    assert not (tmp_path / "m.pt").exists()


def test_idx_folder_missing_a_file(tmp_path):
    (tmp_path / "idx").mkdir()
    assert_one_line_error(run_cli("train", "--dataset", f"idx:{tmp_path / 'idx'}", "-o", tmp_path / "m.pt"),
                          "train-images-idx3-ubyte")


def test_unknown_board(tfc_digits_model, tmp_path):
    assert_one_line_error(run_cli("compile", tfc_digits_model, "-o", tmp_path / "b", "--board", "de10"),
                          "de10", "icebreaker")


def test_network_too_big_for_the_board_is_refused_before_any_rtl(tmp_path):
    from xnorflow.training.model_file import save_model_file
    from xnorflow.training.zoo import build_model

    path = tmp_path / "lfc.pt"
    save_model_file(path, build_model("lfc", 784), arch="lfc", dataset="fashion-mnist",
                    binarize={"rule": "pixel >= threshold", "threshold": 128, "max_value": 255})
    result = run_cli("compile", path, "-o", tmp_path / "b", "--board", "icebreaker")
    assert_one_line_error(result, "does not fit icebreaker", "Kbit of block RAM", "bigger board (ulx3s-85f fits it)")
    assert not (tmp_path / "b").exists()


def test_unreachable_fps_says_what_is_reachable(tfc_digits_model, tmp_path):
    result = run_cli("compile", tfc_digits_model, "-o", tmp_path / "b", "--fps", "1e9")
    assert_one_line_error(result, "frames/s", "lower --fps")


def test_bad_lut_share_is_one_line(tfc_digits_model, tmp_path):
    result = run_cli("compile", tfc_digits_model, "-o", tmp_path / "b", "--lut-share", "0")
    assert_one_line_error(result, "--lut-share 0", "at most 1")
    assert not (tmp_path / "b").exists()


def test_a_bad_option_value_is_one_line_not_usage(tmp_path):
    result = run_cli("simulate", tmp_path / "b", "--images", "0")
    assert_one_line_error(result, "--images", "give a number >= 1", "xnorflow simulate --help")


def test_bad_pnr_seed_is_one_line(tmp_path):
    result = run_cli("synth", tmp_path / "b", "--pnr-seed", "0")
    assert_one_line_error(result, "--pnr-seed", "give a number >= 1")


def test_fps_target_picks_a_folding_that_meets_it(tfc_digits_model, tmp_path):
    build = tmp_path / "b"
    assert run_cli("compile", tfc_digits_model, "-o", build, "--fps", "50000").returncode == 0
    report = json.loads((build / "report.json").read_text())
    assert report["planned_clock_mhz"] * 1e6 / report["analytic_cycles_per_frame"] >= 50000


def test_refuses_to_overwrite_a_folder_that_is_not_a_build(tfc_digits_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli("compile", tfc_digits_model, "-o", tmp_path), "not an xnorflow build")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_simulate_without_a_build(tmp_path):
    assert_one_line_error(run_cli("simulate", tmp_path / "nothing"), "xnorflow compile")


def test_a_hand_folding_that_does_not_fit_names_one_that_does(tfc_digits_model, tmp_path):
    result = run_cli("compile", tfc_digits_model, "-o", tmp_path / "b", "--folding", "64,64;64,64;64,64;10,64")
    assert_one_line_error(result, "does not fit icebreaker", "LUTs", "fastest folding that fits")
    assert not (tmp_path / "b").exists()


def test_synth_merges_the_build_it_made_into_the_report(tfc_digits_model, tmp_path):
    """compile, simulate, synth through the command line, with real Yosys + nextpnr: the report gets
    what synthesis measured, and the frames/s from the measured II."""
    build = tmp_path / "b"
    assert run_cli("compile", tfc_digits_model, "-o", build).returncode == 0
    assert run_cli("simulate", build, "--images", "20").returncode == 0
    # No bitstream yet: no clock was built, so none is reported, nor frames/s at it.
    simulated = json.loads((build / "report.json").read_text())
    assert simulated["planned_clock_mhz"] > 0 and simulated["cycles_per_frame"] > 0
    assert simulated.get("clock_mhz") is None and simulated["fps_at_clock"] is None
    result = run_cli("synth", build, "--clock-mhz", "board", "--pnr-seed", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads((build / "report.json").read_text())
    assert report["seed_attempts"] == [2] and report["clock_attempts_mhz"] == [report["clock_mhz"]] == [12.0]
    assert report["fmax_attempts_mhz"] == [report["fmax_mhz"]] and report["timing_met"] is True
    assert report["fps"] == report["fmax_mhz"] * 1e6 / report["cycles_per_frame"]
    assert report["fps_at_clock"] == 12e6 / report["cycles_per_frame"]
    # The UART as fast as the iCEBreaker's FT2232H takes at the 12 MHz oscillator; `run` reads it back.
    assert report["baud"] == 3_000_000 and report["synthesis_inputs"]["baud"] is None
    # The compiler's block count is what synthesis made, and every weight memory it put in blocks (one
    # per group of weight_packing PEs) is one.
    from xnorflow.compiler.build import load_spec
    assert report["brams"] == report["estimate"]["brams"] > 0
    layers = load_spec(build).layers
    assert any(layer.weight_style == "block" for layer in layers)
    for i, layer in enumerate(layers):
        banks = {name: kind for name, kind in report["memories"].items() if f".mvtu{i}.weights_pe" in name}
        if layer.weight_style == "block":
            assert len(banks) == len(layer.weight_groups()) and set(banks.values()) == {"block"}, (i, banks)
    assert (build / "synth" / "xnorflow.bin").stat().st_size > 0
    # A simulation after the synthesis keeps the frames/s in step with the II it measures.
    assert run_cli("simulate", build, "--images", "10").returncode == 0
    again = json.loads((build / "report.json").read_text())
    assert again["fps_at_clock"] == 12e6 / again["cycles_per_frame"]
    assert again["fps"] == again["fmax_mhz"] * 1e6 / again["cycles_per_frame"]
