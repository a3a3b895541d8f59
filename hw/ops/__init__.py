"""Layer kinds as ops: one class per kind, one registry keyed by kind (see hw/ops/base.py).

Registration is importing the kind's module here: its class is decorated with `register`.
Adding a kind is the recipe in docs/DESIGN.md section 3.
"""
from xnorflow.hw.ops.base import (
    OPS,
    Op,
    kinds,
    layer_groups,
    layer_ops,
    network_ops,
    op_class,
    op_for,
    output_op,
    register,
)

# The kinds this xnorflow builds (each module registers its op class).
from xnorflow.hw.ops import conv, dense, int_conv, int_dense, label_select, maxpool  # noqa: F401  isort: skip

__all__ = ["OPS", "Op", "kinds", "layer_groups", "layer_ops", "network_ops", "op_class", "op_for", "output_op",
           "register"]
