"""Integer (b-bit) first layers (DESIGN.md 2b): folding the normalisation, bias and batch-norm into thresholds
on s computes the same before and after, ties identified; lowering to int_dense / int_conv fields."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.compiler.model import (
    BatchNorm,
    BnnModel,
    CompileError,
    ConvLayer,
    DenseLayer,
    MaxPoolLayer,
    execute,
    model_from_file_dict,
    signed_sums,
)
from xnorflow.compiler.passes import (
    FoldBatchNormIntoThresholds,
    int_layer_fields,
    lower_to_spec,
    streamline,
)
from xnorflow.sim import golden
from xnorflow.training.datasets import pack_elements, unpack_elements

# A value this close to its boundary on s counts as an exact tie: float64 rounding of tau is orders of
# magnitude below it, and distinct integers s are 1 apart.
TIE = 1e-6


def random_bn(rng, pre: np.ndarray, n_out: int) -> BatchNorm:
    """A batch-norm whose means and spreads follow the pre-activations ``pre`` (frames, n_out), so outputs
    vary; gamma positive, negative, zero or as drawn per channel."""
    gamma = rng.normal(0, 1, n_out)
    kinds_ = rng.integers(0, 4, n_out)
    gamma[kinds_ == 0] = np.abs(gamma[kinds_ == 0]) + 0.01
    gamma[kinds_ == 1] = -np.abs(gamma[kinds_ == 1]) - 0.01
    gamma[kinds_ == 2] = 0.0
    spread = pre.std(axis=0) + 0.1
    return BatchNorm(gamma=gamma, beta=rng.normal(0, 1, n_out), mean=np.median(pre, axis=0) + rng.normal(0, 1, n_out)
                     * spread, var=spread ** 2 * rng.uniform(0.5, 2, n_out), eps=1e-5)


def int_dense(rng, n_in: int, n_out: int, bits: int, x: np.ndarray, channels: int = 1) -> DenseLayer:
    """A first dense layer on ``bits``-bit inputs with a random normalisation (one mean per channel of
    n_in / channels elements, one scale), bias and batch-norm fitted to the inputs ``x``."""
    weights = rng.integers(0, 2, (n_out, n_in), dtype=np.uint8)
    mean = np.repeat(rng.uniform(0, 2 ** bits - 1, channels), n_in // channels)
    scale = float(rng.uniform(0.3, 100))
    bias = rng.normal(0, 1, n_out)
    pre = (signed_sums(x, weights) - (2.0 * weights - 1) @ mean) / scale + bias
    return DenseLayer(weights=weights, is_output=False, bias=bias, bn=random_bn(rng, pre, n_out), input_bits=bits,
                      input_mean=mean, input_scale=scale)


def output_layer(rng, n_in: int) -> DenseLayer:
    return DenseLayer(weights=rng.integers(0, 2, (10, n_in), dtype=np.uint8), is_output=True)


def assert_same_except_ties(before, after) -> int:
    """Hidden bits agree wherever the float model is not at an exact tie; returns the number of ties."""
    ties = 0
    for k, (a, b, margin) in enumerate(zip(before.activations, after.activations, before.margins)):
        if margin is None:
            continue
        clear = margin > TIE
        differ = (a.reshape(margin.shape) != b.reshape(margin.shape)) & clear
        assert not differ.any(), f"layer {k}: {int(differ.sum())} bits differ away from any tie"
        ties += int((~clear).sum())
    return ties


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 300), n_out=st.integers(1, 40), bits=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_fold_integer_dense_layer_computes_the_same(n_in, n_out, bits, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2 ** bits, (128, n_in))
    model = BnnModel((int_dense(rng, n_in, n_out, bits, x), output_layer(rng, n_out)))
    folded = FoldBatchNormIntoThresholds()(model)
    before, after = execute(model, x), execute(folded, x)
    if assert_same_except_ties(before, after) == 0:
        np.testing.assert_array_equal(before.predictions, after.predictions)
    first = folded.layers[0]
    s_max = n_in * (2 ** bits - 1)
    assert first.bn is None and first.bias is None and first.input_mean is None and first.input_scale is None
    assert first.thresholds.dtype == np.int64
    assert -s_max <= first.thresholds.min() and first.thresholds.max() <= s_max + 1
    # rows of negative gamma are inverted, the others kept
    negative = model.layers[0].bn.gamma < 0
    np.testing.assert_array_equal(first.weights[negative], 1 - model.layers[0].weights[negative])
    np.testing.assert_array_equal(first.weights[~negative], model.layers[0].weights[~negative])


def test_exact_ties_are_identified_and_follow_the_float_rule():
    """tau on an integer (no scale, means or bias; beta 0): at s == tau the float value is 0, +1 for either sign
    of gamma; the folded layer agrees there too, and the ties are counted, not skipped blindly."""
    rng = np.random.default_rng(7)
    n_in, n_out, bits = 5, 6, 3
    x = rng.integers(0, 2 ** bits, (4000, n_in))
    weights = rng.integers(0, 2, (n_out, n_in), dtype=np.uint8)
    gamma = np.array([1.0, -1.0, 2.0, -0.5, 0.0, 0.0])
    bn = BatchNorm(gamma=gamma, beta=np.array([0, 0, 0, 0, 1.0, -1.0]), mean=np.array([3.0, 3.0, -2, 0, 0, 0]),
                   var=np.full(n_out, 4.0), eps=0.0)
    layer = DenseLayer(weights=weights, is_output=False, bn=bn, input_bits=bits, input_mean=np.zeros(n_in),
                       input_scale=1.0)
    model = BnnModel((layer, output_layer(rng, n_out)))
    folded = FoldBatchNormIntoThresholds()(model)
    before, after = execute(model, x), execute(folded, x)
    ties = assert_same_except_ties(before, after)
    s = signed_sums(x, weights)
    assert ties == int((s[:, :4] == bn.mean[:4]).sum()) > 0
    np.testing.assert_array_equal(before.activations[0], after.activations[0])      # ties included
    np.testing.assert_array_equal(after.activations[0][:, 4:], np.tile([1, 0], (len(x), 1)))   # constant channels
    np.testing.assert_array_equal(folded.layers[0].thresholds, [3, -3, -2, 0, -5 * 7, 5 * 7 + 1])


def test_normalisation_and_scale_fold_exactly():
    """(x - m) / d with d > 0 and a mean per channel moves tau by sum w m and scales it by d: thresholds
    are those of the unnormalised layer on s."""
    weights = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.uint8)
    mean = np.array([10.0, 10.0, 20.0, 20.0])       # two channels of two elements
    layer = DenseLayer(weights=weights, is_output=False, bias=np.array([0.5, -1.0]), input_bits=8, input_mean=mean,
                       input_scale=4.0)
    folded = FoldBatchNormIntoThresholds()(BnnModel((layer, DenseLayer(weights=weights[:, :2], is_output=True))))
    # row 0: sum w m = 10 + 10 - 20 - 20 = -20; s >= -20 + 4 * (0 - 0.5) = -22
    # row 1: sum w m = -10 + 10 + 20 - 20 = 0;   s >= 0 + 4 * 1 = 4
    np.testing.assert_array_equal(folded.layers[0].thresholds, [-22, 4])


def test_conv_layer_on_integers_folds_and_pools():
    """An int conv (valid, 2 channels) followed by a max-pool before its batch-norm (AND where gamma < 0)."""
    rng = np.random.default_rng(3)
    c, h, w, k, o, bits = 2, 6, 6, 3, 5, 8
    x = rng.integers(0, 256, (200, h * w * c))
    weights = rng.integers(0, 2, (o, k * k * c), dtype=np.uint8)
    mean = np.tile(rng.uniform(0, 255, c), k * k)
    conv = ConvLayer(weights=weights, in_shape=(c, h, w), kernel=k, bias=rng.normal(0, 1, o), input_bits=bits,
                     input_mean=mean, input_scale=60.0)
    pre = ((signed_sums(x.reshape(-1, c)[:k * k * 50].reshape(-1, k * k * c), weights) - (2.0 * weights - 1) @ mean)
           / 60.0)
    conv = ConvLayer(**{**conv.__dict__, "bn": random_bn(rng, pre, o)})
    pool = MaxPoolLayer(in_shape=conv.out_shape, size=2, before_bn=True)
    flat = int(np.prod(pool.out_shape))
    model = BnnModel((conv, pool, output_layer(rng, flat)))
    folded = FoldBatchNormIntoThresholds()(model)
    before, after = execute(model, x), execute(folded, x)
    assert before.margins[1] is None
    assert_same_except_ties(before, after)
    # ties in a pooled layer's window are not visible in its margins: require none here
    assert all((m > TIE).all() for m in before.margins if m is not None)
    np.testing.assert_array_equal(before.activations[1], after.activations[1])
    np.testing.assert_array_equal(folded.layers[1].pool_and, (conv.bn.gamma < 0).astype(np.uint8))


def test_lowered_fields_compute_what_the_folded_model_computes():
    """int_layer_fields: kind int_dense, input_bits b, n_in elements, weights and int64 thresholds on s; the
    packed frame (element i at bits [i*b, (i+1)*b), LSB first) decodes to the inputs the model ran on."""
    rng = np.random.default_rng(11)
    n_in, bits = 37, 5
    x = rng.integers(0, 2 ** bits, (300, n_in))
    folded = streamline(BnnModel((int_dense(rng, n_in, 9, bits, x), output_layer(rng, 9))))
    fields = int_layer_fields(folded.layers[0], folded.layers[0].weights, folded.layers[0].thresholds)
    assert fields["kind"] == "int_dense" and fields["input_bits"] == bits and fields["n_in"] == n_in
    assert fields["thresholds"].dtype == np.int64 and (fields["thresholds"] < 0).any()
    frames = pack_elements(x, bits)
    assert frames.shape == (300, n_in * bits) and set(np.unique(frames)) <= {0, 1}
    assert frames[0, :bits].tolist() == [(int(x[0, 0]) >> i) & 1 for i in range(bits)]
    decoded = unpack_elements(frames, bits)
    np.testing.assert_array_equal(decoded, x)
    # the compiler's integer forward of the lowered numbers: s >= T
    s = signed_sums(decoded, fields["weights"])
    np.testing.assert_array_equal((s >= fields["thresholds"]).astype(np.uint8), execute(folded, x).activations[0])
    assert folded.input_bits == n_in * bits and folded.input_elements == n_in


def test_lowered_conv_fields_keep_the_geometry():
    conv = ConvLayer(weights=np.ones((4, 18), np.uint8), in_shape=(2, 5, 5), kernel=3, thresholds=np.arange(-2, 2),
                     input_bits=8)
    fields = int_layer_fields(conv, conv.weights, conv.thresholds)
    assert fields["kind"] == "int_conv" and fields["n_in"] == 18 and fields["in_shape"] == (2, 5, 5)
    assert fields["out_shape"] == (4, 3, 3) and fields["kernel"] == 3 and fields["padding"] == 0


def test_layer_spec_of_an_integer_layer_is_its_int_op():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8))
    folded = streamline(BnnModel((int_dense(rng, 8, 4, 8, x), output_layer(rng, 4))))
    spec = lower_to_spec(folded)
    assert spec.layers[0].kind == "int_dense" and spec.layers[0].input_bits == 8


def test_an_integer_conv_lowers_to_int_conv_and_golden_computes_the_folded_model():
    """A conv on integers is an int_conv (not a binary conv with out-of-range thresholds), and the golden
    model of the lowered spec, fed the packed frames, gives the folded model's activations and scores."""
    rng = np.random.default_rng(5)
    c, h, w, k, o, bits = 2, 6, 6, 3, 5, 8
    x = rng.integers(0, 256, (120, h * w * c))
    weights = rng.integers(0, 2, (o, k * k * c), dtype=np.uint8)
    conv = ConvLayer(weights=weights, in_shape=(c, h, w), kernel=k, input_bits=bits,
                     input_mean=np.full(k * k * c, 100.0), input_scale=50.0)
    pre = (signed_sums(x.reshape(-1, c)[:k * k * 40].reshape(-1, k * k * c), weights) - (2.0 * weights - 1) @ conv.input_mean) / 50.0
    conv = ConvLayer(**{**conv.__dict__, "bn": random_bn(rng, pre, o)})
    pool = MaxPoolLayer(in_shape=conv.out_shape, size=2, before_bn=False)
    folded = streamline(BnnModel((conv, pool, output_layer(rng, int(np.prod(pool.out_shape))))))
    spec = lower_to_spec(folded)
    assert [layer.kind for layer in spec.layers] == ["int_conv", "maxpool", "dense"]
    assert spec.layers[0].input_bits == bits and spec.input_bits == h * w * c * bits
    truth, hardware = execute(folded, x), golden.execute(spec, pack_elements(x, bits))
    np.testing.assert_array_equal(hardware.scores, truth.scores)


def test_lowering_refuses_an_unfolded_normalisation():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8))
    layer = int_dense(rng, 8, 4, 8, x)
    model = BnnModel((DenseLayer(**{**layer.__dict__, "bn": None, "bias": None}), output_layer(rng, 4)))
    with pytest.raises(CompileError, match="input normalisation: run FoldBatchNormIntoThresholds"):
        lower_to_spec(model)


def file_dict(first: dict, input_format: dict, n_in: int) -> dict:
    """A minimal model-file dict (as load_model_file returns it) with ``first`` then an output layer."""
    import torch

    out = {"kind": "dense", "weight": torch.ones(3, first["weight"].shape[0]), "bias": None, "bn": None,
           "scale": None, "flatten_from": None}
    return {"arch": "custom", "dataset": "digits", "input": input_format, "in_features": n_in,
            "layers": [first, out], "accuracy_torch": None}


def int_format(mean, scale=2.0):
    return {"format": "int", "bits": 8, "max_value": 255, "mean": mean, "scale": scale}


def test_import_gives_a_mean_per_element_of_the_weight_row():
    import torch

    dense = {"kind": "dense", "weight": torch.ones(4, 6), "bias": None, "bn": None, "scale": None, "flatten_from": None}
    model = model_from_file_dict(file_dict(dense, int_format([1.0, 2.0]), 6))
    first = model.layers[0]
    assert first.input_bits == 8 and first.input_scale == 2.0
    np.testing.assert_array_equal(first.input_mean, [1, 1, 1, 2, 2, 2])        # (c, y, x): channel-major
    conv = {"kind": "conv", "weight": torch.ones(4, 2, 3, 3), "bias": None, "bn": None, "scale": None, "padding": 0,
            "pad_value": -1, "in_shape": [2, 4, 4], "pool": None, "out_shape": [4, 2, 2]}
    out = {"kind": "dense", "weight": torch.ones(3, 16), "bias": None, "bn": None, "scale": None,
           "flatten_from": [4, 2, 2]}
    record = {**file_dict(conv, int_format([1.0, 2.0]), 32), "layers": [conv, out]}
    first = model_from_file_dict(record).layers[0]
    np.testing.assert_array_equal(first.input_mean, [1, 2] * 9)                  # (ky, kx, c): c fastest


@pytest.mark.parametrize("fmt, message", [
    (int_format([1.0], [2.0, 3.0]), "differ per channel"),
    ({"format": "float"}, "input format 'float' is not one of"),
    ({**int_format([1.0]), "bits": 4}, "do not fit 4-bit inputs"),
])
def test_import_refuses_formats_that_do_not_fold(fmt, message):
    import torch

    dense = {"kind": "dense", "weight": torch.ones(4, 6), "bias": None, "bn": None, "scale": None, "flatten_from": None}
    with pytest.raises(CompileError, match=message):
        model_from_file_dict(file_dict(dense, fmt, 6))


def test_import_refuses_a_padded_first_conv_on_integers():
    import torch

    conv = {"kind": "conv", "weight": torch.ones(4, 1, 3, 3), "bias": None, "bn": None, "scale": None, "padding": 1,
            "pad_value": -1, "in_shape": [1, 4, 4], "pool": None, "out_shape": [4, 4, 4]}
    out = {"kind": "dense", "weight": torch.ones(3, 64), "bias": None, "bn": None, "scale": None,
           "flatten_from": [4, 4, 4]}
    with pytest.raises(CompileError, match="must be valid"):
        model_from_file_dict({**file_dict(conv, int_format([1.0]), 16), "layers": [conv, out]})
