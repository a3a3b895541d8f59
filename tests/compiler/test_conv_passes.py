"""Conv and max-pool through the compiler's passes: the model computes the same before and after."""
import numpy as np
import pytest

from xnorflow.compiler.model import (
    BatchNorm,
    BnnModel,
    ConvLayer,
    DenseLayer,
    MaxPoolLayer,
    conv_windows,
    execute,
)
from xnorflow.compiler.passes import FoldBatchNormIntoThresholds, RemoveArgmaxInvariantOutputScale


def random_bn(rng, channels, zero_gamma=2):
    gamma = rng.normal(size=channels) * rng.choice([-1.0, 1.0], size=channels)
    gamma[rng.choice(channels, size=min(zero_gamma, channels), replace=False)] = 0.0
    return BatchNorm(gamma=gamma, beta=rng.normal(size=channels), mean=rng.normal(size=channels) * 3,
                     var=rng.uniform(0.5, 4, size=channels), eps=1e-5)


def conv_model(rng, c=3, h=9, w=8, k=3, o=6, padding=1, pad_value=1, pool=2, before_bn=True, classes=4):
    conv = ConvLayer(weights=rng.integers(0, 2, size=(o, k * k * c), dtype=np.uint8), in_shape=(c, h, w),
                     kernel=k, padding=padding, pad_value=pad_value, bias=rng.normal(size=o),
                     bn=random_bn(rng, o))
    layers = [conv]
    shape = conv.out_shape
    if pool:
        layers.append(MaxPoolLayer(in_shape=shape, size=pool, before_bn=before_bn))
        shape = layers[-1].out_shape
    n = int(np.prod(shape))
    layers.append(DenseLayer(weights=rng.integers(0, 2, size=(classes, n), dtype=np.uint8), is_output=True))
    return BnnModel(tuple(layers))


def test_windows_are_ordered_ky_kx_c_with_the_declared_padding():
    x = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(1, -1) % 2      # (y, x, c) of a 2-channel 2x3 image
    windows = conv_windows(x, (2, 2, 3), kernel=3, padding=1, pad_value=1)
    image = np.pad(x.reshape(2, 3, 2), ((1, 1), (1, 1), (0, 0)), constant_values=1)
    assert windows.shape == (1, 6, 18)
    assert np.array_equal(windows[0, 4], image[1:4, 1:4, :].reshape(-1))      # output pixel (1, 1)


@pytest.mark.parametrize("before_bn", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_folding_batch_norm_keeps_every_activation_of_a_conv_net(seed, before_bn):
    rng = np.random.default_rng(seed)
    model = conv_model(rng, c=int(rng.integers(1, 5)), h=int(rng.integers(4, 10)), w=int(rng.integers(4, 10)),
                       k=int(rng.integers(1, 4)), padding=int(rng.integers(0, 2)), pad_value=int(rng.integers(0, 2)),
                       before_bn=before_bn)
    frames = rng.integers(0, 2, size=(200, model.layers[0].in_shape[0] * model.layers[0].in_shape[1]
                                      * model.layers[0].in_shape[2]), dtype=np.uint8)
    before = execute(model, frames)
    folded = RemoveArgmaxInvariantOutputScale()(FoldBatchNormIntoThresholds()(model))
    after = execute(folded, frames)
    pool = folded.layers[1]
    gamma = model.layers[0].bn.gamma
    assert np.array_equal(pool.pool_and, (gamma < 0).astype(np.uint8) if before_bn else np.zeros_like(pool.pool_and))
    for a, b in zip(before.activations, after.activations):
        assert np.array_equal(a, b)
    assert np.array_equal(before.scores, after.scores)
