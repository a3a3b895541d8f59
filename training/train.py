"""Train a zoo BNN on a dataset and write the model file (``xnorflow train``).

Adam on the latent weights, cross-entropy on the scaled class scores, a cosine learning-rate decay
per step, latent weights clipped to [-1, 1] after every step.

Options: ``input_bits`` 1 (binarised pixels) or b > 1 (b-bit pixels normalised by the training split's
mean per channel and standard deviation, into a first layer with binary weights: DESIGN.md 2b);
``teacher`` (a float teacher file, or "auto": the same architecture trained in float first) for
knowledge distillation at ``temperature`` (training/distill.py); ``stochastic_weights`` (BinaryConnect's
stochastic binarisation while training, the sign at inference); ``activation_grad`` (the activations'
straight-through gradient: hardtanh, or Bi-Real Net's approxsign); ``float_model`` writes a float teacher
file instead of a BNN. All are recorded in the model file; none changes what the compiler builds. Runs are deterministic for a given seed
and thread count: seeded initialisation, a seeded generator for the data order and
``torch.use_deterministic_algorithms``.

Default hyper-parameters per dataset (``TRAIN_DEFAULTS``) were tuned on this project's 2-core
reference machine (1 training thread): TFC on digits 92.8% test accuracy in 4 s; SFC on binarised
Fashion-MNIST 87.8% in 73 s; LFC on Fashion-MNIST 88.5% in 511 s. Variants measured for SFC at 15
epochs (threshold 8): lr 0.003 87.8%, lr 0.03 87.5%, batch 128 87.9%: the result is not fragile.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .datasets import (
    BITS_FORMAT,
    Dataset,
    bits_format,
    canonical_dataset_name,
    default_int_format,
    default_rule,
    input_scale,
    input_values,
    load_dataset,
    make_rule,
)
from .distill import (
    DEFAULT_TEMPERATURE,
    distillation_loss,
    load_teacher_file,
    save_teacher_file,
    teacher_logits,
)
from .layers import (
    DEFAULT_ACTIVATION_GRADIENT,
    check_activation_gradient,
    clip_latent_weights,
    set_activation_gradient,
    set_stochastic_weights,
    spread_latent_weights,
)
from .model_file import ModelFileError, model_inputs, predict, save_model_file
from .zoo import build_float_model, build_model, hidden_widths, is_conv_arch

__all__ = ["TRAIN_DEFAULTS", "accuracy", "format_summary", "train", "train_model"]

# epochs / batch size / peak learning rate per dataset; "idx:..." folders use the "idx" entry.
TRAIN_DEFAULTS = {
    "digits": {"epochs": 40, "batch_size": 64, "lr": 0.03},
    "fashion-mnist": {"epochs": 15, "batch_size": 256, "lr": 0.01},
    "idx": {"epochs": 15, "batch_size": 256, "lr": 0.01},
    "cifar10": {"epochs": 15, "batch_size": 256, "lr": 0.01},
}
# Conv nets (scnv, cnv) cost far more per image than the MLPs: their own entries, same keys. The
# Fashion-MNIST entry is sized to train scnv within 15 minutes on one core of the reference machine with
# the other core busy (14 epochs: 764 s; 8-bit inputs 89.86% where 10 gave 89.37%, 20 on two threads
# 89.53%; 1-bit inputs 87.42% where 10 gave 87.94%, 1,358 s beside two builds: bench/records.md, "scnv
# epochs"); batch 64 and lr 0.003 did best among lr 0.001 / 0.003 / 0.01 and batch 64 / 128 in short runs.
# The cifar10 entry is a starting point, not measured: CIFAR-10 is not on the reference machine.
CONV_TRAIN_DEFAULTS = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.01},
    "fashion-mnist": {"epochs": 14, "batch_size": 64, "lr": 0.003},
    "idx": {"epochs": 10, "batch_size": 64, "lr": 0.003},
    "cifar10": {"epochs": 30, "batch_size": 64, "lr": 0.003},
}
# The learning rate decays along a cosine to this fraction of its peak.
FINAL_LR_FRACTION = 0.01


def recipe_defaults(dataset_name: str, arch: str = "tfc") -> dict:
    """The epochs, batch size and peak learning rate ``train`` uses for ``arch`` on ``dataset_name``."""
    table = CONV_TRAIN_DEFAULTS if is_conv_arch(arch) else TRAIN_DEFAULTS
    for prefix in ("idx", "cifar10"):
        if dataset_name.startswith(f"{prefix}:"):
            return table[prefix]
    return table[dataset_name]


# torch's float reductions split work by thread, so the thread count changes the trained weights: a
# fixed default makes a seed give the same model on every machine (the model file records the count).
# One thread also stays fast when other jobs share a small machine (bench/results.md, training times).
DEFAULT_THREADS = 1


def default_threads() -> int:
    """The thread count when none is given: fixed, so results do not depend on the machine's cores."""
    return DEFAULT_THREADS


@contextmanager
def _deterministic_torch(threads: int):
    """Deterministic kernels and an optional thread count, restored afterwards (they are global)."""
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def accuracy(model: nn.Module, bits: np.ndarray, labels: np.ndarray) -> float:
    """Eval-mode accuracy on first-layer inputs (bits, or the pixels of a model with integer inputs)."""
    return float(np.mean(predict(model, bits) == np.asarray(labels)))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, values: np.ndarray, batch_size: int) -> None:
    """Re-estimate every batch-norm's running statistics over ``values`` with the model as it infers
    (deterministic weights): statistics gathered under stochastic weights do not describe it."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                   # a cumulative average over all batches
    model.train()
    for start in range(0, len(values), batch_size):
        model(model_inputs(model, values[start:start + batch_size]))
    model.eval()


def _cosine_lr(peak: float, step: int, total_steps: int) -> float:
    progress = step / max(1, total_steps)
    floor = peak * FINAL_LR_FRACTION
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_model(model: nn.Module, bits: np.ndarray, labels: np.ndarray, *, epochs: int, batch_size: int,
                lr: float, seed: int = 0, progress: bool = True, desc: str = "train",
                soft_targets: np.ndarray | None = None, temperature: float = DEFAULT_TEMPERATURE) -> dict:
    """Train ``model`` in place on first-layer inputs (n, features) (bits, or pixels for a model with
    integer inputs) and labels; with ``soft_targets`` (a teacher's logits per training image) the loss
    adds the distillation term. Returns the last epoch's figures."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}, lr={lr}: all must be positive")
    x_all = torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint8))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    soft_all = None if soft_targets is None else torch.from_numpy(np.asarray(soft_targets, dtype=np.float32))
    n = len(y_all)
    order_generator = torch.Generator().manual_seed(seed)   # data order independent of model init
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    epoch_loss = epoch_accuracy = float("nan")
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=total_steps, desc=desc, unit="batch", disable=not show, leave=True)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=order_generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            x = model_inputs(model, x_all[index])
            y = y_all[index]
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(lr, step, total_steps)
            logits = model(x)
            loss = distillation_loss(logits, y, None if soft_all is None else soft_all[index], temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clip_latent_weights(model)
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += len(y)
            if show:   # running figures of the current epoch (train mode)
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss_sum / seen:.4f}",
                                acc=f"{correct / seen:.4f}", refresh=False)
                bar.update(1)
        epoch_loss, epoch_accuracy = loss_sum / n, correct / n
    bar.close()
    model.eval()
    return {"train_loss": epoch_loss, "train_accuracy": epoch_accuracy}


def train(arch: str, dataset_name: str, out_path: str | Path, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, seed: int = 0, progress: bool = True,
          threads: int | None = None, threshold: int | None = None,
          dataset: Dataset | None = None, input_bits: int = 1, teacher: str | Path | None = None,
          temperature: float = DEFAULT_TEMPERATURE, stochastic_weights: bool = False,
          activation_grad: str = DEFAULT_ACTIVATION_GRADIENT, float_model: bool = False) -> dict:
    """Train ``arch`` on ``dataset_name``, evaluate on the test split, write the model file.

    ``threshold`` overrides the dataset's default binarisation threshold (``input_bits`` 1);
    ``input_bits`` > 1 trains on b-bit pixels; ``teacher``, ``temperature``, ``stochastic_weights``,
    ``activation_grad`` and ``float_model`` as the module docstring says. ``threads`` defaults to :func:`default_threads`;
    ``dataset`` passes an already loaded dataset (its name must be ``dataset_name``). Returns a summary
    dict (the model file's facts plus the output path).
    """
    hidden_widths(arch)                       # unknown arch: fail before loading any data
    if not 0 <= int(seed) < 2**63:
        raise ModelFileError(f"seed {seed}: give a seed in 0 .. 2**63 - 1")
    if dataset is not None and dataset.name != dataset_name:
        raise ValueError(f"the dataset passed is {dataset.name!r} but dataset_name is {dataset_name!r}: "
                         "pass matching ones")
    check_activation_gradient(activation_grad)      # before minutes of data loading
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature {temperature!r}: give a positive number")
    dataset_name = canonical_dataset_name(dataset_name)   # the model file names the folder from anywhere
    if Path(out_path).is_dir():                 # fail before spending minutes on training
        raise ModelFileError(f"output {out_path} is a folder: give a file path such as {Path(out_path) / 'model.pt'}")
    data = dataset if dataset is not None else load_dataset(dataset_name)
    defaults = recipe_defaults(dataset_name, arch)
    epochs = defaults["epochs"] if epochs is None else int(epochs)
    batch_size = defaults["batch_size"] if batch_size is None else int(batch_size)
    lr = defaults["lr"] if lr is None else float(lr)
    fmt = input_format(data, int(input_bits), threshold)
    if float_model:
        return _train_float_teacher(arch, dataset_name, out_path, data, epochs, batch_size, lr, seed, progress, threads)
    train_values, test_values = input_values(data.train_images, fmt), input_values(data.test_images, fmt)

    threads = default_threads() if threads is None else int(threads)
    started = time.perf_counter()
    with _deterministic_torch(threads):
        teacher_meta, soft = _teacher_targets(teacher, arch, dataset_name, data, epochs, batch_size, lr, seed,
                                              progress)
        torch.manual_seed(seed)           # the same initialisation with or without a teacher
        norm = None if fmt["format"] == BITS_FORMAT else (fmt["mean"], input_scale(fmt))
        model = build_model(arch, tuple(data.image_shape), n_classes=data.n_classes, input_norm=norm)
        set_activation_gradient(model, activation_grad)
        if stochastic_weights:
            set_stochastic_weights(model, True)
            spread_latent_weights(model)
        fit = train_model(model, train_values, data.train_labels, epochs=epochs, batch_size=batch_size,
                          lr=lr, seed=seed, progress=progress, desc=f"{arch}/{dataset_name}",
                          soft_targets=soft, temperature=temperature)
        if stochastic_weights:
            set_stochastic_weights(model, False)
            recalibrate_batchnorm(model, train_values, batch_size)
        test_accuracy = accuracy(model, test_values, data.test_labels)
    seconds = time.perf_counter() - started

    train_meta = {"epochs": epochs, "seed": seed, "seconds": round(seconds, 3), "lr": lr,
                  "batch_size": batch_size, "optimizer": "adam", "schedule": "cosine",
                  "threads": threads,
                  "train_loss": fit["train_loss"], "train_accuracy": fit["train_accuracy"],
                  "n_train": len(train_values), "n_test": len(test_values),
                  "stochastic_weights": bool(stochastic_weights), "activation_grad": activation_grad,
                  "teacher": None if teacher_meta is None else {**teacher_meta, "temperature": float(temperature)}}
    record = save_model_file(out_path, model, arch=arch, dataset=dataset_name, input_format=fmt,
                             accuracy_torch=test_accuracy, train=train_meta, image_shape=data.image_shape)
    return {"arch": arch, "dataset": dataset_name, "out_path": str(out_path), "input": record["input"],
            "in_features": data.n_features, "hidden": list(hidden_widths(arch)),
            "accuracy_torch": test_accuracy, **train_meta}


def input_format(data: Dataset, input_bits: int, threshold: int | None = None) -> dict:
    """The input format of a training run: binarised pixels (1 bit; ``threshold`` or the dataset's default
    rule) or b-bit pixels normalised by the training split (datasets.default_int_format)."""
    if input_bits == 1:
        return bits_format(default_rule(data) if threshold is None else make_rule(int(threshold), data.max_value))
    if threshold is not None:
        raise ValueError(f"a binarisation threshold ({threshold}) with {input_bits}-bit inputs: integer inputs "
                         "are not binarised, drop the threshold")
    return default_int_format(data, input_bits)


def _float_norm(data: Dataset) -> tuple[dict, tuple]:
    """The teacher's input: 8-bit pixels normalised by the training split (format, InputNorm arguments)."""
    fmt = default_int_format(data, 8)
    return fmt, (fmt["mean"], input_scale(fmt))


def _train_float(arch: str, data: Dataset, epochs: int, batch_size: int, lr: float, seed: int, progress: bool,
                 desc: str) -> tuple[nn.Module, dict, dict, float]:
    """``arch`` in float trained on the pixels: (model, its input format, fit figures, test accuracy)."""
    fmt, norm = _float_norm(data)
    torch.manual_seed(seed)
    model = build_float_model(arch, tuple(data.image_shape), data.n_classes, norm)
    fit = train_model(model, data.train_images, data.train_labels, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, progress=progress, desc=desc)
    return model, fmt, fit, accuracy(model, data.test_images, data.test_labels)


def _teacher_targets(teacher, arch: str, dataset_name: str, data: Dataset, epochs: int, batch_size: int, lr: float,
                     seed: int, progress: bool) -> tuple[dict | None, np.ndarray | None]:
    """(what the model file records of the teacher, its logits on the training images), or (None, None)."""
    if teacher is None:
        return None, None
    if str(teacher) == "auto":
        model, _, _, test_accuracy = _train_float(arch, data, epochs, batch_size, lr, seed, progress,
                                                  f"teacher {arch}/{dataset_name}")
        meta = {"source": "auto", "accuracy": test_accuracy, "epochs": epochs, "lr": lr, "seed": seed}
    else:
        model, record = load_teacher_file(teacher, arch, dataset_name)
        test_accuracy = accuracy(model, data.test_images, data.test_labels)
        meta = {"source": str(Path(teacher).resolve()), "accuracy": test_accuracy,
                "epochs": (record.get("train") or {}).get("epochs")}
    return meta, teacher_logits(model, data.train_images)


def _train_float_teacher(arch: str, dataset_name: str, out_path, data: Dataset, epochs: int, batch_size: int, lr: float,
                         seed: int, progress: bool, threads: int | None) -> dict:
    """Train ``arch`` in float and write a teacher file (training/distill.py)."""
    threads = default_threads() if threads is None else int(threads)
    started = time.perf_counter()
    with _deterministic_torch(threads):
        model, fmt, fit, test_accuracy = _train_float(arch, data, epochs, batch_size, lr, seed, progress,
                                                      f"float {arch}/{dataset_name}")
    meta = {"epochs": epochs, "seed": seed, "seconds": round(time.perf_counter() - started, 3), "lr": lr,
            "batch_size": batch_size, "threads": threads, "train_loss": fit["train_loss"],
            "train_accuracy": fit["train_accuracy"], "n_train": len(data.train_images),
            "n_test": len(data.test_images), "stochastic_weights": False, "teacher": None}
    save_teacher_file(out_path, model, arch=arch, dataset=dataset_name, image_shape=data.image_shape,
                      n_classes=data.n_classes, input_format=fmt, accuracy=test_accuracy, train=meta)
    return {"arch": arch, "dataset": dataset_name, "out_path": str(out_path), "input": fmt, "float": True,
            "in_features": data.n_features, "hidden": list(hidden_widths(arch)), "accuracy_torch": test_accuracy,
            **meta}


def format_summary(summary: dict) -> str:
    """A few human lines about a training run."""
    fmt = summary["input"]
    if fmt["format"] == BITS_FORMAT:
        inputs = f"{summary['in_features']} input bits"
        input_line = f"  binarisation  pixel >= {fmt['threshold']} of {fmt['max_value']}"
    else:
        inputs = f"{summary['in_features']} {fmt['bits']}-bit inputs"
        means = ", ".join(f"{m:.2f}" for m in fmt["mean"])
        input_line = f"  inputs        {fmt['bits']}-bit pixels, (x - [{means}]) / {input_scale(fmt):.2f}"
    kind = "a float teacher" if summary.get("float") else summary["arch"]
    lines = [f"trained {kind} on {summary['dataset']} ({inputs}, hidden {summary['hidden']})", input_line,
             (f"  epochs        {summary['epochs']} (batch {summary['batch_size']}, lr {summary['lr']}, "
              f"seed {summary['seed']}, {summary['threads']} threads)")]
    teacher = summary.get("teacher")
    if teacher:
        lines.append(f"  teacher       {teacher['source']} (test accuracy {teacher['accuracy']:.2%}, "
                     f"temperature {teacher['temperature']:g})")
    if summary.get("stochastic_weights"):
        lines.append("  weights       stochastic binarisation in training (BinaryConnect), sign at inference")
    if summary.get("activation_grad", DEFAULT_ACTIVATION_GRADIENT) != DEFAULT_ACTIVATION_GRADIENT:
        lines.append(f"  activations   trained with the {summary['activation_grad']} gradient")
    lines += [f"  train         loss {summary['train_loss']:.4f}, accuracy {summary['train_accuracy']:.2%}",
              f"  test accuracy {summary['accuracy_torch']:.2%} ({summary['n_test']} images, eval mode)",
              f"  time          {summary['seconds']:.1f} s",
              f"  model file    {summary['out_path']}"]
    return "\n".join(lines)
