"""AITM's two additions: the attention that transfers one task's representation
into the next, and the calibrator that keeps the funnel's order.

AITM (Xi et al., KDD 2021) models the funnel impression -> click -> conversion
task by task. Its *adaptive information transfer* module lets the CTCVR tower
see the CTR tower: for each row it holds two candidate vectors, ``cand_1``
(the CTR tower's representation, passed through an information layer) and
``cand_2`` (the CTCVR tower's own), and mixes them with weights from a softmax
over one self-attention score per candidate:

    val_j = cand_j W_v,   key_j = cand_j W_k,   qry_j = cand_j W_q
    score_j = <key_j, qry_j> / sqrt(d_att),   att = softmax(score)
    tau = sum_j att_j val_j

Its *behavioural expectation calibrator* adds a penalty wherever the model
says a conversion is likelier than the click it needs, averaged over rows:

    L_cal = mean_i max(pCTCVR_i - pCTR_i, 0)

Forward and backward as in :mod:`esmm_np.layers`; the symbols follow
docs/derivation.md, section "The transfer module and the calibrator".
"""

import numpy as np

from .experts import mixture_backward, mixture_forward, softmax_backward, softmax_forward


def attention_forward(cand, W_v, W_k, W_q):
    """Self-attention over a few candidate vectors per row, as AITM's transfer.

    Parameters
    ----------
    cand : ndarray of shape (n, J, d)
        The J candidates of each row (J = 2 in AITM), stacked on axis 1.
    W_v, W_k, W_q : ndarray of shape (d, d_att)
        Value, key and query projections, shared by the candidates.

    Returns
    -------
    tau : ndarray of shape (n, d_att)
        The attention-weighted sum of the candidates' values.
    cache : tuple
    """
    d_att = W_v.shape[1]
    val = cand @ W_v                               # (n, J, d) @ (d, d_att) -> (n, J, d_att)
    key = cand @ W_k                               # (n, J, d_att)
    qry = cand @ W_q                               # (n, J, d_att)
    # d_att ** 0.5 is a Python float, which keeps float32 float32 (np.sqrt(d_att), a
    # float64 scalar, would promote every array it touches to float64).
    score = np.sum(key * qry, axis=2) / d_att ** 0.5  # (n, J): one score per candidate
    att, softmax_cache = softmax_forward(score)    # (n, J)
    tau, mixture_cache = mixture_forward(val, att)  # (n, d_att)
    return tau, (cand, W_v, W_k, W_q, key, qry, softmax_cache, mixture_cache)


def attention_backward(dtau, cache):
    """Gradients of :func:`attention_forward`, each line beside its forward partner.

    Parameters
    ----------
    dtau : ndarray of shape (n, d_att)
    cache : from :func:`attention_forward`

    Returns
    -------
    dcand : ndarray of shape (n, J, d)
    dW_v, dW_k, dW_q : ndarray of shape (d, d_att)
    """
    cand, W_v, W_k, W_q, key, qry, softmax_cache, mixture_cache = cache
    d_att = W_v.shape[1]
    # tau = sum_j att_j val_j
    dval, datt = mixture_backward(dtau, mixture_cache)  # (n, J, d_att), (n, J)
    dscore = softmax_backward(datt, softmax_cache)  # att = softmax(score): (n, J)
    # score = <key, qry> / sqrt(d_att)
    dkey = dscore[:, :, None] * qry / d_att ** 0.5  # (n, J, d_att)
    dqry = dscore[:, :, None] * key / d_att ** 0.5  # (n, J, d_att)
    # val = cand W_v, and the same for key and qry: each weight's gradient sums
    # over rows and candidates; each candidate gets back all three paths.
    dW_v = np.einsum("njd,nja->da", cand, dval)    # (d, d_att)
    dW_k = np.einsum("njd,nja->da", cand, dkey)    # (d, d_att)
    dW_q = np.einsum("njd,nja->da", cand, dqry)    # (d, d_att)
    dcand = dval @ W_v.T + dkey @ W_k.T + dqry @ W_q.T  # (n, J, d_att) @ (d_att, d) -> (n, J, d)
    return dcand, dW_v, dW_k, dW_q


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
