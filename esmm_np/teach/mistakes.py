"""Typical wrong answers, one function each, so a failing check can name the mistake.

When a learner's function fails a case, the grader runs each of these on the
same case; if the learner's outputs equal one of them (and the right answer
does not), the hint names that mistake. They are written from the
package's own layers and losses, changed in one place each.
"""

import numpy as np

from .. import layers as L
from .. import losses
from ..model import tower_backward, tower_forward


def _sig_swap_sign(x):
    return L.sigmoid(-x)


def _sigb_plus(dout, s):
    return dout * s * (1 + s)


def _sigb_no_dout(dout, s):
    return s * (1 - s) + 0 * dout


def _sigb_of_x(dout, s):
    t = L.sigmoid(s)
    return dout * t * (1 - t)


def _relu_gate_dout(dout, mask):
    return np.maximum(dout, 0)


def _relu_no_gate(dout, mask):
    return dout * 1


def _relu_inverted(dout, mask):
    return dout * ~mask


def _aff_mean_db(dout, cache):
    dx, dW, _ = L.affine_backward(dout, cache)
    return dx, dW, dout.mean(axis=0)


def _aff_no_db_sum(dout, cache):
    dx, dW, _ = L.affine_backward(dout, cache)
    return dx, dW, dout


def _bn_no_means(dout, cache):
    xhat, gamma, inv_std, train = cache
    return dout * gamma * inv_std, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def _bn_no_var_path(dout, cache):
    xhat, gamma, inv_std, train = cache
    dxhat = dout * gamma
    return (inv_std * (dxhat - dxhat.mean(axis=0)), (dout * xhat).sum(axis=0), dout.sum(axis=0))


def _bn_no_mean_path(dout, cache):
    xhat, gamma, inv_std, train = cache
    dxhat = dout * gamma
    return (inv_std * (dxhat - xhat * (dxhat * xhat).mean(axis=0)), (dout * xhat).sum(axis=0),
            dout.sum(axis=0))


def _bn_always_train(dout, cache):
    return L.batchnorm_backward(dout, cache[:3] + (True,))


def _bn_dgamma_plain(dout, cache):
    dx, _, dbeta = L.batchnorm_backward(dout, cache)
    return dx, dout.sum(axis=0), dbeta


def _emb_buffered(de, cache):
    ids, V = cache
    n, F = ids.shape
    dtable = np.zeros((V, de.shape[1] // F), dtype=de.dtype)
    dtable[ids] += de.reshape(n, F, -1)
    return dtable


def _ctcvr_swapped(dp, cache):
    p_ctr, p_cvr = cache
    return dp * p_ctr, dp * p_cvr


def _ctcvr_no_factor(dp, cache):
    return dp * 1, dp * 1


def _bce_no_mean(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    return loss, d * logit.dtype.type(logit.shape[0])


def _bce_sum(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    n = logit.shape[0]
    return loss * n, d * logit.dtype.type(n)


def _bce_sign(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    return loss, -d


def _bce_clipped(logit, y, eps=1e-7):
    p = np.clip(L.sigmoid(logit), eps, 1 - eps)
    yf = y.astype(logit.dtype)
    loss = float(np.mean(-(yf * np.log(p) + (1 - yf) * np.log(1 - p))))
    return loss, losses.bce_with_logits(logit, y)[1]


def _ctcvr_clipped(a, b, z):
    pa, sa = L.sigmoid_forward(a)
    pb, sb = L.sigmoid_forward(b)
    loss, dpa, dpb = losses.ctcvr_bce_naive(pa, pb, z)
    return loss, L.sigmoid_backward(dpa, sa), L.sigmoid_backward(dpb, sb)


def _ctcvr_logits_swapped(a, b, z):
    loss, da, db = losses.ctcvr_bce_logspace(a, b, z)
    return loss, db, da


def _ctcvr_no_mean(a, b, z):
    loss, da, db = losses.ctcvr_bce_logspace(a, b, z)
    n = a.dtype.type(a.shape[0])
    return loss, da * n, db * n


def _plain_esmm(model, X, click, conversion, *, weights=True, both_towers=True,
                ctr_gets_ctcvr=True):
    """A plain ESMM assembly with switches that reproduce typical mistakes."""
    rows = X + model.offsets
    e, emb_cache = L.embedding_forward(model.params["embedding"], rows)
    logits, caches = {}, {}
    for t, units in zip(model.towers, model.tower_units):
        cfg = model.tower_config(units)
        logits[t], caches[t] = tower_forward(model.params, model.state, t, e, cfg, True)
    w_ctr, w_ctcvr = model.loss_weights if weights else (1.0, 1.0)
    z = click * conversion
    loss_ctr, da_ctr = losses.bce_with_logits(logits["ctr"], click)
    loss_ctcvr, da, db = losses.ctcvr_bce_logspace(logits["ctr"], logits["cvr"], z)
    dlogit = {"ctr": w_ctr * da_ctr + (w_ctcvr * da if ctr_gets_ctcvr else 0),
              "cvr": w_ctcvr * db}
    grads, dh0 = {}, 0
    for t, units in zip(model.towers, model.tower_units):
        d = tower_backward(dlogit[t], caches[t], t, model.tower_config(units), grads)
        if both_towers or t == "ctr":
            dh0 = dh0 + d
    grads["embedding"] = L.sparse_to_dense(L.embedding_backward(dh0, emb_cache))
    return w_ctr * loss_ctr + w_ctcvr * loss_ctcvr, grads


def _esmm_no_weights(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, weights=False)


def _esmm_one_tower_table(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, both_towers=False)


def _esmm_ctr_only_bce(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, ctr_gets_ctcvr=False)


MISTAKES = {
    "sigmoid": [(_sig_swap_sign, "this is sigmoid(-x): check the sign in the exponent")],
    "sigmoid_backward": [
        (_sigb_plus, "this looks like s * (1 + s): the derivative of the sigmoid must vanish "
                     "as s approaches 1, check the sign of the second factor"),
        (_sigb_no_dout, "the upstream gradient dout is not multiplied in (chain rule)"),
        (_sigb_of_x, "the cache already holds s = sigmoid(x), not x: do not apply the sigmoid again"),
    ],
    "relu_backward": [
        (_relu_gate_dout, "you gated by the sign of dout; the gate is where the forward's input "
                          "was positive (the cache)"),
        (_relu_no_gate, "the gradient passes unchanged: it must be zero where the input was "
                        "not positive"),
        (_relu_inverted, "the gate is inverted: the gradient flows where the input was positive"),
    ],
    "affine_backward": [
        (_aff_mean_db, "db is a mean over rows: b is added to every row, so its gradient "
                       "collects every row's"),
        (_aff_no_db_sum, "db keeps the batch axis: it must have b's shape"),
    ],
    "batchnorm_backward": [
        (_bn_no_means, "dx has no terms through the batch mean and variance: in training mode "
                       "every row moves mu and var, and they move every output"),
        (_bn_no_var_path, "dx has the path through the batch mean but not the one through the "
                          "batch variance"),
        (_bn_no_mean_path, "dx has the path through the batch variance but not the one through "
                           "the batch mean"),
        (_bn_always_train, "the batch-statistics terms were applied in inference mode "
                           "(cache[3] is False): there mu and var are constants"),
        (_bn_dgamma_plain, "dgamma is missing a factor: gamma multiplies xhat"),
    ],
    "embedding_backward": [
        (_emb_buffered, "this is `table[ids] += de`: NumPy's fancy-index += is buffered, so a "
                        "repeated id keeps one write instead of the sum (look for an unbuffered add)"),
    ],
    "ctcvr_backward": [
        (_ctcvr_swapped, "the product rule's factors are swapped: each probability's gradient is "
                         "the upstream times the *other* probability"),
        (_ctcvr_no_factor, "the upstream gradient is passed unchanged: multiply by the other factor"),
    ],
    "bce_with_logits": [
        (_bce_no_mean, "the gradient is n times too large: the loss is the mean over the batch"),
        (_bce_sum, "loss and gradient are n times too large: the loss is the mean, not the sum"),
        (_bce_sign, "the gradient has the wrong sign"),
        (_bce_clipped, "the loss is capped by clipping the probability: with a confidently wrong "
                       "logit the true loss is larger; work from the logit instead"),
    ],
    "ctcvr_bce_logspace": [
        (_ctcvr_clipped, "this is the clipped product: with confidently wrong logits the loss "
                         "is capped at -log(eps) and the gradient is 0; work in log space"),
        (_ctcvr_logits_swapped, "da and db are swapped"),
        (_ctcvr_no_mean, "the gradients are n times too large: the loss is the mean over the batch"),
    ],
    "esmm_loss": [
        (_esmm_no_weights, "the loss weights (model.loss_weights) are not applied"),
        (_esmm_one_tower_table, "the shared table gets only the CTR tower's gradient: both "
                                "towers read h0, so their gradients add before the lookup"),
        (_esmm_ctr_only_bce, "the CTR logit gets only the CTR loss's gradient: it also feeds "
                             "p_ctcvr"),
    ],
}
