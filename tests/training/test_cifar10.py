"""cifar10:DIR: CIFAR-10's binary version, read from small generated files in that format."""
from pathlib import Path

import numpy as np
import pytest

from xnorflow.training.datasets import CIFAR10_FILES, DatasetError, binarize, default_rule, load_dataset
from xnorflow.training.model_file import load_model_file
from xnorflow.training.train import train

RECORD = 3073


def write_cifar10(folder: Path, per_file=4, seed=0, overrides: dict | None = None) -> dict:
    """Write data_batch_1..5.bin and test_batch.bin: records of 1 label byte + 3072 pixel bytes
    (1024 R, 1024 G, 1024 B, each 32x32 in raster order). ``overrides`` maps a file name to raw bytes
    (or None to leave the file out). Returns {file name: (labels, images (n, 3, 32, 32))}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem in (*CIFAR10_FILES["train"], *CIFAR10_FILES["test"]):
        labels = rng.integers(0, 10, per_file).astype(np.uint8)
        images = rng.integers(0, 256, (per_file, 3, 32, 32)).astype(np.uint8)
        data = b"".join(bytes([label]) + image.tobytes() for label, image in zip(labels, images, strict=True))
        data = (overrides or {}).get(stem, data)
        if data is not None:
            (folder / stem).write_bytes(data)
        written[stem] = (labels, images)
    return written


def test_cifar10_binary_files_load_in_c_y_x_order(tmp_path):
    written = write_cifar10(tmp_path / "cifar")
    data = load_dataset(f"cifar10:{tmp_path / 'cifar'}")
    assert data.image_shape == (3, 32, 32) and data.max_value == 255 and data.n_classes == 10
    assert data.train_images.shape == (20, 3072) and data.test_images.shape == (4, 3072)
    labels, images = written["data_batch_2.bin"]
    np.testing.assert_array_equal(data.train_labels[4:8], labels)
    np.testing.assert_array_equal(data.train_images[4:8].reshape(4, 3, 32, 32), images)
    np.testing.assert_array_equal(data.test_images.reshape(4, 3, 32, 32), written["test_batch.bin"][1])
    assert data.train_images[5, 1024 + 32 * 2 + 7] == images[1, 1, 2, 7]     # green, y=2, x=7
    rule = default_rule(data)
    assert rule["threshold"] == 128                       # every channel by the same threshold
    assert binarize(data.train_images, rule).shape == (20, 3072)


def test_cifar10_extracted_subfolder_is_found(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    assert load_dataset(f"cifar10:{tmp_path}").train_images.shape == (20, 3072)


@pytest.mark.parametrize("overrides, message", [
    ({"data_batch_3.bin": None}, "lacks the CIFAR-10 binary files data_batch_3.bin: download cifar-10-binary.tar.gz"),
    ({"test_batch.bin": b"\x01" * (RECORD + 5)}, f"test_batch.bin holds {RECORD + 5} bytes, not a positive multiple"),
    ({"data_batch_1.bin": b""}, "data_batch_1.bin holds 0 bytes"),
    ({"data_batch_4.bin": bytes([3]) + bytes(3072) + bytes([10]) + bytes(3072)},
     "data_batch_4.bin: record 1 has label 10, CIFAR-10 labels are 0..9"),
])
def test_cifar10_bad_files_give_one_line(tmp_path, overrides, message):
    write_cifar10(tmp_path, overrides=overrides)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(f"cifar10:{tmp_path}")
    assert "\n" not in str(info.value)


def test_cifar10_missing_folder_and_pickled_version(tmp_path):
    with pytest.raises(DatasetError, match="CIFAR-10 folder .*nowhere does not exist: download"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="names no folder"):
        load_dataset("cifar10:")
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02pickle")        # the python version's files
    with pytest.raises(DatasetError, match="holds the pickled python version, which xnorflow never reads"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_trains_through_the_dataset_name(tmp_path, monkeypatch):
    """Class = whether the red channel is bright: a tiny generated CIFAR-10 folder trains end to end."""
    rng = np.random.default_rng(1)

    def records(n):
        labels = rng.integers(0, 2, n)
        images = rng.integers(0, 100, (n, 3, 32, 32)).astype(np.uint8)
        images[labels == 1, 0] += 150
        return b"".join(bytes([int(lab)]) + img.tobytes() for lab, img in zip(labels, images, strict=True))

    folder = tmp_path / "cifar"
    write_cifar10(folder, overrides={stem: records(20) for stem in CIFAR10_FILES["train"]}
                  | {"test_batch.bin": records(20)})
    monkeypatch.chdir(tmp_path)                                  # the model file names the folder absolutely
    summary = train("tfc", "cifar10:cifar", tmp_path / "m.pt", epochs=3, batch_size=10, progress=False,
                    threads=1)
    record = load_model_file(tmp_path / "m.pt")
    assert record["dataset"] == f"cifar10:{folder}" and record["image_shape"] == [3, 32, 32]
    assert record["in_features"] == 3072 and record["n_classes"] == 2 and summary["accuracy_torch"] >= 0.9
