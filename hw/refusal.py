"""Components that refuse their arguments.

Amaranth warns about an elaboratable that is created and never elaborated ("UnusedElaboratable").
A component whose constructor rejects its arguments is never elaborated on purpose: the error is the
result, so the warning would only add noise to it. `refusing` wraps a constructor's checks.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def refusing(component):
    """Run a constructor's checks; if one raises a ValueError (every xnorflow error is one), mark
    ``component`` as refused, so Amaranth does not warn that it was never used, and re-raise."""
    try:
        yield
    except ValueError:
        component._MustUse__silence = True
        raise
