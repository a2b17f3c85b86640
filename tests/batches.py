"""Labelled data for the tests: one batch for the gradient checks (test_model, test_escm2,
test_torch_bridge) and small learnable impressions for fit (test_early_stopping,
test_recent_average)."""

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


def toy_impressions(n, seed, dims=(6, 4)):
    """``n`` impressions over fields of ``dims`` ids whose click and conversion depend on the ids."""
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, n) for d in dims], axis=1)                # (n, fields)
    click = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - 2.5)))).astype(np.int8)
    conversion = click * (rng.random(n) < 0.3 + 0.1 * X[:, 1]).astype(np.int8)
    return X, click, conversion
