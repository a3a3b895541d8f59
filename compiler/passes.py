"""Compiler passes: each takes a BnnModel and returns a new one (FINN/qonnx style).

    model = FoldBatchNormIntoThresholds()(model)
    model = RemoveArgmaxInvariantOutputScale()(model)
    model = SetFolding(target_cycles=256)(model)
    spec = lower_to_spec(model)

Every pass has a test that the model computes the same before and after (tests/compiler).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from xnorflow.hw.ops import op_for
from xnorflow.hw.spec import LayerSpec, NetworkSpec, conv_layer, maxpool_layer

from .model import BnnModel, CompileError, ConvLayer, DenseLayer, MaxPoolLayer


class Pass:
    """A transformation of a model; subclasses implement apply()."""

    def __call__(self, model: BnnModel) -> BnnModel:
        return self.apply(model)

    def apply(self, model: BnnModel) -> BnnModel:  # pragma: no cover - interface
        raise NotImplementedError


def thresholds_from_batchnorm(layer: DenseLayer) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds and row-inverted weights implementing ``bn(dot + bias) >= 0`` (DESIGN.md 2).

    gamma > 0: dot >= tau            -> p >= ceil((N + tau) / 2)
    gamma < 0: dot <= tau            -> invert the row (p' = N - p) and p' >= N - floor((N + tau) / 2)
    gamma = 0: the output is sign(beta): T = 0 (always +1) or N + 1 (always -1)
    Thresholds are clamped into [0, N + 1].
    """
    n = layer.n_in
    rows = layer.n_out
    bias = layer.bias if layer.bias is not None else np.zeros(rows)
    weights = layer.weights.copy()
    if layer.bn is None:
        # y = dot + bias >= 0  <=>  dot >= -bias
        tau = -bias
        gamma = np.ones(rows)
        beta = np.zeros(rows)
    else:
        bn = layer.bn
        gamma, beta = bn.gamma, bn.beta
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = bn.mean - bias - beta * bn.sigma / gamma
    # In float64 and clipped into [0, N + 1] before the integer cast: a huge tau (a tiny gamma) is a
    # channel that is always -1 or always +1, never a wrapped-around integer. Non-finite statistics
    # were refused by check_foldable, so every tau of a non-constant channel is finite here.
    thresholds = np.empty(rows, dtype=np.float64)
    positive, negative, constant = gamma > 0, gamma < 0, gamma == 0
    thresholds[positive] = np.ceil((n + tau[positive]) / 2)
    thresholds[negative] = n - np.floor((n + tau[negative]) / 2)
    thresholds[constant] = np.where(beta[constant] >= 0, 0, n + 1)
    weights[negative] = 1 - weights[negative]
    return np.clip(thresholds, 0, n + 1).astype(np.int64), weights


def check_foldable(layer: DenseLayer, index: int) -> None:
    """Refuse statistics that cannot fold into an exact threshold, naming the layer and channel:
    every bias and batch-norm value finite, var + eps > 0, and a finite tau for gamma != 0."""
    def refuse(what: str, channel: int | None = None):
        where = f"layer {index}" + ("" if channel is None else f" channel {channel}")
        raise CompileError(f"{where}: {what}, which no integer threshold can implement: the model file is "
                           "corrupt or training diverged; retrain it")

    if layer.bias is not None and not np.all(np.isfinite(layer.bias)):
        refuse("the bias is not finite", int(np.flatnonzero(~np.isfinite(layer.bias))[0]))
    bn = layer.bn
    if bn is None:
        return
    if not np.isfinite(bn.eps):
        refuse(f"the batch-norm eps is {bn.eps}")
    for name in ("gamma", "beta", "mean", "var"):
        values = np.asarray(getattr(bn, name), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            refuse(f"the batch-norm {name} is {values[bad[0]]}", int(bad[0]))
    bad = np.flatnonzero(~(bn.var + bn.eps > 0))
    if bad.size:
        refuse(f"the batch-norm variance + eps is {bn.var[bad[0]] + bn.eps} (it must be positive)", int(bad[0]))
    bias = layer.bias if layer.bias is not None else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tau = bn.mean - bias - bn.beta * bn.sigma / bn.gamma
    bad = np.flatnonzero((bn.gamma != 0) & ~np.isfinite(tau))
    if bad.size:
        refuse(f"gamma {bn.gamma[bad[0]]:g} is too small for its beta {bn.beta[bad[0]]:g} (the threshold "
               "overflows)", int(bad[0]))


class FoldBatchNormIntoThresholds(Pass):
    """Replace each hidden layer's bias + batch-norm + sign by one integer threshold per channel.

    A max-pool right after a conv gets its per-channel polarity here (DESIGN.md 2a): the OR of the
    window's bits, except where it sat between the conv and a batch-norm whose gamma is negative,
    where the max of the pre-activation is the AND of the thresholded bits."""

    def apply(self, model: BnnModel) -> BnnModel:
        layers = []
        for index, layer in enumerate(model.layers):
            if isinstance(layer, MaxPoolLayer):
                if layer.pool_and is None:
                    conv = model.layers[index - 1] if index else None
                    gamma = conv.bn.gamma if layer.before_bn and conv is not None and conv.bn is not None else None
                    polarity = (np.zeros(layer.n_out, np.uint8) if gamma is None
                                else (np.asarray(gamma) < 0).astype(np.uint8))
                    layer = replace(layer, pool_and=polarity)
                layers.append(layer)
                continue
            if layer.is_output or layer.thresholds is not None:
                layers.append(layer)
                continue
            check_foldable(layer, index)
            thresholds, weights = thresholds_from_batchnorm(layer)
            layers.append(replace(layer, weights=weights, thresholds=thresholds, bias=None, bn=None))
        return model.with_layers(layers)


class RemoveArgmaxInvariantOutputScale(Pass):
    """Drop what the output layer adds on top of its popcounts when it cannot change the argmax.

    scores_c = scale * (a_c * dot_c + d_c) with a_c, d_c from bias and batch-norm. The class with the
    largest dot (equivalently the largest popcount, dot = 2p - N) wins iff every a_c is the same
    positive number and every d_c is the same: then it is dropped exactly. Anything else is refused.
    """

    def apply(self, model: BnnModel) -> BnnModel:
        last = model.layers[-1]
        n = last.n_out
        slope = np.ones(n)
        offset = last.bias.copy() if last.bias is not None else np.zeros(n)
        if last.bn is not None:
            bn = last.bn
            slope = bn.gamma / bn.sigma
            offset = slope * (offset - bn.mean) + bn.beta
        check_foldable(last, len(model.layers) - 1)
        scale = 1.0 if last.output_scale is None else last.output_scale
        if not np.isfinite(scale):
            raise CompileError(f"the output layer's scale is {scale}: the model file is corrupt, retrain it")
        if scale <= 0 or not np.all(slope == slope[0]) or slope[0] <= 0 or not np.all(offset == offset[0]):
            raise CompileError("the output layer has a per-class bias, batch-norm or a non-positive scale, "
                               "which changes the argmax of the popcounts the hardware emits: end the "
                               "model in a positive per-tensor scale (training.layers.Scale) instead")
        layers = list(model.layers[:-1]) + [replace(last, bias=None, bn=None, output_scale=None)]
        return model.with_layers(layers)


# --- folding -------------------------------------------------------------------------------------

def cheapest_folding(n_in: int, n_out: int, target_cycles: int) -> tuple[int, int]:
    """The (PE, SIMD) with the fewest parallel lanes whose cycles fit target_cycles, for a dense layer
    of these sizes (`DenseOp.cheapest_folding`)."""
    return op_for(LayerSpec(n_in, n_out, None, None)).cheapest_folding(target_cycles)


def layer_spec(layer, with_numbers: bool = True) -> LayerSpec:
    """A model layer as the hardware's LayerSpec (its op's vocabulary); without ``with_numbers`` only
    its shape and folding (no weights, thresholds or polarity): enough for its op's folding rules."""
    weights = layer.weights.astype(np.uint8) if with_numbers and getattr(layer, "weights", None) is not None else None
    thresholds = (layer.thresholds.astype(np.int64) if with_numbers and layer.thresholds is not None else None)
    if isinstance(layer, ConvLayer):
        spec = conv_layer(layer.in_shape, weights if weights is not None else np.zeros((layer.n_out, layer.n_in),
                                                                                     np.uint8),
                          thresholds, kernel=layer.kernel, padding=layer.padding, pad_value=layer.pad_value,
                          pe=layer.pe, simd=layer.simd)
        return spec if with_numbers else replace(spec, weights=None, thresholds=None)
    if isinstance(layer, MaxPoolLayer):
        return replace(maxpool_layer(layer.in_shape, layer.size, layer.pool_and if with_numbers else None,
                                     pe=layer.pe), simd=layer.simd)
    return LayerSpec(layer.n_in, layer.n_out, weights, thresholds, layer.pe, layer.simd, kind=layer.kind)


def layer_geometry(layer) -> LayerSpec:
    """A model layer's shape as a LayerSpec without weights: enough for its op's folding rules."""
    return layer_spec(layer, with_numbers=False)


class SetFolding(Pass):
    """Choose PE and SIMD for every layer.

    Exactly one of: ``folding`` (a (pe, simd) pair per layer, by hand), ``target_cycles`` (the cheapest
    folding whose initiation interval is at most that many cycles per frame).
    """

    def __init__(self, folding: list[tuple[int, int]] | None = None, target_cycles: int | None = None):
        if (folding is None) == (target_cycles is None):
            raise ValueError("SetFolding takes exactly one of folding= or target_cycles=")
        self.folding = folding
        self.target_cycles = target_cycles

    def apply(self, model: BnnModel) -> BnnModel:
        if self.folding is not None:
            if len(self.folding) != len(model.layers):
                raise CompileError(f"the folding has {len(self.folding)} (PE, SIMD) pairs for "
                                   f"{len(model.layers)} layers: give one pair per layer")
            folding = self.folding
        else:
            if self.target_cycles < 1:
                raise CompileError(f"target of {self.target_cycles} cycles per frame: give at least 1")
            folding = [op_for(layer_geometry(l)).cheapest_folding(self.target_cycles) for l in model.layers]
        layers = []
        for i, (layer, (pe, simd)) in enumerate(zip(model.layers, folding)):
            if not (1 <= pe <= layer.n_out and 1 <= simd <= layer.n_in):
                raise CompileError(f"layer {i}: PE={pe}, SIMD={simd} does not fit {layer.n_out} outputs x "
                                   f"{layer.n_in} inputs: choose 1 <= PE <= {layer.n_out}, 1 <= SIMD <= {layer.n_in}")
            layers.append(replace(layer, pe=int(pe), simd=int(simd)))
        return model.with_layers(layers)


def slowest_cycles(model: BnnModel) -> int:
    """The initiation interval of the fully folded design (PE = SIMD = 1 everywhere)."""
    return max(op_for(replace(layer_geometry(l), pe=1, simd=1)).cycles for l in model.layers)


# --- lowering ------------------------------------------------------------------------------------

def lower_to_spec(model: BnnModel, name: str | None = None) -> NetworkSpec:
    """The hardware's view of a fully folded model: bits, integer thresholds, sizes and folding."""
    for i, layer in enumerate(model.layers):
        if layer.bn is not None or layer.bias is not None or layer.output_scale is not None:
            raise CompileError(f"layer {i} still has float batch-norm/bias/scale: run "
                               "FoldBatchNormIntoThresholds and RemoveArgmaxInvariantOutputScale first")
        if isinstance(layer, MaxPoolLayer):
            if layer.pool_and is None:
                raise CompileError(f"max-pool {i} has no polarity yet: run FoldBatchNormIntoThresholds first")
        elif not layer.is_output and layer.thresholds is None:
            raise CompileError(f"hidden layer {i} has no thresholds: run FoldBatchNormIntoThresholds first")
    layers = tuple(layer_spec(l) for l in model.layers)
    meta = {"arch": model.arch, "dataset": model.dataset, "binarize": model.binarize}
    spec = NetworkSpec(layers, name=name or model.arch, meta=meta)
    spec.validate()
    return spec


def streamline(model: BnnModel) -> BnnModel:
    """The numeric passes every model goes through before folding."""
    for step in (FoldBatchNormIntoThresholds(), RemoveArgmaxInvariantOutputScale()):
        model = step(model)
    return model


__all__ = [
    "FoldBatchNormIntoThresholds",
    "Pass",
    "RemoveArgmaxInvariantOutputScale",
    "SetFolding",
    "cheapest_folding",
    "lower_to_spec",
    "streamline",
    "thresholds_from_batchnorm",
]
