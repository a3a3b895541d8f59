"""The xnorflow model file: what ``xnorflow train`` writes and ``xnorflow compile`` reads.

A model file is ``torch.save`` of one dict holding only tensors, strings, numbers, lists, dicts and
None, so it loads with ``torch.load(path, weights_only=True)`` (no pickled code runs)::

    {
      "format": "xnorflow-model",            # always this string
      "version": 3,                          # bumped on any incompatible change (versions 1 and 2: below)
      "arch": "sfc",                         # zoo name, or "custom" for a hand-built chain
      "in_features": 784,                    # input elements (pixels) per frame (C*H*W of the image)
      "hidden": [256, 256, 256],             # n_out (output channels of a conv) of every layer but the last
      "n_classes": 10,
      "dataset": "fashion-mnist",            # digits | fashion-mnist | idx:DIR | cifar10:DIR
      "image_shape": [1, 28, 28],            # [C, H, W] of the input image, pixels in (c, y, x) order;
                                             # optional for a dense-only model, required with convs
      "input": {...},                        # the input format: bits or b-bit integers (below)
      "state_dict": {...},                   # the torch module's state_dict (for re-training)
      "layers": [...],                       # one entry per BinaryLinear / BinaryConv2d, input to output
      "accuracy_torch": 0.87,                # test split, eval mode; None if not measured
      "train": {"epochs", "seed", "seconds", "lr", "batch_size", ...}   # how it was trained (with
                                             # "stochastic_weights": bool, "activation_grad": the
                                             # activations' STE (files before it: hardtanh) and "teacher":
                                             # None or a dict naming the float teacher and "temperature")
    }

The input format (DESIGN.md sections 2 and 2b) is one of::

    {"format": "bits", "rule": "pixel >= threshold", "threshold": 8, "max_value": 255}
        # each pixel becomes the bit pixel >= threshold (bit 1 = +1); the first layer takes +-1 values
    {"format": "int", "bits": 8, "max_value": 255, "mean": [72.94], "scale": 90.02}
        # unsigned b-bit pixels (max_value < 2**bits); the first layer takes (pixel - mean[c]) / scale,
        # one mean per input channel c, one positive scale (a list of equal scales is accepted; scales
        # that differ per channel are refused: they do not fold into +-1 weights)

A model with integer inputs opens with ``InputNorm(mean, scale)`` (training/layers.py) and takes the
pixels as floats; its first layer has binary weights and no sign on its input. A first conv on integer
inputs is valid (padding 0). A file whose input format is missing or unknown, or whose normalisation
does not fold, is refused in one line.

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
``x`` in {-1, +1} (bit 1 -> +1, bit 0 -> -1, bits by the input format's rule), or for integer inputs
``x = (pixel - mean[c]) / scale``, a flat vector of in_features seen as ``image_shape`` by a conv,
each layer computes ``a = sign(weight) (*) x + bias`` (bias absent =
0), where ``(*)`` is the matrix product for dense and for conv the stride-1 cross-correlation
(PyTorch's conv2d) of x padded by P pixels of pad_value. A conv with ``before_bn`` then max-pools a.
A hidden layer applies batch-norm in eval form, ``y = gamma * (a - mean) / sqrt(var + eps) + beta``
(absent = identity), and outputs +1 where ``y >= 0``, else -1; a conv without ``before_bn`` then
max-pools those +-1 values. The last layer (always dense) outputs ``scale * y`` (absent = 1) as class
scores; the prediction is their argmax, ties to the lowest index. This is exactly the eval-mode forward
of the torch model.

Older files are still read: :func:`load_model_file` returns them in the version-3 form with
``"file_version"`` set to the version read. Version 2 had no ``input`` but a ``binarize`` rule (bits
inputs): it becomes ``input`` ``{"format": "bits", **binarize}``. Version 1 files (dense only: entries
without ``kind`` or ``flatten_from``, image_shape [H, W]) also get kind "dense", flatten_from None and
image_shape [1, H, W].

What :func:`extract_layers` accepts (one line naming the module otherwise): a chain of blocks
``BinaryConv2d [-> MaxPool2d] [-> BatchNorm2d] [-> MaxPool2d] -> SignActivation [-> MaxPool2d]`` (at
most one pool per conv), then ``Flatten``, then dense blocks ``BinaryLinear [-> BatchNorm1d] ->
SignActivation`` ending in ``BinaryLinear [-> Scale]``. A leading ``nn.Unflatten(1, (C, H, W))``
gives the image shape (else pass ``image_shape``); a leading ``InputNorm`` (before it) marks integer
inputs. Refused: stride > 1, dilation, groups, average
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

from .datasets import BITS_FORMAT, INT_FORMAT, bits_format, input_format_problem, input_scale
from .layers import BinaryConv2d, BinaryLinear, InputNorm, Scale, SignActivation

__all__ = [
    "FORMAT",
    "VERSION",
    "ModelFileError",
    "extract_layers",
    "input_norm",
    "load_model_file",
    "model_from_file",
    "model_inputs",
    "predict",
    "save_model_file",
    "write_record",
]

FORMAT = "xnorflow-model"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
REQUIRED_KEYS = ("format", "version", "arch", "in_features", "hidden", "n_classes", "dataset", "input",
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

    for position, (name, module) in enumerate(_leaf_modules(model)):
        _refuse_conv(name, module)
        if isinstance(module, InputNorm):
            if position:
                raise ModelFileError(f"{name} (InputNorm) may only open the model, before any other module: "
                                     "move it first")
        elif isinstance(module, nn.Unflatten):
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
    """The (C, H, W) of a leading nn.Unflatten(1, ...) (after an InputNorm, if any), else None."""
    for _, module in _leaf_modules(model):
        if isinstance(module, nn.Unflatten):
            return _image_shape(module.unflattened_size)
        if not isinstance(module, (*NEUTRAL_MODULES, InputNorm)):
            return None
    return None


def input_norm(model: nn.Module) -> InputNorm | None:
    """The InputNorm the model opens with (it takes integer pixels), else None (it takes bits)."""
    leaves = _leaf_modules(model)
    return leaves[0][1] if leaves and isinstance(leaves[0][1], InputNorm) else None


def _model_input_format(model: nn.Module, input_format: dict) -> dict:
    """``input_format`` completed by the model: an integer format takes its mean and scale from the model's
    InputNorm (what it was trained and evaluated with); bits and integer models are never mixed up."""
    norm = input_norm(model)
    if input_format.get("format") == INT_FORMAT:
        if norm is None:
            raise ModelFileError("integer input format for a model without an opening InputNorm: build it with "
                                 "build_model(..., input_norm=(mean, scale))")
        input_format = {**input_format, "mean": [float(m) for m in norm.mean], "scale": float(norm.scale)}
    elif norm is not None:
        raise ModelFileError("the model opens with InputNorm (integer inputs) but the input format is "
                             f"{input_format.get('format')!r}: save it with an integer input format")
    problem = input_format_problem(input_format)
    if problem:
        raise ModelFileError(f"{problem}: pass a valid input format")
    return input_format


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


def save_model_file(path: str | Path, model: nn.Module, *, arch: str, dataset: str, binarize: dict | None = None,
                    accuracy_torch: float | None = None, train: dict | None = None,
                    image_shape: tuple[int, ...] | None = None, input_format: dict | None = None) -> dict:
    """Write ``model`` and its facts to ``path`` (atomically) and return the dict written.

    The input format is ``input_format`` (module docstring; an integer format takes its mean and scale
    from the model's InputNorm), or for bits the binarisation rule ``binarize``: give exactly one.
    ``image_shape`` ((C, H, W), or (H, W) for one channel) is the input image; a conv model needs it
    unless it opens with ``nn.Unflatten(1, (C, H, W))``, and both must then agree.
    """
    if (binarize is None) == (input_format is None):
        raise ModelFileError("save_model_file takes exactly one of binarize= (bits inputs) or input_format=")
    input_format = _model_input_format(model, bits_format(binarize) if binarize is not None else dict(input_format))
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
        "input": _primitive(input_format),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "layers": layers,
        "accuracy_torch": None if accuracy_torch is None else float(accuracy_torch),
        "train": _primitive(dict(train or {})),
    }
    if shape is not None:
        record["image_shape"] = list(shape)
    _validate(record, Path(path))
    write_record(Path(path), record)
    return record


def write_record(path: Path, record: dict) -> None:
    """``torch.save`` of ``record`` to ``path``, atomically (a crash never leaves a half-written file)."""
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


def load_model_file(path: str | Path) -> dict:
    """Read and validate a model file; ModelFileError with one clear line on any problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} not found: check the path, or train one with "
                             f"`xnorflow train --arch ARCH --dataset DATASET -o {path}` (`xnorflow train --help` "
                             "lists both)")
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


def _upgrade(record: dict) -> None:
    """A version-1 or -2 record in the version-3 form, in place (module docstring)."""
    record["file_version"] = record["version"]
    record["version"] = VERSION
    rule = record.pop("binarize", None)
    if isinstance(rule, dict):
        record["input"] = bits_format(rule)
    if record["file_version"] > 1:
        return
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
                             f"versions {', '.join(map(str, READABLE_VERSIONS[:-1]))} and {READABLE_VERSIONS[-1]}: re-create it with this "
                             "version's `xnorflow train`")
    if record["version"] < VERSION:
        _upgrade(record)
    if "input" not in record:
        raise ModelFileError(f"{where} does not state its input format (bits or b-bit integers): re-create it "
                             "with `xnorflow train`")
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
    _validate_input_format(record["input"], image_shape, layers[0], where)


def _validate_input_format(input_format, image_shape, first: dict, where: str) -> None:
    """The input format is known and folds (module docstring): one mean per image channel, one scale, a
    valid first conv."""
    fix = "re-create the file with `xnorflow train`"
    problem = input_format_problem(input_format)
    if problem:
        raise ModelFileError(f"{where}: {problem}: {fix}")
    if input_format["format"] == BITS_FORMAT:
        if not isinstance(input_format.get("max_value"), int):
            raise ModelFileError(f"{where}: the bits input format lacks max_value: {fix}")
        return
    channels = image_shape[0] if image_shape is not None else 1
    if len(input_format["mean"]) != channels:
        raise ModelFileError(f"{where}: the input format has {len(input_format['mean'])} means for {channels} "
                             f"input channels: give one mean per channel; {fix}")
    if first["kind"] == "conv" and first["padding"]:
        raise ModelFileError(f"{where}: the first conv pads its integer input by {first['padding']}: a conv on "
                             f"integer inputs must be valid (padding 0); {fix}")


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
    ``state_dict`` loads into it as well. It takes the flat input bits as +-1 floats, like the zoo, or
    for integer inputs the pixels, normalised by an opening InputNorm.
    """
    modules: list[nn.Module] = []
    fmt = record.get("input") or {}
    if fmt.get("format") == INT_FORMAT:
        modules.append(InputNorm(fmt["mean"], input_scale(fmt)))
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


def model_inputs(model: nn.Module, values) -> torch.Tensor:
    """The float tensor ``model`` takes for first-layer values (a NumPy array or tensor): integer pixels
    unchanged for a model that opens with InputNorm, else bits as +-1 (1 -> +1.0, 0 -> -1.0)."""
    x = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values).float()
    return x if input_norm(model) is not None else x * 2.0 - 1.0


@torch.no_grad()
def scores(model: nn.Module, bits: np.ndarray, batch_size: int = 4096,
           image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Eval-mode outputs (n, n_classes) float32 for input bits (as :func:`model_inputs` takes them;
    for a model with integer inputs, the pixels).

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
            x = model_inputs(model, bits[start:start + batch_size])
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
