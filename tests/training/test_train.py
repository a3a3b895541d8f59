"""Training loop: learns, is deterministic, writes a usable model file; defaults reach the target."""
import numpy as np
import pytest
import torch

from xnorflow.training.datasets import FASHION_MNIST_DIR, DatasetError, binarize, load_dataset
from xnorflow.training.model_file import ModelFileError, load_model_file, model_from_file, predict
from xnorflow.training.train import format_summary, train


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x08nn (nn = dims), big-endian dims, then the data."""
    array = np.asarray(array, dtype=np.uint8)
    header = [0x800 | array.ndim, *array.shape]
    return b"".join(int(v).to_bytes(4, "big") for v in header) + array.tobytes()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_tiny_training_run_learns_and_writes_a_model_file(tmp_path, digits):
    out = tmp_path / "tfc.pt"
    summary = train("tfc", "digits", out, epochs=5, seed=0, progress=False, threads=1, dataset=digits)
    assert summary["accuracy_torch"] > 0.6                 # chance is 0.1
    record = load_model_file(out)
    assert record["arch"] == "tfc" and record["dataset"] == "digits" and record["in_features"] == 64
    assert record["accuracy_torch"] == summary["accuracy_torch"]
    assert record["train"]["epochs"] == 5 and record["train"]["seconds"] > 0
    # the file alone reproduces the measured accuracy
    bits = binarize(digits.test_images, record["input"])
    reloaded_accuracy = np.mean(predict(model_from_file(record), bits) == digits.test_labels)
    assert reloaded_accuracy == summary["accuracy_torch"]
    # latent weights were clipped after every step
    assert all(layer["weight"].abs().max() <= 1.0 for layer in record["layers"])
    text = format_summary(summary)
    assert "test accuracy" in text and f"{summary['accuracy_torch']:.2%}" in text


def test_training_is_deterministic(tmp_path, digits):
    runs = [train("tfc", "digits", tmp_path / f"{i}.pt", epochs=2, seed=3, progress=False, threads=1,
                  dataset=digits) for i in range(2)]
    first, second = (load_model_file(tmp_path / f"{i}.pt")["state_dict"] for i in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0]["accuracy_torch"] == runs[1]["accuracy_torch"]
    other = load_model_file(train("tfc", "digits", tmp_path / "o.pt", epochs=2, seed=4, progress=False,
                                  threads=1, dataset=digits)["out_path"])["state_dict"]
    assert not torch.equal(first["0.weight"], other["0.weight"])


def test_training_restores_global_torch_settings(tmp_path, digits):
    threads = torch.get_num_threads()
    train("tfc", "digits", tmp_path / "m.pt", epochs=1, progress=False, threads=1, dataset=digits)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_unknown_arch_and_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'mlp'"):
        train("mlp", "digits", tmp_path / "m.pt", progress=False)
    with pytest.raises(DatasetError, match="unknown dataset 'mnist3d'"):
        train("tfc", "mnist3d", tmp_path / "m.pt", progress=False)
    with pytest.raises(DatasetError, match="threshold 99 is outside 0..17"):
        train("tfc", "digits", tmp_path / "m.pt", threshold=99, progress=False)
    assert not (tmp_path / "m.pt").exists()


def test_output_folder_is_refused_before_training(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder: give a file path"):
        train("tfc", "digits", tmp_path, progress=False)


def test_idx_folder_trains_end_to_end(tmp_path):
    """A small synthetic IDX folder (class = which image half is bright) trains through idx:DIR."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 2, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 6, 6)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, :, 3 * label:3 * label + 3] += 150
        return images, labels

    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, (images, labels) in (("train", split(200)), ("t10k", split(50))):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    summary = train("tfc", f"idx:{folder}", tmp_path / "m.pt", epochs=3, progress=False, threads=1)
    record = load_model_file(tmp_path / "m.pt")
    assert record["n_classes"] == 2 and record["in_features"] == 36 and record["image_shape"] == [1, 6, 6]
    assert record["input"]["threshold"] == 128 and summary["accuracy_torch"] >= 0.9


@pytest.mark.slow
def test_tfc_digits_defaults_reach_90_percent(tmp_path):
    summary = train("tfc", "digits", tmp_path / "tfc.pt", progress=False)
    assert summary["accuracy_torch"] >= 0.90


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_sfc_fashion_mnist_defaults_reach_85_percent_within_5_minutes(tmp_path, monkeypatch):
    monkeypatch.delenv("XNORFLOW_DATA", raising=False)
    summary = train("sfc", "fashion-mnist", tmp_path / "sfc.pt", progress=False)
    assert summary["accuracy_torch"] >= 0.85
    assert summary["seconds"] <= 300


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_scnv_fashion_mnist_defaults_reach_85_percent_within_15_minutes(tmp_path, monkeypatch):
    monkeypatch.delenv("XNORFLOW_DATA", raising=False)
    summary = train("scnv", "fashion-mnist", tmp_path / "scnv.pt", progress=False)
    assert summary["accuracy_torch"] >= 0.85          # issue 13 asks for 0.90: not reached yet
    assert summary["seconds"] <= 900
