"""NetworkSpec files: what the compiler writes is what simulation and synthesis read back."""
from dataclasses import replace

import numpy as np
import pytest
from hw_harness import random_spec

from xnorflow.errors import XnorflowError
from xnorflow.hw.spec import SPEC_VERSION, NetworkSpec, SpecError


def test_save_and_load_keep_every_field(tmp_path):
    spec = random_spec(5)
    first = replace(spec.layers[0], weight_style="block", buffer_style="logic", register_weights=True,
                    weight_packing=spec.layers[0].pe)
    spec = replace(spec, layers=(first, *spec.layers[1:]), meta={"arch": "test"})
    spec.save(tmp_path / "spec.npz")
    loaded = type(spec).load(tmp_path / "spec.npz")
    assert loaded.meta == spec.meta
    for want, got in zip(spec.layers, loaded.layers, strict=True):
        assert (got.n_in, got.n_out, got.pe, got.simd) == (want.n_in, want.n_out, want.pe, want.simd)
        assert (got.weight_style, got.buffer_style, got.register_weights, got.weight_packing) == (
            want.weight_style, want.buffer_style, want.register_weights, want.weight_packing)
        assert np.array_equal(got.weights, want.weights)
        assert (got.thresholds is None) == (want.thresholds is None)
        if want.thresholds is not None:
            assert np.array_equal(got.thresholds, want.thresholds)


def rewrite_header(path, **changes):
    """Rewrite a spec file's JSON header with ``changes`` (as an older or newer xnorflow would have)."""
    import json
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(bytes(arrays["header"]).decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def test_kinds_geometry_and_the_output_op_are_saved(tmp_path):
    import json
    spec = random_spec(6)
    spec.save(tmp_path / "spec.npz")
    with np.load(tmp_path / "spec.npz") as data:
        header = json.loads(bytes(data["header"]).decode())
    assert header["version"] == SPEC_VERSION == 2
    assert header["output"] == {"kind": "label_select"}
    first = header["layers"][0]
    assert first["kind"] == "dense" and first["in_shape"] == [spec.layers[0].n_in, 1, 1]
    loaded = type(spec).load(tmp_path / "spec.npz")
    assert loaded.output_kind == "label_select"
    for want, got in zip(spec.layers, loaded.layers, strict=True):
        assert (got.kind, got.in_shape, got.out_shape, got.kernel, got.stride, got.padding, got.pad_value) == (
            want.kind, want.in_shape, want.out_shape, want.kernel, want.stride, want.padding, want.pad_value)


@pytest.mark.parametrize("version, fix", [(1, "re-run `xnorflow compile`"), (SPEC_VERSION + 1, "update xnorflow")])
def test_a_spec_of_another_version_is_refused_in_one_line_naming_both(tmp_path, version, fix):
    path = tmp_path / "spec.npz"
    random_spec(7).save(path)
    rewrite_header(path, version=version)
    with pytest.raises(SpecError) as info:
        NetworkSpec.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"format version {version}" in message and f"reads version {SPEC_VERSION}" in message
    assert fix in message
    assert isinstance(info.value, XnorflowError)
