"""Import a QONNX graph (Brevitas ``export_qonnx``, FINN's input format) into the compiler's BnnModel.

The importer pattern-matches a single chain of nodes, from the graph input to its output:

    [Reshape|Flatten] (Mul|Add|Sub|Div const)* BipolarQuant                  -> the input binarisation rule
    ( MatMul|Gemm  (Add|Sub|Mul|Div const | BatchNormalization)*  BipolarQuant )*   -> hidden layers
      MatMul|Gemm  (Add|Sub|Mul|Div const | BatchNormalization)*  [ArgMax|TopK|Softmax|LogSoftmax]
                                                                              -> the output layer

A matmul's weight input is any constant sub-graph (``BipolarQuant(W, s)``, ``Transpose``, a +-c
constant): it must evaluate to +-c with one positive c per output channel; the bits are its signs and
c goes into the layer's slope. The input scale of a matmul is the scale of the BipolarQuant before it.
Everything between a matmul and the next BipolarQuant is one affine per channel and becomes the layer's
eval-mode BatchNorm (FoldBatchNormIntoThresholds then makes integer thresholds of it, DESIGN.md 2):

    y = post(bn(pre(dot)))   pre(d) = s * d + c  (weight scale x input scale, Gemm C, Add/Sub/Mul/Div)
                             bn     = the BatchNormalization node (eps read from the node)
                             post   = Add/Sub/Mul/Div after it (e.g. TensorNorm at the output)
        = BatchNorm(gamma * s * M, beta * M + K, (mean - c) / s, var, eps)

The graph input is a float tensor; with a dataset, its value is ``pixel / max_value`` (what
torchvision's ToTensor feeds a Brevitas BNN-PYNQ model), and the binarisation rule ``pixel >= T`` is
found by running the input affine in float32, as onnxruntime does, on every pixel value.

Anything else is refused with one line naming the node and its op type (CompileError).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import BatchNorm, BnnModel, CompileError, DenseLayer

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
# Ops that only reshape a (1, n) vector: passed through wherever they appear in the chain.
SHAPE_OPS = ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Dropout")
AFFINE_OPS = ("Add", "Sub", "Mul", "Div")
FINAL_OPS = ("ArgMax", "TopK", "Softmax", "LogSoftmax")
# Ops evaluated when all their inputs are constants (weights, scales, TensorNorm's sqrt(var + eps)).
CONSTANT_OPS = ("Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Pow", "Sqrt",
                "Add", "Sub", "Mul", "Div", "Neg", "Reciprocal", "BipolarQuant", "Constant")


class QonnxImportError(CompileError):
    """A QONNX graph xnorflow cannot compile; one line naming the node, its op type and why."""


def _where(node) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def refuse(node, why: str) -> QonnxImportError:
    return QonnxImportError(f"{_where(node)}: {why}" if node is not None else why)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@dataclass
class Step:
    """One node of the chain in float32, for the graph's own (float) execution."""

    op: str
    const: np.ndarray | None = None
    const_first: bool = False
    attrs: dict = field(default_factory=dict)


@dataclass
class ImportedQonnx:
    """What a QONNX graph compiles to: the BnnModel plus the facts a compile needs about its input."""

    model: BnnModel
    input_shape: tuple[int, ...]
    input_steps: list[Step]          # the input affine up to (not including) its BipolarQuant, float32
    steps: list[Step]                # the whole chain, for float execution (graph_scores)
    path: Path

    def input_bits(self, raw: np.ndarray) -> np.ndarray:
        """Graph inputs (frames, ...) float -> the first layer's bits, exactly as the graph binarises."""
        x = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        for step in self.input_steps:
            x = _apply_affine(step, x)
        return (x >= 0).astype(np.uint8)

    def input_threshold(self) -> float:
        """t with bit = (graph input >= t), in float64 (the importer refuses a negative input scale)."""
        a, c = 1.0, 0.0
        for step in self.input_steps:
            v = float(step.const.reshape(-1)[0])
            if step.op == "Add":
                c += v
            elif step.op == "Sub":
                a, c = (-a, v - c) if step.const_first else (a, c - v)
            elif step.op == "Mul":
                a, c = a * v, c * v
            else:
                a, c = a / v, c / v
        return -c / a

    def binarize_rule(self, max_value: int) -> dict:
        """The rule ``pixel >= T`` on integer pixels 0..max_value fed as pixel / max_value."""
        pixels = np.arange(max_value + 1, dtype=np.float32)
        bits = self.input_bits((pixels / np.float32(max_value))[:, None])[:, 0]
        if np.any(np.diff(bits.astype(np.int64)) < 0):
            raise QonnxImportError(
                "the graph's input quantizer turns bright pixels into -1 and dark ones into +1 (a negative "
                "input scale); xnorflow binarises by pixel >= T: export the model with a positive input scale")
        ones = np.flatnonzero(bits)
        threshold = int(ones[0]) if ones.size else max_value + 1
        return {"rule": "pixel >= threshold", "threshold": threshold, "max_value": int(max_value),
                "graph_input": "pixel / max_value"}

    def graph_scores(self, raw: np.ndarray) -> np.ndarray:
        """The graph's output for graph inputs, in float32 (the source model's own execution)."""
        x = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
        for step in self.steps:
            x = _apply(step, x)
        return x

    def graph_predictions_from_bits(self, bits: np.ndarray) -> np.ndarray:
        """The graph's class for already-binarised inputs: its float32 chain after the input quantizer."""
        x = np.where(np.asarray(bits) > 0, np.float32(1), np.float32(-1))
        start = len(self.input_steps)
        scale = self.steps[start].const      # the input BipolarQuant's scale
        x = (x * scale).astype(np.float32)
        for step in self.steps[start + 1:]:
            x = _apply(step, x)
        return np.argmax(x, axis=1).astype(np.int64)


def _apply_affine(step: Step, x: np.ndarray) -> np.ndarray:
    c = step.const
    a, b = (c, x) if step.const_first else (x, c)
    return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[step.op](a, b).astype(np.float32)


def _apply(step: Step, x: np.ndarray) -> np.ndarray:
    if step.op in AFFINE_OPS:
        return _apply_affine(step, x)
    if step.op == "BipolarQuant":
        return np.where(x >= 0, np.float32(1), np.float32(-1)) * step.const
    if step.op == "MatMul":
        return (x @ step.const).astype(np.float32)
    if step.op == "BatchNormalization":
        g, b, m, v = step.const
        eps = np.float32(step.attrs["epsilon"])
        return ((x - m) / np.sqrt(v + eps) * g + b).astype(np.float32)
    return x   # shape ops and the final argmax-like op (the class is the argmax of the scores)


# --- reading the graph -----------------------------------------------------------------------------------

def _load(path: Path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise QonnxImportError("reading ONNX needs the onnx package: pip install 'xnorflow[qonnx]'") from None
    if not path.is_file():
        raise QonnxImportError(f"ONNX file {path} not found: export one with brevitas.export.export_qonnx "
                               "or `xnorflow export`")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise QonnxImportError(f"{path} is not a readable ONNX file ({first}): export it again") from None
    if not proto.graph.node:
        raise QonnxImportError(f"{path} holds no ONNX graph nodes: export the model again")
    return proto, numpy_helper


def _constants(graph, numpy_helper) -> tuple[dict, set]:
    """Every tensor that is a constant (initializers, Constant nodes, nodes of constants only)."""
    consts = {init.name: numpy_helper.to_array(init).astype(np.float64) if numpy_helper.to_array(init).dtype.kind == "f"
              else numpy_helper.to_array(init) for init in graph.initializer}
    folded = set()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            value = _attr(node, "value")
            if value is None:
                raise refuse(node, "only Constant nodes with a tensor value are supported")
            consts[node.output[0]] = numpy_helper.to_array(value)
            folded.add(index)
        elif node.op_type in CONSTANT_OPS and node.input and all(i in consts or i == "" for i in node.input):
            consts[node.output[0]] = _fold(node, [consts.get(i) for i in node.input])
            folded.add(index)
    return consts, folded


def _fold(node, args):
    op = node.op_type
    x = args[0]
    if op in ("Identity", "Cast"):
        return x
    if op == "Transpose":
        perm = _attr(node, "perm")
        return np.transpose(x, perm)
    if op == "Reshape":
        return np.reshape(x, [int(d) if d != 0 else x.shape[i] for i, d in enumerate(args[1])])
    if op == "Flatten":
        axis = _attr(node, "axis", 1)
        return np.reshape(x, (int(np.prod(x.shape[:axis])), -1))
    if op in ("Squeeze", "Unsqueeze"):
        axes = args[1] if len(args) > 1 and args[1] is not None else _attr(node, "axes")
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
        for a in sorted(int(a) for a in axes):
            x = np.expand_dims(x, a)
        return x
    if op == "Pow":
        return np.power(x, args[1])
    if op == "Sqrt":
        return np.sqrt(x)
    if op == "Neg":
        return -x
    if op == "Reciprocal":
        return 1.0 / x
    if op in AFFINE_OPS:
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, args[1])
    if op == "BipolarQuant":
        scale = np.asarray(args[1], dtype=np.float64)
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise refuse(node, "a BipolarQuant scale that is not positive has no +-1 weights: scales must "
                               "be positive")
        return np.where(x >= 0, 1.0, -1.0) * scale
    raise refuse(node, "cannot evaluate this constant")   # pragma: no cover - CONSTANT_OPS lists the above


def _scalar(node, value, what: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0 or not np.all(arr == arr.flat[0]):
        raise refuse(node, f"{what} differs per channel ({arr.size} values); xnorflow takes one scale per tensor "
                           "here: export it with a per-tensor scale")
    return float(arr.flat[0])


def _per_channel(node, value, n: int, what: str) -> np.ndarray:
    """A constant broadcast against a (1, n) vector, as n float64 values."""
    arr = np.asarray(value, dtype=np.float64)
    flat = arr.reshape(-1)
    if flat.size == 1:
        return np.full(n, flat[0])
    if flat.size == n and arr.shape[-1] == n:
        return flat.copy()
    raise refuse(node, f"{what} of shape {arr.shape} does not broadcast over the {n} channels of the layer")


def _matmul_weights(node, weights: np.ndarray, n_in_expected: int | None):
    """(n_in, n_out) +-c constant -> (n_out, n_in) bits and the positive c per output channel."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise refuse(node, f"weights of shape {w.shape}: xnorflow compiles dense layers (2-D weights) here")
    magnitude = np.abs(w)
    scale = magnitude.max(axis=0)
    if not np.all(np.isfinite(w)) or not np.all(magnitude == scale[None, :]) or not np.all(scale > 0):
        raise refuse(node, "the weights are not binary (+-c with one positive c per output channel): quantize "
                           "them with a 1-bit weight quantizer (BipolarQuant)")
    if n_in_expected is not None and w.shape[0] != n_in_expected:
        raise refuse(node, f"the weights take {w.shape[0]} inputs but the layer before gives {n_in_expected}")
    return (w > 0).astype(np.uint8).T.copy(), scale


@dataclass
class _Layer:
    node: object
    bits: np.ndarray
    s: np.ndarray            # pre slope (weight scale x input scale), per channel
    c: np.ndarray            # pre offset
    bn: tuple | None = None  # (gamma, beta, mean, var, eps) of the first BatchNormalization
    post_m: np.ndarray | None = None
    post_k: np.ndarray | None = None

    def affine(self, node, op, value, const_first):
        n = self.bits.shape[0]
        v = _per_channel(node, value, n, f"the {op} constant")
        if const_first and op == "Div":
            raise refuse(node, "divides a constant by the layer's output, which is not an affine function")
        if op == "Sub" and const_first:        # v - y = -1 * y + v
            self._mul(-np.ones(n))
            self._add(v)
        elif op in ("Add", "Sub"):
            self._add(v if op == "Add" else -v)
        else:
            if np.any(v == 0) or not np.all(np.isfinite(v)):
                raise refuse(node, f"{op} by {v[(v == 0) | ~np.isfinite(v)][0]:g} makes the layer's output "
                                   "constant or undefined")
            self._mul(v if op == "Mul" else 1.0 / v)

    def _add(self, v):
        if self.bn is None:
            self.c = self.c + v
        else:
            self.post_k = self.post_k + v

    def _mul(self, v):
        if self.bn is None:
            self.s, self.c = self.s * v, self.c * v
        else:
            self.post_m, self.post_k = self.post_m * v, self.post_k * v

    def batchnorm(self, node, consts):
        n = self.bits.shape[0]
        if len(node.input) < 5 or not all(i in consts for i in node.input[1:5]):
            raise refuse(node, "its scale, bias, mean and variance must be constants (an eval-mode batch-norm)")
        gamma, beta, mean, var = (_per_channel(node, consts[i], n, name) for i, name in
                                  zip(node.input[1:5], ("the scale", "the bias", "the mean", "the variance")))
        eps = float(_attr(node, "epsilon", 1e-5))
        if _attr(node, "training_mode", 0):
            raise refuse(node, "training_mode is set: export the model in eval mode (model.eval())")
        if self.bn is None:
            self.bn = (gamma, beta, mean, var, eps)
            self.post_m, self.post_k = np.ones(n), np.zeros(n)
        else:   # a second batch-norm is an affine after the first
            slope = gamma / np.sqrt(var + eps)
            self._mul(slope)
            self._add(beta - slope * mean)

    def dense(self, is_output: bool) -> DenseLayer:
        if np.any(self.s == 0):
            raise refuse(self.node, "a zero weight or input scale makes the layer's output constant")
        if self.bn is None:
            gamma, beta, mean, var, eps = np.ones_like(self.s), np.zeros_like(self.s), np.zeros_like(self.s), \
                np.ones_like(self.s), 0.0
            m, k = np.ones_like(self.s), np.zeros_like(self.s)
        else:
            gamma, beta, mean, var, eps = self.bn
            m, k = self.post_m, self.post_k
        if np.all(self.s == 1) and np.all(m == 1) and np.all(k == 0) and self.bn is not None:
            # The common case kept as the model file has it: the bias stays a bias, as FoldBatchNorm expects.
            bias = None if np.all(self.c == 0) else self.c
            bn = BatchNorm(gamma, beta, mean, var, eps)
        else:
            bias = None
            bn = BatchNorm(gamma * self.s * m, beta * m + k, (mean - self.c) / self.s, var, eps)
        return DenseLayer(weights=self.bits, is_output=is_output, bias=bias, bn=bn)


def _chain(graph, consts: dict, folded: set):
    """The dynamic nodes in order from the single graph input to the output; refuses branches and joins."""
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise QonnxImportError(f"the graph has {len(inputs)} non-constant inputs "
                               f"({', '.join(i.name for i in inputs) or 'none'}): xnorflow compiles graphs "
                               "with one input (the image)")
    if len(graph.output) != 1:
        raise QonnxImportError(f"the graph has {len(graph.output)} outputs: xnorflow compiles graphs with one "
                               "output (the class scores or class)")
    dynamic = [node for index, node in enumerate(graph.node) if index not in folded]
    consumers: dict[str, list] = {}
    for node in dynamic:
        _check_op(node)
        live = [i for i in node.input if i and i not in consts]
        if len(live) > 1:
            raise refuse(node, f"joins {len(live)} branches ({', '.join(live)}): xnorflow compiles a single "
                               "chain of layers, no skip connections or concatenations")
        if not live:
            raise refuse(node, "has no input from the image path and cannot be evaluated as a constant")
        consumers.setdefault(live[0], []).append(node)
    for tensor, users in consumers.items():
        if len(users) > 1:
            raise refuse(users[1], f"tensor {tensor!r} feeds {len(users)} nodes (a branch): xnorflow compiles "
                                   "a single chain of layers")
    chain, tensor = [], inputs[0].name
    while tensor in consumers:
        node = consumers[tensor][0]
        chain.append(node)
        tensor = node.output[0]
    if tensor != graph.output[0].name or len(chain) != len(dynamic):
        stray = next((n for n in dynamic if n not in chain), None)
        raise refuse(stray, "is not on the chain from the graph's input to its output") if stray is not None \
            else QonnxImportError("the graph's output is not reached from its input through one chain of nodes")
    return inputs[0], chain


def _input_shape(value_info) -> tuple[int, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def _check_op(node) -> None:
    op = node.op_type
    if op == "Quant":
        raise refuse(node, "a multi-bit quantizer: xnorflow compiles 1-bit weights and activations "
                           "(BipolarQuant); multi-bit inputs and weights are not supported yet")
    if op in ("Sign",):
        raise refuse(node, "ONNX Sign gives 0 for 0, which has no bit: quantize activations with BipolarQuant "
                           "(0 -> +1), e.g. brevitas QuantIdentity(bit_width=1)")
    if op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool"):
        raise refuse(node, "convolution and pooling layers are not supported yet: xnorflow compiles "
                           "fully connected BNNs (TFC/SFC/LFC)")
    if op in ("Trunc", "IntQuant", "FloatQuant", "QuantizeLinear", "DequantizeLinear", "MultiThreshold"):
        raise refuse(node, "a quantizer xnorflow does not compile: use 1-bit BipolarQuant")


def import_qonnx(path) -> ImportedQonnx:
    """Read a QONNX file and pattern-match it into a BnnModel (module docstring); QonnxImportError if not."""
    path = Path(path)
    proto, numpy_helper = _load(path)
    graph = proto.graph
    consts, folded = _constants(graph, numpy_helper)
    graph_input, chain = _chain(graph, consts, folded)

    steps: list[Step] = []
    input_steps: list[Step] = []
    layers: list[_Layer] = []
    state = "input"          # input -> bits -> affine (-> bits ...) [-> final]
    act_scale = None
    input_slope = 1.0
    for node in chain:
        op = node.op_type
        _check_op(node)
        live = next(i for i in node.input if i and i not in consts)
        const_inputs = [consts[i] for i in node.input if i in consts]
        if state == "final":
            raise refuse(node, f"follows the network's final {steps[-1].op}: nothing may come after it")
        if op in SHAPE_OPS:
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                raise refuse(node, "a Dropout with a mask output: export the model in eval mode")
            steps.append(Step(op))
            continue
        if op in AFFINE_OPS:
            if len(const_inputs) != 1:
                raise refuse(node, f"{op} needs one constant input")
            const_first = node.input[0] != live
            value = np.asarray(const_inputs[0], dtype=np.float32)
            if state == "input":
                _scalar(node, value, f"the input's {op} constant")   # one rule for every pixel
                if op == "Mul":
                    input_slope *= float(value.flat[0])
                elif op == "Div":
                    if const_first:
                        raise refuse(node, "divides a constant by the input, which is not an affine map")
                    input_slope /= float(value.flat[0])
                elif op == "Sub" and const_first:
                    input_slope = -input_slope
                step = Step(op, value.reshape(-1)[:1].copy(), const_first)
                input_steps.append(step)
                steps.append(step)
                continue
            if state == "bits":
                raise refuse(node, f"{op} between a BipolarQuant and the next MatMul would change the +-1 "
                                   "activations: move it after the MatMul")
            layers[-1].affine(node, op, const_inputs[0], const_first)
            steps.append(Step(op, value.reshape(1, -1) if value.size > 1 else value.reshape(-1)[:1].copy(),
                              const_first))
            continue
        if op == "BipolarQuant":
            if node.input[0] != live or node.input[1] not in consts:
                raise refuse(node, "its scale must be a constant")
            scale = np.asarray(consts[node.input[1]], dtype=np.float64)
            if scale.size > 1 and not np.all(scale == scale.flat[0]):
                raise refuse(node, f"a per-channel activation scale ({scale.size} values): the next layer's "
                                   "inputs must share one scale; use a per-tensor activation quantizer")
            s = float(scale.flat[0])
            if not (np.isfinite(s) and s > 0):
                raise refuse(node, f"activation scale {s:g}: a BipolarQuant scale must be positive")
            if state == "bits":
                raise refuse(node, "two BipolarQuants in a row: remove one")
            if state == "input" and not input_slope > 0:
                raise refuse(node, "the input reaches it through a negative or zero scale, so bright pixels would "
                                   "become -1: xnorflow binarises by pixel >= T; export with a positive input scale")
            act_scale = s
            steps.append(Step("BipolarQuant", np.float32(s)))
            state = "bits"
            continue
        if op in ("MatMul", "Gemm"):
            if state == "input":
                raise refuse(node, "the graph's input reaches a MatMul without a BipolarQuant: xnorflow's first "
                                   "layer takes bits; quantize the input with a 1-bit QuantIdentity")
            if state == "affine":
                raise refuse(node, "two matmuls without a BipolarQuant between them: every hidden layer must "
                                   "end in a 1-bit activation (BipolarQuant)")
            weight_name = node.input[1]
            if node.input[0] != live or weight_name not in consts:
                raise refuse(node, "its weights must be a constant (BipolarQuant of an initializer) and its "
                                   "input the activations")
            w = np.asarray(consts[weight_name], dtype=np.float64)
            bias = None
            if op == "Gemm":
                if _attr(node, "transA", 0):
                    raise refuse(node, "transA=1 is not supported: export with the activations as A")
                if _attr(node, "transB", 0):
                    w = w.T
                alpha = float(_attr(node, "alpha", 1.0))
                if not alpha > 0:
                    raise refuse(node, f"alpha {alpha:g}: a Gemm's alpha must be positive")
                w = w * alpha
                if len(node.input) > 2 and node.input[2]:
                    bias = np.asarray(consts[node.input[2]], dtype=np.float64) * float(_attr(node, "beta", 1.0))
            n_in = layers[-1].bits.shape[0] if layers else None
            bits, w_scale = _matmul_weights(node, w, n_in)
            layer = _Layer(node, bits, w_scale * act_scale, np.zeros(bits.shape[0]))
            if bias is not None:
                layer.affine(node, "Add", bias, False)
            layers.append(layer)
            steps.append(Step("MatMul", w.astype(np.float32)))
            if bias is not None:
                steps.append(Step("Add", np.asarray(bias, np.float32).reshape(1, -1)))
            state = "affine"
            continue
        if op == "BatchNormalization":
            if state != "affine":
                raise refuse(node, "a batch-norm must follow a MatMul/Gemm (before the BipolarQuant)")
            layers[-1].batchnorm(node, consts)
            steps.append(Step(op, tuple(np.asarray(consts[i], np.float32) for i in node.input[1:5]),
                              attrs={"epsilon": float(_attr(node, "epsilon", 1e-5))}))
            continue
        if op in FINAL_OPS:
            if state != "affine":
                raise refuse(node, f"{op} must follow the output layer's MatMul")
            if op == "TopK":
                k = consts.get(node.input[1]) if len(node.input) > 1 else None
                if k is None or int(np.asarray(k).reshape(-1)[0]) != 1:
                    raise refuse(node, "TopK with k > 1: the accelerator gives one class")
            if op == "ArgMax" and _attr(node, "select_last_index", 0):
                raise refuse(node, "select_last_index=1: the accelerator breaks ties to the lowest class")
            steps.append(Step(op))
            state = "final"
            continue
        raise refuse(node, "an op xnorflow does not compile: a QONNX BNN is a chain of MatMul/Gemm, "
                           "BatchNormalization, Add/Sub/Mul/Div by constants and BipolarQuant")
    if not layers:
        raise QonnxImportError(f"{path} has no MatMul/Gemm layer: nothing to compile")
    if state == "bits":
        raise QonnxImportError("the graph ends in a BipolarQuant: the output layer must give class scores "
                               "(end in MatMul/Gemm [TensorNorm] [ArgMax])")
    _check_output_affine(layers[-1])
    dense = [layer.dense(is_output=i == len(layers) - 1) for i, layer in enumerate(layers)]
    model = BnnModel(tuple(dense), arch="qonnx", dataset="none", input_format={})
    return ImportedQonnx(model=model, input_shape=_input_shape(graph_input), input_steps=input_steps,
                         steps=steps, path=path)


def _check_output_affine(layer: _Layer) -> None:
    """The output's affine must keep the argmax of the popcounts: one positive slope, one offset."""
    n = layer.bits.shape[0]
    if layer.bn is None:
        slope, offset = layer.s, layer.c
    else:
        gamma, beta, mean, var, eps = layer.bn
        g = gamma / np.sqrt(var + eps)
        slope = layer.s * g * layer.post_m
        offset = (g * (layer.c - mean) + beta) * layer.post_m + layer.post_k
    if not np.all(np.isfinite(slope)) or not np.all(np.isfinite(offset)):
        raise refuse(layer.node, "the output layer's scale is not finite")
    if np.any(slope < 0) and np.all(slope == slope[0]):
        raise refuse(layer.node, f"the output layer's scores are multiplied by {slope[0]:g} < 0 (a TensorNorm "
                                 "or batch-norm with negative weight), so the graph's class is the one with the "
                                 "fewest matching bits: retrain with a positive TensorNorm weight or clamp it")
    if not np.all(slope == slope[0]) or slope[0] <= 0:
        raise refuse(layer.node, f"the output layer's {n} class scores are scaled differently (a per-channel "
                                 "weight scale or batch-norm at the output), which changes the argmax of the "
                                 "popcounts the hardware compares: use a per-tensor scale and TensorNorm there")
    if not np.allclose(offset, offset[0], rtol=0, atol=0):
        raise refuse(layer.node, "the output layer adds a different offset per class (a bias or per-channel "
                                 "batch-norm), which changes the argmax of the popcounts: drop the bias of the "
                                 "last layer and end in a per-tensor TensorNorm")


__all__ = ["ImportedQonnx", "QonnxImportError", "import_qonnx"]
