"""The model zoo: FINN-style binarized multilayer perceptrons and convolutional networks.

Every model is a flat ``nn.Sequential``. The MLPs (tfc, sfc, lfc)::

    input (+1/-1 floats of the binarised image, flat)
    -> [BinaryLinear -> BatchNorm1d -> SignActivation] x len(hidden)
    -> BinaryLinear -> Scale

The conv nets (scnv, cnv) take the same flat input and unflatten it to the image shape (C, H, W)::

    Unflatten(1, (C, H, W))
    -> [BinaryConv2d(K=3) -> BatchNorm2d -> SignActivation [-> MaxPool2d(2)]] per conv
    -> Flatten -> [BinaryLinear -> BatchNorm1d -> SignActivation] per FC -> BinaryLinear -> Scale

- ``scnv`` (for 28x28-class inputs): 32C3-32C3-MP2-64C3-64C3-MP2-FC256-FC10.
- ``cnv``, FINN's CNV (for 32x32xC inputs): 64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-FC512-FC512-FC10.

Convs are valid (FINN's CNV) when the image is large enough for every layer to keep at least one
pixel; on a smaller image (digits' 8x8 for scnv, 28x28 for cnv) every conv pads by 1 with -1 (bit 0,
DESIGN.md section 2a) instead, so the shapes stay valid: scnv on digits is 8x8 -> 8x8 -> 4x4 -> 2x2.

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


def conv_padding(arch: str, image_shape: tuple[int, int, int]) -> int:
    """0 (valid convs) when every layer of ``arch`` keeps >= 1 pixel on ``image_shape``, else 1."""
    features, _ = CONV_ARCHS[arch]
    _, h, w = image_shape
    size = min(h, w)
    for kind, value in features:
        size = size - CONV_KERNEL + 1 if kind == "conv" else size // value
        if size < 1:
            return 1
    return 0


def build_cnn(arch: str, image_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """A zoo conv net for (C, H, W) images (the structure in the module docstring)."""
    features, fc = CONV_ARCHS[arch]
    if len(image_shape) != 3 or min(image_shape) < 1 or n_classes < 2:
        raise ArchError(f"bad sizes for {arch}: image shape {tuple(image_shape)}, {n_classes} classes: "
                        "need a (C, H, W) image and at least 2 classes")
    c, h, w = (int(d) for d in image_shape)
    padding = conv_padding(arch, (c, h, w))
    modules: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
    for kind, value in features:
        if kind == "conv":
            modules += [BinaryConv2d(c, value, CONV_KERNEL, padding=padding, pad_value=-1),
                        BatchNorm2d(value), SignActivation()]
            c, h, w = value, h + 2 * padding - CONV_KERNEL + 1, w + 2 * padding - CONV_KERNEL + 1
        else:
            modules.append(MaxPool2d(value))
            h, w = h // value, w // value
        if h < 1 or w < 1:
            raise ArchError(f"{arch} does not fit a {image_shape[1]}x{image_shape[2]} image even with "
                            f"padding: give an image of at least 4x4 pixels")
    modules.append(Flatten())
    # The dense tail is the MLP's, unpacked so the chain stays one flat nn.Sequential.
    return nn.Sequential(*modules, *build_mlp(c * h * w, fc, n_classes))


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


def build_model(arch: str, in_features: int | tuple[int, ...], n_classes: int = 10) -> nn.Module:
    """A zoo model for ``n_classes`` classes.

    ``in_features``: the input bits (an int), or the image shape (C, H, W) (an MLP takes C*H*W bits).
    A conv net (scnv, cnv) needs the image shape. Both take the flat input bits as +-1 floats.
    """
    hidden = hidden_widths(arch)
    if isinstance(in_features, (tuple, list)):
        shape = tuple(int(d) for d in in_features)
        if arch in CONV_ARCHS:
            if len(shape) == 2:
                shape = (1, *shape)
            return build_cnn(arch, shape, n_classes)
        return build_mlp(math.prod(shape), hidden, n_classes)
    if arch in CONV_ARCHS:
        raise ArchError(f"{arch} is a conv net: give the image shape (C, H, W), not {in_features} input bits")
    return build_mlp(in_features, hidden, n_classes)
