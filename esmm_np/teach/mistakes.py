"""Typical wrong answers, one function each, so a failing check can name the mistake.

When a learner's function fails a case, the grader runs each of these on the
same case; if the learner's outputs equal one of them (and the right answer
does not), the hint names that mistake. They are written from the
package's own layers and losses (the whole-model ones from
:mod:`esmm_np.reference`, the plain ESMM), changed in one place each.
"""

import numpy as np

from .. import layers as L
from .. import losses
from .. import reference


def _sig_swap_sign(x):
    return L.sigmoid(-x)


def _sig_clipped_at(limit):
    def clipped(x):
        return L.sigmoid(np.clip(x, -limit, limit))
    return clipped


def _sig_tanh(x):
    return (0.5 * (1 + np.tanh(x / 2))).astype(x.dtype, copy=False)


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


def _tower_input_grad(params, d, t):
    """``dL/de`` through tower ``t`` alone, from the intermediates of ``reference.backward``."""
    if f"{t}.u0" in d:                                                   # the first hidden layer
        return d[f"{t}.u0"] @ params[f"{t}.W0"].T                        # (n, F*k)
    return d[f"logit_{t}"][:, None] @ params[f"{t}.W_out"].T             # (n, F*k) no hidden layer


def _table_grad(E, rows, de):
    """The scatter-add of ``de`` (n, F*k) into a table like ``E`` at ``rows`` (n, F)."""
    n, F = rows.shape
    dE = np.zeros_like(E)                                                # (V, k)
    np.add.at(dE, rows, de.reshape(n, F, E.shape[1]))
    return dE


def _esmm_no_weights(model, X, click, conversion):
    return reference.loss(model.params, X + model.offsets, click, conversion, (1.0, 1.0))


def _esmm_no_offsets(model, X, click, conversion):
    return reference.loss(model.params, X, click, conversion, model.loss_weights)


def _esmm_one_tower_table(model, X, click, conversion):
    rows = X + model.offsets
    _, _, _, v = reference.forward(model.params, rows)
    loss = reference.data_loss(v, click, conversion, model.loss_weights)
    grads, d = reference.backward(model.params, v, model.loss_weights)
    dh0_ctr = _tower_input_grad(model.params, d, "ctr")                  # the CVR tower's is lost
    grads["embedding"] = _table_grad(model.params["embedding"], rows, dh0_ctr)
    return loss, grads


def _esmm_ctr_only_bce(model, X, click, conversion):
    rows = X + model.offsets
    w_ctr, w_ctcvr = model.loss_weights
    _, _, _, v = reference.forward(model.params, rows)
    loss = reference.data_loss(v, click, conversion, model.loss_weights)
    right, d = reference.backward(model.params, v, model.loss_weights)
    # The CTR tower sees only the CTR loss: the gradients of w_ctcvr = 0 (the CVR tower's are 0).
    ctr_only, _ = reference.backward(model.params, v, (w_ctr, 0.0))
    grads = {k: (ctr_only[k] if k.startswith("ctr.") else right[k]) for k in right}
    dh0_cvr = _tower_input_grad(model.params, d, "cvr")
    grads["embedding"] = ctr_only["embedding"] + _table_grad(model.params["embedding"], rows,
                                                             dh0_cvr)
    return loss, grads


_CLIP_HINT = ("the input is clipped to +-{0}: sigmoid(-40) is 4.2e-18, but the clip returns "
              "sigmoid(-{0}) for it, far too large, and every log of it is wrong; do not clip, "
              "split by the sign of x so that only numbers <= 0 are exponentiated")

MISTAKES = {
    "sigmoid": [
        (_sig_swap_sign, "this is sigmoid(-x): check the sign in the exponent"),
        (_sig_clipped_at(25), _CLIP_HINT.format(25)),
        (_sig_clipped_at(30), _CLIP_HINT.format(30)),
        (_sig_tanh, "this is 0.5 * (1 + tanh(x / 2)): equal on paper, but 1 + tanh(x / 2) "
                    "cancels to 0 below x = -37 or so, so sigmoid(-40) (4.2e-18) comes out 0 "
                    "and its log is -inf; for x < 0 use exp(x) / (1 + exp(x))"),
    ],
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
        (_esmm_no_offsets, "the table rows are X + model.offsets: without model.offsets every "
                           "field reads the first field's rows of the shared table"),
        (_esmm_no_weights, "the loss weights (model.loss_weights) are not applied"),
        (_esmm_one_tower_table, "the shared table gets only the CTR tower's gradient: both "
                                "towers read h0, so their gradients add before the lookup"),
        (_esmm_ctr_only_bce, "the CTR logit gets only the CTR loss's gradient: it also feeds "
                             "p_ctcvr"),
    ],
}
