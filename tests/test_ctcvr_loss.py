"""The log-space CTCVR loss against the naive product-then-clip loss.

Where both are valid they agree; where the product underflows or rounds to 1,
the naive loss is wrong (clipped to -log(eps)) or not finite, and the
log-space one stays exact.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from esmm_np import layers as L
from esmm_np import losses


def _naive(a, b, z, eps=1e-7):
    return losses.ctcvr_bce_naive(L.sigmoid(a), L.sigmoid(b), z, eps=eps)


def test_agree_for_moderate_logits():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-5, 5, size=(2, 200))
    z = rng.integers(0, 2, size=200)
    stable, _, _ = losses.ctcvr_bce_logspace(a, b, z)
    naive, _, _ = _naive(a, b, z, eps=0.0)
    # Moderate logits never reach the clip; both are the same float64 formula
    # up to rounding (~1e-16 per term), so 1e-12 relative is generous.
    assert stable == pytest.approx(naive, rel=1e-12)


@pytest.mark.parametrize("a, b, z, exact", [
    (40.0, 40.0, 0, 40.0 - np.log(2)),   # p_ctcvr rounds to 1: true -log(1-p) ~ 39.3
    (-800.0, 3.0, 1, 800.0 + np.log1p(np.exp(-3.0))),   # sigmoid(-800) underflows to 0
])
def test_naive_breaks_for_large_logits(a, b, z, exact):
    a, b, z = np.array([a]), np.array([b]), np.array([z])
    stable, da, db = losses.ctcvr_bce_logspace(a, b, z)
    assert stable == pytest.approx(exact, rel=1e-3)
    clipped, dpa, _ = _naive(a, b, z)
    assert clipped == pytest.approx(-np.log(1e-7), rel=1e-6)   # the clip, not the loss
    assert clipped < 0.5 * exact
    assert dpa[0] == 0.0 and da[0] != 0.0                     # clip kills the gradient
    with np.errstate(divide="ignore", invalid="ignore"):
        unclipped, _, _ = _naive(a, b, z, eps=0.0)
    assert not np.isfinite(unclipped)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-1e4, 1e4), b=st.floats(-1e4, 1e4), z=st.integers(0, 1))
def test_logspace_finite_for_any_logits(a, b, z):
    a, b, z = np.array([a]), np.array([b]), np.array([z])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is harmless
        loss, da, db = losses.ctcvr_bce_logspace(a, b, z)
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(da)) and np.all(np.isfinite(db))
    # |dL/da| <= 1: it is sigmoid(-a) times a factor in [0, 1] (z=0) or -sigmoid(-a) (z=1).
    assert abs(da[0]) <= 1 and abs(db[0]) <= 1


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-30, 30), b=st.floats(-30, 30), z=st.integers(0, 1))
def test_logspace_matches_high_precision_reference(a, b, z):
    """Against a scalar reference built from math.log1p and math.expm1."""
    import math
    la = -math.log1p(math.exp(-a)) if a > -700 else a           # log sigmoid(a)
    lb = -math.log1p(math.exp(-b)) if b > -700 else b
    log_p = la + lb
    ref = -log_p if z == 1 else -math.log(-math.expm1(log_p))
    loss, _, _ = losses.ctcvr_bce_logspace(np.array([a]), np.array([b]), np.array([z]))
    # expm1/log1p give ~1e-16 relative accuracy; the lse formula loses at most
    # ~|a|+|b| times machine epsilon in absolute terms (60 * 2.2e-16 ~ 1.3e-14).
    assert loss == pytest.approx(ref, rel=1e-9, abs=1e-13)
