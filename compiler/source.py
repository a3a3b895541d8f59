"""What a compile reads: an xnorflow model file (.pt) or a QONNX graph (.onnx), as one interface.

``read_source(path)`` gives the compiler's BnnModel (before any pass) and, once the design is known to
fit, ``test_frames(dataset)``: the input frames to compile as golden test vectors, their labels and the
source model's own predictions (PyTorch's for a model file, the graph's float32 execution for QONNX).

A frame is the bit vector the hardware takes, in stream order (a conv input pixel-major (y, x), channel
within a pixel): one bit per pixel for bits inputs; for b-bit integer inputs pixel i occupies frame bits
[i*b, (i+1)*b), LSB first (training.datasets.encode_frames). ``values`` are the same inputs one element
each (bits, or the integers): what the compiler's own execution (model.execute) takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .model import BnnModel, CompileError, ConvLayer, hardware_column_order, model_from_file_dict

# Without a dataset, a QONNX graph is compiled with this many seeded random frames as test vectors.
RANDOM_FRAMES = 1000
RANDOM_SEED = 0


@dataclass
class TestFrames:
    dataset: str | None
    bits: np.ndarray
    labels: np.ndarray | None
    reference_predictions: np.ndarray
    input_format: dict
    values: np.ndarray | None = None        # (frames, elements) in stream order; None: the bits themselves

    def __post_init__(self):
        if self.values is None:
            self.values = self.bits


def is_onnx(path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


class ModelFileSource:
    format = "xnorflow"
    reference_name = "PyTorch model"

    def __init__(self, path):
        from xnorflow.training.model_file import load_model_file

        self.record = load_model_file(path)
        self.model: BnnModel = model_from_file_dict(self.record)
        self.arch = self.record["arch"]

    def test_frames(self, dataset: str | None) -> TestFrames:
        from xnorflow.training.datasets import encode_frames, input_values, load_dataset
        from xnorflow.training.model_file import model_from_file, predict

        record = self.record
        name = dataset or record["dataset"]
        data = load_dataset(name)
        fmt = record["input"]
        if data.n_features != record["in_features"]:
            raise CompileError(f"dataset {name} has {data.n_features} input features but the model takes "
                               f"{record['in_features']}: compile with the dataset the model was trained on")
        reference = predict(model_from_file(record), input_values(data.test_images, fmt))
        pixels = data.test_images
        first = self.model.layers[0]
        if isinstance(first, ConvLayer):
            # Images arrive in PyTorch's (c, y, x) order; the stream carries pixels, (y, x, c).
            pixels = np.ascontiguousarray(pixels[:, hardware_column_order(first.in_shape)])
        return TestFrames(name, encode_frames(pixels, fmt), data.test_labels.astype(np.int64), reference, dict(fmt),
                          input_values(pixels, fmt))


class QonnxSource:
    format = "qonnx"
    reference_name = "QONNX graph (float32)"

    def __init__(self, path):
        from .qonnx_import import import_qonnx

        self.imported = import_qonnx(path)
        self.model: BnnModel = self.imported.model
        self.arch = self.model.arch

    def test_frames(self, dataset: str | None) -> TestFrames:
        from xnorflow.training.datasets import binarize, bits_format, load_dataset

        imported = self.imported
        n_in = self.model.input_bits
        if dataset is None:
            bits = np.random.default_rng(RANDOM_SEED).integers(0, 2, (RANDOM_FRAMES, n_in)).astype(np.uint8)
            rule = {"format": "bits", "rule": "graph input >= threshold", "threshold": imported.input_threshold()}
            return TestFrames(None, bits, None, imported.graph_predictions_from_bits(bits), rule)
        data = load_dataset(dataset)
        if data.n_features != n_in:
            raise CompileError(f"dataset {dataset} has {data.n_features} input features but the graph takes "
                               f"{n_in}: give --dataset the dataset the model was trained on")
        rule = imported.binarize_rule(data.max_value)
        bits = binarize(data.test_images, rule)
        return TestFrames(dataset, bits, data.test_labels.astype(np.int64),
                          imported.graph_predictions_from_bits(bits), bits_format(rule))


def read_source(path):
    """The model at ``path``: a QONNX graph when it ends in .onnx, else an xnorflow model file."""
    return QonnxSource(path) if is_onnx(path) else ModelFileSource(path)


__all__ = ["RANDOM_FRAMES", "ModelFileSource", "QonnxSource", "TestFrames", "is_onnx", "read_source"]
