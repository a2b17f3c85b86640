"""The gated mixture's fast form (esmm_np.gated, batched matmul) against the plain one
(esmm_np.experts), layer by layer and through whole MMoE and PLE models.

Tolerances: the two forms sum the same K products in a different order, so in float64 they
agree to rounding (1e-12 relative is a thousand times looser than the differences seen,
and a million times tighter than any wrong formula).
"""

import numpy as np
import pytest

import esmm_np
from esmm_np import experts, familycheck, gated
from esmm_np import gradcheck as G

RTOL = 1e-12


def _example(rng, n=7, K=3, d=5):
    o = rng.standard_normal((n, K, d))
    psi, _ = experts.softmax_forward(rng.standard_normal((n, K)))
    return o, psi, rng.standard_normal((n, d))


def test_mixture_matmul_forward_and_backward_equal_the_plain_ones():
    o, psi, dm = _example(np.random.default_rng(0))
    m_fast, cache_fast = gated.mixture_forward_matmul(o, psi)
    m_plain, cache_plain = experts.mixture_forward(o, psi)
    np.testing.assert_allclose(m_fast, m_plain, rtol=RTOL, atol=0)
    for fast, plain in zip(gated.mixture_backward_matmul(dm, cache_fast),
                           experts.mixture_backward(dm, cache_plain)):
        assert fast.shape == plain.shape
        np.testing.assert_allclose(fast, plain, rtol=RTOL, atol=0)
    # not vacuous: the mixture and the gate's gradient are far from zero
    assert np.abs(m_fast).max() > 0.1 and np.abs(gated.mixture_backward_matmul(dm, cache_fast)[1]).max() > 0.1


def test_mixture_matmul_matches_finite_differences():
    o, psi, _ = _example(np.random.default_rng(1))
    rows = G.check_layer(gated.mixture_forward_matmul, gated.mixture_backward_matmul, (o, psi),
                         names=("o", "psi"))
    assert all(r["ok"] for r in rows), G.format_table(rows)


@pytest.mark.parametrize("name", ["mmoe", "ple"])
def test_a_model_gives_the_same_loss_and_gradients_with_either_mixture(name):
    model, (X, click, conversion, dense) = familycheck.everything_on_example(name, dropout=0.0)
    assert model.fast_mixture                       # the default is the fast form
    loss_fast, grads_fast = model.loss(X, click, conversion, dense=dense)
    model.fast_mixture = False
    loss_plain, grads_plain = model.loss(X, click, conversion, dense=dense)
    assert loss_fast == pytest.approx(loss_plain, rel=RTOL, abs=0)
    assert set(grads_fast) == set(grads_plain)
    for k in grads_plain:
        np.testing.assert_allclose(np.asarray(grads_fast[k]), np.asarray(grads_plain[k]),
                                   rtol=RTOL, atol=1e-15, err_msg=k)
    assert np.abs(grads_plain["gate_ctr.W" if name == "mmoe" else "l0.gate_ctr.W"]).max() > 1e-6


def test_the_plain_mixture_passes_the_whole_model_check_too():
    model, (X, click, conversion, dense) = familycheck.everything_on_example("mmoe")
    model.fast_mixture = False
    rows = G.check_model(model, X, click, conversion, dense=dense, tol=G.MODEL_TOL)
    assert all(r["ok"] for r in rows), G.format_table(rows)
    assert isinstance(model, esmm_np.MMoE)
