"""The model zoo: FINN-style binarized multilayer perceptrons.

Every model is a flat ``nn.Sequential``::

    input (+1/-1 floats of the binarised image)
    -> [BinaryLinear -> BatchNorm1d -> SignActivation] x len(hidden)
    -> BinaryLinear -> Scale

The hidden layers end in sign(batch-norm), which the compiler folds into one integer threshold per
channel; the output layer emits class scores whose positive scale does not change the argmax.
"""
from __future__ import annotations

import math

from torch import nn

from xnorflow.errors import XnorflowError

from .layers import BatchNorm, BinaryLinear, Scale, SignActivation

# Hidden widths per architecture (FINN's BNN-PYNQ tiny / small / large fully connected nets).
ARCHS: dict[str, tuple[int, ...]] = {
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
}


class ArchError(XnorflowError):
    """An unknown architecture or impossible layer sizes; the message names the fix."""


def hidden_widths(arch: str) -> tuple[int, ...]:
    """Hidden layer widths of a zoo architecture; ArchError naming the known ones otherwise."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ArchError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}") from None


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


def build_model(arch: str, in_features: int, n_classes: int = 10) -> nn.Module:
    """A zoo model (tfc, sfc or lfc) for ``in_features`` input bits and ``n_classes`` classes."""
    return build_mlp(in_features, hidden_widths(arch), n_classes)
