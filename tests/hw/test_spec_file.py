"""NetworkSpec files: what the compiler writes is what simulation and synthesis read back."""
from dataclasses import replace

import numpy as np
from hw_harness import random_spec


def test_save_and_load_keep_every_field(tmp_path):
    spec = random_spec(5)
    first = replace(spec.layers[0], weight_style="block", buffer_style="logic", register_weights=True)
    spec = replace(spec, layers=(first, *spec.layers[1:]), meta={"arch": "test"})
    spec.save(tmp_path / "spec.npz")
    loaded = type(spec).load(tmp_path / "spec.npz")
    assert loaded.meta == spec.meta
    for want, got in zip(spec.layers, loaded.layers, strict=True):
        assert (got.n_in, got.n_out, got.pe, got.simd) == (want.n_in, want.n_out, want.pe, want.simd)
        assert (got.weight_style, got.buffer_style, got.register_weights) == (
            want.weight_style, want.buffer_style, want.register_weights)
        assert np.array_equal(got.weights, want.weights)
        assert (got.thresholds is None) == (want.thresholds is None)
        if want.thresholds is not None:
            assert np.array_equal(got.thresholds, want.thresholds)
