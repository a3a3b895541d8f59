"""The xnorflow model file: what ``xnorflow train`` writes and ``xnorflow compile`` reads.

A model file is ``torch.save`` of one dict holding only tensors, strings, numbers, lists, dicts and
None, so it loads with ``torch.load(path, weights_only=True)`` (no pickled code runs)::

    {
      "format": "xnorflow-model",            # always this string
      "version": 2,                          # bumped on any incompatible change (version 1: below)
      "arch": "sfc",                         # zoo name, or "custom" for a hand-built chain
      "in_features": 784,                    # input bits per frame (C*H*W of the image)
      "hidden": [256, 256, 256],             # n_out (output channels of a conv) of every layer but the last
      "n_classes": 10,
      "dataset": "fashion-mnist",            # digits | fashion-mnist | idx:DIR | cifar10:DIR
      "image_shape": [1, 28, 28],            # [C, H, W] of the input image, bits in (c, y, x) order;
                                             # optional for a dense-only model, required with convs
      "binarize": {"rule": "pixel >= threshold", "threshold": 64, "max_value": 255},
      "state_dict": {...},                   # the torch module's state_dict (for re-training)
      "layers": [...],                       # one entry per BinaryLinear / BinaryConv2d, input to output
      "accuracy_torch": 0.87,                # test split, eval mode, binarised inputs; None if not measured
      "train": {"epochs", "seed", "seconds", "lr", "batch_size", ...}   # how it was trained
    }

Each ``layers`` entry has a ``kind``. A dense entry (a BinaryLinear)::

    {"kind": "dense",
     "weight": FloatTensor (n_out, n_in),    # LATENT weights: the network uses sign(w), sign(0) = +1
     "bias":   FloatTensor (n_out,) or None,
     "bn":     {"gamma", "beta", "mean", "var": FloatTensor (n_out,), "eps": float} or None,
     "scale":  float or None,                # positive output scale (last layer only)
     "flatten_from": [C, H, W] or None}      # set on the dense layer right after a conv: its input is
                                             # that conv's (C, H, W) output flattened in PyTorch's
                                             # (c, y, x) order, n_in = C*H*W (the hardware streams
                                             # (y, x, c): the compiler permutes the weight columns)

A conv entry (a BinaryConv2d, with the max-pool that belongs to it, if any)::

    {"kind": "conv",
     "weight":    FloatTensor (O, C, K, K),  # LATENT weights, sign(0) = +1; stride 1, no dilation, 1 group
     "bias":      FloatTensor (O,) or None,
     "bn":        as for dense, over the O channels, or None,
     "scale":     None,                      # a conv is never the output layer
     "padding":   P,                         # pixels added on every side of the input, >= 0
     "pad_value": -1 or +1,                  # their value (bit 0 or bit 1; never zero-padding)
     "in_shape":  [C, H, W],                 # the input it receives
     "pool":      None or {"size": S, "before_bn": bool},   # S x S max-pool, stride S, floor
     "out_shape": [O, H', W']}               # what the next layer receives (after the pool), with
                                             # H' = (H + 2P - K + 1) // S (S = 1 without a pool)

There is no separate max-pool entry: a pool always belongs to the conv before it, which makes its
place relative to the batch-norm explicit. ``before_bn`` false: the pool takes the max of the conv's
+-1 activations (PyTorch Conv-BN-Sign-MaxPool, or Conv-BN-MaxPool-Sign, which computes the same);
the hardware ORs the bits. ``before_bn`` true: PyTorch Conv-MaxPool-BN-Sign, the pool takes the max
of the conv's integer outputs before the batch-norm; equal to OR of the activation bits per channel
where gamma > 0 and to their AND where gamma < 0 (DESIGN.md section 2a).

Semantics of ``layers`` (independent of module names, so a consumer needs nothing else): with input
``x`` in {-1, +1} (bit 1 -> +1, bit 0 -> -1, bits from ``binarize``; a flat vector of in_features, seen
as ``image_shape`` by a conv), each layer computes ``a = sign(weight) (*) x + bias`` (bias absent =
0), where ``(*)`` is the matrix product for dense and for conv the stride-1 cross-correlation
(PyTorch's conv2d) of x padded by P pixels of pad_value. A conv with ``before_bn`` then max-pools a.
A hidden layer applies batch-norm in eval form, ``y = gamma * (a - mean) / sqrt(var + eps) + beta``
(absent = identity), and outputs +1 where ``y >= 0``, else -1; a conv without ``before_bn`` then
max-pools those +-1 values. The last layer (always dense) outputs ``scale * y`` (absent = 1) as class
scores; the prediction is their argmax, ties to the lowest index. This is exactly the eval-mode forward
of the torch model.

Version 1 files (dense only: entries without ``kind`` or ``flatten_from``, image_shape [H, W]) are
still read: :func:`load_model_file` returns them in the version-2 form (version 2, kind "dense",
flatten_from None, image_shape [1, H, W]) with ``"file_version": 1``.

What :func:`extract_layers` accepts (one line naming the module otherwise): a chain of blocks
``BinaryConv2d [-> MaxPool2d] [-> BatchNorm2d] [-> MaxPool2d] -> SignActivation [-> MaxPool2d]`` (at
most one pool per conv), then ``Flatten``, then dense blocks ``BinaryLinear [-> BatchNorm1d] ->
SignActivation`` ending in ``BinaryLinear [-> Scale]``. A leading ``nn.Unflatten(1, (C, H, W))``
gives the image shape (else pass ``image_shape``). Refused: stride > 1, dilation, groups, average
pooling, overlapping or padded pools (stride != kernel), zero padding (a plain ``nn.Conv2d``).
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

from .layers import BinaryConv2d, BinaryLinear, Scale, SignActivation

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
VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("format", "version", "arch", "in_features", "hidden", "n_classes", "dataset", "binarize",
                 "state_dict", "layers", "accuracy_torch", "train")
BN_KEYS = ("gamma", "beta", "mean", "var", "eps")
# Modules that are the identity in eval mode: allowed anywhere in the chain.
NEUTRAL_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
CHAIN_HINT = ("an xnorflow model is a chain of BinaryLinear [-> BatchNorm1d] -> SignActivation blocks "
              "ending in BinaryLinear [-> Scale]")
CONV_HINT = ("xnorflow builds BinaryConv2d with stride 1, no dilation, one group and +-1 padding "
             "(padding=P, pad_value=-1 or +1), and MaxPool2d with stride = kernel_size and no padding")
POOL_HINT = ("a MaxPool2d must follow a BinaryConv2d block: Conv [-> MaxPool2d] [-> BatchNorm2d] "
             "[-> MaxPool2d] -> Sign [-> MaxPool2d], one pool per conv")


class ModelFileError(XnorflowError):
    """A model file (or model) that cannot be used; the message names the cause and the fix."""


# --- model -> layers ---------------------------------------------------------------------------------

def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order (the forward order of an nn.Sequential)."""
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _bn_entry(name: str, bn: nn.modules.batchnorm._BatchNorm) -> dict:
    if bn.running_mean is None or bn.running_var is None:
        raise ModelFileError(f"batch-norm {name} keeps no running statistics: "
                             "build it with track_running_stats=True")
    n = bn.num_features
    gamma = bn.weight.detach() if bn.affine else torch.ones(n)
    beta = bn.bias.detach() if bn.affine else torch.zeros(n)
    return {"gamma": gamma.float().cpu().clone(), "beta": beta.float().cpu().clone(),
            "mean": bn.running_mean.detach().float().cpu().clone(),
            "var": bn.running_var.detach().float().cpu().clone(), "eps": float(bn.eps)}


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _refuse_conv(name: str, module: nn.Module) -> None:
    """ModelFileError naming ``name`` for any conv or pool the hardware cannot build."""
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d):
        if not isinstance(module, BinaryConv2d):
            padding = module.padding
            zero_padded = padding == "same" or (not isinstance(padding, str) and any(_pair(padding)))
            if zero_padded:
                raise ModelFileError(f"{name} ({kind}) pads with zeros (padding={module.padding}), which is "
                                     "neither -1 nor +1: use BinaryConv2d(..., padding=P, pad_value=-1 or +1); "
                                     f"{CONV_HINT}")
            raise ModelFileError(f"unsupported module {name} ({kind}): use BinaryConv2d; {CONV_HINT}")
        if any(s != 1 for s in _pair(module.stride)):
            raise ModelFileError(f"{name} ({kind}) has stride {module.stride}: stride > 1 is not supported; "
                                 f"{CONV_HINT}")
        if any(d != 1 for d in _pair(module.dilation)):
            raise ModelFileError(f"{name} ({kind}) has dilation {module.dilation}: dilation is not supported; "
                                 f"{CONV_HINT}")
        if module.groups != 1:
            raise ModelFileError(f"{name} ({kind}) has groups={module.groups}: grouped convs are not "
                                 f"supported; {CONV_HINT}")
        if isinstance(module.padding, str) or any(p for p in _pair(module.padding)) \
                or module.padding_mode != "zeros":
            raise ModelFileError(f"{name} ({kind}) zero-pads inside the conv (padding={module.padding!r}): "
                                 f"pad with BinaryConv2d(padding=P, pad_value=-1 or +1) instead; {CONV_HINT}")
        k = _pair(module.kernel_size)
        if k[0] != k[1]:
            raise ModelFileError(f"{name} ({kind}) has a {k[0]}x{k[1]} kernel: only square kernels are "
                                 f"supported; {CONV_HINT}")
    elif isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                             nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.LPPool2d)):
        raise ModelFileError(f"{name} ({kind}): average pooling is not supported, use MaxPool2d with "
                             f"stride = kernel_size; {CONV_HINT}")
    elif isinstance(module, nn.MaxPool2d):
        k, stride = _pair(module.kernel_size), _pair(module.stride if module.stride is not None
                                                      else module.kernel_size)
        if k[0] != k[1]:
            raise ModelFileError(f"{name} ({kind}) has a {k[0]}x{k[1]} window: only square pools are "
                                 f"supported; {CONV_HINT}")
        if stride != k:
            raise ModelFileError(f"{name} ({kind}) has kernel_size {module.kernel_size} and stride "
                                 f"{module.stride}: overlapping (or gapped) pools are not supported, use "
                                 f"stride = kernel_size; {CONV_HINT}")
        if any(p for p in _pair(module.padding)) or any(d != 1 for d in _pair(module.dilation)) \
                or module.ceil_mode or module.return_indices:
            raise ModelFileError(f"{name} ({kind}) uses padding, dilation, ceil_mode or return_indices: "
                                 f"none is supported; {CONV_HINT}")
    elif isinstance(module, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                             nn.ConvTranspose3d, nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        raise ModelFileError(f"unsupported module {name} ({kind}): {CONV_HINT}")


def _image_shape(shape) -> tuple[int, int, int] | None:
    """[C, H, W] (or [H, W], one channel) as a tuple of ints, None for None."""
    if shape is None:
        return None
    dims = tuple(int(d) for d in shape)
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise ModelFileError(f"image shape {list(shape)}: give [C, H, W] with positive sizes")
    return dims


def _conv_out_shape(entry: dict) -> list[int]:
    """[O, H', W'] after the conv and its pool (module docstring)."""
    o, _, k, _ = entry["weight"].shape
    _, h, w = entry["in_shape"]
    p = entry["padding"]
    s = entry["pool"]["size"] if entry.get("pool") else 1
    return [int(o), (h + 2 * p - k + 1) // s, (w + 2 * p - k + 1) // s]


def extract_layers(model: nn.Module, image_shape: tuple[int, ...] | None = None) -> list[dict]:
    """The ``layers`` list of a model built as the module docstring says; ModelFileError otherwise.

    ``image_shape`` (C, H, W) is the input a first conv receives; a leading ``nn.Unflatten(1, shape)``
    gives it too.
    """
    layers: list[dict] = []
    closed = True          # the current layer has met its SignActivation (or there is none yet)
    shape = _image_shape(image_shape)       # (C, H, W) while the activations are images
    flat: int | None = None                 # the vector width once flattened (None: not known / image)
    flatten_from: list[int] | None = None   # a Flatten is pending for the next dense layer
    seen_weights = False

    def open_conv(what: str) -> dict:
        if not layers or layers[-1]["kind"] != "conv":
            raise ModelFileError(f"{what}: {POOL_HINT}")
        return layers[-1]

    for name, module in _leaf_modules(model):
        _refuse_conv(name, module)
        if isinstance(module, nn.Unflatten):
            if seen_weights or module.dim not in (1, -1):
                raise ModelFileError(f"{name} (Unflatten) may only open the model, as nn.Unflatten(1, (C, H, W)): "
                                     "move it first")
            shape = _image_shape(module.unflattened_size)
        elif isinstance(module, BinaryConv2d):
            if not closed:
                raise ModelFileError(f"{name} follows a layer without a SignActivation between them: "
                                     f"{CHAIN_HINT}")
            if flat is not None or flatten_from is not None:
                raise ModelFileError(f"{name} (BinaryConv2d) comes after a Flatten or a dense layer: "
                                     "convs must come before the dense layers")
            if shape is None:
                raise ModelFileError(f"{name} (BinaryConv2d) receives an input of unknown shape: open the "
                                     "model with nn.Unflatten(1, (C, H, W)) or pass image_shape")
            _, in_c, k, _ = module.weight.shape
            if in_c != shape[0]:
                raise ModelFileError(f"{name} takes {in_c} channels but receives {shape[0]} "
                                     f"(input shape {list(shape)}): the channel counts must chain")
            entry = {"kind": "conv", "weight": module.weight.detach().float().cpu().clone(),
                     "bias": None if module.bias is None else module.bias.detach().float().cpu().clone(),
                     "bn": None, "scale": None, "padding": int(module.pad), "pad_value": int(module.pad_value),
                     "in_shape": list(shape), "pool": None}
            h_out, w_out = shape[1] + 2 * module.pad - k + 1, shape[2] + 2 * module.pad - k + 1
            if h_out < 1 or w_out < 1:
                raise ModelFileError(f"{name}: a {k}x{k} kernel with padding {module.pad} does not fit its "
                                     f"{shape[1]}x{shape[2]} input: pad it or drop a layer")
            entry["out_shape"] = _conv_out_shape(entry)
            layers.append(entry)
            shape = tuple(entry["out_shape"])
            closed, seen_weights = False, True
        elif isinstance(module, nn.MaxPool2d):
            entry = open_conv(f"{name} (MaxPool2d) does not follow a BinaryConv2d")
            if flatten_from is not None:
                raise ModelFileError(f"{name} (MaxPool2d) comes after a Flatten: pool before flattening")
            if entry["pool"] is not None:
                raise ModelFileError(f"{name} (MaxPool2d) is a second pool for one conv: {POOL_HINT}")
            size = int(_pair(module.kernel_size)[0])
            if closed:                       # after the sign: max of +-1 values
                before_bn = False
            else:                            # before the sign: before or after the batch-norm
                before_bn = entry["bn"] is None
            _, h, w = entry["out_shape"]
            if size > h or size > w:
                raise ModelFileError(f"{name} (MaxPool2d) of size {size} exceeds its {h}x{w} input: "
                                     "use a smaller pool")
            entry["pool"] = {"size": size, "before_bn": before_bn}
            entry["out_shape"] = _conv_out_shape(entry)
            shape = tuple(entry["out_shape"])
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ModelFileError(f"{name} (Flatten) must flatten all but the batch dimension: "
                                     "use nn.Flatten() (start_dim=1, end_dim=-1)")
            if shape is not None and layers and layers[-1]["kind"] == "conv":
                if not closed:
                    raise ModelFileError(f"{name} (Flatten) comes before the SignActivation of the conv: "
                                         "flatten after it")
                flatten_from = list(shape)
                flat = math.prod(shape)
        elif isinstance(module, BinaryLinear):
            if not closed:
                raise ModelFileError(f"{name} follows a layer without a SignActivation between them: "
                                     f"{CHAIN_HINT}")
            if layers and layers[-1]["kind"] == "conv" and flatten_from is None:
                raise ModelFileError(f"{name} (BinaryLinear) follows a conv without a Flatten between them: "
                                     "add nn.Flatten() before it")
            n_in = flat if flat is not None else (layers[-1]["weight"].shape[0] if layers else None)
            if n_in is not None and n_in != module.in_features:
                raise ModelFileError(f"{name} takes {module.in_features} inputs but the layer before gives "
                                     f"{n_in}: the layer sizes must chain")
            bias = None if module.bias is None else module.bias.detach().float().cpu().clone()
            layers.append({"kind": "dense", "weight": module.weight.detach().float().cpu().clone(), "bias": bias,
                           "bn": None, "scale": None, "flatten_from": flatten_from})
            flatten_from, flat, shape = None, None, None
            closed, seen_weights = False, True
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            want = nn.BatchNorm2d if layers and layers[-1]["kind"] == "conv" else nn.BatchNorm1d
            if closed or layers[-1]["bn"] is not None or layers[-1]["scale"] is not None:
                raise ModelFileError(f"batch-norm {name} does not directly follow a BinaryLinear or "
                                     f"BinaryConv2d: {CHAIN_HINT}")
            if type(module) is not want:
                raise ModelFileError(f"batch-norm {name} is a {type(module).__name__} after a "
                                     f"{layers[-1]['kind']} layer: use {want.__name__}")
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
            if closed or layers[-1]["scale"] is not None or layers[-1]["kind"] != "dense":
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
    if layers[-1]["kind"] != "dense":
        raise ModelFileError("the model ends in a BinaryConv2d: the output layer must be a BinaryLinear "
                             f"giving class scores ({CHAIN_HINT})")
    return layers


def _input_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """The (C, H, W) of a leading nn.Unflatten(1, ...), else None."""
    for _, module in _leaf_modules(model):
        if isinstance(module, nn.Unflatten):
            return _image_shape(module.unflattened_size)
        if not isinstance(module, NEUTRAL_MODULES):
            return None
    return None


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
    """Write ``model`` and its facts to ``path`` (atomically) and return the dict written.

    ``image_shape`` ((C, H, W), or (H, W) for one channel) is the input image; a conv model needs it
    unless it opens with ``nn.Unflatten(1, (C, H, W))``, and both must then agree.
    """
    given = _image_shape(image_shape)
    opened = _input_shape(model)
    if given is not None and opened is not None and given != opened:
        raise ModelFileError(f"image_shape {list(given)} disagrees with the model's nn.Unflatten to {list(opened)}: "
                             "pass the shape the model was trained on")
    shape = given or opened
    layers = extract_layers(model, shape)
    first = layers[0]
    in_features = math.prod(first["in_shape"]) if first["kind"] == "conv" else int(first["weight"].shape[1])
    record = {
        "format": FORMAT,
        "version": VERSION,
        "arch": str(arch),
        "in_features": int(in_features),
        "hidden": [int(layer["weight"].shape[0]) for layer in layers[:-1]],
        "n_classes": int(layers[-1]["weight"].shape[0]),
        "dataset": str(dataset),
        "binarize": _primitive(dict(binarize)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "layers": layers,
        "accuracy_torch": None if accuracy_torch is None else float(accuracy_torch),
        "train": _primitive(dict(train or {})),
    }
    if shape is not None:
        record["image_shape"] = list(shape)
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


def _upgrade_version_1(record: dict) -> None:
    """A version-1 record (dense only) in the version-2 form, in place (module docstring)."""
    record["file_version"] = 1
    record["version"] = VERSION
    for layer in record.get("layers") or []:
        if isinstance(layer, dict):
            layer.setdefault("kind", "dense")
            layer.setdefault("flatten_from", None)
    shape = record.get("image_shape")
    if isinstance(shape, (list, tuple)) and len(shape) == 2:
        record["image_shape"] = [1, *shape]


def _validate(record: dict, path: Path) -> None:
    where = str(path)
    if record.get("version") not in READABLE_VERSIONS:
        raise ModelFileError(f"{where} has model file version {record.get('version')!r}, this xnorflow reads "
                             f"versions {' and '.join(map(str, READABLE_VERSIONS))}: re-create it with this "
                             "version's `xnorflow train`")
    if record["version"] == 1:
        _upgrade_version_1(record)
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ModelFileError(f"{where} lacks the keys {', '.join(missing)}: re-create it with `xnorflow train`")
    layers = record["layers"]
    if not isinstance(layers, list) or not layers:
        raise ModelFileError(f"{where} has no layers: re-create it with `xnorflow train`")
    fix = "re-create the file with `xnorflow train`"
    try:
        image_shape = _image_shape(record.get("image_shape"))
    except (ModelFileError, TypeError, ValueError):
        raise ModelFileError(f"{where}: image_shape {record.get('image_shape')!r} is not [C, H, W]: {fix}") from None
    if image_shape is not None and math.prod(image_shape) != record["in_features"]:
        raise ModelFileError(f"{where}: image_shape {list(image_shape)} holds {math.prod(image_shape)} pixels "
                             f"but in_features is {record['in_features']}: {fix}")
    # What each layer receives: a flat width, or an image (C, H, W) before the dense layers.
    n_in, shape = record["in_features"], image_shape
    for i, layer in enumerate(layers):
        _validate_layer(layer, i, n_in, shape, last=i == len(layers) - 1, where=where)
        if layer["kind"] == "conv":
            shape = tuple(layer["out_shape"])
            n_in = math.prod(shape)
        else:
            n_in, shape = layer["weight"].shape[0], None
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


def _is_shape(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value))


def _validate_layer(layer, i: int, n_in: int, shape: tuple | None, last: bool, where: str) -> None:
    bad = f"{where}: layer {i}"
    fix = "re-create the file with `xnorflow train`"
    if not isinstance(layer, dict) or "weight" not in layer:
        raise ModelFileError(f"{bad} is not a dict with a weight: {fix}")
    kind = layer.get("kind")
    if kind not in ("dense", "conv"):
        raise ModelFileError(f"{bad} has kind {kind!r}, expected 'dense' or 'conv': {fix}")
    weight = layer["weight"]
    dims = 2 if kind == "dense" else 4
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != dims:
        raise ModelFileError(f"{bad}: a {kind} layer's weight must be a {dims}-D float tensor: {fix}")
    n_out = weight.shape[0]
    if kind == "dense":
        flatten_from = layer.get("flatten_from")
        if flatten_from is not None and (not _is_shape(flatten_from) or shape is None
                                         or tuple(flatten_from) != tuple(shape)):
            raise ModelFileError(f"{bad}: flatten_from {flatten_from!r} is not the previous conv's output "
                                 f"shape {list(shape) if shape else None}: {fix}")
        if i > 0 and shape is not None and flatten_from is None:
            raise ModelFileError(f"{bad} follows a conv but has no flatten_from: {fix}")
        if weight.shape[1] != n_in:
            raise ModelFileError(f"{bad} takes {weight.shape[1]} inputs but receives {n_in}: {fix}")
    else:
        _validate_conv(layer, bad, shape, last, fix)
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


def _validate_conv(layer: dict, bad: str, shape: tuple | None, last: bool, fix: str) -> None:
    _, c, k, k2 = layer["weight"].shape
    if k != k2:
        raise ModelFileError(f"{bad}: conv weight {list(layer['weight'].shape)} is not (O, C, K, K): {fix}")
    if last:
        raise ModelFileError(f"{bad} is a conv but the last layer must be dense (class scores): {fix}")
    for key in ("padding", "pad_value", "in_shape", "pool", "out_shape"):
        if key not in layer:
            raise ModelFileError(f"{bad}: a conv entry needs {key}: {fix}")
    padding, pad_value = layer["padding"], layer["pad_value"]
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ModelFileError(f"{bad}: padding must be an integer >= 0, got {padding!r}: {fix}")
    if pad_value not in (-1, 1) or isinstance(pad_value, bool):
        raise ModelFileError(f"{bad}: pad_value must be -1 or +1 (never zero-padding), got {pad_value!r}: {fix}")
    if not _is_shape(layer["in_shape"]):
        raise ModelFileError(f"{bad}: in_shape must be [C, H, W], got {layer['in_shape']!r}: {fix}")
    if shape is None or tuple(layer["in_shape"]) != tuple(shape):
        source = "image_shape" if shape is not None else "a dense layer (or no image_shape)"
        raise ModelFileError(f"{bad}: in_shape {layer['in_shape']} is not what it receives from {source} "
                             f"({list(shape) if shape else None}): {fix}")
    if layer["in_shape"][0] != c:
        raise ModelFileError(f"{bad}: weight takes {c} channels but in_shape has {layer['in_shape'][0]}: {fix}")
    pool = layer["pool"]
    if pool is not None:
        size = pool.get("size") if isinstance(pool, dict) else None
        if (not isinstance(size, int) or isinstance(size, bool) or size < 1
                or not isinstance(pool.get("before_bn"), bool)):
            raise ModelFileError(f"{bad}: pool must be None or {{'size': S >= 1, 'before_bn': bool}}, got "
                                 f"{pool!r}: {fix}")
    out_shape = _conv_out_shape(layer)
    if min(out_shape) < 1 or list(layer["out_shape"]) != out_shape:
        raise ModelFileError(f"{bad}: out_shape {layer['out_shape']} should be {out_shape} (from in_shape, "
                             f"kernel, padding and pool): {fix}")


# --- layers -> model -------------------------------------------------------------------------------------

def _batch_norm(bn: dict, n: int, cls=nn.BatchNorm1d) -> nn.Module:
    norm = cls(n, eps=float(bn["eps"]))
    with torch.no_grad():
        norm.weight.copy_(bn["gamma"])
        norm.bias.copy_(bn["beta"])
        norm.running_mean.copy_(bn["mean"])
        norm.running_var.copy_(bn["var"])
    return norm


def model_from_file(record: dict) -> nn.Module:
    """An eval-mode nn.Sequential computing exactly what ``record['layers']`` describes.

    Its module order matches the zoo's (a conv model opens with ``nn.Unflatten(1, image_shape)``,
    then BinaryConv2d, [MaxPool2d], BatchNorm2d, SignActivation, [MaxPool2d], ..., Flatten, then
    BinaryLinear, BatchNorm1d, SignActivation, ..., BinaryLinear, Scale), so a zoo model's
    ``state_dict`` loads into it as well. It takes the flat input bits as +-1 floats, like the zoo.
    """
    modules: list[nn.Module] = []
    layers = record["layers"]
    for i, layer in enumerate(layers):
        kind = layer.get("kind", "dense")
        bias = layer.get("bias") is not None
        if kind == "conv":
            o, c, k, _ = layer["weight"].shape
            if i == 0:
                modules.append(nn.Unflatten(1, tuple(layer["in_shape"])))
            weighted = BinaryConv2d(c, o, k, padding=int(layer["padding"]), pad_value=int(layer["pad_value"]),
                                    bias=bias)
        else:
            o, n_in = layer["weight"].shape
            if layer.get("flatten_from") is not None:
                modules.append(nn.Flatten())
            weighted = BinaryLinear(n_in, o, bias=bias)
        with torch.no_grad():
            weighted.weight.copy_(layer["weight"])
            if bias:
                weighted.bias.copy_(layer["bias"])
        modules.append(weighted)
        pool = layer.get("pool")
        if pool is not None and pool["before_bn"]:
            modules.append(nn.MaxPool2d(pool["size"]))
        if layer.get("bn") is not None:
            modules.append(_batch_norm(layer["bn"], o, nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d))
        if i < len(layers) - 1:
            modules.append(SignActivation())
        elif layer.get("scale") is not None:
            scale = Scale()
            with torch.no_grad():
                scale.log_scale.copy_(torch.tensor(float(layer["scale"])).log())
            modules.append(scale)
        if pool is not None and not pool["before_bn"]:
            modules.append(nn.MaxPool2d(pool["size"]))
    return nn.Sequential(*modules).eval()


def _input_width(model: nn.Module) -> tuple[int | None, bool]:
    """(input bits the model takes from a flat vector or None if unknown, whether it takes images)."""
    shape = _input_shape(model)
    if shape is not None:
        return math.prod(shape), True
    for module in model.modules():
        if isinstance(module, BinaryLinear):
            return module.in_features, False
        if isinstance(module, BinaryConv2d):
            return None, True
    return None, False


@torch.no_grad()
def scores(model: nn.Module, bits: np.ndarray, batch_size: int = 4096,
           image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Eval-mode outputs (n, n_classes) float32 for input bits: 1 -> +1.0, 0 -> -1.0.

    ``bits`` is (n, features); or (n, C, H, W) for a model taking images (a conv model without a
    leading nn.Unflatten), or (n, features) with ``image_shape`` to reshape it to.
    """
    bits = np.asarray(bits)
    width, takes_images = _input_width(model)
    if bits.ndim == 2 and image_shape is not None:
        shape = _image_shape(image_shape)
        if bits.shape[1] != math.prod(shape):
            raise ValueError(f"input bits have {bits.shape[1]} features, image_shape {list(shape)} holds "
                             f"{math.prod(shape)}: pass matching ones")
        if width is None:
            bits = bits.reshape(len(bits), *shape)
    if bits.ndim == 4:
        if not takes_images:
            raise ValueError(f"input bits have shape {bits.shape}, the model takes flat vectors: pass "
                             "(frames, features)")
        if width is not None:     # the model unflattens by itself
            bits = bits.reshape(len(bits), -1)
    elif bits.ndim != 2:
        raise ValueError(f"input bits have shape {bits.shape}: pass a (frames, features) array of 0/1")
    elif width is None and takes_images:
        raise ValueError("the model takes (C, H, W) images but has no leading nn.Unflatten: pass bits of "
                         "shape (frames, C, H, W) or image_shape")
    if bits.ndim == 2 and width is not None and bits.shape[1] != width:
        raise ValueError(f"input bits have {bits.shape[1]} features, the model takes {width}: "
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


def predict(model: nn.Module, bits: np.ndarray, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Class predictions (n,) int64: argmax of the eval-mode outputs, ties to the lowest index."""
    out = scores(model, bits, image_shape=image_shape)
    if out.size == 0:
        return np.zeros(len(bits), dtype=np.int64)
    return np.argmax(out, axis=1).astype(np.int64)   # np.argmax returns the first maximum
