"""NetworkSpec files: what the compiler writes is what simulation and synthesis read back."""
import json
from dataclasses import replace

import numpy as np
from hw_harness import random_spec


def test_save_and_load_keep_every_field(tmp_path):
    spec = random_spec(5)
    first = replace(spec.layers[0], weight_style="block", buffer_style="logic", weight_registers=2)
    spec = replace(spec, layers=(first, *spec.layers[1:]), meta={"arch": "test"})
    spec.save(tmp_path / "spec.npz")
    loaded = type(spec).load(tmp_path / "spec.npz")
    assert loaded.meta == spec.meta
    for want, got in zip(spec.layers, loaded.layers, strict=True):
        assert (got.n_in, got.n_out, got.pe, got.simd) == (want.n_in, want.n_out, want.pe, want.simd)
        assert (got.weight_style, got.buffer_style, got.weight_registers) == (
            want.weight_style, want.buffer_style, want.weight_registers)
        assert np.array_equal(got.weights, want.weights)
        assert (got.thresholds is None) == (want.thresholds is None)
        if want.thresholds is not None:
            assert np.array_equal(got.thresholds, want.thresholds)


def test_a_spec_written_before_weight_registers_loads_its_bool(tmp_path):
    """Spec files of earlier versions carry ``register_weights: true`` for one register."""
    spec = random_spec(6)
    spec.save(tmp_path / "spec.npz")
    with np.load(tmp_path / "spec.npz") as data:
        arrays = dict(data)
    header = json.loads(bytes(arrays["header"]).decode())
    for layer in header["layers"]:
        del layer["weight_registers"]
        layer["register_weights"] = True
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    assert {layer.weight_registers for layer in type(spec).load(tmp_path / "old.npz").layers} == {1}
