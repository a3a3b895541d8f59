"""The model zoo: FINN-style binarized multilayer perceptrons and convolutional networks.

Every model is a flat ``nn.Sequential``. The MLPs (tfc, sfc, lfc)::

    input (+1/-1 floats of the binarised image, flat)
    -> [BinaryLinear -> BatchNorm1d -> SignActivation] x len(hidden)
    -> BinaryLinear -> Scale

The conv nets (scnv, cnv) take the same flat input and unflatten it to the image shape (C, H, W)::

    Unflatten(1, (C, H, W))
    -> [BinaryConv2d(K=3) [-> MaxPool2d(2)] -> BatchNorm2d -> SignActivation] per conv
    -> Flatten -> [BinaryLinear -> BatchNorm1d -> SignActivation] per FC -> BinaryLinear -> Scale

- ``scnv`` (for 28x28-class inputs): 32C3-32C3-MP2-64C3-64C3-MP2-FC256-FC10.
- ``cnv``, FINN's CNV (for 32x32xC inputs): 64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-FC512-FC512-FC10.

Convs are valid (FINN's CNV) when the image is large enough for every layer to keep at least one
pixel; on a smaller image (digits' 8x8 for scnv, 28x28 for cnv) every conv pads by 1 with -1 (bit 0,
DESIGN.md section 2a) instead, so the shapes stay valid: scnv on digits is 8x8 -> 8x8 -> 4x4 -> 2x2.

A pool sits between its conv and the batch-norm (Larq's order for BNNs): the max then picks among the
conv's integer outputs, so training's gradient reaches the window's largest pre-activation instead of
the first of several tied +-1 values. It computes what pooling the signs would for gamma > 0 (the
hardware ORs the bits; gamma < 0 ANDs them, DESIGN.md 2a). On Fashion-MNIST scnv reached 86.77% after
4 epochs this way against 86.29% with the pool after the sign (bench/records.md, "scnv recipe").

Integer inputs (DESIGN.md 2b; ``input_norm=(mean per channel, scale)``): the model opens with
:class:`InputNorm`, ``(pixel - mean[c]) / scale``, and its first layer (dense or conv) takes those
normalised values with binary weights and no sign on its input. A first conv on integer inputs is valid
(no padding: a padded pixel would have no value the integer layer and the normalised float layer share),
so the later convs pad when the image is small: scnv on digits is 8x8 -> 6x6 -> 6x6 -> 3x3 -> 1x1.

:func:`build_float_model` is the same architecture in float (Linear/Conv2d, batch-norm, ReLU) on
normalised pixels: the teacher for knowledge distillation.

The hidden layers end in sign(batch-norm), which the compiler folds into one integer threshold per
channel; the output layer emits class scores whose positive scale does not change the argmax.
"""
from __future__ import annotations

import math

from torch import nn

from xnorflow.errors import XnorflowError

from .layers import (
    BatchNorm,
    BatchNorm2d,
    BinaryConv2d,
    BinaryLinear,
    Flatten,
    InputNorm,
    MaxPool2d,
    Scale,
    SignActivation,
)

# Hidden widths per architecture (FINN's BNN-PYNQ tiny / small / large fully connected nets).
ARCHS: dict[str, tuple[int, ...]] = {
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
}

# Conv nets: ("conv", out_channels) 3x3 convs, ("pool", 2) 2x2 max-pools after the conv before them,
# then the hidden FC widths.
CONV_KERNEL = 3
CONV_ARCHS: dict[str, tuple[tuple[tuple[str, int], ...], tuple[int, ...]]] = {
    "scnv": ((("conv", 32), ("conv", 32), ("pool", 2), ("conv", 64), ("conv", 64), ("pool", 2)), (256,)),
    "cnv": ((("conv", 64), ("conv", 64), ("pool", 2), ("conv", 128), ("conv", 128), ("pool", 2),
             ("conv", 256), ("conv", 256)), (512, 512)),
}


class ArchError(XnorflowError):
    """An unknown architecture or impossible layer sizes; the message names the fix."""


def arch_names() -> tuple[str, ...]:
    """Every zoo architecture: the MLPs, then the conv nets."""
    return (*ARCHS, *CONV_ARCHS)


def is_conv_arch(arch: str) -> bool:
    return arch in CONV_ARCHS


def hidden_widths(arch: str) -> tuple[int, ...]:
    """Output widths (channels for convs) of every layer but the last, as the model file's ``hidden``;
    ArchError naming the known architectures otherwise."""
    if arch in ARCHS:
        return ARCHS[arch]
    if arch in CONV_ARCHS:
        features, fc = CONV_ARCHS[arch]
        return tuple(width for kind, width in features if kind == "conv") + fc
    raise ArchError(f"unknown architecture {arch!r}: choose one of {', '.join(arch_names())}")


def conv_paddings(arch: str, image_shape: tuple[int, int, int], first_valid: bool = False) -> list[int]:
    """The padding of every conv of ``arch``: all 0 (valid) when every layer keeps >= 1 pixel on
    ``image_shape``, else 1; with ``first_valid`` the first conv is valid either way (integer inputs)."""
    features, _ = CONV_ARCHS[arch]
    n_convs = sum(kind == "conv" for kind, _ in features)
    first = [0] if first_valid else []
    valid = first + [0] * (n_convs - len(first))
    return valid if _smallest_side(features, image_shape, valid) >= 1 else first + [1] * (n_convs - len(first))


def _smallest_side(features, image_shape, paddings) -> int:
    """The smallest side the image reaches through the feature layers (convs padded by ``paddings``)."""
    size, convs = min(image_shape[1:]), iter(paddings)
    smallest = size
    for kind, value in features:
        size = size + 2 * next(convs) - CONV_KERNEL + 1 if kind == "conv" else size // value
        smallest = min(smallest, size)
    return smallest


def _conv_features(arch: str, shape: tuple[int, int, int], first_valid: bool, conv_block) -> tuple[list, int]:
    """The feature modules of a zoo conv net and the width of their flattened output. Each conv is
    ``conv_block(c_in, c_out, padding)`` = (the conv, the modules after it); a pool goes between the two."""
    features, _ = CONV_ARCHS[arch]
    c, h, w = shape
    paddings = iter(conv_paddings(arch, shape, first_valid))
    modules: list[nn.Module] = []
    after_conv: list[nn.Module] = []
    for kind, value in features:
        if kind == "conv":
            modules += after_conv
            padding = next(paddings)
            conv, after_conv = conv_block(c, value, padding)
            modules.append(conv)
            c, h, w = value, h + 2 * padding - CONV_KERNEL + 1, w + 2 * padding - CONV_KERNEL + 1
        else:
            modules.append(MaxPool2d(value))
            h, w = h // value, w // value
        if h < 1 or w < 1:
            raise ArchError(f"{arch} does not fit a {shape[1]}x{shape[2]} image even with "
                            f"padding: give an image of at least 4x4 pixels")
    return modules + after_conv, c * h * w


def _image(arch: str, image_shape, n_classes: int) -> tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1 or n_classes < 2:
        raise ArchError(f"bad sizes for {arch}: image shape {tuple(image_shape)}, {n_classes} classes: "
                        "need a (C, H, W) image and at least 2 classes")
    return tuple(int(d) for d in image_shape)


def build_cnn(arch: str, image_shape: tuple[int, int, int], n_classes: int,
              first_valid: bool = False) -> nn.Sequential:
    """A zoo conv net for (C, H, W) images (the structure in the module docstring)."""
    shape = _image(arch, image_shape, n_classes)

    def conv_block(c_in, c_out, padding):
        return (BinaryConv2d(c_in, c_out, CONV_KERNEL, padding=padding, pad_value=-1),
                [BatchNorm2d(c_out), SignActivation()])

    modules, flat = _conv_features(arch, shape, first_valid, conv_block)
    # The dense tail is the MLP's, unpacked so the chain stays one flat nn.Sequential.
    return nn.Sequential(nn.Unflatten(1, shape), *modules, Flatten(), *build_mlp(flat, CONV_ARCHS[arch][1], n_classes))


def build_mlp(in_features: int, hidden: tuple[int, ...] | list[int], n_classes: int) -> nn.Sequential:
    """A binarized MLP with the given hidden widths (the structure in the module docstring)."""
    if in_features < 1 or n_classes < 2 or any(width < 1 for width in hidden):
        raise ArchError(f"bad sizes: {in_features} inputs, hidden {list(hidden)}, {n_classes} classes: "
                         "need at least 1 input, widths >= 1 and 2 classes")
    modules: list[nn.Module] = []
    width_in = in_features
    for width in hidden:
        modules += [BinaryLinear(width_in, width), BatchNorm(width), SignActivation()]
        width_in = width
    modules.append(BinaryLinear(width_in, n_classes))
    # The output is an integer in [-width_in, width_in] with spread ~sqrt(width_in) at init:
    # start the scale so the first logits are O(1).
    modules.append(Scale(init=1.0 / math.sqrt(width_in)))
    return nn.Sequential(*modules)


def build_model(arch: str, in_features: int | tuple[int, ...], n_classes: int = 10,
                input_norm: tuple | None = None) -> nn.Module:
    """A zoo model for ``n_classes`` classes.

    ``in_features``: the input bits (an int), or the image shape (C, H, W) (an MLP takes C*H*W bits).
    A conv net (scnv, cnv) needs the image shape. Both take the flat input bits as +-1 floats; with
    ``input_norm`` = (mean per channel, scale) they take the integer pixels instead, normalised by an
    opening :class:`InputNorm` (module docstring).
    """
    hidden = hidden_widths(arch)
    shape = _shape(arch, in_features)
    if arch in CONV_ARCHS:
        model = build_cnn(arch, shape, n_classes, first_valid=input_norm is not None)
    else:
        model = build_mlp(math.prod(shape), hidden, n_classes)
    return model if input_norm is None else nn.Sequential(InputNorm(*input_norm), *model)


def _shape(arch: str, in_features) -> tuple[int, ...]:
    """(C, H, W) from an image shape ((H, W): one channel), (n,) from a width; a conv net needs the image."""
    if isinstance(in_features, (tuple, list)):
        shape = tuple(int(d) for d in in_features)
        return (1, *shape) if len(shape) == 2 else shape
    if arch in CONV_ARCHS:
        raise ArchError(f"{arch} is a conv net: give the image shape (C, H, W), not {in_features} input bits")
    return (int(in_features),)


def build_float_model(arch: str, in_features: int | tuple[int, ...], n_classes: int, input_norm: tuple) -> nn.Module:
    """``arch`` in float: the same widths with float weights, batch-norm and ReLU, on pixels normalised by
    ``input_norm`` = (mean per channel, scale); the teacher for distillation (training/train.py)."""
    widths = hidden_widths(arch)
    shape = _shape(arch, in_features)
    modules: list[nn.Module] = [InputNorm(*input_norm)]
    width = math.prod(shape)
    if arch in CONV_ARCHS:
        shape = _image(arch, shape, n_classes)

        def conv_block(c_in, c_out, padding):
            return nn.Conv2d(c_in, c_out, CONV_KERNEL, padding=padding), [BatchNorm2d(c_out), nn.ReLU()]

        features, width = _conv_features(arch, shape, False, conv_block)
        modules += [nn.Unflatten(1, shape), *features, Flatten()]
        widths = CONV_ARCHS[arch][1]
    for hidden in widths:
        modules += [nn.Linear(width, hidden), BatchNorm(hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*modules, nn.Linear(width, n_classes))
