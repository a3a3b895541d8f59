"""Binary layers to drop into a PyTorch model.

A binarized network keeps real-valued *latent* weights for the optimizer and uses only their signs in
the forward pass. Gradients pass through the sign with the straight-through estimator (STE): the
gradient of ``sign(x)`` is taken as that of ``hardtanh(x)``, i.e. 1 inside [-1, 1] and 0 outside.

Conventions (DESIGN.md section 2): ``sign(0) = +1``, so every value maps to +1 or -1 and a bit 1 means
+1. The compiler takes the sign of the latent weights the same way.

Typical use::

    model = nn.Sequential(BinaryLinear(784, 256), BatchNorm(256), SignActivation(),
                          BinaryLinear(256, 10), Scale())
    ...
    optimizer.step()
    clip_latent_weights(model)   # keep latent weights in [-1, 1] so their gradients stay alive

Convolutions (DESIGN.md section 2a) work the same way on (N, C, H, W) tensors of +-1 values::

    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),                        # flat input bits -> (C, H, W)
        BinaryConv2d(1, 32, 3), BatchNorm2d(32), SignActivation(),
        BinaryConv2d(32, 32, 3, padding=1, pad_value=-1), BatchNorm2d(32), SignActivation(),
        MaxPool2d(2),                                         # max of +-1 values: the hardware ORs bits
        Flatten(), BinaryLinear(32 * 13 * 13, 10), Scale())

Integer inputs (DESIGN.md 2b) open the model with ``InputNorm(mean per channel, scale)``: the first
binary layer then takes the normalised pixels, with +-1 weights and no sign on its input.
``set_stochastic_weights(model)`` makes the binary layers binarise their weights stochastically while
training (BinaryConnect), the sign at inference; ``set_activation_gradient(model, "approxsign")`` trains
the activations with Bi-Real Net's ApproxSign gradient instead of hardtanh's.

A BinaryConv2d pads its +-1 input with ``pad_value`` (-1 or +1, never 0, which is no bit) and is
stride 1, no dilation, one group: the model file refuses anything else (model_file.extract_layers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATION_GRADIENTS",
    "DEFAULT_ACTIVATION_GRADIENT",
    "BatchNorm",
    "BatchNorm2d",
    "BinaryConv2d",
    "BinaryLinear",
    "Flatten",
    "InputNorm",
    "MaxPool2d",
    "Scale",
    "SignActivation",
    "approx_sign_ste",
    "binary_sign",
    "check_activation_gradient",
    "clip_latent_weights",
    "set_activation_gradient",
    "set_stochastic_weights",
    "sign_ste",
    "spread_latent_weights",
    "stochastic_sign_ste",
]

# Plain BatchNorm1d: the compiler folds its eval-mode form into integer thresholds.
BatchNorm = nn.BatchNorm1d
# The same per channel of a conv's (N, C, H, W) output.
BatchNorm2d = nn.BatchNorm2d
# Plain max-pool (kernel_size = stride, no padding, floor): on +-1 values it is the OR of the window's bits.
MaxPool2d = nn.MaxPool2d
# Plain flatten (start_dim 1): (N, C, H, W) -> (N, C*H*W) in PyTorch's (c, y, x) order, recorded in the
# model file so the compiler can permute the next dense layer's columns to the hardware's (y, x, c).
Flatten = nn.Flatten


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (torch.sign would give 0 at 0, which has no bit)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    """binary_sign forward; hardtanh straight-through backward: grad * (|x| <= 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # Beyond |x| > 1 the sign cannot be flipped by a small step: cancelling the gradient there
        # stops latent values from drifting without bound.
        return grad_output * (x.abs() <= 1).to(grad_output.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """Differentiable binarisation: binary_sign forward, straight-through estimator backward."""
    return _SignSTE.apply(x)


class _StochasticSignSTE(_SignSTE):
    """BinaryConnect's stochastic binarisation: +1 with probability hard_sigmoid(x) = clip((x + 1) / 2, 0, 1),
    else -1; the same straight-through backward as the deterministic sign."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        probability = ((x + 1) / 2).clamp(0, 1)
        return torch.where(torch.rand_like(x) < probability, torch.ones_like(x), -torch.ones_like(x))


class _ApproxSignSTE(_SignSTE):
    """binary_sign forward; Bi-Real Net's ApproxSign backward, the derivative of the piecewise quadratic
    that follows the sign more closely than hardtanh: grad * max(0, 2 - 2|x|) (2 at 0, 0 beyond |x| = 1)."""

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * (2 - 2 * x.abs()).clamp(min=0).to(grad_output.dtype)


def approx_sign_ste(x: torch.Tensor) -> torch.Tensor:
    """binary_sign forward, ApproxSign (Bi-Real Net) backward."""
    return _ApproxSignSTE.apply(x)


# The backward passes a SignActivation can train with (``set_activation_gradient``); weights always use
# the hardtanh STE. The forward, and so what the compiler builds, is the same binary_sign for both.
ACTIVATION_GRADIENTS = {"hardtanh": sign_ste, "approxsign": approx_sign_ste}
DEFAULT_ACTIVATION_GRADIENT = "hardtanh"


def stochastic_sign_ste(x: torch.Tensor) -> torch.Tensor:
    """Stochastic binarisation (training only): random +-1 with P(+1) = hard_sigmoid(x), STE backward."""
    return _StochasticSignSTE.apply(x)


class _BinaryWeights:
    """The weight binarisation of BinaryLinear and BinaryConv2d: the deterministic sign, or in training
    mode with ``stochastic`` set, BinaryConnect's stochastic sign. Inference is always the sign."""

    stochastic: bool = False

    def forward_weight(self) -> torch.Tensor:
        if self.stochastic and self.training:
            return stochastic_sign_ste(self.weight)
        return sign_ste(self.weight)


class BinaryLinear(_BinaryWeights, nn.Linear):
    """A dense layer whose forward pass uses sign(latent weight) in {-1, +1}.

    ``weight`` holds the latent real weights the optimizer updates; call :func:`clip_latent_weights`
    (or :meth:`clip_`) after every optimizer step. The bias, if any, stays real-valued; the compiler
    folds it into the following threshold.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)

    def binary_weight(self) -> torch.Tensor:
        """The {-1, +1} weights used in the forward pass (no gradient path)."""
        return binary_sign(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.forward_weight(), self.bias)

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the latent weights into [-1, 1] in place."""
        self.weight.clamp_(-1.0, 1.0)


class BinaryConv2d(_BinaryWeights, nn.Conv2d):
    """A 2-D convolution whose forward pass uses sign(latent weight) in {-1, +1}.

    ``padding`` pixels of ``pad_value`` (-1 or +1: a bit, never zero-padding) surround the +-1 input:
    the input is padded explicitly with ``F.pad(value=pad_value)`` and the convolution itself runs with
    padding 0, so PyTorch and the hardware see the same values at the border. ``stride``, ``dilation``
    and ``groups`` exist so that a layer built with them is a valid torch module, but the model file
    refuses anything other than 1 (the hardware builds stride-1 dense windows only).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 pad_value: int = -1, bias: bool = False, stride: int = 1, dilation: int = 1, groups: int = 1):
        if isinstance(kernel_size, (tuple, list)):
            if len(set(kernel_size)) != 1:
                raise ValueError(f"BinaryConv2d kernel_size {tuple(kernel_size)}: give one square size K")
            kernel_size = kernel_size[0]
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"BinaryConv2d padding {padding!r}: give one non-negative integer P "
                             "(the same on every side)")
        if pad_value not in (-1, 1):
            raise ValueError(f"BinaryConv2d pad_value {pad_value!r}: pad with -1 or +1 (a bit), never 0")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         dilation=dilation, groups=groups, bias=bias)
        self.pad = int(padding)
        self.pad_value = int(pad_value)

    def binary_weight(self) -> torch.Tensor:
        """The {-1, +1} weights used in the forward pass (no gradient path)."""
        return binary_sign(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, value=float(self.pad_value))
        return F.conv2d(x, self.forward_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the latent weights into [-1, 1] in place."""
        self.weight.clamp_(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}, pad_value={self.pad_value}"


class InputNorm(nn.Module):
    """``(x - mean[c]) / scale`` on flat pixel vectors in (c, y, x) order: the normalisation of integer
    inputs (DESIGN.md 2b). One mean per channel and one positive scale, both fixed (buffers, not
    trained), so the compiler folds them exactly into the first layer's integer thresholds."""

    def __init__(self, mean, scale: float):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        if not float(scale) > 0:
            raise ValueError(f"InputNorm scale {scale}: give one positive number")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.mean.numel()
        per_channel = x.reshape(x.shape[0], channels, -1)
        return ((per_channel - self.mean[None, :, None]) / self.scale).reshape(x.shape)


class SignActivation(nn.Module):
    """+1 if x >= 0 else -1; backward is the hardtanh STE (gradient zero where |x| > 1), or another of
    ACTIVATION_GRADIENTS named by ``gradient`` (:func:`set_activation_gradient`)."""

    gradient: str = DEFAULT_ACTIVATION_GRADIENT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATION_GRADIENTS[self.gradient](x)


class Scale(nn.Module):
    """A learnable positive per-tensor scalar: ``y = exp(log_scale) * x``.

    The last binary layer outputs integers in [-N, N]; cross-entropy needs logits of a sensible size,
    so the network learns this factor. Being positive, it never changes the argmax, so the compiler
    drops it.
    """

    def __init__(self, init: float = 1.0):
        super().__init__()
        if not init > 0:
            raise ValueError(f"Scale init must be positive, got {init}: pass a value > 0")
        self.log_scale = nn.Parameter(torch.tensor(float(init)).log())

    @property
    def value(self) -> float:
        return float(self.log_scale.detach().exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()


def set_stochastic_weights(model: nn.Module, stochastic: bool = True) -> None:
    """Make every BinaryLinear and BinaryConv2d of ``model`` binarise its weights stochastically in training."""
    for module in model.modules():
        if isinstance(module, _BinaryWeights):
            module.stochastic = bool(stochastic)


def check_activation_gradient(gradient: str) -> None:
    """ValueError naming the choices unless ``gradient`` is one of ACTIVATION_GRADIENTS."""
    if gradient not in ACTIVATION_GRADIENTS:
        raise ValueError(f"activation gradient {gradient!r}: choose one of {', '.join(ACTIVATION_GRADIENTS)}")


def set_activation_gradient(model: nn.Module, gradient: str) -> None:
    """Train every SignActivation of ``model`` with the backward pass ``gradient`` (ACTIVATION_GRADIENTS)."""
    check_activation_gradient(gradient)
    for module in model.modules():
        if isinstance(module, SignActivation):
            module.gradient = gradient


@torch.no_grad()
def spread_latent_weights(model: nn.Module) -> None:
    """Draw every binary layer's latent weights uniformly from [-1, 1]: under stochastic binarisation
    P(+1) = (w + 1) / 2 then spans [0, 1] from the start (PyTorch's default init, +-1/sqrt(fan_in), makes
    every weight a near coin flip)."""
    for module in model.modules():
        if isinstance(module, _BinaryWeights):
            module.weight.uniform_(-1.0, 1.0)


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """Clip the latent weights of every BinaryLinear and BinaryConv2d in ``model`` into [-1, 1]."""
    for module in model.modules():
        if isinstance(module, (BinaryLinear, BinaryConv2d)):
            module.clip_()
