"""One labelled batch for the gradient-check tests (test_model, test_escm2, test_torch_bridge)."""

import numpy as np


def draw_batch(rng, field_dims, n=20, n_dense=0):
    """Ids, click, conversion and dense features for ``n`` rows.

    Both click classes and at least one conversion are present, and no row
    has conversion = 1 without a click. ``dense`` is None when ``n_dense`` is 0.
    """
    X = np.stack([rng.integers(0, d, size=n) for d in field_dims], axis=1)   # (n, fields)
    click = rng.integers(0, 2, size=n)
    click[:2] = (0, 1)
    conversion = click * rng.integers(0, 2, size=n)
    conversion[1] = 1
    dense = rng.standard_normal((n, n_dense)) if n_dense else None
    return X, click, conversion, dense
