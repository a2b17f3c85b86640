"""The layers of the multi-task family (experts, gates, AITM's transfer and calibrator),
each backward checked in float64 against centred finite differences.

Tolerance: gradcheck.LAYER_TOL (1e-9 relative error per input), the bar of every
other layer: a single layer in float64 with h = 1e-5 lands near 1e-10 or below.
"""

import numpy as np
import pytest

from esmm_np import experts, transfer
from esmm_np import gradcheck as G


def _rng(seed=0):
    return np.random.default_rng(seed)


def _assert_ok(rows):
    bad = [r for r in rows if not r["ok"]]
    assert not bad, G.format_table(rows)


def test_softmax_backward_matches_finite_differences():
    a = _rng(0).standard_normal((7, 4)) * 2
    _assert_ok(G.check_layer(experts.softmax_forward, experts.softmax_backward, (a,), ("gate_logit",)))


def test_softmax_rows_are_distributions_and_ignore_a_shift():
    a = _rng(1).standard_normal((5, 3)) * 50
    g, _ = experts.softmax_forward(a)
    np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert np.all(g >= 0)
    g_shifted, _ = experts.softmax_forward(a + 1000.0)   # would overflow exp without the shift
    np.testing.assert_allclose(g_shifted, g, rtol=1e-12, atol=0)


def test_mixture_backward_matches_finite_differences():
    rng = _rng(2)
    x = rng.standard_normal((6, 3, 5))
    g = experts.softmax_forward(rng.standard_normal((6, 3)))[0]
    _assert_ok(G.check_layer(experts.mixture_forward, experts.mixture_backward, (x, g),
                             ("o", "psi")))


def test_a_one_hot_gate_picks_its_expert():
    x = _rng(3).standard_normal((4, 3, 2))
    g = np.zeros((4, 3))
    g[np.arange(4), [0, 2, 1, 2]] = 1.0
    m, _ = experts.mixture_forward(x, g)
    np.testing.assert_array_equal(m, x[np.arange(4), [0, 2, 1, 2]])


def test_gate_and_experts_chained_match_finite_differences():
    """softmax then mixture: the path a task's gate gradient takes in MMoE."""
    rng = _rng(4)
    x = rng.standard_normal((5, 4, 3))
    a = rng.standard_normal((5, 4))

    def forward(x, a):
        g, cg = experts.softmax_forward(a)
        m, cm = experts.mixture_forward(x, g)
        return m, (cg, cm)

    def backward(dm, cache):
        cg, cm = cache
        dx, dg = experts.mixture_backward(dm, cm)
        return dx, experts.softmax_backward(dg, cg)

    _assert_ok(G.check_layer(forward, backward, (x, a), ("o", "gate_logit")))


def test_gate_entropy_runs_from_zero_to_log_k():
    g = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(experts.gate_entropy(g), [0.0, np.log(3), np.log(2)],
                               rtol=1e-15, atol=0)


def test_attention_backward_matches_finite_differences():
    rng = _rng(5)
    u = rng.standard_normal((6, 2, 4))
    W_v, W_k, W_q = (rng.standard_normal((4, 3)) * 0.7 for _ in range(3))
    _assert_ok(G.check_layer(transfer.attention_forward, transfer.attention_backward,
                             (u, W_v, W_k, W_q), ("cand", "W_v", "W_k", "W_q")))


def test_attention_weights_follow_the_scores():
    """With W_v = I the output is the candidates' softmax-weighted mean."""
    rng = _rng(6)
    u = rng.standard_normal((3, 2, 2))
    W_k, W_q = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    z, _ = transfer.attention_forward(u, np.eye(2), W_k, W_q)
    s = np.sum((u @ W_k) * (u @ W_q), axis=2) / np.sqrt(2)
    w = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z, np.sum(w[:, :, None] * u, axis=1), rtol=1e-12, atol=0)


def test_calibrator_is_a_mean_and_its_backward_matches_finite_differences():
    rng = _rng(7)
    p_ctr = rng.uniform(0.05, 0.95, 40)
    # Keep every gap at least 1e-3 from the hinge's kink, where no derivative exists.
    gap = rng.uniform(1e-3, 0.04, 40) * rng.choice([-1, 1], 40)
    p_ctcvr = p_ctr + gap
    loss, _ = transfer.calibrator_forward(p_ctcvr, p_ctr)
    assert loss == pytest.approx(np.sum(gap[gap > 0]) / 40, rel=1e-12)
    _assert_ok(G.check_layer(transfer.calibrator_forward, transfer.calibrator_backward,
                             (p_ctcvr, p_ctr), ("p_ctcvr", "p_ctr"), dout=np.array(1.3)))
    # The same penalty on twice the rows (each repeated) is the same number: averaged.
    loss2, _ = transfer.calibrator_forward(np.tile(p_ctcvr, 2), np.tile(p_ctr, 2))
    assert loss2 == pytest.approx(loss, rel=1e-12)


def test_the_checker_notices_a_softmax_backward_without_its_mean_term():
    a = _rng(8).standard_normal((5, 3))

    def wrong(dpsi, psi):        # the diagonal of the Jacobian only
        return psi * dpsi

    rows = G.check_layer(experts.softmax_forward, wrong, (a,), ("gate_logit",))
    assert not rows[0]["ok"]


def test_the_checker_notices_an_attention_backward_that_forgets_the_key_path():
    rng = _rng(9)
    u = rng.standard_normal((4, 2, 3))
    W = [rng.standard_normal((3, 2)) for _ in range(3)]

    def wrong(dz, cache):
        du, dW_v, dW_k, dW_q = transfer.attention_backward(dz, cache)
        return du, dW_v, np.zeros_like(dW_k), dW_q

    rows = G.check_layer(transfer.attention_forward, wrong, (u, *W), ("cand", "W_v", "W_k", "W_q"))
    assert [r["ok"] for r in rows] == [True, True, False, True]
