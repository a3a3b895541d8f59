"""Write an xnorflow model file as a QONNX graph of the form Brevitas exports (FINN's input format).

    x (1, n_in) = pixel / max_value
    Sub(t) BipolarQuant(1)                                    the binarisation rule pixel >= T
    per hidden layer:  MatMul(BipolarQuant(W)) [Add(bias)] [BatchNormalization] BipolarQuant(1)
    output layer:      MatMul(BipolarQuant(W)) [Add(bias)] [BatchNormalization] [Mul(scale)]

W is stored as +-1 (sign of the latent weight, sign(0) = +1, as training uses), in MatMul's (n_in, n_out)
layout. The input threshold t is (T - 1/2) / max_value: halfway between two pixel values, so float32
rounding cannot move a pixel across it. qonnx's ``execute_onnx`` runs the graph; `xnorflow compile`
reads it back into the same thresholds (tests/compiler/test_qonnx.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .model import CompileError

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13


def _tensor(name, value):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def model_file_to_qonnx(record: dict):
    """An onnx.ModelProto computing what the model file ``record`` computes (training/model_file.py)."""
    import onnx
    from onnx import TensorProto, helper

    layers = record["layers"]
    rule = record["input"]
    if rule.get("format") != "bits":
        raise CompileError(f"the model takes {rule.get('bits')}-bit integer inputs; QONNX export writes models on "
                           "binarised inputs only: export a model trained with --input-bits 1")
    n_in = int(record["in_features"])
    threshold, max_value = int(rule["threshold"]), int(rule["max_value"])
    nodes, inits = [], [_tensor("one", [1.0])]

    def node(op, inputs, name, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain, **attrs))
        return name

    inits.append(_tensor("input_threshold", [(threshold - 0.5) / max_value]))
    x = node("Sub", ["x", "input_threshold"], "input_centered")
    x = node("BipolarQuant", [x, "one"], "input_bits", domain=QONNX_DOMAIN)
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        latent = layer["weight"].detach().cpu().numpy().astype(np.float64)
        inits.append(_tensor(f"layer{i}_weight", np.where(latent >= 0, 1.0, -1.0).T))
        w = node("BipolarQuant", [f"layer{i}_weight", "one"], f"layer{i}_weight_quant", domain=QONNX_DOMAIN)
        x = node("MatMul", [x, w], f"layer{i}_matmul")
        if layer.get("bias") is not None:
            inits.append(_tensor(f"layer{i}_bias", layer["bias"].detach().cpu().numpy()))
            x = node("Add", [x, f"layer{i}_bias"], f"layer{i}_bias_add")
        bn = layer.get("bn")
        if bn is not None:
            names = []
            for key in ("gamma", "beta", "mean", "var"):
                inits.append(_tensor(f"layer{i}_bn_{key}", bn[key].detach().cpu().numpy()))
                names.append(f"layer{i}_bn_{key}")
            x = node("BatchNormalization", [x, *names], f"layer{i}_batchnorm", epsilon=float(bn["eps"]))
        if not last:
            x = node("BipolarQuant", [x, "one"], f"layer{i}_act_quant", domain=QONNX_DOMAIN)
        elif layer.get("scale") is not None:
            inits.append(_tensor("output_scale", [float(layer["scale"])]))
            x = node("Mul", [x, "output_scale"], "output_scale_mul")
    n_out = int(layers[-1]["weight"].shape[0])
    nodes[-1].output[0] = "scores"
    graph = helper.make_graph(
        nodes, f"xnorflow_{record['arch']}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n_out])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="xnorflow",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    helper.set_model_props(model, {"xnorflow_arch": str(record["arch"]), "xnorflow_dataset": str(record["dataset"]),
                                   "graph_input": f"pixel / {max_value}",
                                   "binarize": f"pixel >= {threshold} of 0..{max_value}"})
    onnx.checker.check_model(model)
    return model


def export_qonnx_file(model_path, out_path) -> Path:
    """`xnorflow export model.pt -o model.onnx`: write the model file as a QONNX graph (atomically)."""
    try:
        import onnx  # noqa: F401 - the extra that writes ONNX is installed
    except ImportError:
        raise CompileError("writing ONNX needs the onnx package: pip install 'xnorflow[qonnx]'") from None
    from xnorflow.training.model_file import load_model_file

    record = load_model_file(model_path)
    proto = model_file_to_qonnx(record)
    out_path = Path(out_path)
    if out_path.is_dir() or out_path.is_symlink():
        raise CompileError(f"{out_path} is a {'folder' if out_path.is_dir() else 'symbolic link'}: give -o a plain "
                           "file path, e.g. model.onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


__all__ = ["export_qonnx_file", "model_file_to_qonnx"]
