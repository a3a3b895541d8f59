"""Datasets: IDX parsing (plain and gzip), every error path, digits split, binarisation."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from xnorflow.training.datasets import (
    FASHION_MNIST_DIR,
    IDX_FILES,
    DatasetError,
    binarize,
    default_rule,
    load_dataset,
    read_idx,
)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_idx_folder(folder: Path, n_train=12, n_test=5, shape=(4, 3), gz=False, seed=0,
                     overrides: dict | None = None) -> dict:
    """Write the four IDX files; ``overrides`` maps a role to raw bytes (or None to leave it out)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    overrides = overrides or {}
    for role, stem in IDX_FILES.items():
        data = overrides[role] if role in overrides else idx_bytes(arrays[role])
        if data is None:
            continue
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_plain_and_gzip(tmp_path, gz):
    arrays = write_idx_folder(tmp_path, gz=gz)
    data = load_dataset(f"idx:{tmp_path}")
    assert data.name == f"idx:{tmp_path}"
    assert data.image_shape == (1, 4, 3) and data.max_value == 255
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    np.testing.assert_array_equal(data.train_images, arrays["train_images"].reshape(12, 12))
    np.testing.assert_array_equal(data.test_images, arrays["test_images"].reshape(5, 12))
    np.testing.assert_array_equal(data.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])


def test_idx_missing_file_names_it_and_the_fix(tmp_path):
    write_idx_folder(tmp_path, overrides={"test_labels": None})
    with pytest.raises(DatasetError, match=r"missing dataset file .*t10k-labels-idx1-ubyte\[\.gz\]: put the four"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")


def test_idx_bad_magic(tmp_path):
    images = np.zeros((12, 4, 3), dtype=np.uint8)
    write_idx_folder(tmp_path, overrides={"train_images": idx_bytes(images, magic=0x00000801)})
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte has magic 0x00000801, expected 0x00000803"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_label_count_mismatch(tmp_path):
    write_idx_folder(tmp_path, overrides={"train_labels": idx_bytes(np.zeros(11, dtype=np.uint8))})
    with pytest.raises(DatasetError, match="holds 12 images but .* holds 11 labels"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_truncated_data(tmp_path):
    truncated = idx_bytes(np.zeros((5, 4, 3), dtype=np.uint8))[:-7]
    write_idx_folder(tmp_path, overrides={"test_images": truncated})
    with pytest.raises(DatasetError, match=r"declares shape \(5, 4, 3\) \(60 bytes of data\) but holds 53"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_corrupt_gzip(tmp_path):
    write_idx_folder(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        load_dataset(f"idx:{tmp_path}")


def test_read_idx_header_too_short(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(tmp_path / "x", 1)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'.*digits, fashion-mnist, idx:DIR, cifar10:DIR"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="names no folder"):
        load_dataset("idx:")


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XNORFLOW_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist or set XNORFLOW_DATA"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_from_xnorflow_data_subfolder(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "fashion-mnist", shape=(28, 28), gz=True)
    monkeypatch.setenv("XNORFLOW_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert data.name == "fashion-mnist" and data.train_images.shape == (12, 784)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("XNORFLOW_DATA", raising=False)
    data = load_dataset("fashion-mnist")
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert data.image_shape == (1, 28, 28) and data.n_classes == 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10


def test_digits_split_is_fixed_and_stratified():
    first, second = load_dataset("digits"), load_dataset("digits")
    np.testing.assert_array_equal(first.test_images, second.test_images)
    assert first.train_images.shape[1] == 64 and first.image_shape == (1, 8, 8) and first.max_value == 16
    assert len(first.train_images) + len(first.test_images) == 1797
    assert len(first.test_images) == 360
    counts = np.bincount(first.test_labels)
    assert counts.min() >= 35 and counts.max() <= 37      # stratified: about 36 of each digit
    assert first.train_images.max() == 16 and first.train_images.dtype == np.uint8


def test_binarize_rule():
    data = load_dataset("digits")
    rule = default_rule(data)
    assert rule["rule"] == "pixel >= threshold" and rule["max_value"] == 16
    bits = binarize(np.array([[0, rule["threshold"] - 1, rule["threshold"], 16]]), rule)
    assert bits.dtype == np.uint8 and bits.tolist() == [[0, 0, 1, 1]]


def test_binarize_rejects_unknown_rule():
    with pytest.raises(DatasetError, match="unsupported binarisation rule"):
        binarize(np.zeros((1, 4)), {"rule": "otsu"})
