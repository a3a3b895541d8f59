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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BatchNorm",
    "BinaryLinear",
    "Scale",
    "SignActivation",
    "binary_sign",
    "clip_latent_weights",
    "sign_ste",
]

# Plain BatchNorm1d: the compiler folds its eval-mode form into integer thresholds.
BatchNorm = nn.BatchNorm1d


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


class BinaryLinear(nn.Linear):
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
        return F.linear(x, sign_ste(self.weight), self.bias)

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the latent weights into [-1, 1] in place."""
        self.weight.clamp_(-1.0, 1.0)


class SignActivation(nn.Module):
    """+1 if x >= 0 else -1; backward is the hardtanh STE (gradient zero where |x| > 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_ste(x)


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


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """Clip the latent weights of every BinaryLinear in ``model`` into [-1, 1]."""
    for module in model.modules():
        if isinstance(module, BinaryLinear):
            module.clip_()
