"""Accuracy of 1-bit against 8-bit inputs (DESIGN.md 2b), with the training options of issue 15.

For each model file given: PyTorch's accuracy on the test split (eval mode, the file's figure) and the
accuracy of the compiler's own folded integer execution (compiler/model.py: thresholds on p, or on s for
an integer first layer) on the same images, their agreement and the exact ties of the float model.
One JSON object per line on stdout::

    .venv/bin/xnorflow train --arch sfc --dataset fashion-mnist --input-bits 8 -o sfc8.pt
    .venv/bin/python bench/input_bits.py sfc8.pt [more.pt ...]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from xnorflow.compiler.model import execute
from xnorflow.compiler.passes import streamline
from xnorflow.compiler.source import ModelFileSource

# A float pre-activation this close to its boundary (in units of the layer's integer) is an exact tie.
TIE = 1e-6


def measure(path: str) -> dict:
    source = ModelFileSource(path)
    frames = source.test_frames(None)
    float_run = execute(source.model, frames.values)
    folded = execute(streamline(source.model), frames.values)
    train = source.record["train"]
    fmt = source.record["input"]
    return {
        "model": path, "arch": source.arch, "dataset": source.record["dataset"],
        "input_bits": fmt.get("bits", 1), "teacher": (train.get("teacher") or {}).get("source"),
        "teacher_accuracy": (train.get("teacher") or {}).get("accuracy"),
        "stochastic_weights": bool(train.get("stochastic_weights")), "epochs": train["epochs"], "seed": train["seed"],
        "train_seconds": train["seconds"], "images": len(frames.labels),
        "accuracy_torch": float(np.mean(frames.reference_predictions == frames.labels)),
        "accuracy_folded": float(np.mean(folded.predictions == frames.labels)),
        "torch_folded_agreement": float(np.mean(folded.predictions == frames.reference_predictions)),
        "exact_ties": int(sum((m <= TIE).sum() for m in float_run.margins if m is not None)),
    }


if __name__ == "__main__":
    for model_path in sys.argv[1:]:
        print(json.dumps(measure(model_path)), flush=True)
