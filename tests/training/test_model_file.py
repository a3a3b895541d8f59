"""Model file: round trip, the layers list reproduces the torch model exactly, every error path."""
import numpy as np
import pytest
import torch
from torch import nn

from xnorflow.training.layers import BinaryLinear, Scale, SignActivation
from xnorflow.training.model_file import (
    VERSION,
    ModelFileError,
    extract_layers,
    load_model_file,
    model_from_file,
    predict,
    save_model_file,
)
from xnorflow.training.zoo import build_model

RULE = {"rule": "pixel >= threshold", "threshold": 8, "max_value": 16}


def randomised_model(arch="tfc", in_features=64, seed=0) -> nn.Module:
    """A zoo model with random latent weights (some exactly 0) and non-trivial batch-norm, gamma < 0 too."""
    torch.manual_seed(seed)
    model = build_model(arch, in_features)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BinaryLinear):
                module.weight.uniform_(-1, 1)
                module.weight[:, ::7] = 0.0                       # sign(0) must count as +1
            if isinstance(module, nn.BatchNorm1d):
                n = module.num_features
                module.weight.copy_(torch.randn(n))               # includes negative gammas
                module.bias.copy_(torch.randn(n) * 3)
                module.running_mean.copy_(torch.randn(n) * 4)
                module.running_var.copy_(torch.rand(n) * 20 + 0.1)
            if isinstance(module, Scale):
                module.log_scale.fill_(-2.0)
    return model.eval()


def random_bits(n, features, seed=1):
    return np.random.default_rng(seed).integers(0, 2, (n, features), dtype=np.uint8)


def reference_forward(record: dict, bits: np.ndarray) -> np.ndarray:
    """The documented semantics of ``layers``, in float64 NumPy, without any torch module."""
    x = bits.astype(np.float64) * 2 - 1
    layers = record["layers"]
    for i, layer in enumerate(layers):
        w = np.where(layer["weight"].numpy() >= 0, 1.0, -1.0)
        y = x @ w.T
        if layer["bias"] is not None:
            y = y + layer["bias"].numpy()
        if layer["bn"] is not None:
            bn = {k: (v.double().numpy() if torch.is_tensor(v) else v) for k, v in layer["bn"].items()}
            y = bn["gamma"] * (y - bn["mean"]) / np.sqrt(bn["var"] + bn["eps"]) + bn["beta"]
        if i < len(layers) - 1:
            x = np.where(y >= 0, 1.0, -1.0)
        else:
            x = y * (layer["scale"] if layer["scale"] is not None else 1.0)
    return x


def save(tmp_path, model, name="m.pt", **extra):
    path = tmp_path / name
    save_model_file(path, model, arch="tfc", dataset="digits", binarize=RULE, accuracy_torch=0.5,
                    train={"epochs": 1, "seed": 0, "seconds": 0.1, "lr": 0.01, "batch_size": 8}, **extra)
    return path


def test_round_trip_gives_same_predictions(tmp_path):
    model = randomised_model()
    path = save(tmp_path, model, image_shape=(8, 8))
    record = load_model_file(path)
    assert record["format"] == "xnorflow-model" and record["version"] == VERSION
    assert record["in_features"] == 64 and record["hidden"] == [64, 64, 64] and record["n_classes"] == 10
    assert record["input"] == {"format": "bits", **RULE} and record["image_shape"] == [1, 8, 8] and record["accuracy_torch"] == 0.5
    bits = random_bits(500, 64)
    reloaded = model_from_file(record)
    assert not reloaded.training
    np.testing.assert_array_equal(predict(reloaded, bits), predict(model, bits))
    # the zoo's state_dict fits the rebuilt module too (same module order)
    reloaded.load_state_dict(record["state_dict"])


def test_file_loads_with_weights_only(tmp_path):
    path = save(tmp_path, randomised_model())
    raw = torch.load(path, weights_only=True)
    assert raw["layers"][0]["weight"].shape == (64, 64)
    assert raw["layers"][-1]["bn"] is None and raw["layers"][0]["bias"] is None
    assert raw["layers"][-1]["scale"] == pytest.approx(np.exp(-2.0))


def test_layers_list_reproduces_the_torch_forward(tmp_path):
    model = randomised_model()
    record = load_model_file(save(tmp_path, model))
    bits = random_bits(1000, 64, seed=3)
    with torch.no_grad():
        torch_out = model(torch.from_numpy(bits.astype(np.float32) * 2 - 1)).double().numpy()
    reference = reference_forward(record, bits)
    np.testing.assert_allclose(reference, torch_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(reference, axis=1), predict(model, bits))


def test_custom_chain_with_bias_and_no_batchnorm(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), BinaryLinear(20, 16, bias=True), SignActivation(), nn.Dropout(0.1),
                          BinaryLinear(16, 4, bias=True)).eval()
    record = load_model_file(save(tmp_path, model))
    assert record["layers"][0]["bn"] is None and record["layers"][1]["scale"] is None
    bits = random_bits(300, 20)
    np.testing.assert_array_equal(predict(model_from_file(record), bits), predict(model, bits))
    np.testing.assert_array_equal(np.argmax(reference_forward(record, bits), axis=1), predict(model, bits))


def test_predict_breaks_ties_to_lowest_index():
    model = nn.Sequential(BinaryLinear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-1.0, 1, 1, 1], [1.0, 1, 1, 1], [1.0, 1, 1, 1]]))
    bits = np.array([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=np.uint8)
    assert predict(model, bits).tolist() == [1, 0]      # rows 1 and 2 tie on the first frame


def test_predict_rejects_wrong_width():
    with pytest.raises(ValueError, match="64 features, the model takes 784"):
        predict(build_model("tfc", 784), random_bits(2, 64))


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file .*nope.pt not found: check the path, or train one with `xnorflow train --arch ARCH"):
        load_model_file(tmp_path / "nope.pt")


def test_directory_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="is not a file"):
        load_model_file(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="is not a readable PyTorch model file") as info:
        load_model_file(path)
    assert "\n" not in str(info.value)


def test_truncated_file(tmp_path):
    path = save(tmp_path, randomised_model())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a readable PyTorch model file"):
        load_model_file(path)


@pytest.mark.parametrize("content, found", [({"format": "onnx"}, "'onnx'"), ([1, 2, 3], "'list'"),
                                            ({"weights": torch.zeros(3)}, "None")])
def test_wrong_format(tmp_path, content, found):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ModelFileError, match=f"not an xnorflow model file \\(format {found}"):
        load_model_file(path)


def test_wrong_version_and_missing_keys(tmp_path):
    record = torch.load(save(tmp_path, randomised_model()), weights_only=True)
    torch.save({**record, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ModelFileError, match="version 99, this xnorflow reads versions 1, 2 and 3"):
        load_model_file(tmp_path / "v99.pt")
    del record["train"], record["layers"]
    torch.save(record, tmp_path / "partial.pt")
    with pytest.raises(ModelFileError, match="lacks the keys layers, train"):
        load_model_file(tmp_path / "partial.pt")


def test_inconsistent_layers(tmp_path):
    record = torch.load(save(tmp_path, randomised_model()), weights_only=True)
    record["layers"][1]["weight"] = torch.zeros(64, 32)
    torch.save(record, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="layer 1 takes 32 inputs but receives 64"):
        load_model_file(tmp_path / "bad.pt")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)                  # a whole module needs unpickling code
    with pytest.raises(ModelFileError, match="not a readable PyTorch model file"):
        load_model_file(path)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(BinaryLinear(4, 4), nn.ReLU(), BinaryLinear(4, 2)), "unsupported module 1 \\(ReLU\\)"),
    (nn.Sequential(BinaryLinear(4, 4), SignActivation()), "ends in a SignActivation"),
    (nn.Sequential(nn.Linear(4, 4)), "unsupported module 0 \\(Linear\\)"),
    (nn.Sequential(BinaryLinear(4, 4), SignActivation(), BinaryLinear(3, 2)), "takes 3 inputs but .* gives 4"),
    (nn.Sequential(BinaryLinear(4, 4), BinaryLinear(4, 2)), "without a SignActivation"),
    (nn.Sequential(BinaryLinear(4, 4), Scale(), SignActivation(), BinaryLinear(4, 2)), "Scale before"),
    (nn.Sequential(SignActivation(), BinaryLinear(4, 2)), "does not follow a BinaryLinear"),
    (nn.Sequential(nn.Identity()), "no BinaryLinear"),
])
def test_unsupported_models_are_refused(model, message):
    with pytest.raises(ModelFileError, match=message):
        extract_layers(model)


def test_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(ModelFileError):
        save(tmp_path, nn.Sequential(nn.ReLU()))
    assert list(tmp_path.iterdir()) == []
