"""Binary convolutions and max-pools: layers, zoo conv nets, the model file's conv entries, refusals."""
import numpy as np
import pytest
import torch
from conftest import run_cli
from torch import nn

from xnorflow.training.layers import (
    BatchNorm,
    BatchNorm2d,
    BinaryConv2d,
    BinaryLinear,
    Flatten,
    MaxPool2d,
    Scale,
    SignActivation,
    clip_latent_weights,
)
from xnorflow.training.model_file import (
    VERSION,
    ModelFileError,
    extract_layers,
    load_model_file,
    model_from_file,
    predict,
    save_model_file,
)
from xnorflow.training.zoo import ArchError, build_model

RULE = {"rule": "pixel >= threshold", "threshold": 128, "max_value": 255}


def pm1(shape, seed=0):
    return torch.where(torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) >= 0.5, 1.0, -1.0)


def explicit_conv(x: np.ndarray, w: np.ndarray, padding: int, pad_value: int) -> np.ndarray:
    """sign(w) cross-correlated with x (N, C, H, W) padded by ``padding`` pixels of ``pad_value``, by loops."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    padded = np.full((n, c, h + 2 * padding, wd + 2 * padding), float(pad_value))
    padded[:, :, padding:padding + h, padding:padding + wd] = x
    signs = np.where(w >= 0, 1.0, -1.0)
    out = np.zeros((n, o, h + 2 * padding - k + 1, wd + 2 * padding - k + 1))
    for y in range(out.shape[2]):
        for xx in range(out.shape[3]):
            window = padded[:, :, y:y + k, xx:xx + k]                    # (n, c, k, k)
            out[:, :, y, xx] = np.einsum("nckl,ockl->no", window, signs)
    return out


@pytest.mark.parametrize("padding, pad_value", [(0, -1), (1, -1), (1, 1), (2, 1)])
def test_binary_conv_forward_is_the_explicit_pm1_computation(padding, pad_value):
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 5, 3, padding=padding, pad_value=pad_value)
    with torch.no_grad():
        conv.weight.uniform_(-1, 1)
        conv.weight[:, 0, 0, 0] = 0.0                       # sign(0) = +1
    x = pm1((4, 3, 6, 7))
    out = conv(x).detach().double().numpy()
    np.testing.assert_array_equal(out, explicit_conv(x.numpy(), conv.weight.detach().numpy(), padding, pad_value))
    assert conv.padding == (0, 0)                           # the border is never zero-padded


def test_binary_conv_padding_is_never_zero():
    with pytest.raises(ValueError, match="pad with -1 or \\+1"):
        BinaryConv2d(1, 1, 3, padding=1, pad_value=0)
    with pytest.raises(ValueError, match="one square size"):
        BinaryConv2d(1, 1, (3, 2))


def test_binary_conv_gradients_flow_through_the_ste_and_clipping_applies():
    conv = BinaryConv2d(2, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.uniform_(-1, 1)
        conv.weight[0, 0, 0, 0] = 1.5                       # beyond the STE window
    x = pm1((3, 2, 5, 5)).requires_grad_(True)
    model = nn.Sequential(conv, BatchNorm2d(4), SignActivation())
    model(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.weight.grad[0, 0, 0, 0] == 0               # |w| > 1: gradient cancelled
    assert x.grad is not None and x.grad.abs().sum() > 0
    clip_latent_weights(model)
    assert conv.weight.abs().max() <= 1.0


def test_scnv_and_cnv_shapes():
    scnv = build_model("scnv", (1, 28, 28))
    convs = [m for m in scnv if isinstance(m, BinaryConv2d)]
    assert [m.pad for m in convs] == [0] * 4                 # valid convs on 28x28
    assert [tuple(m.weight.shape) for m in convs] == [(32, 1, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3)]
    linears = [m for m in scnv if isinstance(m, BinaryLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 256), (256, 10)]
    assert scnv.eval()(pm1((2, 784))).shape == (2, 10)
    cnv = build_model("cnv", (3, 32, 32))
    assert all(m.pad == 0 for m in cnv if isinstance(m, BinaryConv2d))
    assert [(m.in_features, m.out_features) for m in cnv if isinstance(m, BinaryLinear)] == [
        (256, 512), (512, 512), (512, 10)]
    # too small for valid convs: every conv pads by one -1 pixel
    small = build_model("scnv", (1, 8, 8))
    assert all(m.pad == 1 and m.pad_value == -1 for m in small if isinstance(m, BinaryConv2d))
    assert next((m.in_features, m.out_features) for m in small if isinstance(m, BinaryLinear)) == (64 * 2 * 2, 256)
    with pytest.raises(ArchError, match="scnv is a conv net: give the image shape"):
        build_model("scnv", 784)
    with pytest.raises(ArchError, match="does not fit a 3x3 image"):
        build_model("scnv", (1, 3, 3))
    with pytest.raises(ArchError, match="unknown architecture 'xcnv'.*tfc, sfc, lfc, scnv, cnv"):
        build_model("xcnv", (1, 8, 8))


def randomise(model: nn.Module, seed=0) -> nn.Module:
    """Random latent weights (some exactly 0) and batch-norm statistics with negative gammas too."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (BinaryLinear, BinaryConv2d)):
                module.weight.uniform_(-1, 1)
                module.weight.view(module.weight.shape[0], -1)[:, ::5] = 0.0
                if module.bias is not None:
                    module.bias.normal_()
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.weight.copy_(torch.randn(n))
                module.bias.copy_(torch.randn(n) * 2)
                module.running_mean.copy_(torch.randn(n) * 3)
                module.running_var.copy_(torch.rand(n) * 10 + 0.1)
            if isinstance(module, Scale):
                module.log_scale.fill_(-1.5)
    return model.eval()


def both_pool_orders() -> nn.Module:
    """Conv-MaxPool-BN-Sign (pool before BN), padded with +1, then Conv-BN-Sign-MaxPool, Flatten, dense."""
    return nn.Sequential(
        nn.Unflatten(1, (2, 9, 9)),
        BinaryConv2d(2, 6, 3, padding=1, pad_value=1, bias=True), MaxPool2d(2), BatchNorm2d(6), SignActivation(),
        BinaryConv2d(6, 8, 2), BatchNorm2d(8), SignActivation(), MaxPool2d(3),
        Flatten(), BinaryLinear(8, 16), BatchNorm(16), SignActivation(), BinaryLinear(16, 4), Scale())


def reference_forward(record: dict, bits: np.ndarray) -> np.ndarray:
    """The model file's documented semantics in float64 NumPy, without any torch module."""
    x = bits.astype(np.float64) * 2 - 1
    if record["layers"][0]["kind"] == "conv":
        x = x.reshape(len(x), *record["image_shape"])

    def pool(a, s):
        n, c, h, w = a.shape
        return a[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s).max(axis=(3, 5))

    layers = record["layers"]
    for i, layer in enumerate(layers):
        if layer["kind"] == "conv":
            a = explicit_conv(x, layer["weight"].numpy(), layer["padding"], layer["pad_value"])
            bias = layer["bias"].numpy()[None, :, None, None] if layer["bias"] is not None else 0.0
            shape = (1, -1, 1, 1)
        else:
            if layer["flatten_from"] is not None:
                assert list(x.shape[1:]) == layer["flatten_from"]
                x = x.reshape(len(x), -1)                         # (c, y, x) order
            a = x @ np.where(layer["weight"].numpy() >= 0, 1.0, -1.0).T
            bias = layer["bias"].numpy() if layer["bias"] is not None else 0.0
            shape = (1, -1)
        a = a + bias
        pooling = layer.get("pool")
        if pooling and pooling["before_bn"]:
            a = pool(a, pooling["size"])
        if layer["bn"] is not None:
            bn = {k: (v.double().numpy().reshape(shape) if torch.is_tensor(v) else v) for k, v in layer["bn"].items()}
            a = bn["gamma"] * (a - bn["mean"]) / np.sqrt(bn["var"] + bn["eps"]) + bn["beta"]
        if i == len(layers) - 1:
            return a * (layer["scale"] if layer["scale"] is not None else 1.0)
        x = np.where(a >= 0, 1.0, -1.0)
        if pooling and not pooling["before_bn"]:
            x = pool(x, pooling["size"])
        if layer["kind"] == "conv":
            assert list(x.shape[1:]) == layer["out_shape"]
    raise AssertionError("unreachable")


def save(tmp_path, model, arch="custom", name="m.pt", **extra):
    path = tmp_path / name
    save_model_file(path, model, arch=arch, dataset="digits", binarize=RULE, accuracy_torch=0.5,
                    train={"epochs": 1}, **extra)
    return path


def test_both_pool_orders_are_recorded_and_reproduced(tmp_path):
    model = randomise(both_pool_orders())
    record = load_model_file(save(tmp_path, model))
    first, second, dense = record["layers"][:3]
    assert first["kind"] == "conv" and first["pool"] == {"size": 2, "before_bn": True}
    assert first["padding"] == 1 and first["pad_value"] == 1 and first["in_shape"] == [2, 9, 9]
    assert first["out_shape"] == [6, 4, 4] and first["scale"] is None
    assert second["pool"] == {"size": 3, "before_bn": False} and second["out_shape"] == [8, 1, 1]
    assert dense["kind"] == "dense" and dense["flatten_from"] == [8, 1, 1]
    assert record["layers"][3]["flatten_from"] is None
    assert record["image_shape"] == [2, 9, 9] and record["in_features"] == 162
    assert record["hidden"] == [6, 8, 16] and record["n_classes"] == 4
    bits = np.random.default_rng(2).integers(0, 2, (400, 162), dtype=np.uint8)
    with torch.no_grad():
        torch_out = model(torch.from_numpy(bits.astype(np.float32) * 2 - 1)).double().numpy()
    np.testing.assert_allclose(reference_forward(record, bits), torch_out, rtol=1e-5, atol=1e-4)
    rebuilt = model_from_file(record)
    np.testing.assert_array_equal(predict(rebuilt, bits), predict(model, bits))
    rebuilt.load_state_dict(record["state_dict"])           # same module order as the original


def test_bn_before_pool_before_sign_is_a_pool_after_the_activation():
    model = nn.Sequential(BinaryConv2d(1, 2, 3), BatchNorm2d(2), MaxPool2d(2), SignActivation(), nn.Dropout2d(0.2),
                          Flatten(), BinaryLinear(2 * 3 * 3, 3))
    layers = extract_layers(model, image_shape=(1, 8, 8))
    assert layers[0]["pool"] == {"size": 2, "before_bn": False}


def test_scnv_model_file_round_trip(tmp_path):
    model = randomise(build_model("scnv", (1, 28, 28)))
    path = save(tmp_path, model, arch="scnv", image_shape=(1, 28, 28))
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == VERSION and [layer["kind"] for layer in raw["layers"]] == ["conv"] * 4 + ["dense"] * 2
    # the zoo pools between the conv and its batch-norm (training/zoo.py)
    assert [layer["pool"] for layer in raw["layers"][:4]] == [None, {"size": 2, "before_bn": True}] * 2
    assert raw["layers"][4]["flatten_from"] == [64, 4, 4] and raw["in_features"] == 784
    assert raw["hidden"] == [32, 32, 64, 64, 256]
    record = load_model_file(path)
    bits = np.random.default_rng(0).integers(0, 2, (200, 784), dtype=np.uint8)
    rebuilt = model_from_file(record)
    np.testing.assert_array_equal(predict(rebuilt, bits), predict(model, bits))
    np.testing.assert_array_equal(np.argmax(reference_forward(record, bits[:40]), axis=1), predict(model, bits[:40]))
    rebuilt.load_state_dict(record["state_dict"])           # the zoo's module order


def test_predict_on_a_conv_model_without_unflatten():
    model = randomise(nn.Sequential(BinaryConv2d(1, 4, 3), BatchNorm2d(4), SignActivation(), Flatten(),
                                    BinaryLinear(4 * 4 * 4, 3)))
    bits = np.random.default_rng(1).integers(0, 2, (30, 1, 6, 6), dtype=np.uint8)
    images = predict(model, bits)
    np.testing.assert_array_equal(predict(model, bits.reshape(30, -1), image_shape=(1, 6, 6)), images)
    with pytest.raises(ValueError, match="has no leading nn.Unflatten"):
        predict(model, bits.reshape(30, -1))
    # the image shape comes from save_model_file's argument; the rebuilt model unflattens by itself
    record = {"layers": extract_layers(model, image_shape=(1, 6, 6))}
    np.testing.assert_array_equal(predict(model_from_file(record), bits.reshape(30, -1)), images)
    with pytest.raises(ValueError, match="30 features, the model takes 36"):
        predict(model_from_file(record), bits.reshape(30, -1)[:, :30])


def conv_then(*modules, conv=None):
    return nn.Sequential(conv if conv is not None else BinaryConv2d(2, 4, 3), *modules)


TAIL = (BatchNorm2d(4), SignActivation(), Flatten(), BinaryLinear(4 * 6 * 6, 2))


@pytest.mark.parametrize("model, message", [
    (conv_then(*TAIL, conv=BinaryConv2d(2, 4, 3, stride=2)), "0 \\(BinaryConv2d\\) has stride \\(2, 2\\): stride > 1"),
    (conv_then(*TAIL, conv=BinaryConv2d(2, 4, 3, dilation=2)), "0 \\(BinaryConv2d\\) has dilation \\(2, 2\\)"),
    (conv_then(*TAIL, conv=BinaryConv2d(2, 4, 3, groups=2)), "0 \\(BinaryConv2d\\) has groups=2"),
    (conv_then(*TAIL, conv=nn.Conv2d(2, 4, 3, padding=1)), "0 \\(Conv2d\\) pads with zeros"),
    (conv_then(*TAIL, conv=nn.Conv2d(2, 4, 3)), "unsupported module 0 \\(Conv2d\\): use BinaryConv2d"),
    (conv_then(BatchNorm2d(4), SignActivation(), nn.AvgPool2d(2), Flatten(), BinaryLinear(36, 2)),
     "3 \\(AvgPool2d\\): average pooling is not supported"),
    (conv_then(BatchNorm2d(4), SignActivation(), MaxPool2d(3, stride=2), Flatten(), BinaryLinear(16, 2)),
     "3 \\(MaxPool2d\\) has kernel_size 3 and stride 2: overlapping"),
    (conv_then(BatchNorm2d(4), SignActivation(), MaxPool2d(2, padding=1), Flatten(), BinaryLinear(64, 2)),
     "3 \\(MaxPool2d\\) uses padding"),
    (nn.Sequential(MaxPool2d(2), BinaryConv2d(2, 4, 3), *TAIL), "0 \\(MaxPool2d\\) does not follow a BinaryConv2d"),
    (conv_then(MaxPool2d(2), BatchNorm2d(4), SignActivation(), MaxPool2d(2), Flatten(), BinaryLinear(4, 2)),
     "second pool"),
    (conv_then(BatchNorm2d(4), SignActivation(), BinaryLinear(4 * 6 * 6, 2)), "without a Flatten"),
    (conv_then(BatchNorm(4), SignActivation(), Flatten(), BinaryLinear(4 * 6 * 6, 2)), "use BatchNorm2d"),
    (conv_then(BatchNorm2d(4), SignActivation(), Flatten(), BinaryLinear(99, 2)), "takes 99 inputs but .* gives 144"),
    (nn.Sequential(BinaryConv2d(3, 4, 3), *TAIL), "takes 3 channels but receives 2"),
    (conv_then(BatchNorm2d(4)), "ends in a BinaryConv2d"),
])
def test_unsupported_conv_models_are_refused_naming_the_module(model, message):
    with pytest.raises(ModelFileError, match=message) as info:
        extract_layers(model, image_shape=(2, 8, 8))
    assert "\n" not in str(info.value)


def test_conv_without_image_shape_is_refused(tmp_path):
    model = nn.Sequential(BinaryConv2d(1, 2, 3), *TAIL[1:3], BinaryLinear(2 * 6 * 6, 2))
    with pytest.raises(ModelFileError, match="input of unknown shape: open the model with nn.Unflatten"):
        save(tmp_path, model)
    with pytest.raises(ModelFileError, match="disagrees with the model's nn.Unflatten"):
        save(tmp_path, nn.Sequential(nn.Unflatten(1, (1, 8, 8)), *model), image_shape=(1, 9, 9))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["layers"][0].update(pad_value=0), "pad_value must be -1 or \\+1"),
    (lambda r: r["layers"][0].update(in_shape=[2, 8, 9]), "in_shape \\[2, 8, 9\\] is not what it receives"),
    (lambda r: r["layers"][0].update(out_shape=[6, 5, 5]), "out_shape \\[6, 5, 5\\] should be \\[6, 4, 4\\]"),
    (lambda r: r["layers"][0].update(pool={"size": 2}), "pool must be None or"),
    (lambda r: r["layers"][2].update(flatten_from=None), "follows a conv but has no flatten_from"),
    (lambda r: r["layers"][2].update(flatten_from=[8, 2, 2]), "flatten_from \\[8, 2, 2\\] is not the previous"),
    (lambda r: r["layers"][1].update(kind="maxpool"), "kind 'maxpool', expected 'dense' or 'conv'"),
    (lambda r: r.update(image_shape=[2, 9, 8]), "image_shape \\[2, 9, 8\\] holds 144 pixels but in_features is 162"),
])
def test_inconsistent_conv_entries_are_refused(tmp_path, edit, message):
    record = torch.load(save(tmp_path, randomise(both_pool_orders())), weights_only=True)
    edit(record)
    torch.save(record, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match=message):
        load_model_file(tmp_path / "bad.pt")


def test_version_1_dense_files_are_still_read(tmp_path):
    model = randomise(build_model("tfc", 64))
    record = torch.load(save(tmp_path, model, image_shape=(8, 8)), weights_only=True)
    record["version"] = 1                                   # today's (version 1) dense-only form
    record["image_shape"] = [8, 8]
    for layer in record["layers"]:
        del layer["kind"], layer["flatten_from"]
    torch.save(record, tmp_path / "v1.pt")
    loaded = load_model_file(tmp_path / "v1.pt")
    assert loaded["version"] == VERSION and loaded["file_version"] == 1 and loaded["image_shape"] == [1, 8, 8]
    assert all(layer["kind"] == "dense" and layer["flatten_from"] is None for layer in loaded["layers"])
    bits = np.random.default_rng(0).integers(0, 2, (100, 64), dtype=np.uint8)
    np.testing.assert_array_equal(predict(model_from_file(loaded), bits), predict(model, bits))


def test_train_scnv_on_digits_through_the_cli(tmp_path):
    out = tmp_path / "scnv.pt"
    result = run_cli("train", "--arch", "scnv", "--dataset", "digits", "--epochs", "3", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "trained scnv on digits" in result.stdout and "hidden [32, 32, 64, 64, 256]" in result.stdout
    record = load_model_file(out)
    assert record["arch"] == "scnv" and record["image_shape"] == [1, 8, 8] and record["in_features"] == 64
    assert [layer["padding"] for layer in record["layers"][:4]] == [1] * 4
    assert record["accuracy_torch"] > 0.5                    # chance is 0.1
    assert all(layer["weight"].abs().max() <= 1.0 for layer in record["layers"])
