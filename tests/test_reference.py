"""esmm_np.reference, the plain ESMM, computes what model.loss computes, and its
gradients are those of its own loss (centred finite differences)."""

import numpy as np
import pytest

import esmm_np
from esmm_np import gradcheck, reference

from batches import draw_batch

#: reference.py and model.py do the same arithmetic in a different order (the
#: package's log(1 - p_ctcvr) uses log1p where p < 1/2, its gradients one fused
#: expression per logit): float64 rounding, measured at most 1.2e-14 relative
#: to a tensor's largest entry here. 1e-12 leaves room for that and fails any
#: real difference (a wrong term is off by 1e-3 or more).
AGREE_TOL = 1e-12

#: Relative error bar against finite differences for a whole model, the one
#: the model tests use (test_model.py: 1e-6).
FD_TOL = 1e-6


def _model_and_batch(tower_units, seed=0, n=20):
    model = esmm_np.ESMM((5, 4, 3), embed_dim=2, tower_units=tower_units, seed=seed)
    rng = np.random.default_rng(seed)
    for w in model.params.values():             # zero biases could hide a wrong backward
        w += 0.1 * rng.standard_normal(w.shape)
    X, click, conversion, _ = draw_batch(rng, model.field_dims, n=n)
    return model, X, click, conversion


@pytest.mark.parametrize("tower_units", [(8, 4), (5,), ((6, 3), (4,))])
def test_reference_agrees_with_model_loss(tower_units):
    model, X, click, conversion = _model_and_batch(tower_units)
    loss_pkg, grads_pkg = model.loss(X, click, conversion)
    loss_ref, grads_ref = reference.loss(model.params, X + model.offsets, click, conversion)
    assert abs(loss_ref - loss_pkg) <= AGREE_TOL * loss_pkg
    assert list(grads_ref) == list(model.params)
    for name, g in grads_pkg.items():
        assert grads_ref[name].shape == g.shape, name
        scale = np.max(np.abs(g))
        assert np.max(np.abs(grads_ref[name] - g)) <= AGREE_TOL * scale, name


def test_reference_probabilities_are_predicts():
    model, X, click, conversion = _model_and_batch((8, 4))
    p_ctr, p_cvr, p_ctcvr, cache = reference.forward(model.params, X + model.offsets)
    pred = model.predict(X)
    for name, p in (("p_ctr", p_ctr), ("p_cvr", p_cvr), ("p_ctcvr", p_ctcvr)):
        np.testing.assert_allclose(p, pred[name], rtol=AGREE_TOL, atol=0)
        assert cache[name] is p
    assert {"e", "ctr.u0", "ctr.h1", "ctr.u1", "ctr.h2", "logit_ctr", "logit_cvr"} <= set(cache)


def test_reference_agrees_with_unequal_loss_weights():
    model, X, click, conversion = _model_and_batch((4,))
    model.loss_weights = (0.3, 1.7)
    loss_pkg, grads_pkg = model.loss(X, click, conversion)
    loss_ref, grads_ref = reference.loss(model.params, X + model.offsets, click, conversion,
                                         loss_weights=(0.3, 1.7))
    assert abs(loss_ref - loss_pkg) <= AGREE_TOL * loss_pkg
    for name, g in grads_pkg.items():
        assert np.max(np.abs(grads_ref[name] - g)) <= AGREE_TOL * np.max(np.abs(g)), name


def _fd_rows(model, X, click, conversion):
    rows = X + model.offsets
    _, grads = reference.loss(model.params, rows, click, conversion)

    def f():
        return reference.loss(model.params, rows, click, conversion)[0]

    return [gradcheck.compare(name, grads[name], gradcheck.numerical_gradient(f, w), FD_TOL)
            for name, w in model.params.items()]


def test_reference_gradients_match_finite_differences():
    model, X, click, conversion = _model_and_batch((8, 4))
    rows = _fd_rows(model, X, click, conversion)
    assert all(r["ok"] for r in rows), gradcheck.format_table(rows)


def test_reference_intermediate_gradients_match_finite_differences():
    """Each d[name] is the gradient at that intermediate: nudge it, rerun what follows."""
    model, X, click, conversion = _model_and_batch((8, 4))
    params = model.params
    _, _, _, cache = reference.forward(params, X + model.offsets)
    reference.data_loss(cache, click, conversion)
    _, d = reference.backward(params, cache)

    def loss_from_logits(logits):
        v = {"logit_ctr": logits[0], "logit_cvr": logits[1]}
        return reference.data_loss(v, click, conversion)

    logits = np.stack([cache["logit_ctr"], cache["logit_cvr"]])          # (2, n)
    num = gradcheck.numerical_gradient(lambda: loss_from_logits(logits), logits)
    for i, name in enumerate(("logit_ctr", "logit_cvr")):
        row = gradcheck.compare(name, d[name], num[i], FD_TOL)
        assert row["ok"], row


def test_a_broken_reference_fails_both_checks(monkeypatch):
    """A sign mistake in the sigmoid its backward uses: the loss is unchanged, the
    gradients are wrong, and both the finite differences and model.loss notice."""
    model, X, click, conversion = _model_and_batch((8, 4))
    monkeypatch.setattr(reference, "sigmoid", lambda x: 1.0 / (1.0 + np.exp(x)))
    rows = _fd_rows(model, X, click, conversion)
    assert not all(r["ok"] for r in rows)
    loss_pkg, grads_pkg = model.loss(X, click, conversion)
    loss_ref, grads_ref = reference.loss(model.params, X + model.offsets, click, conversion)
    assert abs(loss_ref - loss_pkg) <= AGREE_TOL * loss_pkg        # the value is still right
    wrong = [k for k, g in grads_pkg.items()
             if np.max(np.abs(grads_ref[k] - g)) > AGREE_TOL * np.max(np.abs(g))]
    assert wrong


def test_buffered_scatter_would_fail():
    """The buffered dE[rows] += de keeps one write per repeated row: not the gradient."""
    model, X, click, conversion = _model_and_batch((8, 4))
    rows = X + model.offsets
    assert len(np.unique(rows)) < rows.size                          # repeats present
    _, _, _, cache = reference.forward(model.params, rows)
    reference.data_loss(cache, click, conversion)
    grads, d = reference.backward(model.params, cache)
    buffered = np.zeros_like(model.params["embedding"])
    buffered[rows] += d["e"].reshape(rows.shape[0], rows.shape[1], -1)
    assert not np.allclose(buffered, grads["embedding"])
    assert np.allclose(grads["embedding"], model.loss(X, click, conversion)[1]["embedding"],
                       rtol=AGREE_TOL, atol=0)
