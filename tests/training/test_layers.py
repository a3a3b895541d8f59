"""Binary layers: sign convention, straight-through gradients, clipping, the output scale."""
import pytest
import torch
from torch import nn

from xnorflow.training.layers import (
    BatchNorm,
    BinaryLinear,
    Scale,
    SignActivation,
    binary_sign,
    clip_latent_weights,
)

POINTS = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-0.0, 0.0, -1e-30, 1e-30])
    assert binary_sign(x).tolist() == [1.0, 1.0, -1.0, 1.0]
    assert SignActivation()(x).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_sign_activation_forward_is_plus_minus_one():
    y = SignActivation()(torch.tensor(POINTS))
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_sign_activation_gradient_is_cancelled_outside_unit_interval():
    x = torch.tensor(POINTS, requires_grad=True)
    upstream = torch.arange(1.0, 8.0)
    SignActivation()(x).backward(upstream)
    # hardtanh STE: pass the gradient where |x| <= 1, zero beyond
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]


def test_binary_linear_forward_uses_sign_of_latent_weights():
    layer = BinaryLinear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2, 0.0, -0.9], [-0.01, 0.5, -0.5, 0.0]]))
    x = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    expected = x @ torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]]).T
    assert torch.equal(layer(x), expected)
    assert layer.bias is None


def test_binary_linear_weight_gradient_cancelled_where_latent_weight_exceeds_one():
    layer = BinaryLinear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.5, -1.5, -1.0]]))
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    layer(x).sum().backward()
    # d(out)/d(sign w) = x; the STE keeps it only where |w| <= 1
    assert layer.weight.grad.tolist() == [[0.0, -1.0, 0.0, -1.0]]


def test_clip_latent_weights_clamps_only_binary_layers():
    model = nn.Sequential(BinaryLinear(3, 2), BatchNorm(2), SignActivation(), BinaryLinear(2, 2), Scale())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, -0.5, -7.0], [0.9, 1.0, -1.2]]))
        model[3].weight.fill_(-4.0)
        model[1].weight.fill_(5.0)           # batch-norm gamma is not a latent binary weight
    clip_latent_weights(model)
    assert model[0].weight.tolist() == [[1.0, -0.5, -1.0], [pytest.approx(0.9), 1.0, -1.0]]
    assert model[3].weight.eq(-1.0).all()
    assert model[1].weight.eq(5.0).all()


def test_scale_is_positive_and_keeps_the_argmax():
    scale = Scale(init=0.25)
    assert scale.value == pytest.approx(0.25)
    with torch.no_grad():
        scale.log_scale.fill_(-30.0)         # any learnt value stays positive
    x = torch.tensor([[3.0, -1.0, 7.0, 7.0]])
    y = scale(x)
    assert (y[0, 2] > 0) and y.argmax().item() == x.argmax().item() == 2


def test_scale_rejects_non_positive_init():
    with pytest.raises(ValueError, match="positive"):
        Scale(init=0.0)
