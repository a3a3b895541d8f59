"""Nothing lost, nothing stale, no traceback: each case through the real command line.

Every case here failed on the code before the build folder became owned, locked and transactional
(compiler/build_folder.py): data deleted, a stale result reused, or a traceback instead of one line.
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_cli import assert_one_line_error

from xnorflow.compiler import build_folder


@pytest.fixture(scope="module")
def compiled(tfc_digits_model, tmp_path_factory):
    """A compiled TFC/digits build folder, copied by each test that changes it."""
    build = tmp_path_factory.mktemp("compiled") / "b"
    result = run_cli("compile", tfc_digits_model, "-o", build)
    assert result.returncode == 0, result.stderr
    return build


def copy_build(compiled, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(compiled, target, symlinks=True)
    return target


def test_a_folder_with_a_stray_report_json_is_not_taken_for_a_build(tfc_digits_model, tmp_path):
    folder = tmp_path / "p"
    (folder / "figures").mkdir(parents=True)
    (folder / "verilog").mkdir()
    (folder / "report.json").write_text('{"x":1}')
    (folder / "figures" / "plot1.png").write_text("a")
    (folder / "verilog" / "my.v").write_text("m")
    result = run_cli("compile", tfc_digits_model, "-o", folder)
    assert_one_line_error(result, "did not make", "new or empty folder")
    assert (folder / "figures" / "plot1.png").read_text() == "a"
    assert (folder / "verilog" / "my.v").read_text() == "m"
    assert (folder / "report.json").read_text() == '{"x":1}'


def test_an_empty_folder_and_a_folder_holding_only_the_model_are_claimed(tfc_digits_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("compile", tfc_digits_model, "-o", empty).returncode == 0
    assert (empty / build_folder.MARKER).is_file()
    with_model = tmp_path / "with_model"
    with_model.mkdir()
    shutil.copy(tfc_digits_model, with_model / "model.pt")
    result = run_cli("compile", with_model / "model.pt", "-o", with_model)
    assert result.returncode == 0, result.stderr
    assert (with_model / "model.pt").read_bytes() == tfc_digits_model.read_bytes()


def test_an_interrupted_swap_is_rolled_forward_by_the_next_command(compiled, tmp_path, monkeypatch):
    """Stop the swap after its first rename (the journal's write, then one output): the folder is
    recovered whole by the next command that takes the lock."""
    build = copy_build(compiled, tmp_path)
    old_report = json.loads((build / "report.json").read_text())
    real_replace, calls = os.replace, []

    def dies_after_one(src, dst):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(src)
        real_replace(src, dst)

    with pytest.raises(KeyboardInterrupt), build_folder.locked(build):
        monkeypatch.setattr(os, "replace", dies_after_one)
        with build_folder.transaction(build, ("sim", "report.json")) as stage:
            (stage / "report.json").write_text(json.dumps({**old_report, "images_simulated": 7}))
            (stage / "sim").mkdir()
            (stage / "sim" / "results.json").write_text("{}")
    monkeypatch.setattr(os, "replace", real_replace)
    # Half swapped: the journal, the stage and the trash stay for the next command.
    assert (build / build_folder.JOURNAL).is_file()
    assert len(calls) == 2
    with build_folder.locked(build):
        pass
    assert json.loads((build / "report.json").read_text())["images_simulated"] == 7
    assert (build / "sim" / "results.json").is_file()
    assert not (build / build_folder.JOURNAL).exists()
    assert not [p for p in build.iterdir() if p.name.startswith((".stage-", ".trash-"))]


def test_a_symlinked_step_folder_is_refused_and_its_target_untouched(compiled, tmp_path):
    build = copy_build(compiled, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    shutil.rmtree(build / "sim", ignore_errors=True)
    (build / "sim").symlink_to(outside, target_is_directory=True)
    result = run_cli("simulate", build, "--images", "2")
    assert_one_line_error(result, "symbolic link")
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]


def test_a_bad_clock_is_refused_before_the_old_bitstream_is_touched(compiled, tmp_path):
    build = copy_build(compiled, tmp_path)
    (build / "synth").mkdir()
    bitstream = build / "synth" / "xnorflow.bin"
    bitstream.write_bytes(b"an earlier good bitstream")
    report = json.loads((build / "report.json").read_text())
    (build / "report.json").write_text(json.dumps({**report, "bitstream": str(bitstream)}))
    for clock in ("0.001", "1e9"):
        result = run_cli("synth", build, "--clock-mhz", clock)
        assert_one_line_error(result, "--clock-mhz", "MHz")
        assert bitstream.read_bytes() == b"an earlier good bitstream"
        assert json.loads((build / "report.json").read_text())["bitstream"] == str(bitstream)


def test_the_model_file_is_written_through_a_fresh_temp_file(tfc_digits_model, tmp_path):
    """The old temp name, .NAME.tmp-PID, was predictable and followed through a symlink."""
    from xnorflow.training.model_file import load_model_file, model_from_file, save_model_file

    record = load_model_file(tfc_digits_model)
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite")
    target = tmp_path / "out" / "model.pt"
    target.parent.mkdir()
    (target.parent / f".model.pt.tmp-{os.getpid()}").symlink_to(victim)
    save_model_file(target, model_from_file(record), arch=record["arch"], dataset=record["dataset"],
                    input_format=record["input"])
    assert victim.read_text() == "do not overwrite"
    assert load_model_file(target)["arch"] == record["arch"]
    link = target.parent / "link.pt"
    link.symlink_to(victim)
    result = run_cli("train", "--epochs", "1", "-o", link)
    assert_one_line_error(result, "symbolic link")
    assert victim.read_text() == "do not overwrite"


def test_flow_recompiles_when_the_model_file_changes_and_refuses_a_changed_arch(tmp_path):
    build = tmp_path / "st"
    first = run_cli("flow", "--epochs", "2", "--images", "20", "--no-synth", "-o", build)
    assert first.returncode == 0, first.stderr
    first_digest = json.loads((build / "report.json").read_text())["compile_inputs"]["model_sha256"]
    retrain = run_cli("train", "--seed", "7", "--epochs", "2", "-o", build / "model.pt")
    assert retrain.returncode == 0, retrain.stderr
    second = run_cli("flow", "--images", "20", "--no-synth", "-o", build)
    assert second.returncode == 0, second.stderr
    assert "compiling: the model file changed" in second.stdout
    report = json.loads((build / "report.json").read_text())
    assert report["compile_inputs"]["model_sha256"] != first_digest
    assert report["compile_inputs"]["model_sha256"] == build_folder.file_digest(build / "model.pt")
    third = run_cli("flow", "--images", "20", "--no-synth", "-o", build)
    assert "reusing the compiled design" in third.stdout and "reusing 20 simulated images" in third.stdout
    for option, value in (("--arch", "sfc"), ("--seed", "0"), ("--epochs", "3")):
        result = run_cli("flow", option, value, "--no-synth", "-o", build)
        assert_one_line_error(result, f"trained with {option}", "move")


def test_a_second_writer_is_refused_with_the_holder_named(compiled, tmp_path):
    build = copy_build(compiled, tmp_path)
    before = (build / "report.json").read_bytes()
    with build_folder.locked(build):
        result = run_cli("simulate", build, "--images", "2")
        assert_one_line_error(result, "in use by pid", str(os.getpid()))
        result = run_cli("compile", build / ".." / "nothing.pt", "-o", build)
        assert result.returncode == 2
    assert (build / "report.json").read_bytes() == before


def test_batch_norm_statistics_that_cannot_fold_are_refused(tfc_digits_model, tmp_path):
    cases = {"nan mean": ("mean", float("nan")), "negative var": ("var", -5.0), "inf beta": ("beta", float("inf"))}
    for name, (field, value) in cases.items():
        record = torch.load(tfc_digits_model, weights_only=True)
        record["layers"][1]["bn"][field][3] = value
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(record, path)
        result = run_cli("compile", path, "-o", tmp_path / f"build_{name.replace(' ', '_')}")
        assert_one_line_error(result, "layer 1 channel 3", "retrain")
    record = torch.load(tfc_digits_model, weights_only=True)
    record["layers"][0]["bn"]["eps"] = float("nan")
    torch.save(record, tmp_path / "nan_eps.pt")
    assert_one_line_error(run_cli("compile", tmp_path / "nan_eps.pt", "-o", tmp_path / "e"), "layer 0", "eps")


def test_huge_thresholds_are_clipped_before_the_integer_cast():
    from xnorflow.compiler.model import BatchNorm, DenseLayer
    from xnorflow.compiler.passes import thresholds_from_batchnorm

    n = 10
    bn = BatchNorm(gamma=np.array([1e-300, -1e-300, 1.0]), beta=np.array([-1.0, -1.0, 0.0]),
                   mean=np.array([0.0, 0.0, 1e300]), var=np.ones(3), eps=1e-5)
    layer = DenseLayer(weights=np.ones((3, n), dtype=np.uint8), is_output=False, bn=bn)
    thresholds, _ = thresholds_from_batchnorm(layer)
    # tau = +huge (always -1): T = N + 1; gamma < 0 with tau = -huge... the row inverted, always -1: N + 1;
    # a mean of 1e300: dot >= 1e300 never holds: N + 1.
    assert thresholds.tolist() == [n + 1, n + 1, n + 1]


@pytest.mark.parametrize("case", ["spec", "vectors", "report", "report_list"])
def test_damaged_build_files_are_one_line(compiled, tmp_path, case):
    build = copy_build(compiled, tmp_path)
    if case in ("spec", "vectors"):
        path = build / f"{case}.npz"
        path.write_bytes(path.read_bytes()[:100])
    elif case == "report":
        (build / "report.json").write_bytes(b"\xff\xfe not json")
    else:
        (build / "report.json").write_text("[1, 2]")
    result = run_cli("simulate", build, "--images", "2")
    assert_one_line_error(result, "compile")
    assert "RTL simulation" not in result.stderr
    if case in ("spec", "vectors"):
        assert_one_line_error(run_cli("run", build, "--port", tmp_path / "no-such-port"), "compile")


def test_bad_paths_and_numbers_are_one_line(tfc_digits_model, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(run_cli("compile", tfc_digits_model, "-o", a_file / "b"), "is a file")
    assert_one_line_error(run_cli("compile", tfc_digits_model, "-o", tmp_path / "n", "--fps", "nan"), "--fps")
    assert_one_line_error(run_cli("train", "--seed", str(2**66), "-o", tmp_path / "m.pt"), "--seed")
    assert_one_line_error(run_cli("flow", "--seed", "-1", "-o", tmp_path / "f"), "--seed")
    assert not (tmp_path / "n").exists() and not (tmp_path / "f").exists()


def test_a_build_path_with_a_space_is_one_line(tfc_digits_model, tmp_path):
    build = tmp_path / "my build"
    assert run_cli("compile", tfc_digits_model, "-o", build).returncode == 0
    assert_one_line_error(run_cli("simulate", build, "--images", "2"), "space")


def test_model_file_fields_of_the_wrong_type_are_one_line(tfc_digits_model, tmp_path):
    record = torch.load(tfc_digits_model, weights_only=True)
    record["in_features"] = "sixty-four"
    torch.save(record, tmp_path / "bad.pt")
    assert_one_line_error(run_cli("compile", tmp_path / "bad.pt", "-o", tmp_path / "b"), "bad.pt")


def test_flow_reruns_synthesis_when_the_clock_or_seed_changes(compiled, tmp_path):
    """A bitstream made at one clock is not reused for another: the flow says so and rebuilds."""
    from xnorflow.compiler.build import synthesis_inputs

    build = copy_build(compiled, tmp_path)
    model = build.parent / "model.pt"
    shutil.copy(json.loads((build / "report.json").read_text())["model_file"], model)
    first = run_cli("flow", "--model", model, "--images", "10", "--no-synth", "-o", build)
    assert first.returncode == 0, first.stderr
    (build / "synth").mkdir()
    bitstream = build / "synth" / "xnorflow.bin"
    bitstream.write_bytes(b"built at the automatic clock")
    report = json.loads((build / "report.json").read_text())
    report.update(bitstream=str(bitstream), synthesis_inputs=synthesis_inputs(build, "auto", None))
    (build / "report.json").write_text(json.dumps(report))
    reused = run_cli("flow", "--model", model, "--images", "10", "-o", build)
    assert reused.returncode == 0, reused.stderr
    assert f"reusing {bitstream}" in reused.stdout
    # The changed clock is seen (and the rebuild refused at once, since no PLL makes 1 kHz).
    result = run_cli("flow", "--model", model, "--images", "10", "--clock-mhz", "0.001", "-o", build)
    assert "synthesizing: --clock-mhz changed (auto -> 0.001)" in result.stdout
    assert_one_line_error(result, "--clock-mhz")
    assert bitstream.read_bytes() == b"built at the automatic clock"


def write_small_idx(folder, train_labels=None):
    """A small learnable IDX set: class c lights the c-th block of pixels."""
    import struct

    rng = np.random.default_rng(0)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 6, 6), dtype=np.uint8)
        for i, c in enumerate(labels):
            x[i].reshape(-1)[(c % 6) * 6:(c % 6) * 6 + 6] = 250
        return x

    def idx(array):
        array = np.asarray(array, dtype=np.uint8)
        return struct.pack(">I", 0x800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()

    train = np.arange(120) % 3 if train_labels is None else np.asarray(train_labels)
    test = np.arange(30) % 3
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", images(train)), ("train-labels-idx1-ubyte", train),
                        ("t10k-images-idx3-ubyte", images(test)), ("t10k-labels-idx1-ubyte", test)):
        (folder / name).write_bytes(idx(array))


def test_an_idx_dataset_named_by_a_relative_path_compiles_from_another_directory(tmp_path):
    write_small_idx(tmp_path / "work" / "data")
    trained = run_cli("train", "--dataset", "idx:data", "--epochs", "2", "-o", "m.pt", cwd=tmp_path / "work")
    assert trained.returncode == 0, trained.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    compiled = run_cli("compile", tmp_path / "work" / "m.pt", "-o", "b", cwd=elsewhere)
    assert compiled.returncode == 0, compiled.stderr
    report = json.loads((elsewhere / "b" / "report.json").read_text())
    assert report["dataset"] == f"idx:{(tmp_path / 'work' / 'data').resolve()}"


def test_a_stray_idx_label_is_one_line_not_hundreds_of_classes(tmp_path):
    labels = np.arange(120) % 3
    labels[17] = 255
    write_small_idx(tmp_path / "data", train_labels=labels)
    result = run_cli("train", "--dataset", f"idx:{tmp_path / 'data'}", "--epochs", "1", "-o", tmp_path / "m.pt")
    assert_one_line_error(result, "label 255", "256 classes")
    assert not (tmp_path / "m.pt").exists()


def test_the_default_thread_count_does_not_depend_on_the_machine(tfc_digits_model, tmp_path, monkeypatch):
    """Weights depend on torch's thread count; the default is fixed and the model file records it."""
    from xnorflow.training import train as training

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert training.default_threads() == training.DEFAULT_THREADS == 1
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for path in (a, b):
        assert run_cli("train", "--epochs", "2", "--seed", "3", "-o", path).returncode == 0
    record = torch.load(a, weights_only=True)
    assert record["train"]["threads"] == 1
    assert all(torch.equal(x, y) for x, y in zip(record["state_dict"].values(),
                                                 torch.load(b, weights_only=True)["state_dict"].values()))


def test_a_second_simulation_reuses_the_fast_harness_build(compiled, tmp_path):
    """The fast harness's Verilator model is carried from one simulation's sim/ into the next (the
    model cache survives the swap of sim/), and rebuilt only when what it is built from changes."""
    from xnorflow.compiler.build import simulate_build

    build = copy_build(compiled, tmp_path)
    first = simulate_build(build, images=20, progress=False)["simulation"]
    again = simulate_build(build, images=30, seed=3, progress=False)["simulation"]
    assert first["verilator_build_seconds"] is not None
    assert again["verilator_build_seconds"] is None
    assert again["images_per_second"] and json.loads((build / "report.json").read_text())["images_simulated"] == 30
