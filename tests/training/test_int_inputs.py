"""Integer (b-bit) inputs, the input format in the model file, distillation and stochastic weights."""
import contextlib

import numpy as np
import pytest
import torch

from xnorflow.compiler.cli import main
from xnorflow.compiler.model import execute, model_from_file_dict
from xnorflow.compiler.passes import streamline
from xnorflow.training.datasets import (
    DatasetError,
    bits_format,
    encode_frames,
    input_values,
    int_format,
    load_dataset,
    pack_elements,
    unpack_elements,
)
from xnorflow.training.distill import distillation_loss, load_teacher_file
from xnorflow.training.layers import (
    BinaryLinear,
    InputNorm,
    SignActivation,
    set_activation_gradient,
    set_stochastic_weights,
)
from xnorflow.training.model_file import (
    ModelFileError,
    load_model_file,
    model_from_file,
    predict,
    save_model_file,
)
from xnorflow.training.train import format_summary, train
from xnorflow.training.zoo import arch_names, build_model

FORMAT8 = {"format": "int", "bits": 8, "max_value": 255}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_frames_pack_b_bits_per_element_lsb_first():
    values = np.array([[0, 255, 5], [1, 2, 128]])
    frames = pack_elements(values, 8)
    assert frames.shape == (2, 24)
    assert frames[0, 8:16].tolist() == [1] * 8 and frames[0, 16:24].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(unpack_elements(frames, 8), values)
    fmt = int_format(8, 255, [0.0], 1.0)
    np.testing.assert_array_equal(encode_frames(values, fmt), frames)
    rule = {"rule": "pixel >= threshold", "threshold": 100, "max_value": 255}
    np.testing.assert_array_equal(encode_frames(values, bits_format(rule)), values >= 100)


def test_pixels_out_of_range_and_normalisations_that_do_not_fold_are_refused():
    with pytest.raises(DatasetError, match="out of range for 4-bit inputs"):
        input_values(np.array([[3, 16]]), int_format(4, 15, [0.0], 1.0))
    with pytest.raises(DatasetError, match="differ per channel"):
        int_format(8, 255, [1.0, 2.0, 3.0], [1.0, 2.0, 1.0])
    with pytest.raises(DatasetError, match="positive"):
        int_format(8, 255, [1.0], 0.0)


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("norm", [None, ([30.0], 50.0)])
def test_every_zoo_arch_takes_bits_and_integers(arch, norm, tmp_path):
    shape = (1, 28, 28)
    torch.manual_seed(0)
    model = build_model(arch, shape, input_norm=norm).eval()
    fmt = bits_format({"rule": "pixel >= threshold", "threshold": 8, "max_value": 255}) if norm is None \
        else dict(FORMAT8)
    path = tmp_path / "m.pt"
    save_model_file(path, model, arch=arch, dataset="fashion-mnist", input_format=fmt, image_shape=shape)
    record = load_model_file(path)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 784))
    values = input_values(pixels, record["input"])
    np.testing.assert_array_equal(predict(model_from_file(record), values), predict(model, values))
    if norm is not None:
        assert record["input"] == {**FORMAT8, "mean": [30.0], "scale": 50.0}
        assert isinstance(model[0], InputNorm)


def test_model_file_states_its_input_format(tmp_path, digits):
    out = tmp_path / "int.pt"
    summary = train("tfc", "digits", out, epochs=2, progress=False, threads=1, dataset=digits, input_bits=8)
    record = load_model_file(out)
    fmt = record["input"]
    assert fmt["format"] == "int" and fmt["bits"] == 8 and fmt["max_value"] == 16 and len(fmt["mean"]) == 1
    assert fmt["mean"][0] == pytest.approx(digits.train_images.mean(), rel=1e-5)
    assert fmt["scale"] == pytest.approx(digits.train_images.std(), rel=1e-5)
    assert record["train"]["stochastic_weights"] is False and record["train"]["teacher"] is None
    accuracy = np.mean(predict(model_from_file(record), digits.test_images) == digits.test_labels)
    assert accuracy == summary["accuracy_torch"]
    # the compiler's folded integer execution agrees with PyTorch on the test images
    folded = execute(streamline(model_from_file_dict(record)), digits.test_images)
    assert np.mean(folded.predictions == predict(model_from_file(record), digits.test_images)) >= 0.99

    raw = torch.load(out, weights_only=True)
    for name, change, message in [
        ("missing", lambda r: r.pop("input"), "does not state its input format"),
        ("unknown", lambda r: r.update(input={"format": "float"}), "input format 'float' is not one of"),
        ("scales", lambda r: r["input"].update(scale=[1.0, 2.0]), "differ per channel"),
        ("means", lambda r: r["input"].update(mean=[1.0, 2.0]), "2 means for 1 input channels"),
    ]:
        bad = {**raw, "input": dict(raw["input"])}
        change(bad)
        torch.save(bad, tmp_path / f"{name}.pt")
        with pytest.raises(ModelFileError, match=message):
            load_model_file(tmp_path / f"{name}.pt")


def test_version_2_files_read_as_bits(tmp_path, digits):
    path = tmp_path / "bits.pt"
    train("tfc", "digits", path, epochs=1, progress=False, threads=1, dataset=digits)
    record = torch.load(path, weights_only=True)
    rule = {key: value for key, value in record.pop("input").items() if key != "format"}
    torch.save({**record, "version": 2, "binarize": rule}, tmp_path / "v2.pt")
    loaded = load_model_file(tmp_path / "v2.pt")
    assert loaded["file_version"] == 2 and loaded["input"] == {"format": "bits", **rule}
    assert "binarize" not in loaded
    torch.save({**record, "version": 2}, tmp_path / "v2-none.pt")
    with pytest.raises(ModelFileError, match="does not state its input format"):
        load_model_file(tmp_path / "v2-none.pt")


def test_stochastic_weights_are_random_in_training_only():
    torch.manual_seed(0)
    layer = BinaryLinear(200, 50)
    with torch.no_grad():
        layer.weight.uniform_(-1, 1)
    x = torch.ones(1, 200)
    set_stochastic_weights(layer)
    layer.train()
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    layer.eval()
    assert torch.equal(layer(x), layer(x)) and torch.equal(layer(x), x @ layer.binary_weight().T)


def test_approxsign_changes_the_activations_gradient_only():
    x = torch.tensor([-1.5, -1.0, -0.75, -0.25, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    sign = SignActivation()
    assert sign.gradient == "hardtanh"
    sign(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 1, 1, 1, 0])
    set_activation_gradient(torch.nn.Sequential(sign), "approxsign")
    x.grad = None
    out = sign(x)
    out.sum().backward()
    np.testing.assert_array_equal(out.detach(), [-1, -1, -1, -1, 1, 1, 1, 1])   # the same sign forward
    np.testing.assert_array_equal(x.grad, [0, 0, 0.5, 1.5, 2, 1, 0, 0])          # max(0, 2 - 2|x|)
    with pytest.raises(ValueError, match="activation gradient 'relu': choose one of hardtanh, approxsign"):
        set_activation_gradient(sign, "relu")


def test_distillation_loss_adds_the_softened_kl():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    assert distillation_loss(logits, labels, None, 4.0) == torch.nn.functional.cross_entropy(logits, labels)
    # a teacher that agrees exactly adds nothing
    assert distillation_loss(logits, labels, logits.clone(), 4.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item())
    assert distillation_loss(logits, labels, -logits, 4.0) > distillation_loss(logits, labels, None, 4.0)


def test_teacher_and_stochastic_options_are_recorded(tmp_path, digits):
    teacher = tmp_path / "teacher.pt"
    summary = train("tfc", "digits", teacher, epochs=2, progress=False, threads=1, dataset=digits, float_model=True)
    assert summary["float"] and summary["accuracy_torch"] > 0.5
    model, record = load_teacher_file(teacher, "tfc", "digits")
    assert record["accuracy"] == summary["accuracy_torch"] and not model.training
    with pytest.raises(ModelFileError, match="tfc teacher for digits, not sfc"):
        load_teacher_file(teacher, "sfc", "digits")
    out = tmp_path / "student.pt"
    train("tfc", "digits", out, epochs=2, progress=False, threads=1, dataset=digits, teacher=teacher, temperature=2.0,
          stochastic_weights=True)
    trained = load_model_file(out)["train"]
    assert trained["stochastic_weights"] is True and trained["activation_grad"] == "hardtanh"
    assert trained["teacher"]["source"] == str(teacher.resolve()) and trained["teacher"]["temperature"] == 2.0
    assert trained["teacher"]["accuracy"] == record["accuracy"]
    auto = train("tfc", "digits", tmp_path / "auto.pt", epochs=2, progress=False, threads=1, dataset=digits,
                 teacher="auto", input_bits=8, activation_grad="approxsign")
    assert auto["teacher"]["source"] == "auto" and auto["teacher"]["accuracy"] > 0.5
    assert load_model_file(tmp_path / "auto.pt")["train"]["activation_grad"] == "approxsign"
    assert "activations   trained with the approxsign gradient" in format_summary(auto)


@pytest.mark.parametrize("args, message", [
    (["--input-bits", "2"], "out of range for 2-bit inputs"),
    (["--input-bits", "9"], "2 .. 8"),
    (["--teacher", "missing.pt"], "teacher file missing.pt not found"),
])
def test_cli_refuses_bad_training_options_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if args[1] == "9" else contextlib.nullcontext():
        code = main(["train", "--epochs", "1", "-o", "m.pt", *args])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
