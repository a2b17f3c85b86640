"""Each layer's hand-written backward against centred finite differences, in float64.

Method: for a layer ``out = g(x, w)`` and a fixed random upstream gradient
``dout``, the scalar ``f = sum(out * dout)`` has gradient exactly what the
backward pass returns, so comparing with the numerical gradient of ``f``
checks every output of the backward at once.

Tolerance: 1e-9 relative error. A centred difference with h = 1e-5 has
truncation error ~h^2 = 1e-10 relative to a smooth layer's curvature and
rounding error ~1e-16 / 1e-5 = 1e-11, so a correct layer lands near 1e-10;
any wrong term gives 1e-3 or worse.
"""

import numpy as np
import pytest

from esmm_np import layers as L
from esmm_np import losses
from esmm_np.gradcheck import numerical_gradient, relative_error

LAYER_TOL = 1e-9


def _check(forward, backward, inputs, rng, names):
    """Check ``backward`` against finite differences of ``sum(forward(*inputs) * dout)``."""
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    for name, x, a in zip(names, inputs, analytic):
        num = numerical_gradient(lambda: float(np.sum(forward(*inputs)[0] * dout)), x)
        err = relative_error(a, num)
        assert err < LAYER_TOL, f"{name}: relative error {err:.2e}"


def test_affine(rng):
    x, W, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    _check(L.affine_forward, L.affine_backward, (x, W, b), rng, ["x", "W", "b"])


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_activation(act, rng):
    # Keep inputs away from ReLU's kink at 0, where the derivative does not exist.
    x = rng.standard_normal((6, 4))
    x += np.sign(x) * 0.1
    fwd, bwd = getattr(L, f"{act}_forward"), getattr(L, f"{act}_backward")
    _check(fwd, bwd, (x,), rng, ["x"])


def test_prelu(rng):
    x = rng.standard_normal((6, 4))
    x += np.sign(x) * 0.1
    alpha = rng.uniform(0.05, 0.5, size=4)
    _check(L.prelu_forward, L.prelu_backward, (x, alpha), rng, ["x", "alpha"])


def test_dropout_with_fixed_mask(rng):
    x = rng.standard_normal((8, 5))
    _, mask = L.dropout_forward(x, 0.3, rng=np.random.default_rng(0))
    _check(lambda x: L.dropout_forward(x, 0.3, mask=mask), L.dropout_backward, (x,), rng, ["x"])


def test_dropout_is_inverted(rng):
    """Kept units are scaled by 1/(1-rate), so the expected activation is unchanged."""
    x = np.ones((2000, 50))
    out, mask = L.dropout_forward(x, 0.25, rng=rng)
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    # 100,000 Bernoulli(0.75) draws: the kept share's std is 0.0014, so 0.01 is ~7 sigma.
    assert abs(out.mean() - 1.0) < 0.01


@pytest.mark.parametrize("train", [True, False], ids=["training mode", "inference mode"])
def test_batchnorm(train, rng):
    """Training mode: batch statistics, which depend on every row; inference: running ones."""
    x = 3 + 2 * rng.standard_normal((7, 4))
    gamma, beta = rng.uniform(0.5, 2, size=4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, size=4)

    def fwd(x, gamma, beta):
        out, cache, _ = L.batchnorm_forward(x, gamma, beta, rm, rv, train=train)
        return out, cache

    _check(fwd, L.batchnorm_backward, (x, gamma, beta), rng, ["x", "gamma", "beta"])


def test_batchnorm_modes(rng):
    """Training mode normalises with the batch; inference mode with the running statistics."""
    x = 3 + 2 * rng.standard_normal((500, 3))
    out, _, (mu, var) = L.batchnorm_forward(x, np.ones(3), np.zeros(3), None, None, train=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1, atol=1e-4)  # eps = 1e-5 in the variance
    np.testing.assert_allclose(mu, x.mean(axis=0))
    rm, rv = np.array([1.0, 2.0, 3.0]), np.array([4.0, 1.0, 0.25])
    out, cache, stats = L.batchnorm_forward(x, np.ones(3), np.zeros(3), rm, rv, train=False)
    assert stats is None
    np.testing.assert_allclose(out, (x - rm) / np.sqrt(rv + 1e-5))


def test_embedding_with_repeated_ids(rng):
    """An id used several times in a batch receives the sum of all its gradients."""
    table = rng.standard_normal((6, 3))
    ids = np.array([[0, 4], [2, 4], [0, 4], [5, 5]])        # 0 twice, 4 thrice, 5 twice
    out, cache = L.embedding_forward(table, ids)
    assert out.shape == (4, 2 * 3)
    dout = rng.standard_normal(out.shape)
    g = L.embedding_backward(dout, cache)
    num = numerical_gradient(lambda: float(np.sum(L.embedding_forward(table, ids)[0] * dout)), table)
    assert relative_error(L.sparse_to_dense(g), num) < LAYER_TOL
    assert list(g.rows) == [0, 2, 4, 5]                      # row 1 and 3 unused: not stored
    # The pitfall the docstring warns about: buffered fancy indexing drops repeats.
    wrong = np.zeros_like(table)
    wrong[ids.ravel()] += dout.reshape(-1, 3)
    assert not np.allclose(wrong, num)


def test_concat_dense(rng):
    e, dense = rng.standard_normal((4, 6)), rng.standard_normal((4, 2))
    h0, cache = L.concat_forward(e, dense)
    assert h0.shape == (4, 8)
    dh0 = rng.standard_normal(h0.shape)
    np.testing.assert_array_equal(L.concat_backward(dh0, cache), dh0[:, :6])
    h0, cache = L.concat_forward(e, None)
    assert h0 is e


def test_ctcvr_product_rule(rng):
    p_ctr, p_cvr = rng.uniform(0.05, 0.95, size=(2, 7))
    _check(L.ctcvr_forward, L.ctcvr_backward, (p_ctr, p_cvr), rng, ["p_ctr", "p_cvr"])


def test_bce_with_logits_gradient(rng):
    logit, y = 2 * rng.standard_normal(9), rng.integers(0, 2, size=9)
    _, d = losses.bce_with_logits(logit, y)
    num = numerical_gradient(lambda: losses.bce_with_logits(logit, y)[0], logit)
    assert relative_error(d, num) < LAYER_TOL


@pytest.mark.parametrize("which", ["logspace", "naive"])
def test_ctcvr_loss_gradients(which, rng):
    a, b = 2 * rng.standard_normal((2, 12))
    z = rng.integers(0, 2, size=12)

    def value():
        if which == "logspace":
            return losses.ctcvr_bce_logspace(a, b, z)[0]
        return losses.ctcvr_bce_naive(L.sigmoid(a), L.sigmoid(b), z)[0]

    if which == "logspace":
        _, da, db = losses.ctcvr_bce_logspace(a, b, z)
    else:
        sa, sb = L.sigmoid(a), L.sigmoid(b)
        _, dpa, dpb = losses.ctcvr_bce_naive(sa, sb, z)
        da, db = L.sigmoid_backward(dpa, sa), L.sigmoid_backward(dpb, sb)
    assert relative_error(da, numerical_gradient(value, a)) < LAYER_TOL
    assert relative_error(db, numerical_gradient(value, b)) < LAYER_TOL


def test_l2_penalty(rng):
    W = rng.standard_normal((3, 4))
    pen, d = losses.l2_penalty(W, 0.1)
    assert pen == pytest.approx(0.1 * np.sum(W ** 2))
    assert relative_error(d, numerical_gradient(lambda: losses.l2_penalty(W, 0.1)[0], W)) < LAYER_TOL


def test_sigmoid_extremes():
    x = np.array([-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is fine, overflow is not
        s = L.sigmoid(x)
    assert np.all(np.isfinite(s)) and s[3] == 0.5 and s[-1] == 1.0 and s[0] == 0.0
