"""Test frames of an integer-input model and flow's reuse check of the training options."""
import argparse

import numpy as np
import pytest

from xnorflow.compiler.flow import check_model_matches, training_options
from xnorflow.compiler.model import CompileError, execute, hardware_column_order
from xnorflow.compiler.passes import streamline
from xnorflow.compiler.source import ModelFileSource
from xnorflow.training.datasets import load_dataset, unpack_elements
from xnorflow.training.model_file import load_model_file
from xnorflow.training.train import train


@pytest.fixture(scope="module")
def scnv_int(tmp_path_factory):
    path = tmp_path_factory.mktemp("int") / "scnv8.pt"
    train("scnv", "digits", path, epochs=1, progress=False, threads=1, input_bits=8)
    return path


def test_int_conv_frames_are_pixel_major_b_bits_per_pixel(scnv_int):
    source = ModelFileSource(scnv_int)
    frames = source.test_frames(None)
    digits = load_dataset("digits")
    assert frames.bits.shape == (len(digits.test_images), 64 * 8) and frames.input_format["format"] == "int"
    stream = digits.test_images[:, hardware_column_order((1, 8, 8))]
    np.testing.assert_array_equal(frames.values, stream)
    np.testing.assert_array_equal(unpack_elements(frames.bits, 8), stream)
    first = source.model.layers[0]
    assert first.kind == "conv" and first.input_bits == 8 and first.padding == 0
    # the folded integer execution of the frames' values follows PyTorch on the test images
    folded = execute(streamline(source.model), frames.values)
    assert np.mean(folded.predictions == frames.reference_predictions) >= 0.99


def flow_args(**given):
    keys = ("arch", "dataset", "seed", "epochs", "input_bits", "teacher", "temperature", "stochastic_weights",
            "activation_grad")
    return argparse.Namespace(**{key: given.get(key) for key in keys})


def test_flow_reuses_a_model_only_with_the_training_options_given(scnv_int):
    record = load_model_file(scnv_int)
    check_model_matches(record, scnv_int, flow_args(arch="scnv", input_bits=8))
    check_model_matches(record, scnv_int, flow_args(stochastic_weights=False))
    for given, option in [({"input_bits": 1}, "--input-bits 8, not 1"), ({"teacher": "auto"}, "--teacher None"),
                          ({"stochastic_weights": True}, "--stochastic-weights False"),
                          ({"activation_grad": "approxsign"}, "--activation-grad hardtanh, not approxsign")]:
        with pytest.raises(CompileError, match=option):
            check_model_matches(record, scnv_int, flow_args(**given))
    assert training_options(flow_args(input_bits=8)) == {"input_bits": 8}


def test_qonnx_export_refuses_integer_inputs(scnv_int, tmp_path):
    pytest.importorskip("onnx")
    from xnorflow.compiler.qonnx_export import export_qonnx_file

    with pytest.raises(CompileError, match="8-bit integer inputs; QONNX export writes models on binarised"):
        export_qonnx_file(scnv_int, tmp_path / "m.onnx")
