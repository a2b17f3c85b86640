"""ESMM's two losses, each returning its value and its gradient.

ESMM trains on every impression with

    L = w_ctr * mean BCE(click, p_ctr) + w_ctcvr * mean BCE(click * conversion, p_ctcvr)

and no loss on p_cvr. Here ``a`` is the CTR logit, ``b`` the CVR logit,
``y`` the click label and ``z = click * conversion`` the CTCVR label.
docs/derivation.md derives every formula below.
"""

import numpy as np

from .layers import ctcvr_backward, ctcvr_forward, sigmoid


_LN2 = float(np.log(2.0))


def softplus(x):
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    return np.logaddexp(0.0, x).astype(x.dtype, copy=False)


def bce_with_logits(logit, y):
    """Mean binary cross-entropy of ``sigmoid(logit)`` against 0/1 labels ``y``.

    Parameters
    ----------
    logit : ndarray of shape (n,)
    y : ndarray of shape (n,), 0/1

    Returns
    -------
    loss : float
    dlogit : ndarray of shape (n,)

    Notes
    -----
    ``-log p = softplus(-a)`` and ``-log(1 - p) = softplus(a)``, so the loss is
    finite for any finite logit; ``dloss/da = (sigmoid(a) - y) / n``.
    """
    n = logit.shape[0]
    yf = y.astype(logit.dtype)
    per_row = yf * softplus(-logit) + (1 - yf) * softplus(logit)       # (n,)
    dlogit = (sigmoid(logit) - yf) / logit.dtype.type(n)             # (n,)
    return float(per_row.mean()), dlogit


def _logsumexp3(x, y, w):
    """Elementwise ``log(exp(x) + exp(y) + exp(w))`` without overflow."""
    m = np.maximum(np.maximum(x, y), w)
    return m + np.log(np.exp(x - m) + np.exp(y - m) + np.exp(w - m))


def ctcvr_bce_logspace(a, b, z):
    """Mean BCE of ``p_ctcvr = sigmoid(a) * sigmoid(b)`` against ``z``, from the logits.

    Parameters
    ----------
    a, b : ndarray of shape (n,)
        CTR and CVR logits.
    z : ndarray of shape (n,), 0/1
        CTCVR label, click AND conversion.

    Returns
    -------
    loss : float
    da, db : ndarray of shape (n,)
        Gradients with respect to the two logits.

    Notes
    -----
    Taking logs turns the product into a sum:
    ``log p_ctcvr = -softplus(-a) - softplus(-b)``. For the other term,
    ``1 - sigmoid(a) sigmoid(b) = (e^-a + e^-b + e^-(a+b)) / ((1 + e^-a)(1 + e^-b))``, so
    ``log(1 - p_ctcvr) = lse(-a, -b, -a-b) - softplus(-a) - softplus(-b)``
    with ``lse`` the log-sum-exp; when ``p_ctcvr < 1/2`` we use the equal and
    more accurate ``log1p(-exp(log p_ctcvr))``. Neither needs ``p_ctcvr`` itself, which
    underflows to 0 or rounds to 1 long before the logits are large.

    Gradients, per row (then divided by n for the mean):
    ``da = -sigmoid(-a)`` when z = 1, and
    ``da = sigmoid(-a) * p/(1-p) = exp(-softplus(a) - lse(-a, -b, -a-b))`` when z = 0;
    ``db`` is the same with ``a`` and ``b`` swapped. These are the product rule
    (layers.ctcvr_backward) followed by the sigmoid derivative, simplified so
    that nothing overflows.
    """
    n = a.shape[0]
    zf = z.astype(a.dtype)
    sp_neg_a, sp_neg_b = softplus(-a), softplus(-b)          # -log p_ctr, -log p_cvr
    lse = _logsumexp3(-a, -b, -a - b)                        # (n,)
    log_p = -sp_neg_a - sp_neg_b                             # log p_ctcvr
    # log(1 - p_ctcvr): for p < 1/2, log1p(-p) is exact; the lse form would
    # subtract two nearly equal numbers. For p >= 1/2 (both logits >= 0) the
    # lse form is exact and never rounds p to 1.
    small_p = log_p < -_LN2
    log_1mp = np.where(small_p, np.log1p(-np.exp(np.minimum(log_p, -_LN2))),
                       lse - sp_neg_a - sp_neg_b)            # (n,)
    per_row = -(zf * log_p + (1 - zf) * log_1mp)             # (n,)
    # z = 0 branch: sigmoid(-a) * p / (1 - p), evaluated as one exponent.
    neg_a = np.exp(-softplus(a) - lse)
    neg_b = np.exp(-softplus(b) - lse)
    da = (1 - zf) * neg_a - zf * sigmoid(-a)                 # (n,)
    db = (1 - zf) * neg_b - zf * sigmoid(-b)                 # (n,)
    scale = a.dtype.type(n)
    return float(per_row.mean()), da / scale, db / scale


def ctcvr_bce_naive(p_ctr, p_cvr, z, eps=1e-7):
    """The textbook CTCVR loss: multiply the probabilities, clip, take logs.

    Kept for teaching: it agrees with :func:`ctcvr_bce_logspace` for moderate
    logits and fails for large ones (the product underflows to 0 or rounds to
    1, clipping then replaces the true loss by ``-log(eps)``, and the gradient
    vanishes). Without the clip the loss is ``inf`` or ``nan``.

    Parameters
    ----------
    p_ctr, p_cvr : ndarray of shape (n,)
    z : ndarray of shape (n,), 0/1
    eps : float
        Probabilities are clipped to ``[eps, 1 - eps]``; 0 disables the clip.

    Returns
    -------
    loss : float
    dp_ctr, dp_cvr : ndarray of shape (n,)
        Gradients with respect to the two probabilities (the caller applies the
        sigmoid backward to reach the logits).
    """
    n = p_ctr.shape[0]
    zf = z.astype(p_ctr.dtype)
    p_ctcvr, cache = ctcvr_forward(p_ctr, p_cvr)                       # (n,)
    p_clip = np.clip(p_ctcvr, eps, 1 - eps) if eps > 0 else p_ctcvr
    with np.errstate(divide="ignore", invalid="ignore"):
        per_row = -(zf * np.log(p_clip) + (1 - zf) * np.log(1 - p_clip))
        dp_clip = (p_clip - zf) / (p_clip * (1 - p_clip)) / n            # dL/dp_clip
    inside = (p_ctcvr == p_clip)                 # the clip passes gradient only inside
    dp_ctcvr = np.where(inside, dp_clip, 0.0).astype(p_ctr.dtype, copy=False)
    dp_ctr, dp_cvr = ctcvr_backward(dp_ctcvr, cache)                   # product rule
    return float(per_row.mean()), dp_ctr, dp_cvr


def l2_penalty(W, lam):
    """``lam * sum(W**2)`` (the Keras ``l2(lam)`` convention the seed uses) and its gradient ``2 lam W``."""
    return float(lam * np.sum(W * W)), (2 * lam) * W
