"""qonnx's own execution of a QONNX graph, batched: the reference the importer is checked against."""
from __future__ import annotations

import numpy as np


def batched(onnx_path, batch: int):
    """A qonnx ModelWrapper of the graph with its batch dimension set to ``batch``.

    Brevitas exports a fixed batch of 1 (a Reshape to [1, n]); the Reshape's shape constant and every
    shape on the image path get the batch instead.
    """
    import onnx
    from onnx import numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import RemoveStaticGraphInputs
    from qonnx.transformation.infer_shapes import InferShapes

    proto = onnx.load(str(onnx_path))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape":
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            assert shape.size == 2 and shape[0] == 1, shape
            shape[0] = batch
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), node.input[1]))
    # Every tensor on the image path has the batch as its first dimension: 1 -> batch.
    dynamic = {next(i.name for i in graph.input if i.name not in inits)}
    for node in graph.node:
        if any(i in dynamic for i in node.input):
            dynamic.update(node.output)
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.name in dynamic:
            info.type.tensor_type.shape.dim[0].dim_value = batch
    model = ModelWrapper(proto).transform(RemoveStaticGraphInputs()).transform(InferShapes())
    assert model.check_all_tensor_shapes_specified(fix_missing_init_shape=True)
    return model


def execute(onnx_path, raw: np.ndarray, chunk: int = 2000) -> dict:
    """Run graph inputs (frames, *input shape) through qonnx's execute_onnx.

    Returns ``activations``: per activation BipolarQuant (one fed by the image path, not a weight), its
    output (frames, n) float32; ``last_matmul``: the last MatMul/Gemm's output; ``output``: the graph's.
    """
    from qonnx.core.onnx_exec import execute_onnx

    results = {"activations": None, "last_matmul": [], "output": []}
    for start in range(0, len(raw), chunk):
        part = raw[start:start + chunk].astype(np.float32)
        model = batched(onnx_path, len(part))
        name = model.graph.input[0].name
        inits = {i.name for i in model.graph.initializer}
        context = execute_onnx(model, {name: part}, return_full_exec_context=True)
        quants = [n for n in model.graph.node
                  if n.op_type == "BipolarQuant" and n.input[0] not in inits and context[n.input[0]].shape[0] == len(part)
                  and not _is_constant_path(model, n.input[0], inits)]
        matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
        acts = [context[n.output[0]].reshape(len(part), -1) for n in quants]
        if results["activations"] is None:
            results["activations"] = [[] for _ in acts]
        for store, a in zip(results["activations"], acts):
            store.append(a)
        results["last_matmul"].append(context[matmuls[-1].output[0]].reshape(len(part), -1))
        results["output"].append(context[model.graph.output[0].name].reshape(len(part), -1))
    return {"activations": [np.concatenate(a) for a in results["activations"]],
            "last_matmul": np.concatenate(results["last_matmul"]), "output": np.concatenate(results["output"])}


def _is_constant_path(model, tensor, inits) -> bool:
    producer = model.find_producer(tensor)
    if producer is None:
        return tensor in inits
    return all(_is_constant_path(model, i, inits) for i in producer.input if i)
