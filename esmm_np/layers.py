"""Layers of the ESMM network, each a forward and a hand-written backward.

Every ``*_forward`` returns ``(out, cache)``: the output and exactly what the
matching ``*_backward`` needs. Every ``*_backward`` takes the upstream
gradient ``dout`` (same shape as ``out``) and the cache, and returns the
gradient with respect to each input, named ``d`` + the forward name.
The symbols follow docs/derivation.md.

The embeddings (lookups, bags, :class:`SparseRows`, the scatter-add) are in
:mod:`esmm_np.embedding` and importable from here too.

Data flow (one impression per row):

    ids --embedding--> e --(concat dense)--> h0 --tower--> logit --sigmoid--> p
    bags of ids --pooling--^
"""

import numpy as np

# The embedding layers live in esmm_np.embedding; this module keeps their names.
from .embedding import (BAG_MODES, SparseRows, add_sparse_rows, bag_backward,  # noqa: F401
                        bag_backward_reference, bag_coefficients, bag_forward,
                        bag_forward_reference, embedding_backward,
                        embedding_backward_reference, embedding_forward, scatter_add_rows,
                        scatter_add_rows_reference, sparse_to_dense)

# ------------------------------------------------ concatenation with dense

def concat_forward(e, dense):
    """Concatenate embeddings with the numeric features (if any).

    Parameters
    ----------
    e : ndarray of shape (n, F * k)
    dense : ndarray of shape (n, d) or None

    Returns
    -------
    h0 : ndarray of shape (n, F * k + d)
    cache : int, the width of ``e``
    """
    if dense is None:
        return e, e.shape[1]
    return np.concatenate([e, dense], axis=1), e.shape[1]


def concat_backward(dh0, cache):
    """Split the gradient of the concatenation; returns ``de`` of shape (n, F*k).

    The numeric features are data, not parameters, so their gradient is dropped.
    """
    return dh0[:, :cache]


# ---------------------------------------------------------- fully connected

def affine_forward(x, W, b):
    """``out = x @ W + b``.

    Parameters
    ----------
    x : ndarray of shape (n, d_in)
    W : ndarray of shape (d_in, d_out)
    b : ndarray of shape (d_out,)

    Returns
    -------
    out : ndarray of shape (n, d_out)
    cache : tuple (x, W)
    """
    return x @ W + b, (x, W)


def affine_backward(dout, cache):
    """Gradients of ``out = x @ W + b``.

    Returns
    -------
    dx : ndarray of shape (n, d_in)      ``dout @ W.T``
    dW : ndarray of shape (d_in, d_out)  ``x.T @ dout``
    db : ndarray of shape (d_out,)       ``dout`` summed over rows
    """
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


# -------------------------------------------------------------- activations

def relu_forward(x):
    """``max(x, 0)``; returns ``(out, cache)`` with the mask ``x > 0``."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """Pass the gradient where the input was positive, zero elsewhere."""
    return dout * cache


def sigmoid(x):
    """Logistic function, computed without overflow for any finite ``x``.

    For ``x >= 0``: 1 / (1 + exp(-x)); for ``x < 0``: exp(x) / (1 + exp(x)).
    Both branches only ever exponentiate a non-positive number.
    """
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)


def sigmoid_forward(x):
    """``s = sigmoid(x)``; the cache is ``s`` itself."""
    s = sigmoid(x)
    return s, s


def sigmoid_backward(dout, cache):
    """``ds/dx = s (1 - s)``."""
    s = cache
    return dout * s * (1.0 - s)


def tanh_forward(x):
    """``t = tanh(x)``; the cache is ``t``."""
    t = np.tanh(x)
    return t, t


def tanh_backward(dout, cache):
    """``dt/dx = 1 - t**2``."""
    return dout * (1.0 - cache * cache)


def prelu_forward(x, alpha):
    """Parametric ReLU: ``x`` where positive, ``alpha * x`` elsewhere.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    alpha : ndarray of shape (d,)
        One learned slope per unit (the original ESMM used PReLU).
    """
    pos = x > 0
    return np.where(pos, x, alpha * x), (x, alpha, pos)


def prelu_backward(dout, cache):
    """Returns ``dx`` (n, d) and ``dalpha`` (d,).

    ``dx = dout`` where ``x > 0`` else ``alpha * dout``;
    ``dalpha = sum over rows of x * dout`` where ``x <= 0``.
    """
    x, alpha, pos = cache
    dx = np.where(pos, dout, alpha * dout)
    dalpha = np.where(pos, 0.0, x * dout).sum(axis=0).astype(alpha.dtype, copy=False)
    return dx, dalpha


ACTIVATIONS = ("relu", "sigmoid", "tanh", "prelu")

# ----------------------------------------------------------------- dropout

def dropout_forward(x, rate, rng=None, mask=None):
    """Inverted dropout: zero each unit with probability ``rate``, scale the rest.

    Scaling the kept units by ``1 / (1 - rate)`` at training time keeps the
    expected activation unchanged, so inference needs no rescaling.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    rate : float in [0, 1)
    rng : numpy.random.Generator, used when ``mask`` is None
    mask : ndarray of shape (n, d), optional
        A fixed mask (already scaled), e.g. for gradient checking.

    Returns
    -------
    out : ndarray of shape (n, d)
    cache : the scaled mask
    """
    if mask is None:
        keep = rng.random(x.shape, dtype=x.dtype) >= rate
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - rate)
    return x * mask, mask


def dropout_backward(dout, cache):
    """The gradient flows only through the kept units, with the same scale."""
    return dout * cache


# ------------------------------------------------------ batch normalisation

def batchnorm_forward(x, gamma, beta, running_mean, running_var, train, eps=1e-5):
    """Batch normalisation over the rows of ``x``.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    gamma, beta : ndarray of shape (d,)
        Learned scale and shift.
    running_mean, running_var : ndarray of shape (d,)
        Statistics used in inference mode (``train=False``).
    train : bool
        True: normalise with this batch's mean and (biased) variance.

    Returns
    -------
    out : ndarray of shape (n, d)
    cache : tuple, for :func:`batchnorm_backward`
    batch_stats : (mean, var) of this batch, or None in inference mode;
        the caller folds them into the running statistics.
    """
    if not train:
        inv_std = 1.0 / np.sqrt(running_var + eps)                     # (d,)
        xhat = (x - running_mean) * inv_std                            # (n, d)
        return gamma * xhat + beta, (xhat, gamma, inv_std, False), None
    if x.shape[0] < 2:
        # One row is its own mean: every unit would normalise to 0 and the
        # running variance would collapse towards 0, a silently broken model.
        raise ValueError("batch norm needs at least 2 rows in a training batch, got 1 "
                         "(use a larger batch_size, or train=False for inference)")
    mu = x.mean(axis=0)                    # (d,)
    xc = x - mu                            # (n, d)
    var = (xc * xc).mean(axis=0)           # (d,)
    inv_std = 1.0 / np.sqrt(var + eps)     # (d,)
    xhat = xc * inv_std                    # (n, d)
    out = gamma * xhat + beta              # (n, d)
    return out, (xhat, gamma, inv_std, True), (mu, var)


def batchnorm_backward(dout, cache):
    """Gradients of batch normalisation.

    Returns
    -------
    dx : ndarray of shape (n, d)
    dgamma, dbeta : ndarray of shape (d,)

    Notes
    -----
    With ``xhat = (x - mu) * inv_std`` and ``dxhat = dout * gamma``, the
    batch mean and variance both depend on every row, which gives
    ``dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``
    (means over the n rows); docs/derivation.md derives it. In inference
    mode the statistics are constants, so only ``dx = dxhat * inv_std`` remains.
    """
    xhat, gamma, inv_std, train = cache
    dbeta = dout.sum(axis=0)                                   # (d,)
    dgamma = (dout * xhat).sum(axis=0)                         # (d,)
    dxhat = dout * gamma                                       # (n, d)
    if not train:
        return dxhat * inv_std, dgamma, dbeta
    dx = inv_std * (dxhat - dxhat.mean(axis=0)
                    - xhat * (dxhat * xhat).mean(axis=0))      # (n, d)
    return dx, dgamma, dbeta


# -------------------------------------------------- the probability product

def ctcvr_forward(p_ctr, p_cvr):
    """``p_ctcvr = p_ctr * p_cvr``: P(click and convert) = P(click) P(convert | click).

    Returns ``(p_ctcvr, cache)`` with the cache ``(p_ctr, p_cvr)``, all (n,).
    """
    return p_ctr * p_cvr, (p_ctr, p_cvr)


def ctcvr_backward(dp_ctcvr, cache):
    """The product rule: each factor's gradient is the upstream times the other factor.

    ``dp_ctr = dp_ctcvr * p_cvr`` and ``dp_cvr = dp_ctcvr * p_ctr``.
    This is how the CTCVR loss, computed over every impression, reaches the
    CVR tower, which has no loss of its own.
    """
    p_ctr, p_cvr = cache
    return dp_ctcvr * p_cvr, dp_ctcvr * p_ctr
