"""AITM's two additions: the attention that transfers one task's representation
into the next, and the calibrator that keeps the funnel's order.

AITM (Xi et al., KDD 2021) models the funnel impression -> click -> conversion
task by task. Its *adaptive information transfer* module lets the CTCVR tower
see the CTR tower: for each row it holds two candidate vectors, ``u_1`` (the
CTR tower's representation, passed through an information layer) and ``u_2``
(the CTCVR tower's own), and mixes them with weights from a softmax over one
self-attention score per candidate:

    value v_j = u_j W_v,  key k_j = u_j W_k,  query q_j = u_j W_q
    score s_j = <k_j, q_j> / sqrt(a),   w = softmax(s),   z = sum_j w_j v_j

Its *behavioural expectation calibrator* adds a penalty wherever the model
says a conversion is likelier than the click it needs, averaged over rows:

    L_cal = mean_i max(pCTCVR_i - pCTR_i, 0)

Forward and backward as in :mod:`esmm_np.layers`; the symbols follow
docs/derivation.md, section "The transfer module and the calibrator".
"""

import numpy as np

from .experts import mixture_backward, mixture_forward, softmax_backward, softmax_forward


def attention_forward(u, W_v, W_k, W_q):
    """Self-attention over a few candidate vectors per row, as AITM's transfer.

    Parameters
    ----------
    u : ndarray of shape (n, J, d)
        The J candidates of each row (J = 2 in AITM), stacked on axis 1.
    W_v, W_k, W_q : ndarray of shape (d, a)
        Value, key and query projections, shared by the candidates.

    Returns
    -------
    z : ndarray of shape (n, a)
        The attention-weighted sum of the candidates' values.
    cache : tuple
    """
    a = W_v.shape[1]
    v = u @ W_v                                    # (n, J, d) @ (d, a) -> (n, J, a)
    k = u @ W_k                                    # (n, J, a)
    q = u @ W_q                                    # (n, J, a)
    s = np.sum(k * q, axis=2) / np.sqrt(a)         # (n, J): one score per candidate
    w, softmax_cache = softmax_forward(s)          # (n, J)
    z, mixture_cache = mixture_forward(v, w)       # (n, a)
    return z, (u, W_v, W_k, W_q, k, q, softmax_cache, mixture_cache)


def attention_backward(dz, cache):
    """Gradients of :func:`attention_forward`, each line beside its forward partner.

    Parameters
    ----------
    dz : ndarray of shape (n, a)
    cache : from :func:`attention_forward`

    Returns
    -------
    du : ndarray of shape (n, J, d)
    dW_v, dW_k, dW_q : ndarray of shape (d, a)
    """
    u, W_v, W_k, W_q, k, q, softmax_cache, mixture_cache = cache
    a = W_v.shape[1]
    dv, dw = mixture_backward(dz, mixture_cache)   # z = sum_j w_j v_j: (n, J, a), (n, J)
    ds = softmax_backward(dw, softmax_cache)       # w = softmax(s): (n, J)
    dk = ds[:, :, None] * q / np.sqrt(a)           # s = <k, q> / sqrt(a): (n, J, a)
    dq = ds[:, :, None] * k / np.sqrt(a)           # (n, J, a)
    # v = u W_v etc.: sum over rows and candidates for the weights, and each
    # candidate gets back all three projections' gradients.
    dW_v = np.einsum("njd,nja->da", u, dv)         # (d, a)
    dW_k = np.einsum("njd,nja->da", u, dk)         # (d, a)
    dW_q = np.einsum("njd,nja->da", u, dq)         # (d, a)
    du = dv @ W_v.T + dk @ W_k.T + dq @ W_q.T      # (n, J, a) @ (a, d) -> (n, J, d)
    return du, dW_v, dW_k, dW_q


def calibrator_forward(p_ctcvr, p_ctr):
    """AITM's calibrator: the mean amount by which pCTCVR exceeds pCTR.

    Averaged over the rows, not summed: a sum grows with the batch and would
    change the penalty's weight with every batch size.

    Parameters
    ----------
    p_ctcvr, p_ctr : ndarray of shape (n,)

    Returns
    -------
    loss : float
    cache : tuple
    """
    gap = p_ctcvr - p_ctr                          # (n,)
    loss = float(np.mean(np.maximum(gap, 0.0)))
    return loss, (gap,)


def calibrator_backward(dloss, cache):
    """Gradients of the calibrator: 1/n where pCTCVR > pCTR, else 0.

    The hinge has no derivative at gap = 0; like ReLU's, the backward takes 0
    there (a subgradient).

    Returns
    -------
    dp_ctcvr, dp_ctr : ndarray of shape (n,)
    """
    (gap,) = cache
    dgap = (gap > 0).astype(gap.dtype) * (dloss / gap.shape[0])  # (n,)
    return dgap, -dgap
