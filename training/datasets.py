"""Datasets as flat uint8 pixel arrays with their image shape, and the rule that turns pixels into bits.

Images are stored flat, (n, C*H*W), in PyTorch's (c, y, x) order; ``Dataset.image_shape`` is (C, H, W)
(C = 1 for grey images), so ``images.reshape(n, *image_shape)`` is the (N, C, H, W) tensor a conv net
takes.

Names accepted by :func:`load_dataset`:

- ``digits``: scikit-learn's bundled 8x8 digits (pixel values 0..16), no download. A fixed stratified
  80/20 train/test split with seed 0, so every run sees the same test images.
- ``fashion-mnist``: the four IDX files of Debian's ``dataset-fashion-mnist`` package
  (/usr/share/datasets/fashion-mnist), or of ``$XNORFLOW_DATA`` when set (either the folder holding the
  files or a folder holding a ``fashion-mnist`` sub-folder).
- ``idx:DIR``: any folder with the standard MNIST-format files train-images-idx3-ubyte,
  train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally ``.gz``.
- ``cifar10:DIR``: the *binary* version of CIFAR-10 (cifar-10-binary.tar.gz, extracted): DIR (or its
  ``cifar-10-batches-bin`` sub-folder) holds data_batch_1.bin .. data_batch_5.bin (training) and
  test_batch.bin, each a sequence of 3073-byte records: 1 label byte (0..9), then 3072 pixel bytes,
  the 1024 red, 1024 green and 1024 blue values of a 32x32 image in raster order, i.e. (c, y, x).
  The pickled "python version" is never read (unpickling runs code). CIFAR-10 is not shipped with
  xnorflow nor installed on the reference machine: download it yourself.

Binarisation (DESIGN.md section 2): a pixel becomes the bit ``pixel >= threshold`` (bit 1 = +1), every
channel by the same threshold. The rule is a small dict stored in the model file, so training, the golden model and the hardware agree::

    {"rule": "pixel >= threshold", "threshold": T, "max_value": M}

Input formats (DESIGN.md 2b; the model file's ``input``): ``bits_format(rule)`` (the rule plus
``"format": "bits"``) or ``int_format(b, max_value, mean per channel, scale)`` for b-bit pixels.
``input_values`` gives what the first layer takes (bits, or the range-checked pixels) and ``encode_frames``
the hardware's frames: element i at frame bits [i*b, (i+1)*b), LSB first (``pack_elements``).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xnorflow.errors import XnorflowError

__all__ = [
    "BINARIZE_RULE",
    "CIFAR10_FILES",
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "Dataset",
    "DatasetError",
    "binarize",
    "bits_format",
    "default_int_format",
    "default_rule",
    "element_bits",
    "encode_frames",
    "input_format_problem",
    "input_scale",
    "input_values",
    "int_format",
    "load_dataset",
    "pack_elements",
    "read_idx",
    "unpack_elements",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("digits", "fashion-mnist", "idx:DIR", "cifar10:DIR")
BINARIZE_RULE = "pixel >= threshold"
# Input formats (DESIGN.md 2b): binarised pixels, or unsigned b-bit integers with their normalisation.
BITS_FORMAT, INT_FORMAT = "bits", "int"
INPUT_FORMATS = (BITS_FORMAT, INT_FORMAT)
MAX_INPUT_BITS = 8
INT_FORMAT_FIX = "re-create the model with `xnorflow train --input-bits 1|8`"

# The four standard files of an MNIST-format folder, by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}   # unsigned-byte data with 3 (images) or 1 (labels) dims

# CIFAR-10's binary version, by split; each file is a sequence of records of 1 label + 3072 pixel bytes.
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_CLASSES = 10
CIFAR10_SUBFOLDER = "cifar-10-batches-bin"      # what cifar-10-binary.tar.gz extracts to

# Default binarisation threshold per dataset: the candidate with the best measured test accuracy.
# digits, TFC, 40 epochs, mean of seeds 0-2: T=2 89.2%, 4 91.3%, 6 92.7%, 8 92.2%, 10 91.2%.
# Fashion-MNIST, SFC, 4 epochs: T=1 86.1%, 8 87.2%, 16 86.7%, 32 86.5%, 64 85.8%, 96 84.3%, 128 82.3%;
# 15 epochs: T=8 87.8%, 16 87.5%. A low threshold keeps the garment's silhouette, which carries more
# of the class than the texture a mid-grey threshold keeps. Other IDX folders (e.g. MNIST) use 128.
DEFAULT_THRESHOLDS = {"digits": 6, "fashion-mnist": 8}
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DatasetError(XnorflowError):
    """A dataset that cannot be loaded; the message names the file and the fix."""


@dataclass
class Dataset:
    """Raw pixels, flattened in (c, y, x) order: images are (n, C*H*W) uint8 in 0..max_value; labels
    int64; ``image_shape`` is (C, H, W)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    max_value: int
    image_shape: tuple[int, ...]

    @property
    def n_features(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


# --- IDX files ---------------------------------------------------------------------------------------

def _find_idx_file(folder: Path, stem: str, fix: str) -> Path:
    """The plain or .gz version of ``stem`` in ``folder``."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing dataset file {folder / stem}[.gz]: {fix}")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:   # gzip.BadGzipFile is an OSError
        raise DatasetError(f"cannot read {path} ({exc}): replace it with an intact IDX file") from None


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file with ``ndim`` dimensions (3 for images, 1 for labels)."""
    path = Path(path)
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is too short for an IDX header ({len(data)} bytes): "
                           "replace it with an intact IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DatasetError(f"{path} has magic 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
                           f"(unsigned bytes, {ndim} dims): is it the right IDX file?")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DatasetError(f"{path} declares shape {dims} ({expected} bytes of data) but holds "
                           f"{len(data) - header}: the file is truncated or corrupt, replace it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_folder(folder: str | Path, name: str, fix: str) -> Dataset:
    """Read the four standard IDX files of ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist: {fix}")
    arrays = {role: read_idx(_find_idx_file(folder, stem, fix), 3 if role.endswith("images") else 1)
              for role, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DatasetError(f"{folder}: {IDX_FILES[f'{split}_images']} holds {len(images)} images but "
                               f"{IDX_FILES[f'{split}_labels']} holds {len(labels)} labels: "
                               "the files do not belong together, replace them")
        if len(images) == 0:
            raise DatasetError(f"{folder}: {IDX_FILES[f'{split}_images']} holds no images: "
                               "replace it with a non-empty IDX file")
    # The class count is the largest label + 1. A label far beyond the others (a stray 255 among
    # 0..9) would silently make hundreds of classes: refused when fewer than half of 0 .. K-1 occur
    # (EMNIST letters, 1..26, leaves one class unused and passes).
    labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]])
    classes = np.unique(labels)
    n_classes = int(classes.max()) + 1
    if 2 * classes.size < n_classes:
        odd = int(classes.max())
        raise DatasetError(f"{folder}: label {odd} would make {n_classes} classes but only {classes.size} "
                           f"distinct labels occur: labels must be class numbers 0 .. K-1; fix the label files")
    if int(arrays["test_labels"].max()) > int(arrays["train_labels"].max()):
        raise DatasetError(f"{folder}: test label {int(arrays['test_labels'].max())} never occurs in training "
                           f"(training labels stop at {int(arrays['train_labels'].max())}): fix the label files")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"{folder}: train images are {arrays['train_images'].shape[1:]} but test images "
                           f"are {arrays['test_images'].shape[1:]}: use files of the same dataset")
    image_shape = (1, *(int(d) for d in arrays["train_images"].shape[1:]))   # grey: one channel
    return Dataset(
        name=name,
        train_images=arrays["train_images"].reshape(len(arrays["train_images"]), -1).copy(),
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"].reshape(len(arrays["test_images"]), -1).copy(),
        test_labels=arrays["test_labels"].astype(np.int64),
        max_value=255,
        image_shape=image_shape,
    )


# --- named datasets ------------------------------------------------------------------------------------

def fashion_mnist_dir() -> Path:
    """$XNORFLOW_DATA (or its fashion-mnist sub-folder) when set, else Debian's install folder."""
    root = os.environ.get("XNORFLOW_DATA")
    if not root:
        return FASHION_MNIST_DIR
    root_path = Path(root)
    sub = root_path / "fashion-mnist"
    return sub if sub.is_dir() else root_path


def load_digits_dataset() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.uint8)          # values 0..16
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    return Dataset("digits", train_x, train_y, test_x, test_y, max_value=16, image_shape=(1, 8, 8))


# --- CIFAR-10, binary version ----------------------------------------------------------------------------

def read_cifar10_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3072) uint8 in (c, y, x) order, labels (n,) int64) of one CIFAR-10 binary file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path} ({exc.strerror}): replace it with the file from "
                           "cifar-10-binary.tar.gz") from None
    if not data or len(data) % CIFAR10_RECORD:
        raise DatasetError(f"{path} holds {len(data)} bytes, not a positive multiple of the {CIFAR10_RECORD}-byte "
                           "CIFAR-10 record (1 label + 3072 pixels): the file is truncated or not the binary "
                           "version; replace it with the file from cifar-10-binary.tar.gz")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= CIFAR10_CLASSES:
        bad = int(np.argmax(labels >= CIFAR10_CLASSES))
        raise DatasetError(f"{path}: record {bad} has label {int(labels[bad])}, CIFAR-10 labels are 0..9: "
                           "the file is corrupt or not CIFAR-10's binary version; replace it")
    return records[:, 1:].copy(), labels


def load_cifar10_folder(folder: str | Path, name: str) -> Dataset:
    """The CIFAR-10 binary files of ``folder`` (or of its cifar-10-batches-bin sub-folder)."""
    folder = Path(folder).expanduser()
    fix = ("download cifar-10-binary.tar.gz (the binary version, not the python one) from "
           "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there")
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 folder {folder} does not exist: {fix}")
    if not (folder / CIFAR10_FILES["test"][0]).exists() and (folder / CIFAR10_SUBFOLDER).is_dir():
        folder = folder / CIFAR10_SUBFOLDER
    wanted = [*CIFAR10_FILES["train"], *CIFAR10_FILES["test"]]
    missing = [stem for stem in wanted if not (folder / stem).is_file()]
    if missing:
        pickled = " (it holds the pickled python version, which xnorflow never reads)" \
            if (folder / "data_batch_1").exists() else ""
        raise DatasetError(f"{folder} lacks the CIFAR-10 binary files {', '.join(missing)}{pickled}: {fix}")
    splits = {}
    for split, stems in CIFAR10_FILES.items():
        parts = [read_cifar10_file(folder / stem) for stem in stems]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return Dataset(name, splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1],
                   max_value=255, image_shape=CIFAR10_SHAPE)


def canonical_dataset_name(name: str) -> str:
    """``idx:DIR`` / ``cifar10:DIR`` with DIR made absolute, so the name means the same folder from
    any directory."""
    for prefix in ("idx:", "cifar10:"):
        if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
            return prefix + str(Path(name[len(prefix):]).expanduser().resolve())
    return name


def load_dataset(name: str) -> Dataset:
    """Load ``digits``, ``fashion-mnist``, ``idx:DIR`` or ``cifar10:DIR`` (see the module docstring)."""
    if name == "digits":
        return load_digits_dataset()
    if name == "fashion-mnist":
        folder = fashion_mnist_dir()
        fix = ("apt-get install dataset-fashion-mnist or set XNORFLOW_DATA to a folder with the "
               "Fashion-MNIST IDX files")
        return load_idx_folder(folder, name, fix)
    if name.startswith("idx:"):
        folder = name[len("idx:"):]
        if not folder:
            raise DatasetError("dataset 'idx:' names no folder: write idx:DIR with DIR holding the four "
                               "MNIST-format IDX files")
        fix = f"put the four MNIST-format files ({', '.join(IDX_FILES.values())}, optionally .gz) in it"
        return load_idx_folder(folder, name, fix)
    if name.startswith("cifar10:"):
        folder = name[len("cifar10:"):]
        if not folder:
            raise DatasetError("dataset 'cifar10:' names no folder: write cifar10:DIR with DIR holding "
                               "CIFAR-10's binary files (data_batch_1.bin .. data_batch_5.bin, test_batch.bin)")
        return load_cifar10_folder(folder, name)
    raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")


# --- binarisation ---------------------------------------------------------------------------------------

def default_rule(dataset: Dataset) -> dict:
    """The binarisation rule used when none is given: a per-dataset threshold, else half the range."""
    threshold = DEFAULT_THRESHOLDS.get(dataset.name, (dataset.max_value + 1) // 2)
    return {"rule": BINARIZE_RULE, "threshold": int(threshold), "max_value": int(dataset.max_value)}


def make_rule(threshold: int, max_value: int) -> dict:
    if not 0 <= threshold <= max_value + 1:
        raise DatasetError(f"binarisation threshold {threshold} is outside 0..{max_value + 1}: "
                           f"choose a threshold within the pixel range 0..{max_value}")
    return {"rule": BINARIZE_RULE, "threshold": int(threshold), "max_value": int(max_value)}


def binarize(images: np.ndarray, rule: dict) -> np.ndarray:
    """Pixels -> uint8 bits by ``rule`` (bit 1 = +1): ``pixel >= threshold``."""
    if not isinstance(rule, dict) or rule.get("rule") != BINARIZE_RULE or "threshold" not in rule:
        raise DatasetError(f"unsupported binarisation rule {rule!r}: use "
                           f"{{'rule': '{BINARIZE_RULE}', 'threshold': T, 'max_value': M}}")
    return (np.asarray(images) >= int(rule["threshold"])).astype(np.uint8)


# --- input formats: what the first layer takes (DESIGN.md sections 2 and 2b) -----------------------------

def bits_format(rule: dict) -> dict:
    """The input format of a network on binarised pixels: ``{"format": "bits", **rule}``."""
    return {"format": BITS_FORMAT, **rule}


def int_format(bits: int, max_value: int, mean, scale) -> dict:
    """The input format of a network on unsigned ``bits``-bit pixels normalised as ``(x - mean[c]) / scale``
    (a mean per input channel, one positive scale; a list of scales per channel only when they are equal),
    checked by :func:`input_format_problem`."""
    fmt = {"format": INT_FORMAT, "bits": int(bits), "max_value": int(max_value),
           "mean": [float(m) for m in np.atleast_1d(np.asarray(mean, dtype=np.float64))],
           "scale": [float(d) for d in scale] if isinstance(scale, (list, tuple)) else float(scale)}
    problem = input_format_problem(fmt)
    if problem:
        raise DatasetError(f"{problem}: {INT_FORMAT_FIX}")
    return fmt


def default_int_format(dataset: Dataset, bits: int) -> dict:
    """b-bit pixels normalised by the training split's mean per channel and its standard deviation over all
    pixels (one scale, so the normalisation folds into integer thresholds)."""
    check_pixel_range(dataset.train_images, bits, dataset.name)
    pixels = dataset.train_images.reshape(len(dataset.train_images), dataset.image_shape[0], -1).astype(np.float64)
    mean = pixels.mean(axis=(0, 2))
    scale = float(np.sqrt(np.mean((pixels - mean[None, :, None]) ** 2)))
    return int_format(bits, dataset.max_value, mean, scale if scale > 0 else 1.0)


def input_format_problem(fmt) -> str | None:
    """What is wrong with an input format (None: nothing). A normalisation whose scale differs per channel
    is a problem: the weights would stop being +-1 (DESIGN.md 2b)."""
    if not isinstance(fmt, dict) or fmt.get("format") not in INPUT_FORMATS:
        found = fmt.get("format") if isinstance(fmt, dict) else fmt
        return f"input format {found!r} is not one of {', '.join(map(repr, INPUT_FORMATS))}"
    if fmt["format"] == BITS_FORMAT:
        if fmt.get("rule") != BINARIZE_RULE or not isinstance(fmt.get("threshold"), int):
            return f"bits input format {fmt!r} lacks the rule {BINARIZE_RULE!r} with an integer threshold"
        return None
    bits, max_value, mean, scale = (fmt.get(key) for key in ("bits", "max_value", "mean", "scale"))
    if not isinstance(bits, int) or not 2 <= bits <= MAX_INPUT_BITS:
        return f"integer inputs of {bits!r} bits: give 2 .. {MAX_INPUT_BITS} bits"
    if not isinstance(max_value, int) or not 0 < max_value < 2 ** bits:
        return f"pixel values up to {max_value!r} do not fit {bits}-bit inputs (0 .. {2 ** bits - 1})"
    if not isinstance(mean, list) or not mean or not all(isinstance(m, (int, float)) and np.isfinite(m) for m in mean):
        return f"input mean {mean!r} is not a list of finite numbers, one per channel"
    scales = scale if isinstance(scale, list) else [scale]
    if not scales or not all(isinstance(d, (int, float)) and np.isfinite(d) and d > 0 for d in scales):
        return f"input scale {scale!r} is not a positive number"
    if len(set(scales)) > 1:
        return (f"input scales {scales} differ per channel, which does not fold into +-1 weights and integer "
                "thresholds; normalise every channel by one scale")
    return None


def input_scale(fmt: dict) -> float:
    """The one scale d of an integer input format (a list of equal scales is that scale)."""
    scale = fmt["scale"]
    return float(scale[0] if isinstance(scale, list) else scale)


def check_pixel_range(images: np.ndarray, bits: int, what: str = "the images") -> None:
    """DatasetError unless every pixel fits an unsigned ``bits``-bit input."""
    images = np.asarray(images)
    low, high = (int(images.min()), int(images.max())) if images.size else (0, 0)
    if low < 0 or high >= 2 ** bits:
        raise DatasetError(f"{what} hold pixel values {low} .. {high}, out of range for {bits}-bit inputs "
                           f"(0 .. {2 ** bits - 1}): choose more input bits or rescale the pixels")


def input_values(images: np.ndarray, fmt: dict) -> np.ndarray:
    """What the first layer takes, (n, elements) uint8: bits by the rule (bits format) or the pixels
    themselves, range-checked (int format)."""
    problem = input_format_problem(fmt)
    if problem:
        raise DatasetError(f"{problem}: {INT_FORMAT_FIX}")
    if fmt["format"] == BITS_FORMAT:
        return binarize(images, fmt)
    check_pixel_range(images, fmt["bits"])
    return np.asarray(images).astype(np.uint8)


def element_bits(fmt: dict) -> int:
    """Frame bits per input element: 1 for binarised pixels, b for b-bit integers."""
    return 1 if fmt["format"] == BITS_FORMAT else int(fmt["bits"])


def pack_elements(values: np.ndarray, bits: int) -> np.ndarray:
    """(n, elements) integers -> (n, elements * bits) frame bits: element i occupies bits
    [i*bits, (i+1)*bits), least significant bit first."""
    values = np.asarray(values, dtype=np.int64)
    planes = (values[:, :, None] >> np.arange(bits)) & 1
    return planes.reshape(len(values), -1).astype(np.uint8)


def unpack_elements(frame_bits: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_elements`: (n, elements * bits) bits -> (n, elements) int64."""
    planes = np.asarray(frame_bits, dtype=np.int64).reshape(len(frame_bits), -1, bits)
    return (planes << np.arange(bits)).sum(axis=2)


def encode_frames(images: np.ndarray, fmt: dict) -> np.ndarray:
    """The hardware's input frames (n, elements * b) bits for raw pixels already in stream order (for a
    conv input pixel-major (y, x), channel within a pixel): :func:`input_values` packed by
    :func:`pack_elements`."""
    return pack_elements(input_values(images, fmt), element_bits(fmt))
