"""ESMM in one sitting: the plain forward and backward pass, top to bottom.

The model is the default :class:`esmm_np.ESMM` (Ma et al., SIGIR 2018): one
shared embedding table, two ReLU towers, ``p_ctcvr = p_ctr * p_cvr``, and

    L = w_ctr * mean BCE(click, p_ctr) + w_ctcvr * mean BCE(click * conversion, p_ctcvr)

with ``(w_ctr, w_ctcvr) = (1, 1)``, no L2, no dropout, no batch norm, no
numeric features. The CTCVR cross-entropy is computed from the two logits in
log space, as the package's default ``ctcvr_loss="logspace"`` does, so it is
exact for any logits.

Everything is one operation a line, in the symbols of docs/derivation.md
(``e``, ``u{i}``, ``h{i}``, ``logit_ctr`` = ℓ_ctr = ``a``, ``logit_cvr`` =
ℓ_cvr = ``b``, ``y``, ``z``, ``lse`` = Λ). Every backward line names, after
``<-``, the forward line it undoes. No function of the package is called:
this file is the reference that ``model.loss`` is tested against
(tests/test_reference.py), and the one a learner reads first.

Usage::

    model = esmm_np.ESMM(field_dims, embed_dim, tower_units)     # default options
    loss, grads = reference.loss(model.params, X + model.offsets, click, conversion)
    # loss == model.loss(X, click, conversion)[0], grads keyed like model.params
"""

import numpy as np

#: The default ESMM's weights of the CTR and CTCVR losses.
LOSS_WEIGHTS = (1.0, 1.0)

TOWERS = ("ctr", "cvr")


def softplus(x):
    """``log(1 + e^x)`` without overflow; ``-log σ(x) = softplus(-x)``."""
    return np.logaddexp(0.0, x)


def sigmoid(x):
    """``σ(x) = 1 / (1 + e^-x)``, written as ``exp(-softplus(-x))``: never overflows."""
    return np.exp(-softplus(-x))


def n_hidden(params, tower="ctr"):
    """Number of hidden layers of a tower, read from the parameter names ``t.W0``, ``t.W1``, ..."""
    return sum(1 for name in params if name.startswith(f"{tower}.W") and name != f"{tower}.W_out")


def forward(params, rows):
    """The forward pass, every intermediate kept under its name.

    Parameters
    ----------
    params : dict of ndarray
        ``ESMM(field_dims, embed_dim, tower_units).params``: ``embedding`` (V, k),
        per tower ``t`` in (ctr, cvr) ``t.W{i}``, ``t.b{i}``, ``t.W_out``, ``t.b_out``.
    rows : ndarray of int, shape (n, F)
        Table rows of the batch, ``X + model.offsets``.

    Returns
    -------
    p_ctr, p_cvr, p_ctcvr : ndarray of shape (n,)
    cache : dict str -> ndarray
        The named intermediates: ``e`` (n, F*k); per tower ``t.u{i}`` (affine
        output of layer i), ``t.h{i+1}`` (its ReLU); ``logit_ctr``,
        ``logit_cvr``, ``p_ctr``, ``p_cvr``, ``p_ctcvr`` (n,); and ``rows``.
    """
    E = params["embedding"]                                            # (V, k)
    n, F = rows.shape
    k = E.shape[1]
    v = {"rows": rows}
    v["e"] = E[rows].reshape(n, F * k)                                 # (n, F*k) lookup, h0 = e
    for t in TOWERS:
        h = v["e"]                                                     # (n, F*k) both towers read e
        for i in range(n_hidden(params, t)):
            v[f"{t}.u{i}"] = h @ params[f"{t}.W{i}"] + params[f"{t}.b{i}"]    # (n, units_i) affine
            v[f"{t}.h{i + 1}"] = np.maximum(v[f"{t}.u{i}"], 0.0)             # (n, units_i) ReLU
            h = v[f"{t}.h{i + 1}"]
        v[f"logit_{t}"] = (h @ params[f"{t}.W_out"] + params[f"{t}.b_out"])[:, 0]   # (n,) logit
    v["p_ctr"] = sigmoid(v["logit_ctr"])                               # (n,)
    v["p_cvr"] = sigmoid(v["logit_cvr"])                               # (n,)
    v["p_ctcvr"] = v["p_ctr"] * v["p_cvr"]                             # (n,) the product
    return v["p_ctr"], v["p_cvr"], v["p_ctcvr"], v


def data_loss(cache, click, conversion, loss_weights=LOSS_WEIGHTS):
    """The two mean cross-entropies from the logits, in log space (derivation.md, sections 3-4).

    Adds ``y``, ``z``, ``log_p_ctr``, ``log_1m_p_ctr``, ``log_p_ctcvr``,
    ``lse``, ``log_1m_p_ctcvr``, ``loss_ctr``, ``loss_ctcvr`` to ``cache``.

    Returns
    -------
    loss : float
    """
    w_ctr, w_ctcvr = loss_weights
    a, b = cache["logit_ctr"], cache["logit_cvr"]                      # (n,), (n,)
    v = cache
    v["y"] = np.asarray(click, dtype=a.dtype)                          # (n,) click
    v["z"] = v["y"] * np.asarray(conversion, dtype=a.dtype)            # (n,) clicked and converted
    v["log_p_ctr"] = -softplus(-a)                                     # (n,) log σ(a)
    v["log_1m_p_ctr"] = -softplus(a)                                   # (n,) log(1 - σ(a))
    v["log_p_ctcvr"] = -softplus(-a) - softplus(-b)                    # (n,) log of the product
    v["lse"] = np.logaddexp(np.logaddexp(-a, -b), -a - b)              # (n,) Λ = lse(-a, -b, -a-b)
    v["log_1m_p_ctcvr"] = v["lse"] + v["log_p_ctcvr"]                  # (n,) log(1 - p_ctcvr)
    y, z = v["y"], v["z"]
    v["loss_ctr"] = -np.mean(y * v["log_p_ctr"] + (1 - y) * v["log_1m_p_ctr"])          # BCE
    v["loss_ctcvr"] = -np.mean(z * v["log_p_ctcvr"] + (1 - z) * v["log_1m_p_ctcvr"])    # BCE
    return float(w_ctr * v["loss_ctr"] + w_ctcvr * v["loss_ctcvr"])


def backward(params, cache, loss_weights=LOSS_WEIGHTS):
    """The backward pass: the forward lines in reverse, each with its partner after ``<-``.

    Parameters
    ----------
    params : dict of ndarray, as for :func:`forward`
    cache : dict from :func:`forward` then :func:`data_loss`

    Returns
    -------
    grads : dict str -> ndarray
        Same keys and shapes as ``params``.
    d : dict str -> ndarray
        The gradient of the loss with respect to every named intermediate
        (``d["logit_ctr"]``, ``d["ctr.h1"]``, ``d["e"]``, ...), for
        comparing one by one with finite differences.
    """
    w_ctr, w_ctcvr = loss_weights
    v = cache
    a, b, y, z = v["logit_ctr"], v["logit_cvr"], v["y"], v["z"]        # (n,) each
    n = a.shape[0]
    d, grads = {}, {}
    # The CTCVR loss at the two logits, per row (derivation.md section 4): z = 1 gives
    # -σ(-a); z = 0 gives σ(-a) p/(1-p) = exp(-softplus(a) - Λ), one exponent <= 0.
    dctcvr_da = z * -sigmoid(-a) + (1 - z) * np.exp(-softplus(a) - v["lse"])   # (n,) <- loss_ctcvr
    dctcvr_db = z * -sigmoid(-b) + (1 - z) * np.exp(-softplus(b) - v["lse"])   # (n,) <- loss_ctcvr
    dctr_da = sigmoid(a) - y                                           # (n,) <- loss_ctr
    d["logit_ctr"] = (w_ctr * dctr_da + w_ctcvr * dctcvr_da) / n       # (n,) both losses meet here
    d["logit_cvr"] = w_ctcvr * dctcvr_db / n                           # (n,) only through p_ctcvr
    d["e"] = np.zeros_like(v["e"])                                     # (n, F*k)
    for t in TOWERS:
        L = n_hidden(params, t)
        h = v[f"{t}.h{L}"] if L else v["e"]                            # (n, units_last) logit input
        dlogit = d[f"logit_{t}"][:, None]                              # (n, 1)
        grads[f"{t}.W_out"] = h.T @ dlogit                             # (units_last, 1) <- logit
        grads[f"{t}.b_out"] = dlogit.sum(axis=0)                       # (1,) <- logit
        dh = dlogit @ params[f"{t}.W_out"].T                           # (n, units_last) <- logit
        for i in reversed(range(L)):
            d[f"{t}.h{i + 1}"] = dh                                    # (n, units_i)
            d[f"{t}.u{i}"] = dh * (v[f"{t}.u{i}"] > 0)                 # (n, units_i) <- ReLU
            h_in = v[f"{t}.h{i}"] if i else v["e"]                     # (n, d_in) the layer's input
            grads[f"{t}.W{i}"] = h_in.T @ d[f"{t}.u{i}"]               # (d_in, units_i) <- affine
            grads[f"{t}.b{i}"] = d[f"{t}.u{i}"].sum(axis=0)            # (units_i,) <- affine
            dh = d[f"{t}.u{i}"] @ params[f"{t}.W{i}"].T                # (n, d_in) <- affine
        d["e"] = d["e"] + dh                                           # (n, F*k) both towers read e
    rows = v["rows"]                                                   # (n, F)
    n, F = rows.shape
    E = params["embedding"]                                            # (V, k)
    grads["embedding"] = np.zeros_like(E)                              # (V, k)
    # The scatter-add <- lookup: a row used several times collects every gradient.
    # np.add.at is unbuffered; dE[rows] += de would keep one write per repeated row.
    np.add.at(grads["embedding"], rows, d["e"].reshape(n, F, E.shape[1]))   # (V, k)
    return {name: grads[name] for name in params}, d


def loss(params, rows, click, conversion, loss_weights=LOSS_WEIGHTS):
    """ESMM's loss and the gradient of every parameter.

    Parameters
    ----------
    params : dict of ndarray
        ``ESMM(field_dims, embed_dim, tower_units).params`` (default options).
    rows : ndarray of int, shape (n, F)
        ``X + model.offsets``.
    click, conversion : ndarray of shape (n,), 0/1
    loss_weights : (float, float)
        ``(w_ctr, w_ctcvr)``; the default ESMM's ``(1, 1)``.

    Returns
    -------
    loss : float
        ``w_ctr * mean BCE(click, p_ctr) + w_ctcvr * mean BCE(click * conversion, p_ctcvr)``.
    grads : dict str -> ndarray
        Same keys and shapes as ``params``.
    """
    _, _, _, cache = forward(params, rows)
    value = data_loss(cache, click, conversion, loss_weights)
    grads, _ = backward(params, cache, loss_weights)
    return value, grads
