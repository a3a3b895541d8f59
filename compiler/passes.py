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

from xnorflow.hw.ops import kinds, op_for
from xnorflow.hw.spec import LayerSpec, NetworkSpec, conv_layer, maxpool_layer

from .model import BnnModel, CompileError, ConvLayer, DenseLayer, MaxPoolLayer, decision_boundary


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
    weights = layer.weights.copy()
    tau = decision_boundary(layer)
    gamma, beta = _gamma_beta(layer)
    # In float64 and clipped into [0, N + 1] before the integer cast: a huge tau (a tiny gamma) is a
    # channel that is always -1 or always +1, never a wrapped-around integer. Non-finite statistics
    # were refused by check_foldable, so every tau of a non-constant channel is finite here.
    thresholds = np.empty(layer.n_out, dtype=np.float64)
    positive, negative, constant = gamma > 0, gamma < 0, gamma == 0
    thresholds[positive] = np.ceil((n + tau[positive]) / 2)
    thresholds[negative] = n - np.floor((n + tau[negative]) / 2)
    thresholds[constant] = np.where(beta[constant] >= 0, 0, n + 1)
    weights[negative] = 1 - weights[negative]
    return np.clip(thresholds, 0, n + 1).astype(np.int64), weights


def _gamma_beta(layer) -> tuple[np.ndarray, np.ndarray]:
    """The batch-norm's gamma and beta; without one the layer outputs ``pre-activation >= 0``: gamma 1, beta 0."""
    if layer.bn is None:
        return np.ones(layer.n_out), np.zeros(layer.n_out)
    return layer.bn.gamma, layer.bn.beta


def int_thresholds(layer) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds on s and row-inverted weights implementing ``bn((s - sum w m) / d + bias) >= 0`` for a layer
    on b-bit integers (DESIGN.md 2b), with tau on s from ``decision_boundary``:

    gamma > 0: s >= tau                    -> s >= ceil(tau)
    gamma < 0: s <= tau                    -> invert the row (s' = -s) and s' >= ceil(-tau)
    gamma = 0: the output is sign(beta)    -> T = S_min (always +1) or S_max + 1 (always -1)
    with |s| <= S_max = N * (2**b - 1); thresholds are clamped into [-S_max, S_max + 1].
    """
    s_max = layer.n_in * (2 ** layer.input_bits - 1)
    weights = layer.weights.copy()
    tau = decision_boundary(layer)
    gamma, beta = _gamma_beta(layer)
    positive, negative, constant = gamma > 0, gamma < 0, gamma == 0
    # float64 and clipped before the integer cast: a huge tau is a constant channel, never a wrapped integer
    thresholds = np.empty(layer.n_out, dtype=np.float64)
    thresholds[positive] = np.ceil(tau[positive])
    thresholds[negative] = np.ceil(-tau[negative])
    thresholds[constant] = np.where(beta[constant] >= 0, -s_max, s_max + 1)
    weights[negative] = 1 - weights[negative]
    return np.clip(thresholds, -s_max, s_max + 1).astype(np.int64), weights


def check_foldable(layer: DenseLayer, index: int) -> None:
    """Refuse statistics that cannot fold into an exact threshold, naming the layer and channel:
    every bias and batch-norm value finite, var + eps > 0, and a finite tau for gamma != 0."""
    def refuse(what: str, channel: int | None = None):
        where = f"layer {index}" + ("" if channel is None else f" channel {channel}")
        raise CompileError(f"{where}: {what}, which no integer threshold can implement: the model file is "
                           "corrupt or training diverged; retrain it")

    if layer.bias is not None and not np.all(np.isfinite(layer.bias)):
        refuse("the bias is not finite", int(np.flatnonzero(~np.isfinite(layer.bias))[0]))
    if layer.takes_integers:
        scale = layer.input_scale
        if scale is not None and not (np.isfinite(scale) and scale > 0):
            refuse(f"the input scale is {scale} (it must be positive)")
        if layer.input_mean is not None and not np.all(np.isfinite(layer.input_mean)):
            refuse("an input mean is not finite")
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
    tau = decision_boundary(layer)
    bad = np.flatnonzero((bn.gamma != 0) & ~np.isfinite(tau))
    if bad.size:
        refuse(f"gamma {bn.gamma[bad[0]]:g} is too small for its beta {bn.beta[bad[0]]:g} (the threshold "
               "overflows)", int(bad[0]))


class FoldBatchNormIntoThresholds(Pass):
    """Replace each hidden layer's bias + batch-norm + sign by one integer threshold per channel; on a layer
    taking integers also its input normalisation (thresholds on s, DESIGN.md 2b).

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
            if layer.takes_integers:
                thresholds, weights = int_thresholds(layer)
            else:
                thresholds, weights = thresholds_from_batchnorm(layer)
            layers.append(replace(layer, weights=weights, thresholds=thresholds, bias=None, bn=None, input_mean=None,
                                  input_scale=None))
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
    # Before the conv branch: a conv on integers is an int_conv, not a binary conv.
    if layer.takes_integers:
        fields = int_layer_fields(layer, weights, thresholds)
        if fields["kind"] not in kinds("layer"):
            raise CompileError(f"the model's first layer takes {layer.input_bits}-bit integer inputs, but this "
                               f"xnorflow's hardware has no {fields['kind']} op (it builds {', '.join(kinds('layer'))}): "
                               "update xnorflow, or retrain with --input-bits 1")
        return LayerSpec(**fields)
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


def int_layer_fields(layer, weights: np.ndarray | None, thresholds: np.ndarray | None) -> dict:
    """The LayerSpec fields of a layer on b-bit integers (DESIGN.md 2b): kind ``int_dense`` or ``int_conv``,
    ``input_bits`` b, n_in input elements (a conv's K*K*C window elements), weight bits with the rows of
    negative gamma inverted and int64 thresholds on s (possibly negative), as FoldBatchNormIntoThresholds
    left them. Its frame is n_in x b bits, element i at bits [i*b, (i+1)*b), LSB first."""
    fields = {"n_in": layer.n_in, "n_out": layer.n_out, "weights": weights, "thresholds": thresholds,
              "pe": layer.pe, "simd": layer.simd, "kind": f"int_{layer.kind}", "input_bits": layer.input_bits}
    if isinstance(layer, ConvLayer):
        fields.update(in_shape=layer.in_shape, out_shape=layer.out_shape, kernel=layer.kernel, stride=1,
                      padding=layer.padding, pad_value=layer.pad_value)
    return fields


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
        if layer.bn is not None or layer.bias is not None or layer.output_scale is not None \
                or getattr(layer, "input_mean", None) is not None:
            raise CompileError(f"layer {i} still has float batch-norm/bias/scale/input normalisation: run "
                               "FoldBatchNormIntoThresholds and RemoveArgmaxInvariantOutputScale first")
        if isinstance(layer, MaxPoolLayer):
            if layer.pool_and is None:
                raise CompileError(f"max-pool {i} has no polarity yet: run FoldBatchNormIntoThresholds first")
        elif not layer.is_output and layer.thresholds is None:
            raise CompileError(f"hidden layer {i} has no thresholds: run FoldBatchNormIntoThresholds first")
    layers = tuple(layer_spec(l) for l in model.layers)
    meta = {"arch": model.arch, "dataset": model.dataset, "input": model.input_format}
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
    "int_layer_fields",
    "int_thresholds",
    "lower_to_spec",
    "streamline",
    "thresholds_from_batchnorm",
]
