"""The compiler's representation of a trained BNN, and its import from a model file.

A `BnnModel` is a chain of `DenseLayer`s. Passes (compiler/passes.py) take a model and return a new
one; `execute` runs any stage of it (float batch-norm before folding, integer thresholds after), so
every pass can be checked to compute the same before and after.

A first layer with ``input_bits`` b > 1 takes unsigned b-bit integers x with +-1 weights (DESIGN.md
2b): its integer is ``s = sum_i w_i x_i`` (not a popcount). Before folding it also holds the input
normalisation, ``input_mean`` (the mean m_c(i) of each element of its weight row) and ``input_scale``
d > 0, so its float pre-activation is ``(s - sum_i w_i m_c(i)) / d + bias``; after folding the bit
is ``s >= T`` with T on s (possibly negative).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from xnorflow.errors import XnorflowError
from xnorflow.hw.ops import kinds
from xnorflow.hw.spec import conv_out_shape, pool_out_shape


class CompileError(XnorflowError):
    """A model the compiler cannot take; the message names the cause and the fix."""


@dataclass(frozen=True)
class BatchNorm:
    """Eval-mode batch-norm: y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(self.var + self.eps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.gamma * (x - self.mean) / self.sigma + self.beta


class WeightRows:
    """A layer whose (n_out, n_in) weight bits are its matrix-vector unit's: dense, or a conv's window."""

    weights: np.ndarray

    @property
    def n_in(self) -> int:
        return self.weights.shape[1]

    @property
    def n_out(self) -> int:
        return self.weights.shape[0]


class IntegerInput:
    """The input-format fields of a weight layer (module docstring): ``input_bits`` 1 = bits; b > 1 = b-bit
    integers with their normalisation until folded."""

    input_bits: int
    input_mean: np.ndarray | None
    input_scale: float | None

    @property
    def takes_integers(self) -> bool:
        return self.input_bits > 1


@dataclass(frozen=True)
class DenseLayer(IntegerInput, WeightRows):
    """A binary dense layer at some stage of compilation.

    Before folding, a hidden layer's output bit is ``y >= 0`` with ``y = bn(dot + bias)``
    (dot = 2p - N, the signed ±1 dot product). After FoldBatchNormIntoThresholds, ``bias`` and ``bn``
    are gone and the bit is ``p >= thresholds``. The output layer has no activation: its scores are
    ``output_scale * bn(dot + bias)`` until the passes prove the extras argmax-invariant and drop them.
    """

    kind: ClassVar[str] = "dense"       # the op that runs it in hardware (xnorflow.hw.ops)

    weights: np.ndarray                 # (n_out, n_in) uint8 bits, 1 = +1
    is_output: bool
    bias: np.ndarray | None = None
    bn: BatchNorm | None = None
    thresholds: np.ndarray | None = None
    output_scale: float | None = None
    pe: int = 1
    simd: int = 1
    input_bits: int = 1
    input_mean: np.ndarray | None = None     # (n_in,) per element of the weight row; None once folded
    input_scale: float | None = None

    @property
    def cycles(self) -> int:
        return -(-self.n_out // self.pe) * -(-self.n_in // self.simd)


@dataclass(frozen=True)
class ConvLayer(IntegerInput, WeightRows):
    """A K x K binary convolution, stride 1, at some stage of compilation (DESIGN.md section 2a).

    ``weights`` is (O, K*K*C) bits ordered (ky, kx, c) with c fastest, so each output pixel is a
    dense layer with N = K*K*C applied to its window; ``padding`` pixels of the bit ``pad_value``
    (0 = -1, 1 = +1) surround the (C, H, W) input. Bias, batch-norm and thresholds as a hidden
    DenseLayer's, per output channel. Activations travel as vectors in (y, x, c) order.
    """

    kind: ClassVar[str] = "conv"
    is_output: ClassVar[bool] = False

    weights: np.ndarray                 # (O, K*K*C) uint8 bits, 1 = +1
    in_shape: tuple[int, int, int]      # (C, H, W)
    kernel: int
    padding: int = 0
    pad_value: int = 0
    bias: np.ndarray | None = None
    bn: BatchNorm | None = None
    thresholds: np.ndarray | None = None
    output_scale: None = None
    pe: int = 1
    simd: int = 1
    input_bits: int = 1
    input_mean: np.ndarray | None = None     # (K*K*C,) per element of a window, (ky, kx, c) order
    input_scale: float | None = None

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return conv_out_shape(self.in_shape, self.n_out, self.kernel, self.padding)

    @property
    def out_bits(self) -> int:
        return int(np.prod(self.out_shape))


@dataclass(frozen=True)
class MaxPoolLayer:
    """A size x size max-pool, stride = size, over the previous conv's output (DESIGN.md 2a).

    ``before_bn``: the pool sat between the conv and its batch-norm (the conv's thresholds then come
    from that batch-norm and this pool takes the max of the thresholded bits: an OR, or an AND for a
    channel whose gamma is negative). ``pool_and`` (C,) is that decision, made by
    FoldBatchNormIntoThresholds; None before it.
    """

    kind: ClassVar[str] = "maxpool"
    is_output: ClassVar[bool] = False
    takes_integers: ClassVar[bool] = False    # a pool takes the previous layer's bits

    in_shape: tuple[int, int, int]
    size: int
    before_bn: bool = False
    pool_and: np.ndarray | None = None
    thresholds: None = None
    bias: None = None
    bn: None = None
    output_scale: None = None
    pe: int = 1
    simd: int = 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return pool_out_shape(self.in_shape, self.size)

    @property
    def n_in(self) -> int:
        return self.in_shape[0]

    @property
    def n_out(self) -> int:
        return self.in_shape[0]

    @property
    def out_bits(self) -> int:
        return int(np.prod(self.out_shape))


def conv_windows(x: np.ndarray, in_shape, kernel: int, padding: int, pad_value: int) -> np.ndarray:
    """(frames, H*W*C) bits (or integers) in (y, x, c) order -> (frames, H'*W', K*K*C) windows in
    (ky, kx, c) order."""
    c, h, w = in_shape
    frames = x.shape[0]
    image = np.asarray(x).reshape(frames, h, w, c)
    if padding:
        image = np.pad(image, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                       constant_values=int(pad_value))
    out_h, out_w = image.shape[1] - kernel + 1, image.shape[2] - kernel + 1
    rows = [image[:, ky:ky + out_h, kx:kx + out_w, :] for ky in range(kernel) for kx in range(kernel)]
    stacked = np.stack(rows, axis=3)            # (frames, out_h, out_w, K*K, C)
    return stacked.reshape(frames, out_h * out_w, kernel * kernel * c)


def pool_windows(values: np.ndarray, in_shape, size: int) -> np.ndarray:
    """(frames, H*W*C) values in (y, x, c) order -> (frames, H'*W'*C, size*size) pool windows."""
    c, h, w = in_shape
    frames = values.shape[0]
    oh, ow = h // size, w // size
    image = values.reshape(frames, h, w, c)[:, :oh * size, :ow * size, :]
    blocks = image.reshape(frames, oh, size, ow, size, c).transpose(0, 1, 3, 5, 2, 4)
    return blocks.reshape(frames, oh * ow * c, size * size)


@dataclass(frozen=True)
class BnnModel:
    layers: tuple[DenseLayer | ConvLayer | MaxPoolLayer, ...]
    arch: str = "custom"
    dataset: str = "unknown"
    # The input format (training/model_file.py): {"format": "bits", rule...} or {"format": "int", ...}.
    input_format: dict = field(default_factory=dict)
    accuracy_torch: float | None = None

    def with_layers(self, layers) -> BnnModel:
        return replace(self, layers=tuple(layers))

    @property
    def input_elements(self) -> int:
        """Input elements (bits or b-bit integers) per frame."""
        first = self.layers[0]
        return int(np.prod(first.in_shape)) if isinstance(first, (ConvLayer, MaxPoolLayer)) else first.n_in

    @property
    def input_bits(self) -> int:
        """Bits of one hardware input frame: elements x bits per element."""
        return self.input_elements * getattr(self.layers[0], "input_bits", 1)


@dataclass
class Execution:
    """What a model computes for a batch: scores, predictions, and each hidden layer's output bits."""

    scores: np.ndarray
    predictions: np.ndarray
    activations: list[np.ndarray]
    # Per hidden layer, (frames, n_out) distance of the pre-activation from its decision boundary, in
    # units of the signed dot product: |dot - tau|. Zero marks an exact tie, where float rounding may
    # flip the bit; None once the layer is integer-only (no boundary to be near).
    margins: list[np.ndarray | None]


def popcount_matrix(bits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """p = popcount(XNOR(x, w)) for (frames, n_in) inputs and (n_out, n_in) weights, exact int64.

    A straightforward integer reference, independent of golden.py's bit packing, for the compiler's
    own execution of a model.
    """
    x = bits.astype(np.int64)
    w = weights.astype(np.int64)
    agree_ones = x @ w.T
    agree_zeros = (1 - x) @ (1 - w).T
    return agree_ones + agree_zeros


def signed_sums(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """s = sum_i w_i x_i for (frames, n_in) integer inputs and (n_out, n_in) weight bits (1 = +1, 0 = -1),
    exact int64 (DESIGN.md 2b)."""
    return np.asarray(values, dtype=np.int64) @ (2 * weights.astype(np.int64) - 1).T


def layer_sums(layer, x: np.ndarray) -> np.ndarray:
    """A weight layer's integers for inputs x: popcounts p for bits, signed sums s for integer inputs."""
    return signed_sums(x, layer.weights) if layer.takes_integers else popcount_matrix(x, layer.weights)


def weighted_input_mean(layer) -> np.ndarray:
    """sum_i w_i m_c(i) per output channel: what the input means add to s (zero without means)."""
    if layer.input_mean is None:
        return np.zeros(layer.n_out)
    return (2 * layer.weights.astype(np.float64) - 1) @ np.asarray(layer.input_mean, dtype=np.float64)


def pre_activation(layer, p: np.ndarray) -> np.ndarray:
    """The real value a layer's batch-norm takes, from its integers: ``dot + bias`` (dot = 2p - N) for bits,
    ``(s - sum_i w_i m_c(i)) / d + bias`` for integer inputs."""
    if layer.takes_integers:
        scale = 1.0 if layer.input_scale is None else layer.input_scale
        a = (p.astype(np.float64) - weighted_input_mean(layer)) / scale
    else:
        a = (2 * p - layer.n_in).astype(np.float64)
    return a + layer.bias if layer.bias is not None else a


def layer_scores(layer: DenseLayer, p: np.ndarray) -> np.ndarray:
    """Real-valued pre-activation of a layer from its popcounts (before thresholds exist)."""
    y = pre_activation(layer, p)
    return layer.bn(y) if layer.bn is not None else y


def decision_boundary(layer) -> np.ndarray:
    """tau per channel: the hidden layer's output is +1 iff its integer domain value (dot = 2p - N for bits,
    s for integer inputs) is >= tau where gamma > 0 (and <= tau where gamma < 0); gamma == 0 gives a
    non-finite tau (a constant channel). Exact in real arithmetic; float64 here."""
    bias = layer.bias if layer.bias is not None else np.zeros(layer.n_out)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # on the pre-activation without its bias: dot for bits, (s - sum w m) / d for integers
        tau = -bias if layer.bn is None else layer.bn.mean - bias - layer.bn.beta * layer.bn.sigma / layer.bn.gamma
        if not layer.takes_integers:
            return tau
        scale = 1.0 if layer.input_scale is None else layer.input_scale
        return weighted_input_mean(layer) + scale * tau


def decision_margin(layer: DenseLayer, p: np.ndarray) -> np.ndarray:
    """|value - tau| per channel for a float layer, on its integer domain (dot for bits, s for integers):
    how far the input is from flipping the bit; zero at an exact tie."""
    value = p.astype(np.float64) if layer.takes_integers else (2 * p - layer.n_in).astype(np.float64)
    with np.errstate(invalid="ignore"):
        margin = np.abs(value - decision_boundary(layer))
    if layer.bn is None:
        return margin
    # A constant channel (gamma == 0) never changes with the input: it is never at a tie.
    return np.where(layer.bn.gamma == 0, np.inf, margin)


def _hidden_bits(layer, p: np.ndarray):
    """A dense or conv layer's output bits from its popcounts (frames, ..., n_out), and its margins."""
    if layer.thresholds is not None:
        return (p >= layer.thresholds).astype(np.uint8), None
    return (layer_scores(layer, p) >= 0).astype(np.uint8), decision_margin(layer, p)


def _pool(layer: MaxPoolLayer, bits: np.ndarray, conv: ConvLayer | None, conv_p: np.ndarray | None) -> np.ndarray:
    """A max-pool's output bits. Before folding, a pool that sits between its conv and the conv's
    batch-norm takes the max of the conv's float pre-activation and only then the batch-norm and
    sign, as PyTorch does; after folding, every pool is the OR (AND where ``pool_and``) of bits."""
    frames = bits.shape[0]
    if layer.pool_and is None and layer.before_bn and conv is not None and conv.thresholds is None:
        dot = pre_activation(conv, conv_p)
        pooled = pool_windows(dot.reshape(frames, -1), layer.in_shape, layer.size).max(axis=2)
        y = pooled.reshape(frames, -1, layer.n_out)
        if conv.bn is not None:
            y = conv.bn(y)
        return (y >= 0).astype(np.uint8).reshape(frames, -1)
    windows = pool_windows(bits, layer.in_shape, layer.size)
    polarity = np.zeros(layer.n_out, np.uint8) if layer.pool_and is None else layer.pool_and
    use_and = np.tile(polarity, windows.shape[1] // layer.n_out)[None, :] == 1
    return np.where(use_and, windows.min(axis=2), windows.max(axis=2)).astype(np.uint8)


def execute(model: BnnModel, bits: np.ndarray) -> Execution:
    """Run (frames, input_elements) inputs through the model at whatever stage it is: {0,1} bits, or the
    b-bit integers of a model whose first layer takes integers (not the packed hardware frame).

    Conv and pool activations are (frames, H*W*C) vectors in (y, x, c) order."""
    x = np.asarray(bits, dtype=np.int64 if model.layers[0].takes_integers else np.uint8)
    activations, margins = [], []
    frames = x.shape[0]
    conv, conv_p = None, None
    for layer in model.layers[:-1]:
        if isinstance(layer, MaxPoolLayer):
            x = _pool(layer, x, conv, conv_p)
            margins.append(None)
        elif isinstance(layer, ConvLayer):
            windows = conv_windows(x, layer.in_shape, layer.kernel, layer.padding, layer.pad_value)
            conv, conv_p = layer, layer_sums(layer, windows.reshape(-1, layer.n_in)).reshape(frames, -1, layer.n_out)
            out, margin = _hidden_bits(layer, conv_p)
            x = out.reshape(frames, -1)
            margins.append(None if margin is None else margin.reshape(frames, -1))
        else:
            x, margin = _hidden_bits(layer, layer_sums(layer, x))
            margins.append(margin)
        activations.append(x)
    last = model.layers[-1]
    p = layer_sums(last, x)
    scores = layer_scores(last, p) if (last.bias is not None or last.bn is not None) else p.astype(np.float64)
    if last.output_scale is not None:
        scores = scores * last.output_scale
    return Execution(scores, np.argmax(scores, axis=1), activations, margins)


# --- import --------------------------------------------------------------------------------------

def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float64)


def _batchnorm(entry: dict) -> BatchNorm | None:
    b = entry.get("bn")
    if b is None:
        return None
    return BatchNorm(_array(b["gamma"]), _array(b["beta"]), _array(b["mean"]), _array(b["var"]), float(b["eps"]))


def hardware_column_order(shape) -> np.ndarray:
    """For a (C, H, W) tensor flattened by PyTorch in (c, y, x) order: the PyTorch index of each
    element in the hardware's (y, x, c) order (hardware column (y*W + x)*C + c = PyTorch column
    (c*H + y)*W + x), to permute a dense layer's weight columns or an image's pixels."""
    c, h, w = (int(v) for v in shape)
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _conv_layers(i: int, entry: dict) -> list:
    """A model file's conv entry (training/model_file.py, version 2) as a ConvLayer and, when the entry
    carries one, the MaxPoolLayer after it."""
    latent = _array(entry["weight"])
    if latent.ndim != 4 or latent.shape[2] != latent.shape[3]:
        raise CompileError(f"layer {i} is a conv with weights of shape {latent.shape}: xnorflow takes square "
                           "K x K kernels (O, C, K, K); retrain with BinaryConv2d")
    o, c, k, _ = latent.shape
    in_shape = tuple(int(v) for v in entry["in_shape"])
    if in_shape[0] != c:
        raise CompileError(f"layer {i}: a conv over {c} channels on an input of shape {in_shape}: the model "
                           "file is inconsistent, retrain it")
    # (O, C, ky, kx) -> rows ordered (ky, kx, c), c fastest (DESIGN.md 2a); sign(0) = +1 as in training
    weights = (latent.transpose(0, 2, 3, 1).reshape(o, k * k * c) >= 0).astype(np.uint8)
    pad_value = 1 if float(entry.get("pad_value") or -1) > 0 else 0
    conv = ConvLayer(weights=weights, in_shape=in_shape, kernel=k, padding=int(entry.get("padding") or 0),
                     pad_value=pad_value, bias=_array(entry["bias"]) if entry.get("bias") is not None else None,
                     bn=_batchnorm(entry))
    pool = entry.get("pool")
    if not pool:
        return [conv]
    return [conv, MaxPoolLayer(in_shape=conv.out_shape, size=int(pool["size"]), before_bn=bool(pool["before_bn"]))]


def model_from_file_dict(data: dict) -> BnnModel:
    """Build the compiler's model from a loaded model file (training/model_file.py documents it)."""
    entries = data["layers"]
    if not entries:
        raise CompileError("the model file has no layers: train a model with `xnorflow train`")
    layers = []
    for i, entry in enumerate(entries):
        is_output = i == len(entries) - 1
        if entry.get("kind", "dense") == "conv":
            if is_output:
                raise CompileError(f"layer {i}, the last, is a conv: end the model in a dense layer that gives "
                                   "the class scores")
            layers += _conv_layers(i, entry)
            continue
        latent = _array(entry["weight"])
        if latent.ndim != 2:
            raise CompileError(f"layer {i} has weights of shape {latent.shape}, not a dense layer's 2-D "
                               f"matrix; this xnorflow builds layers of kind {', '.join(kinds('layer'))}: "
                               "use BinaryLinear or BinaryConv2d layers")
        weights = (latent >= 0).astype(np.uint8)   # sign(0) = +1, as in training
        if entry.get("flatten_from") is not None:
            shape = tuple(int(v) for v in entry["flatten_from"])
            if int(np.prod(shape)) != weights.shape[1]:
                raise CompileError(f"layer {i} flattens a {shape} tensor into {weights.shape[1]} inputs: the "
                                   "model file is inconsistent, retrain it")
            weights = weights[:, hardware_column_order(shape)]
        scale = entry.get("scale")
        if scale is not None and not is_output:
            raise CompileError(f"layer {i} has an output scale but is not the last layer: "
                               "only the output layer may carry one")
        layers.append(DenseLayer(weights=weights, is_output=is_output,
                                 bias=_array(entry["bias"]) if entry.get("bias") is not None else None,
                                 bn=_batchnorm(entry), output_scale=None if scale is None else float(scale)))
    for i in range(1, len(layers)):
        previous, layer = layers[i - 1], layers[i]
        given = previous.out_bits if isinstance(previous, (ConvLayer, MaxPoolLayer)) else previous.n_out
        taken = int(np.prod(layer.in_shape)) if isinstance(layer, (ConvLayer, MaxPoolLayer)) else layer.n_in
        if given != taken:
            raise CompileError(f"layer {i} takes {taken} inputs but layer {i - 1} gives {given}: the model's "
                               "layer sizes must chain")
    fmt = dict(data.get("input") or {})
    layers[0] = with_input_format(layers[0], fmt)
    return BnnModel(tuple(layers), arch=str(data.get("arch", "custom")), dataset=str(data.get("dataset", "unknown")),
                    input_format=fmt, accuracy_torch=data.get("accuracy_torch"))


def with_input_format(first, fmt: dict):
    """The first layer taking the model file's input format: unchanged for bits; for b-bit integers with
    ``input_bits`` b and the normalisation per element of its weight row (the mean of the element's
    channel, c fastest in a conv's window, (c, y, x) order in a dense layer's row). CompileError for a
    format that is unknown or does not fold."""
    from xnorflow.training.datasets import BITS_FORMAT, input_format_problem, input_scale

    if not fmt:                              # a dict from before input formats: bits
        return first
    problem = input_format_problem(fmt)
    if problem:
        raise CompileError(f"{problem}: re-create the model with `xnorflow train --input-bits 1|8`")
    if fmt["format"] == BITS_FORMAT:
        return first
    mean = np.asarray(fmt["mean"], dtype=np.float64)
    if first.is_output:
        raise CompileError("the model's only layer takes integer inputs and gives the class scores, whose input "
                           "means would differ per class: add a hidden layer")
    if isinstance(first, ConvLayer):
        if first.padding:
            raise CompileError(f"the first conv pads its {fmt['bits']}-bit input by {first.padding}: a conv on "
                               "integer inputs must be valid (padding 0); retrain it")
        element_mean = np.tile(mean, first.kernel * first.kernel)
    else:
        if first.n_in % len(mean):
            raise CompileError(f"{len(mean)} input means for a first layer of {first.n_in} inputs: give one mean "
                               "per channel of the image")
        element_mean = np.repeat(mean, first.n_in // len(mean))
    return replace(first, input_bits=int(fmt["bits"]), input_mean=element_mean, input_scale=input_scale(fmt))


def import_model(path) -> BnnModel:
    """Load a model file written by `xnorflow train` (or training.model_file.save_model_file)."""
    from xnorflow.training.model_file import load_model_file

    return model_from_file_dict(load_model_file(path))
