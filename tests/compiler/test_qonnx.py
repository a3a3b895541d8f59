"""QONNX in and out: Brevitas BNN-PYNQ models compile bit-exact against qonnx's own execution.

For every model: on the test images and on random bit vectors, each hidden layer's bits equal the graph's
BipolarQuant outputs under qonnx's ``execute_onnx``, the output layer's popcounts give the graph's last
MatMul exactly (``2p - N`` times the scales), and the graph's class has the largest popcount (the two can
differ only on tied classes, which are counted). Needs the ``qonnx`` extra; skipped cleanly without it.
"""
import json
import time

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("onnx")
pytest.importorskip("qonnx")
pytest.importorskip("brevitas")

import brevitas_models
import qonnx_reference
from test_cli import assert_one_line_error

from xnorflow.compiler.model import execute, popcount_matrix
from xnorflow.compiler.passes import streamline
from xnorflow.compiler.qonnx_import import import_qonnx
from xnorflow.training.datasets import load_dataset

RANDOM_VECTORS = 10_000


def check_bit_exact(onnx_path, dataset, random_vectors=RANDOM_VECTORS, seed=0) -> dict:
    """The acceptance check on one graph; returns the figures (frames, ties, agreement)."""
    imported = import_qonnx(onnx_path)
    model = streamline(imported.model)
    n_in = model.input_bits
    raw_images = dataset.test_images.astype(np.float32) / np.float32(dataset.max_value)
    rule = imported.binarize_rule(dataset.max_value)
    image_bits = (dataset.test_images >= rule["threshold"]).astype(np.uint8)
    random_bits = np.random.default_rng(seed).integers(0, 2, (random_vectors, n_in)).astype(np.uint8)
    # Random bit vectors enter the graph as raw inputs on either side of the input threshold.
    raw_random = np.where(random_bits > 0, np.float32(1.0), np.float32(0.0))
    shape = imported.input_shape
    raw = np.concatenate([raw_images, raw_random]).reshape((-1, *shape[1:]))
    bits = np.concatenate([image_bits, random_bits])

    reference = qonnx_reference.execute(onnx_path, raw)
    graph_input_bits = (reference["activations"][0] > 0).astype(np.uint8)
    np.testing.assert_array_equal(graph_input_bits, bits, err_msg="the binarisation rule differs from the graph's")

    ours = execute(model, bits)
    assert len(ours.activations) == len(reference["activations"]) - 1
    for i, (mine, theirs) in enumerate(zip(ours.activations, reference["activations"][1:])):
        wrong = int(np.sum(mine != (theirs > 0)))
        assert wrong == 0, f"hidden layer {i}: {wrong} bits differ from qonnx's BipolarQuant outputs"

    last = model.layers[-1]
    p = popcount_matrix(ours.activations[-1], last.weights)
    dot = 2 * p - last.n_in
    matmul = reference["last_matmul"].astype(np.float64)
    # The graph's last MatMul is dot times (input scale x weight scale): exactly 2p - N once divided.
    scale = matmul[dot != 0] / dot[dot != 0]
    assert np.allclose(scale, scale[0], rtol=1e-6)
    np.testing.assert_array_equal(np.rint(matmul / scale[0]).astype(np.int64), dot)
    if scale[0] == 1.0:
        np.testing.assert_array_equal(matmul, dot)

    graph_class = np.argmax(reference["output"], axis=1)
    best = p.max(axis=1)
    assert np.all(p[np.arange(len(p)), graph_class] == best), "the graph's class does not have the top popcount"
    hardware_class = np.argmax(p, axis=1)
    differ = graph_class != hardware_class
    tied = (p == best[:, None]).sum(axis=1) > 1
    assert np.all(tied[differ])
    return {"frames": len(bits), "images": len(image_bits), "tied_frames": int(tied.sum()),
            "class_differs_on_ties": int(differ.sum()), "agreement": float(np.mean(~differ)),
            "threshold": rule["threshold"]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def trained(arch, dataset, tmp_path, dynamo, epochs=3, stress=False, **options):
    model = brevitas_models.build(arch, dataset.n_features, **options)
    brevitas_models.train(model, dataset.train_images, dataset.train_labels, dataset.max_value, epochs=epochs)
    if stress:
        brevitas_models.stress(model)
    name = f"{arch}-{'dynamo' if dynamo else 'ts'}-{'-'.join(f'{k}{v}' for k, v in options.items()) or 'plain'}"
    return model, brevitas_models.export(model, tmp_path / f"{name}.onnx", dataset.n_features, dynamo)


@pytest.fixture(scope="module")
def tfc_onnx(digits, tmp_path_factory):
    """Brevitas TFC-1w1a trained 4 epochs on digits, exported with the TorchScript exporter."""
    _, path = trained("tfc", digits, tmp_path_factory.mktemp("qonnx"), dynamo=False, epochs=4)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_tfc_hidden_bits_equal_qonnx_execution(digits, tmp_path, dynamo):
    started = time.perf_counter()
    model, path = trained("tfc", digits, tmp_path, dynamo)
    figures = check_bit_exact(path, digits, random_vectors=2000)
    # The graph is the model Brevitas trained: its class agrees with PyTorch's on the images.
    raw = digits.test_images.astype(np.float32).reshape(-1, 1, 8, 8) / np.float32(16)
    torch_class = np.argmax(brevitas_models.torch_scores(model, raw), axis=1)
    graph_class = np.argmax(qonnx_reference.execute(path, raw)["output"], axis=1)
    assert np.mean(torch_class == graph_class) >= 0.99
    assert np.mean(torch_class == digits.test_labels) > 0.3
    print(f"TFC {'dynamo' if dynamo else 'torchscript'}: {figures}, {time.perf_counter() - started:.1f} s")


STRESS = {"gamma": {"stress": True}, "bias": {"bias": True, "stress": True},
          "per-channel-scale": {"per_channel_scale": True, "stress": True},
          "weight-scale-0.1": {"weight_scale": 0.1}, "act-scale-2": {"act_scale": 2.0}}


@pytest.mark.parametrize("variant", list(STRESS))
def test_stress_variants_are_bit_exact(digits, tmp_path, variant):
    """A third of gamma negative and some zero, a bias, per-channel and 0.1 weight scales, activation
    scale 2: every variant bit-exact against qonnx (TorchScript export; the dynamo run is `slow`)."""
    options = dict(STRESS[variant])
    stress = options.pop("stress", False)
    _, path = trained("tfc", digits, tmp_path, dynamo=False, epochs=1, stress=stress, **options)
    figures = check_bit_exact(path, digits, random_vectors=2000)
    print(f"TFC {variant}: {figures}")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tfc", "sfc", "lfc"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_fashion_mnist_acceptance(arch, dynamo, tmp_path):
    """BNN-PYNQ TFC/SFC/LFC-1w1a on Fashion-MNIST (784 inputs), every test image + 10,000 random vectors."""
    data = load_dataset("fashion-mnist")
    _, path = trained(arch, data, tmp_path, dynamo, epochs=1)
    figures = check_bit_exact(path, data)
    print(f"{arch} {'dynamo' if dynamo else 'torchscript'} fashion-mnist: {figures}")


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(STRESS))
def test_stress_variants_dynamo(digits, tmp_path, variant):
    options = dict(STRESS[variant])
    stress = options.pop("stress", False)
    _, path = trained("tfc", digits, tmp_path, dynamo=True, epochs=1, stress=stress, **options)
    check_bit_exact(path, digits)


# --- the command line --------------------------------------------------------------------------------

def test_compile_qonnx_with_and_without_dataset(tfc_onnx, tmp_path):
    build = tmp_path / "b"
    result = run_cli("compile", tfc_onnx, "--dataset", "digits", "-o", build)
    assert result.returncode == 0, result.stderr
    report = json.loads((build / "report.json").read_text())
    assert report["model_format"] == "qonnx" and report["dataset"] == "digits"
    assert report["test_images"] == 360
    assert report["torch_golden_agreement"] == 1.0
    assert report["accuracy_golden"] == report["accuracy_torch"] > 0.3
    assert len(report["compile_inputs"]["model_sha256"]) == 64

    bare = tmp_path / "random"
    result = run_cli("compile", tfc_onnx, "-o", bare)
    assert result.returncode == 0, result.stderr
    report = json.loads((bare / "report.json").read_text())
    assert report["dataset"] is None and report["accuracy_golden"] is None and report["accuracy_torch"] is None
    with np.load(bare / "vectors.npz") as vectors:
        assert "labels" not in vectors.files
        assert vectors["inputs"].shape == (1000, 64)


def test_compiled_qonnx_simulates_bit_exact_in_verilator(tfc_onnx, tmp_path):
    build = tmp_path / "sim"
    assert run_cli("compile", tfc_onnx, "--dataset", "digits", "-o", build).returncode == 0
    result = run_cli("simulate", build, "--images", "60")
    assert result.returncode == 0, result.stderr
    report = json.loads((build / "report.json").read_text())
    assert report["images_simulated"] == 60 and report["rtl_mismatches"] == 0


def test_flow_takes_a_qonnx_model(tfc_onnx, tmp_path):
    build = tmp_path / "flow"
    result = run_cli("flow", "--model", tfc_onnx, "-o", build, "--no-synth", "--images", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((build / "report.json").read_text())
    assert report["rtl_mismatches"] == 0 and report["accuracy_golden"] is None
    assert (build / "report.html").exists()


def test_export_round_trip(tfc_digits_model, digits, tmp_path):
    """model.pt -> QONNX -> compile: the same thresholds and weights as compiling model.pt, and qonnx's
    execution of the exported graph gives the golden model's bits."""
    from xnorflow.compiler.model import import_model

    onnx_path = tmp_path / "model.onnx"
    result = run_cli("export", tfc_digits_model, "-o", onnx_path)
    assert result.returncode == 0, result.stderr
    direct = streamline(import_model(tfc_digits_model))
    imported = import_qonnx(onnx_path)
    back = streamline(imported.model)
    for a, b in zip(direct.layers, back.layers):
        np.testing.assert_array_equal(a.weights, b.weights)
        if a.thresholds is not None:
            np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert imported.binarize_rule(16)["threshold"] == 6     # digits' default rule, pixel >= 6
    check_bit_exact(onnx_path, digits, random_vectors=1000)


# --- refusals, through the command line ----------------------------------------------------------------

def make_graph(tmp_path, name, mutate):
    """A small valid QONNX chain (input Sub + BipolarQuant, one hidden layer, an output layer), changed by
    ``mutate(nodes, inits)`` into the graph to refuse."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    domain = "qonnx.custom_op.general"
    inits = {"one": np.array([1.0]), "t": np.array([0.5]), "w0": np.sign(rng.standard_normal((8, 6))),
             "w1": np.sign(rng.standard_normal((6, 3))), "g": np.ones(6), "b": np.zeros(6), "m": np.zeros(6),
             "v": np.ones(6), "tn": np.array([0.5])}
    nodes = [
        helper.make_node("Sub", ["x", "t"], ["x0"], name="input_sub"),
        helper.make_node("BipolarQuant", ["x0", "one"], ["x1"], name="input_quant", domain=domain),
        helper.make_node("BipolarQuant", ["w0", "one"], ["w0q"], name="w0_quant", domain=domain),
        helper.make_node("MatMul", ["x1", "w0q"], ["h0"], name="matmul0"),
        helper.make_node("BatchNormalization", ["h0", "g", "b", "m", "v"], ["h1"], name="bn0", epsilon=1e-5),
        helper.make_node("BipolarQuant", ["h1", "one"], ["h2"], name="act0", domain=domain),
        helper.make_node("BipolarQuant", ["w1", "one"], ["w1q"], name="w1_quant", domain=domain),
        helper.make_node("MatMul", ["h2", "w1q"], ["y0"], name="matmul1"),
        helper.make_node("Mul", ["y0", "tn"], ["y"], name="tensornorm_mul"),
    ]
    mutate(nodes, inits)
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                           for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(domain, 1)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _replace(nodes, name, node):
    nodes[[n.name for n in nodes].index(name)] = node


def _multibit_weights(nodes, inits):
    from onnx import helper
    inits.update(zero=np.array([0.0]), bits=np.array([4.0]))
    _replace(nodes, "w0_quant", helper.make_node("Quant", ["w0", "one", "zero", "bits"], ["w0q"], name="w0_quant",
                                                 domain="qonnx.custom_op.general", signed=1, narrow=0,
                                                 rounding_mode="ROUND"))


def _multibit_activation(nodes, inits):
    from onnx import helper
    inits.update(zero=np.array([0.0]), bits=np.array([2.0]))
    _replace(nodes, "act0", helper.make_node("Quant", ["h1", "one", "zero", "bits"], ["h2"], name="act0",
                                             domain="qonnx.custom_op.general", signed=1, narrow=0,
                                             rounding_mode="ROUND"))


def _per_channel_activation(nodes, inits):
    from onnx import helper
    inits["act_scale"] = np.linspace(0.5, 1.5, 6)
    _replace(nodes, "act0", helper.make_node("BipolarQuant", ["h1", "act_scale"], ["h2"], name="act0",
                                             domain="qonnx.custom_op.general"))


def _sign(nodes, inits):
    from onnx import helper
    _replace(nodes, "act0", helper.make_node("Sign", ["h1"], ["h2"], name="act0"))


def _branch(nodes, inits):
    from onnx import helper
    # A skip connection: the hidden bits also feed an Add that joins the MatMul's output.
    inits["w1"] = np.sign(np.random.default_rng(1).standard_normal((6, 6)))
    idx = [n.name for n in nodes].index("matmul1")
    nodes[idx + 1:] = [helper.make_node("Add", ["y0", "h2"], ["y1"], name="skip_add"),
                       helper.make_node("Mul", ["y1", "tn"], ["y"], name="tensornorm_mul")]


def _negative_tensornorm(nodes, inits):
    inits["tn"] = np.array([-0.5])


REFUSALS = {
    "multibit-weights": (_multibit_weights, ["w0_quant", "(Quant)", "multi-bit"]),
    "multibit-activation": (_multibit_activation, ["act0", "(Quant)", "multi-bit"]),
    "per-channel-activation-scale": (_per_channel_activation, ["act0", "(BipolarQuant)", "per-channel activation"]),
    "sign": (_sign, ["act0", "(Sign)", "BipolarQuant"]),
    "branch": (_branch, ["(", "branch"]),
    "negative-tensornorm": (_negative_tensornorm, ["matmul1", "negative", "TensorNorm"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_graphs_are_one_line_naming_the_node(tmp_path, case):
    mutate, fragments = REFUSALS[case]
    path = make_graph(tmp_path, case, mutate)
    assert_one_line_error(run_cli("compile", path, "-o", tmp_path / "b"), *fragments)
    assert not (tmp_path / "b").exists()


def test_the_unchanged_refusal_graph_compiles(tmp_path):
    path = make_graph(tmp_path, "fine", lambda nodes, inits: None)
    result = run_cli("compile", path, "-o", tmp_path / "b")
    assert result.returncode == 0, result.stderr


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00not a protobuf at all" * 10)
    assert_one_line_error(run_cli("compile", path, "-o", tmp_path / "b"), "junk.onnx")

