"""Random-weight networks of given sizes for the compiler's tests (rootdir-relative import, like tests/sim)."""
import itertools

import numpy as np

from xnorflow.hw.spec import LayerSpec, NetworkSpec


def net(sizes, folding=None):
    """A NetworkSpec with layers sizes[0] -> sizes[1] -> ...; the last layer has no thresholds."""
    rng = np.random.default_rng(0)
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(LayerSpec(n_in, n_out, rng.integers(0, 2, (n_out, n_in), dtype=np.uint8),
                                None if last else rng.integers(0, n_in + 2, n_out)))
    spec = NetworkSpec(tuple(layers))
    return spec if folding is None else spec.with_folding(folding)
