"""Model zoo: structure and shapes."""
import pytest
import torch
from torch import nn

from xnorflow.training.layers import BinaryLinear, Scale, SignActivation
from xnorflow.training.zoo import ARCHS, build_model


@pytest.mark.parametrize("arch, hidden", [("tfc", 64), ("sfc", 256), ("lfc", 1024)])
def test_zoo_shapes_and_structure(arch, hidden):
    model = build_model(arch, in_features=784, n_classes=10)
    linears = [m for m in model.modules() if isinstance(m, BinaryLinear)]
    assert [(l.in_features, l.out_features) for l in linears] == [
        (784, hidden), (hidden, hidden), (hidden, hidden), (hidden, 10)]
    kinds = [type(m) for m in model]
    assert kinds == [BinaryLinear, nn.BatchNorm1d, SignActivation] * 3 + [BinaryLinear, Scale]
    assert all(l.bias is None for l in linears)
    out = model.eval()(torch.ones(5, 784))
    assert out.shape == (5, 10)


def test_zoo_hidden_activations_are_binary():
    model = build_model("tfc", in_features=64, n_classes=3).eval()
    x = torch.where(torch.rand(7, 64) > 0.5, 1.0, -1.0)
    hidden = model[:3](x)
    assert set(hidden.unique().tolist()) <= {-1.0, 1.0}
    assert model(x).shape == (7, 3)


def test_unknown_arch_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'xfc'.*tfc, sfc, lfc"):
        build_model("xfc", 64)
    assert set(ARCHS) == {"tfc", "sfc", "lfc"}
