"""Knowledge distillation from a float teacher (``xnorflow train --teacher MODEL|auto``).

The teacher is the student's architecture in float (training/zoo.py: build_float_model) on normalised
pixels. It is fixed while the student trains, so its logits on the training images are computed once;
the student's loss is ``cross_entropy(student, labels) + T^2 * KL(softmax(teacher / T) || softmax(student / T))``
with temperature T (Hinton et al.; T^2 keeps the soft term's gradient the size of the hard term's).

A teacher file (``xnorflow train --float``) is ``torch.save`` of one dict of tensors, strings, numbers,
lists and dicts, loadable with ``weights_only=True``::

    {"format": "xnorflow-float-model", "version": 1, "arch": "sfc", "dataset": "fashion-mnist",
     "image_shape": [1, 28, 28], "n_classes": 10,
     "input": {"format": "int", ...},         # the pixels it takes and their normalisation (model_file.py)
     "state_dict": {...},                     # of build_float_model(arch, image_shape, n_classes, (mean, scale))
     "accuracy": 0.90, "train": {...}}

It is never compiled (xnorflow compile refuses it: it is not an xnorflow-model file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import INT_FORMAT, input_format_problem, input_scale
from .model_file import ModelFileError, model_inputs, write_record
from .zoo import build_float_model, hidden_widths

__all__ = ["DEFAULT_TEMPERATURE", "TEACHER_FORMAT", "distillation_loss", "load_teacher_file", "save_teacher_file",
           "teacher_logits"]

TEACHER_FORMAT = "xnorflow-float-model"
TEACHER_VERSION = 1
DEFAULT_TEMPERATURE = 4.0
TEACHER_KEYS = ("format", "version", "arch", "dataset", "image_shape", "n_classes", "input", "state_dict",
                "accuracy", "train")


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None,
                      temperature: float) -> torch.Tensor:
    """Cross-entropy on the labels, plus T^2 * KL(teacher || student) on logits softened by T when the
    teacher's logits ``soft`` are given."""
    loss = F.cross_entropy(logits, labels)
    if soft is None:
        return loss
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(soft / t, dim=1), log_target=True,
                  reduction="batchmean")
    return loss + t * t * kl


@torch.no_grad()
def teacher_logits(model: nn.Module, pixels: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The eval-mode logits (n, classes) float32 of a float model on integer pixels."""
    model.eval()
    out = [model(model_inputs(model, pixels[start:start + batch_size])).numpy()
           for start in range(0, len(pixels), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def save_teacher_file(path: str | Path, model: nn.Module, *, arch: str, dataset: str, image_shape, n_classes: int,
                      input_format: dict, accuracy: float | None, train: dict) -> dict:
    """Write a float teacher (module docstring) to ``path``, atomically."""
    record = {"format": TEACHER_FORMAT, "version": TEACHER_VERSION, "arch": str(arch), "dataset": str(dataset),
              "image_shape": [int(d) for d in image_shape], "n_classes": int(n_classes), "input": dict(input_format),
              "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
              "accuracy": None if accuracy is None else float(accuracy), "train": dict(train)}
    write_record(Path(path), record)
    return record


def load_teacher_file(path: str | Path, arch: str, dataset: str) -> tuple[nn.Module, dict]:
    """The float teacher at ``path`` (eval mode) and its record; ModelFileError in one line when it is not
    a teacher file, or not one of ``arch`` on ``dataset``'s images."""
    path = Path(path)
    fix = (f"train one with `xnorflow train --float --arch {arch} --dataset {dataset} -o {path}`, or pass "
           "--teacher auto")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"teacher file {path} not found: {fix}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ModelFileError(f"{path} is not a readable teacher file ({first_line}): {fix}") from None
    if not isinstance(record, dict) or record.get("format") != TEACHER_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ModelFileError(f"{path} is not a float teacher file (format {found!r}, expected {TEACHER_FORMAT!r}): "
                             f"{fix}")
    missing = [key for key in TEACHER_KEYS if key not in record]
    problem = input_format_problem(record.get("input"))
    if missing or record["version"] != TEACHER_VERSION or problem or record["input"]["format"] != INT_FORMAT:
        raise ModelFileError(f"{path} is an incomplete or unreadable teacher file "
                             f"({'lacks ' + ', '.join(missing) if missing else problem or 'version or input'}): {fix}")
    if record["arch"] != arch or record["dataset"] != dataset:
        raise ModelFileError(f"{path} is a {record['arch']} teacher for {record['dataset']}, not {arch} for {dataset}: "
                             f"{fix}")
    hidden_widths(arch)
    fmt = record["input"]
    model = build_float_model(arch, tuple(record["image_shape"]), record["n_classes"], (fmt["mean"], input_scale(fmt)))
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: its weights do not fit {arch} ({str(exc).splitlines()[0][:100]}): {fix}") from None
    return model.eval(), record

