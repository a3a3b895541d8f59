"""Brevitas BNN-PYNQ FC models (TFC/SFC/LFC-1w1a) and stress variants, trained briefly, exported to QONNX.

The layers are those of ``brevitas_examples.bnn_pynq.models.FC`` (1-bit QuantIdentity on ``2x - 1``,
QuantLinear + BatchNorm1d + 1-bit QuantIdentity per hidden layer, QuantLinear + TensorNorm at the output),
built here with the options the stress variants need: a bias, a per-channel or 0.1 weight scale, an
activation scale of 2. The graph's input is ``pixel / max_value`` (ToTensor's [0, 1]).
"""
from __future__ import annotations

import numpy as np

HIDDEN = {"tfc": [64, 64, 64], "sfc": [256, 256, 256], "lfc": [1024, 1024, 1024]}


def build(arch: str, in_features: int, n_classes: int = 10, *, bias: bool = False, weight_scale: float = 1.0,
          per_channel_scale: bool = False, act_scale: float = 1.0, seed: int = 0):
    import torch
    from brevitas.core.scaling import ScalingImplType
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
    from torch import nn

    torch.manual_seed(seed)
    act = CommonActQuant.let(min_val=-act_scale, max_val=act_scale)
    weight = CommonWeightQuant.let(scaling_const=weight_scale)
    hidden_weight = weight
    if per_channel_scale:
        hidden_weight = CommonWeightQuant.let(scaling_impl_type=ScalingImplType.PARAMETER,
                                              scaling_per_output_channel=True, scaling_const=weight_scale)

    class FC(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [QuantIdentity(act_quant=CommonActQuant, bit_width=1), nn.Dropout(0.2)]
            n = in_features
            for width in HIDDEN[arch]:
                layers += [QuantLinear(n, width, bias=bias, weight_bit_width=1, weight_quant=hidden_weight),
                           nn.BatchNorm1d(width), QuantIdentity(act_quant=act, bit_width=1), nn.Dropout(0.2)]
                n = width
            layers += [QuantLinear(n, n_classes, bias=False, weight_bit_width=1, weight_quant=weight), TensorNorm()]
            self.features = nn.ModuleList(layers)
            for m in self.modules():
                if isinstance(m, QuantLinear):
                    nn.init.uniform_(m.weight.data, -1, 1)

        def forward(self, x):
            x = x.view(x.shape[0], -1)
            x = 2.0 * x - torch.tensor([1.0], device=x.device)
            for m in self.features:
                x = m(x)
            return x

    return FC()


def train(model, images: np.ndarray, labels: np.ndarray, max_value: int, epochs: int, seed: int = 0,
          batch_size: int = 100):
    """A few epochs of Adam on pixel / max_value; weights clipped to [-1, 1] as in BNN-PYNQ."""
    import torch
    from brevitas.nn import QuantLinear

    torch.manual_seed(seed)
    x = torch.from_numpy(images.astype(np.float32) / max_value)
    y = torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for m in model.modules():
                if isinstance(m, QuantLinear):
                    m.weight.data.clamp_(-1, 1)
    return model.eval()


def stress(model, seed: int = 0):
    """A third of every hidden batch-norm's gamma negative, a few exactly zero; per-channel weight
    scales (where the model learns them) set to distinct positive values."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                n = m.num_features
                flip = rng.permutation(n)[: n // 3]
                m.weight[flip] = -m.weight[flip]
                zero = rng.permutation(n)[:max(1, n // 16)]
                m.weight[zero] = 0.0
        for name, p in model.named_parameters():
            if "scaling_impl.value" in name and p.numel() > 1:
                p.copy_(torch.from_numpy(rng.uniform(0.05, 2.0, p.shape).astype(np.float32)))
    return model


def export(model, path, in_features: int, dynamo: bool):
    """export_qonnx with the TorchScript (dynamo=False) or the dynamo exporter."""
    import warnings

    import torch
    from brevitas.export import export_qonnx

    side = round(float(np.sqrt(in_features)))
    shape = (1, 1, side, side) if side * side == in_features else (1, in_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand(shape), export_path=str(path), dynamo=dynamo)
    return path


def torch_scores(model, raw: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(raw.astype(np.float32))).numpy()
