"""esmm_np.exercises: our functions pass every exercise; typical wrong answers fail, with the right hint.

The wrong answers below are written as a learner would write them (not taken
from the checker's own list of known mistakes), so the tests show that the
checker recognises a mistake by what the function computes, not by its code.
"""

import numpy as np
import pytest

import esmm_np.exercises as ex
from esmm_np import layers as L
from esmm_np import losses
from grading import fails_with


@pytest.mark.parametrize("name", ex.NAMES)
def test_our_function_passes(name, capsys):
    assert ex.check(name, ex.reference(name))
    out = capsys.readouterr().out
    assert "PASS" in out and "NO" not in out.split("\n", 2)[2]


def test_names_cover_the_issue():
    for name in ("sigmoid", "sigmoid_backward", "bce_with_logits", "ctcvr_backward",
                 "ctcvr_bce_logspace", "affine_backward", "relu_backward",
                 "embedding_backward", "batchnorm_backward", "esmm_loss"):
        assert name in ex.NAMES
    with pytest.raises(ValueError, match="unknown exercise"):
        ex.check("softmax", print)


# ------------------------------------------------------------ the issue's list

def test_swapped_product_rule(capsys):
    def wrong(dp_ctcvr, cache):
        p_ctr, p_cvr = cache
        return dp_ctcvr * p_ctr, dp_ctcvr * p_cvr
    fails_with("ctcvr_backward", wrong, capsys, "swapped", "*other*")


def test_buffered_scatter(capsys):
    def wrong(de, cache):
        ids, V = cache
        n, F = ids.shape
        table = np.zeros((V, de.shape[1] // F), dtype=de.dtype)
        table[ids] += de.reshape(n, F, -1)
        return table
    out = fails_with("embedding_backward", wrong, capsys, "table[ids] += de", "buffered")
    # it is right exactly when no id repeats: that case passes
    assert "distinct ids" in out and out.count(" NO") == 2   # repeated ids, in float64 and float32


def test_sigmoid_derivative_with_plus(capsys):
    fails_with("sigmoid_backward", lambda dout, s: dout * s * (1 + s), capsys, "s * (1 + s)")


def test_batchnorm_without_the_mean_terms(capsys):
    def wrong(dout, cache):
        xhat, gamma, inv_std, train = cache
        return dout * gamma * inv_std, np.sum(dout * xhat, axis=0), np.sum(dout, axis=0)
    out = fails_with("batchnorm_backward", wrong, capsys, "batch mean and variance")
    assert "inference mode " in out and out.count(" NO") == 3   # right in inference mode only


def test_ctcvr_loss_that_clips_the_product(capsys):
    def wrong(a, b, z, eps=1e-7):
        p = L.sigmoid(a) * L.sigmoid(b)
        p = np.clip(p, eps, 1 - eps)
        zf = z.astype(a.dtype)
        loss = -np.mean(zf * np.log(p) + (1 - zf) * np.log(1 - p))
        dp = (p - zf) / (p * (1 - p)) / len(a)
        inside = (p > eps) & (p < 1 - eps)
        dp = np.where(inside, dp, 0.0).astype(a.dtype)
        sa, sb = L.sigmoid(a), L.sigmoid(b)
        return float(loss), dp * sb * sa * (1 - sa), dp * sa * sb * (1 - sb)
    out = fails_with("ctcvr_bce_logspace", wrong, capsys, "clipped product", "log space")
    assert "float64 " in out.split("extreme")[0]        # moderate logits: it passes there


def test_ctcvr_loss_from_the_unclipped_product(capsys):
    def wrong(a, b, z):
        p = L.sigmoid(a) * L.sigmoid(b)
        zf = z.astype(a.dtype)
        loss = -np.mean(zf * np.log(p) + (1 - zf) * np.log(1 - p))
        dp = (p - zf) / (p * (1 - p)) / len(a)
        sa, sb = L.sigmoid(a), L.sigmoid(b)
        return float(loss), dp * sb * sa * (1 - sa), dp * sa * sb * (1 - sb)
    fails_with("ctcvr_bce_logspace", wrong, capsys, "take logs first")


# ------------------------------------------------------------- more mistakes

def test_sigmoid_that_overflows(capsys):
    fails_with("sigmoid", lambda x: 1 / (1 + np.exp(-x)), capsys, "overflow")


def test_sigmoid_with_the_wrong_sign(capsys):
    fails_with("sigmoid", lambda x: L.sigmoid(-x), capsys, "sigmoid(-x)")


def test_sigmoid_that_upcasts(capsys):
    out = fails_with("sigmoid", lambda x: L.sigmoid(x.astype(np.float64)), capsys, "dtype float64")
    assert out.count(" NO") == 2                         # only the float32 cases


def test_relu_gated_by_the_upstream_gradient(capsys):
    fails_with("relu_backward", lambda dout, mask: dout * (dout > 0), capsys, "sign of dout")


def test_affine_bias_gradient_as_a_mean(capsys):
    def wrong(dout, cache):
        x, W = cache
        return dout @ W.T, x.T @ dout, dout.mean(axis=0)
    fails_with("affine_backward", wrong, capsys, "db is a mean")


def test_affine_without_the_batch_sum(capsys):
    def wrong(dout, cache):
        x, W = cache
        return dout @ W.T, x.T @ dout, dout          # (n, d): broadcasts, but is not db
    out = fails_with("affine_backward", wrong, capsys, "db has shape")
    assert "(1, 3), expected (3,)" in out           # the one-row case: no silent broadcast


def test_affine_transposed_weight_gradient(capsys):
    def wrong(dout, cache):
        x, W = cache
        return dout @ W.T, dout.T @ x, dout.sum(axis=0)
    fails_with("affine_backward", wrong, capsys, "transposed?")


def test_batchnorm_ignoring_inference_mode(capsys):
    def wrong(dout, cache):
        xhat, gamma, inv_std, _ = cache
        dxhat = dout * gamma
        dx = inv_std * (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0))
        return dx, (dout * xhat).sum(0), dout.sum(0)
    fails_with("batchnorm_backward", wrong, capsys, "inference mode")


def test_batchnorm_missing_the_variance_path(capsys):
    def wrong(dout, cache):
        xhat, gamma, inv_std, train = cache
        dxhat = dout * gamma
        dx = inv_std * (dxhat - dxhat.mean(0)) if train else dxhat * inv_std
        return dx, (dout * xhat).sum(0), dout.sum(0)
    fails_with("batchnorm_backward", wrong, capsys, "not the one through the batch variance")


def test_bce_from_probabilities(capsys):
    def wrong(logit, y):
        p = L.sigmoid(logit)
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        return float(loss), (p - y) / len(y)
    fails_with("bce_with_logits", wrong, capsys, "without forming sigmoid(a)")


def test_bce_gradient_of_the_sum(capsys):
    def wrong(logit, y):
        loss, _ = losses.bce_with_logits(logit, y)
        return loss, L.sigmoid(logit) - y.astype(logit.dtype)
    fails_with("bce_with_logits", wrong, capsys, "n times too large")


def test_bce_nan_never_passes(capsys):
    def wrong(logit, y):
        loss, d = losses.bce_with_logits(logit, y)
        d = d.copy()
        d[0] = np.nan
        return loss, d
    fails_with("bce_with_logits", wrong, capsys, "NaN or inf")


def test_esmm_loss_ignoring_the_loss_weights(capsys):
    def wrong(model, X, click, conversion):
        w = model.loss_weights
        model.loss_weights = (1.0, 1.0)
        try:
            return model.loss(X, click, conversion)
        finally:
            model.loss_weights = w
    fails_with("esmm_loss", wrong, capsys, "loss weights")


def test_esmm_loss_with_one_tower_into_the_table(capsys):
    from esmm_np.model import tower_backward, tower_forward

    def wrong(model, X, click, conversion):
        e, emb_cache = L.embedding_forward(model.params["embedding"], X + model.offsets)
        logits, caches = {}, {}
        for t, u in zip(model.towers, model.tower_units):
            logits[t], caches[t] = tower_forward(model.params, model.state, t, e,
                                                 model.tower_config(u), True)
        w_ctr, w_ctcvr = model.loss_weights
        l1, d1 = losses.bce_with_logits(logits["ctr"], click)
        l2, da, db = losses.ctcvr_bce_logspace(logits["ctr"], logits["cvr"], click * conversion)
        grads = {}
        dh = {t: tower_backward(d, caches[t], t, model.tower_config(u), grads)
              for (t, u), d in zip(zip(model.towers, model.tower_units),
                                   (w_ctr * d1 + w_ctcvr * da, w_ctcvr * db))}
        grads["embedding"] = L.sparse_to_dense(L.embedding_backward(dh["ctr"], emb_cache))
        return w_ctr * l1 + w_ctcvr * l2, grads
    fails_with("esmm_loss", wrong, capsys, "both towers read h0")


def test_esmm_loss_with_missing_keys(capsys):
    def wrong(model, X, click, conversion):
        loss, grads = model.loss(X, click, conversion)
        del grads["cvr.b_out"]
        return loss, grads
    fails_with("esmm_loss", wrong, capsys, "missing ['cvr.b_out']")


def test_not_written_yet(capsys):
    def blank(dout, cache):
        raise NotImplementedError
    fails_with("relu_backward", blank, capsys, "not written yet")


def test_a_function_that_writes_into_its_input_cannot_change_the_case(capsys):
    def sneaky(dout, cache):
        dout *= cache      # in place, into the checker's array if it were not copied
        return dout
    assert ex.check("relu_backward", sneaky)   # right answer, computed in place: fine


# ------------------------------------------- right values, wrong behaviour

def test_scatter_buffered_within_one_impression(capsys):
    # Sums over impressions correctly, but `+=` with one impression's ids is
    # buffered too: wrong when an id occurs twice in the same row of ids.
    def wrong(de, cache):
        ids, V = cache
        n, F = ids.shape
        table = np.zeros((V, de.shape[1] // F), dtype=de.dtype)
        for i in range(n):
            table[ids[i]] += de[i].reshape(F, -1)
        return table
    out = fails_with("embedding_backward", wrong, capsys, "several times")
    assert out.count(" NO") == 2                   # the repeated-ids cases, float64 and float32


def _relu_backward_clearing_the_mask(dout, mask):
    dx = dout * mask
    mask[...] = True          # the cache: the forward's caller may hold the same array
    return dx


def _bce_overwriting_the_logit(logit, y):
    loss, dlogit = losses.bce_with_logits(logit, y)
    logit[...] = 0            # ESMM's CTR logit is read by both losses
    return loss, dlogit


def _esmm_loss_zeroing_a_table(model, X, click, conversion):
    loss, grads = model.loss(X, click, conversion)
    model.params["embedding"][...] = 0.0
    return loss, grads


@pytest.mark.parametrize("name, wrong, where", [
    ("sigmoid", lambda x: np.divide(1.0, 1.0 + np.exp(-x, out=x), out=x), "argument 1"),
    ("relu_backward", _relu_backward_clearing_the_mask, "argument 2"),
    ("bce_with_logits", _bce_overwriting_the_logit, "argument 1"),
    ("esmm_loss", _esmm_loss_zeroing_a_table, "params['embedding']"),
])
def test_writing_into_an_input_fails(name, wrong, where, capsys):
    # Each returns the right values but overwrites an array its caller still
    # needs; the right values alone would pass (the checker gives each call copies).
    fails_with(name, wrong, capsys, "wrote into its input", where)
