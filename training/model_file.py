"""The xnorflow model file: what ``xnorflow train`` writes and ``xnorflow compile`` reads.

A model file is ``torch.save`` of one dict holding only tensors, strings, numbers, lists, dicts and
None, so it loads with ``torch.load(path, weights_only=True)`` (no pickled code runs)::

    {
      "format": "xnorflow-model",            # always this string
      "version": 1,                          # bumped on any incompatible change
      "arch": "sfc",                         # zoo name, or "custom" for a hand-built chain
      "in_features": 784,                    # input bits per frame
      "hidden": [256, 256, 256],             # output widths of the hidden layers
      "n_classes": 10,
      "dataset": "fashion-mnist",            # digits | fashion-mnist | idx:DIR
      "image_shape": [28, 28],               # optional: the image the in_features bits come from
      "binarize": {"rule": "pixel >= threshold", "threshold": 64, "max_value": 255},
      "state_dict": {...},                   # the torch module's state_dict (for re-training)
      "layers": [                            # one entry per BinaryLinear, input to output
        {"weight": FloatTensor (n_out, n_in),   # LATENT weights: the network uses sign(w), sign(0) = +1
         "bias":   FloatTensor (n_out,) or None,
         "bn":     {"gamma", "beta", "mean", "var": FloatTensor (n_out,), "eps": float} or None,
         "scale":  float or None},              # positive output scale (last layer only)
        ...
      ],
      "accuracy_torch": 0.87,                # test split, eval mode, binarised inputs; None if not measured
      "train": {"epochs", "seed", "seconds", "lr", "batch_size", ...}   # how it was trained
    }

Semantics of ``layers`` (independent of module names, so a consumer needs nothing else): with input
``x`` in {-1, +1}^n_in (bit 1 -> +1, bit 0 -> -1, bits from ``binarize``), each layer computes
``a = sign(weight) @ x + bias`` (bias absent = 0). A hidden layer then applies batch-norm in eval form,
``y = gamma * (a - mean) / sqrt(var + eps) + beta`` (absent = identity), and outputs +1 where
``y >= 0``, else -1. The last layer outputs ``scale * y`` (absent = 1) as class scores; the prediction
is their argmax, ties to the lowest index. This is exactly the eval-mode forward of the torch model.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xnorflow.errors import XnorflowError

from .layers import BinaryLinear, Scale, SignActivation

__all__ = [
    "FORMAT",
    "VERSION",
    "ModelFileError",
    "extract_layers",
    "load_model_file",
    "model_from_file",
    "predict",
    "save_model_file",
]

FORMAT = "xnorflow-model"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "arch", "in_features", "hidden", "n_classes", "dataset", "binarize",
                 "state_dict", "layers", "accuracy_torch", "train")
BN_KEYS = ("gamma", "beta", "mean", "var", "eps")
# Modules that are the identity on a flat vector in eval mode: allowed anywhere in the chain.
NEUTRAL_MODULES = (nn.Identity, nn.Flatten, nn.Dropout)
CHAIN_HINT = ("an xnorflow model is a chain of BinaryLinear [-> BatchNorm1d] -> SignActivation blocks "
              "ending in BinaryLinear [-> Scale]")


class ModelFileError(XnorflowError):
    """A model file (or model) that cannot be used; the message names the cause and the fix."""


# --- model -> layers ---------------------------------------------------------------------------------

def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order (the forward order of an nn.Sequential)."""
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _bn_entry(name: str, bn: nn.BatchNorm1d) -> dict:
    if bn.running_mean is None or bn.running_var is None:
        raise ModelFileError(f"batch-norm {name} keeps no running statistics: "
                             "build it with track_running_stats=True")
    n = bn.num_features
    gamma = bn.weight.detach() if bn.affine else torch.ones(n)
    beta = bn.bias.detach() if bn.affine else torch.zeros(n)
    return {"gamma": gamma.float().cpu().clone(), "beta": beta.float().cpu().clone(),
            "mean": bn.running_mean.detach().float().cpu().clone(),
            "var": bn.running_var.detach().float().cpu().clone(), "eps": float(bn.eps)}


def extract_layers(model: nn.Module) -> list[dict]:
    """The ``layers`` list of a model built as ``CHAIN_HINT`` says; ModelFileError otherwise."""
    layers: list[dict] = []
    closed = True          # the current layer has met its SignActivation (or there is none yet)
    for name, module in _leaf_modules(model):
        if isinstance(module, BinaryLinear):
            if not closed:
                raise ModelFileError(f"{name} follows a BinaryLinear without a SignActivation between "
                                     f"them: {CHAIN_HINT}")
            if layers and layers[-1]["weight"].shape[0] != module.in_features:
                raise ModelFileError(f"{name} takes {module.in_features} inputs but the layer before gives "
                                     f"{layers[-1]['weight'].shape[0]}: the layer sizes must chain")
            bias = None if module.bias is None else module.bias.detach().float().cpu().clone()
            layers.append({"weight": module.weight.detach().float().cpu().clone(), "bias": bias,
                           "bn": None, "scale": None})
            closed = False
        elif isinstance(module, nn.BatchNorm1d):
            if closed or layers[-1]["bn"] is not None or layers[-1]["scale"] is not None:
                raise ModelFileError(f"batch-norm {name} does not directly follow a BinaryLinear: {CHAIN_HINT}")
            if module.num_features != layers[-1]["weight"].shape[0]:
                raise ModelFileError(f"batch-norm {name} has {module.num_features} features for a layer "
                                     f"of {layers[-1]['weight'].shape[0]} outputs: make them equal")
            layers[-1]["bn"] = _bn_entry(name, module)
        elif isinstance(module, SignActivation):
            if closed:
                raise ModelFileError(f"SignActivation {name} does not follow a BinaryLinear: {CHAIN_HINT}")
            if layers[-1]["scale"] is not None:
                raise ModelFileError(f"Scale before SignActivation {name}: a Scale may only end the "
                                     "network; remove it")
            closed = True
        elif isinstance(module, Scale):
            if closed or layers[-1]["scale"] is not None:
                raise ModelFileError(f"Scale {name} must directly follow the last BinaryLinear "
                                     f"(or its batch-norm): {CHAIN_HINT}")
            layers[-1]["scale"] = module.value
        elif isinstance(module, NEUTRAL_MODULES):
            continue
        else:
            raise ModelFileError(f"unsupported module {name} ({type(module).__name__}): {CHAIN_HINT}")
    if not layers:
        raise ModelFileError(f"the model has no BinaryLinear layer: {CHAIN_HINT}")
    if closed:
        raise ModelFileError(f"the model ends in a SignActivation: the output layer must give class "
                             f"scores, remove the last SignActivation ({CHAIN_HINT})")
    return layers


# --- save / load ---------------------------------------------------------------------------------------

def _primitive(value):
    """Keep meta values loadable with weights_only=True: tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _primitive(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_primitive(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return value
    raise ModelFileError(f"meta value {value!r} of type {type(value).__name__} cannot go into a model file: "
                         "pass strings, numbers, lists or dicts")


def save_model_file(path: str | Path, model: nn.Module, *, arch: str, dataset: str, binarize: dict,
                    accuracy_torch: float | None = None, train: dict | None = None,
                    image_shape: tuple[int, ...] | None = None) -> dict:
    """Write ``model`` and its facts to ``path`` (atomically) and return the dict written."""
    layers = extract_layers(model)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "arch": str(arch),
        "in_features": int(layers[0]["weight"].shape[1]),
        "hidden": [int(layer["weight"].shape[0]) for layer in layers[:-1]],
        "n_classes": int(layers[-1]["weight"].shape[0]),
        "dataset": str(dataset),
        "binarize": _primitive(dict(binarize)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "layers": layers,
        "accuracy_torch": None if accuracy_torch is None else float(accuracy_torch),
        "train": _primitive(dict(train or {})),
    }
    if image_shape is not None:
        record["image_shape"] = [int(d) for d in image_shape]
    _validate(record, Path(path))
    path = Path(path)
    if path.is_symlink() or path.is_dir():
        raise ModelFileError(f"{path} is a {'symbolic link' if path.is_symlink() else 'folder'}: give -o a "
                             "plain file path for the model, e.g. model.pt")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh temp file beside the target (O_EXCL: an unpredictable name, never a followed
        # symlink), renamed over it: a crash never leaves a half-written model file.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ModelFileError(f"cannot write the model file {path} ({e.strerror}): choose a path in a folder "
                             "you can write") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return record


def load_model_file(path: str | Path) -> dict:
    """Read and validate a model file; ModelFileError with one clear line on any problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} not found: train one with "
                             f"`xnorflow train --arch tfc --dataset digits -o {path}`")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file: give the .pt file written by xnorflow train")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, ...)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ModelFileError(f"{path} is not a readable PyTorch model file ({first_line}): "
                             "re-create it with `xnorflow train`") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ModelFileError(f"{path} is not an xnorflow model file (format {found!r}, expected {FORMAT!r}): "
                             "export the model with xnorflow.training.model_file.save_model_file")
    _validate(record, path)
    return record


def _validate(record: dict, path: Path) -> None:
    where = str(path)
    if record.get("version") != VERSION:
        raise ModelFileError(f"{where} has model file version {record.get('version')!r}, this xnorflow reads "
                             f"version {VERSION}: re-create it with this version's `xnorflow train`")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ModelFileError(f"{where} lacks the keys {', '.join(missing)}: re-create it with `xnorflow train`")
    layers = record["layers"]
    if not isinstance(layers, list) or not layers:
        raise ModelFileError(f"{where} has no layers: re-create it with `xnorflow train`")
    n_in = record["in_features"]
    for i, layer in enumerate(layers):
        _validate_layer(layer, i, n_in, last=i == len(layers) - 1, where=where)
        n_in = layer["weight"].shape[0]
    hidden = [int(layer["weight"].shape[0]) for layer in layers[:-1]]
    if list(record["hidden"]) != hidden or record["n_classes"] != layers[-1]["weight"].shape[0]:
        raise ModelFileError(f"{where}: hidden {record['hidden']} / n_classes {record['n_classes']} disagree "
                             f"with the layers ({hidden} / {layers[-1]['weight'].shape[0]}): the file is "
                             "inconsistent, re-create it")
    rule = record["binarize"]
    if not isinstance(rule, dict) or not {"rule", "threshold", "max_value"} <= set(rule):
        raise ModelFileError(f"{where}: binarize must be a dict with rule, threshold and max_value, got "
                             f"{rule!r}: re-create the file with `xnorflow train`")


def _is_vector(value, n: int) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and tuple(value.shape) == (n,)


def _validate_layer(layer, i: int, n_in: int, last: bool, where: str) -> None:
    bad = f"{where}: layer {i}"
    fix = "re-create the file with `xnorflow train`"
    if not isinstance(layer, dict) or "weight" not in layer:
        raise ModelFileError(f"{bad} is not a dict with a weight: {fix}")
    weight = layer["weight"]
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise ModelFileError(f"{bad}: weight must be a 2-D float tensor: {fix}")
    n_out = weight.shape[0]
    if weight.shape[1] != n_in:
        raise ModelFileError(f"{bad} takes {weight.shape[1]} inputs but receives {n_in}: {fix}")
    if layer.get("bias") is not None and not _is_vector(layer["bias"], n_out):
        raise ModelFileError(f"{bad}: bias must be None or a float tensor of {n_out}: {fix}")
    bn = layer.get("bn")
    if bn is not None:
        if not isinstance(bn, dict) or any(key not in bn for key in BN_KEYS):
            raise ModelFileError(f"{bad}: bn must hold {', '.join(BN_KEYS)}: {fix}")
        if not all(_is_vector(bn[key], n_out) for key in ("gamma", "beta", "mean", "var")):
            raise ModelFileError(f"{bad}: bn gamma/beta/mean/var must be float tensors of {n_out}: {fix}")
    scale = layer.get("scale")
    if scale is not None:
        if not last:
            raise ModelFileError(f"{bad}: only the last layer may have a scale: {fix}")
        if not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale)):
            raise ModelFileError(f"{bad}: scale must be a positive number, got {scale!r}: {fix}")


# --- layers -> model -------------------------------------------------------------------------------------

def model_from_file(record: dict) -> nn.Module:
    """An eval-mode nn.Sequential computing exactly what ``record['layers']`` describes.

    Its module order matches the zoo's (BinaryLinear, BatchNorm1d, SignActivation, ..., BinaryLinear,
    Scale), so a zoo model's ``state_dict`` loads into it as well.
    """
    modules: list[nn.Module] = []
    layers = record["layers"]
    for i, layer in enumerate(layers):
        n_out, n_in = layer["weight"].shape
        linear = BinaryLinear(n_in, n_out, bias=layer.get("bias") is not None)
        with torch.no_grad():
            linear.weight.copy_(layer["weight"])
            if linear.bias is not None:
                linear.bias.copy_(layer["bias"])
        modules.append(linear)
        if layer.get("bn") is not None:
            bn = layer["bn"]
            norm = nn.BatchNorm1d(n_out, eps=float(bn["eps"]))
            with torch.no_grad():
                norm.weight.copy_(bn["gamma"])
                norm.bias.copy_(bn["beta"])
                norm.running_mean.copy_(bn["mean"])
                norm.running_var.copy_(bn["var"])
            modules.append(norm)
        if i < len(layers) - 1:
            modules.append(SignActivation())
        elif layer.get("scale") is not None:
            scale = Scale()
            with torch.no_grad():
                scale.log_scale.copy_(torch.tensor(float(layer["scale"])).log())
            modules.append(scale)
    return nn.Sequential(*modules).eval()


def _first_binary_linear(model: nn.Module) -> BinaryLinear | None:
    return next((m for m in model.modules() if isinstance(m, BinaryLinear)), None)


@torch.no_grad()
def scores(model: nn.Module, bits: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Eval-mode outputs (n, n_classes) float32 for input bits (n, features): 1 -> +1.0, 0 -> -1.0."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"input bits have shape {bits.shape}: pass a (frames, features) array of 0/1")
    first = _first_binary_linear(model)
    if first is not None and bits.shape[1] != first.in_features:
        raise ValueError(f"input bits have {bits.shape[1]} features, the model takes {first.in_features}: "
                         "binarise images of the dataset the model was trained on")
    was_training = model.training
    model.eval()
    try:
        outputs = []
        for start in range(0, len(bits), batch_size):
            x = torch.from_numpy(bits[start:start + batch_size].astype(np.float32) * 2.0 - 1.0)
            outputs.append(model(x).float().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)


def predict(model: nn.Module, bits: np.ndarray) -> np.ndarray:
    """Class predictions (n,) int64: argmax of the eval-mode outputs, ties to the lowest index."""
    out = scores(model, bits)
    if out.size == 0:
        return np.zeros(len(bits), dtype=np.int64)
    return np.argmax(out, axis=1).astype(np.int64)   # np.argmax returns the first maximum
