"""Typical wrong answers to the experts exercises (E3), one function each, with their hints.

As in :mod:`esmm_np.teach.mistakes`: when a learner's function fails a case,
the grader runs these on the same case and names the one the learner's
outputs equal. Each is the package's layer (:mod:`esmm_np.experts`,
:mod:`esmm_np.transfer`) changed in one place. The softmax forward without
the shift by the row max is not here: it returns NaN or inf at large logits,
which the grader refuses with the case's hint (``cases_experts.SHIFT_HINT``).
"""

import numpy as np

from .. import experts


# ------------------------------------------------------------ softmax, forward

def _sm_batch_axis(g):
    shifted = g - g.max(axis=0, keepdims=True)          # (n, K)
    e = np.exp(shifted)
    psi = e / e.sum(axis=0, keepdims=True)              # each column sums to one
    return psi, psi


# ----------------------------------------------------------- softmax, backward

def _smb_diagonal_delta(dpsi, psi):
    return psi * dpsi                                   # the delta_ik part of the Jacobian only


def _smb_diagonal(dpsi, psi):
    return psi * (1 - psi) * dpsi                       # the Jacobian's diagonal only


def _smb_no_psi(dpsi, psi):
    return dpsi - np.sum(psi * dpsi, axis=1, keepdims=True)


def _smb_plain_mean(dpsi, psi):
    return psi * (dpsi - dpsi.mean(axis=1, keepdims=True))


def _smb_batch_sum(dpsi, psi):
    return psi * (dpsi - np.sum(psi * dpsi, axis=0, keepdims=True))


# ------------------------------------------------------------------- mixture

def _mix_dpsi_batch_sum(dm, cache):
    do, dpsi = experts.mixture_backward(dm, cache)
    return do, dpsi.sum(axis=0)                         # (K,): one number per expert


def _mix_no_gate(dm, cache):
    o, psi = cache
    _, dpsi = experts.mixture_backward(dm, cache)
    return np.broadcast_to(dm[:, None, :], o.shape).copy(), dpsi   # (n, K, d), psi left out


def _mix_dpsi_with_psi(dm, cache):
    o, psi = cache
    do, dpsi = experts.mixture_backward(dm, cache)
    return do, psi * dpsi


def _mix_do_summed(dm, cache):
    o, psi = cache
    do, dpsi = experts.mixture_backward(dm, cache)
    return do.sum(axis=1), dpsi                         # (n, d): the experts added up


# ----------------------------------------------------------------- attention

def _attention(dtau, cache, key=True, query=True, scale=True, softmax=True, value=True):
    """AITM's attention backward, with one path or factor left out when a flag is False.

    ``key``/``query``: dcand keeps its term through the key/query projection;
    ``scale``: the score's 1/sqrt(d_att) is applied; ``softmax``: the
    gradient flows through the attention weights at all; ``value``: through
    the values (False with key and query True is not a mistake we name).
    """
    cand, W_v, W_k, W_q, k, q, softmax_cache, mixture_cache = cache
    d_att = W_v.shape[1]
    c = 1 / d_att ** 0.5 if scale else 1.0
    dval, datt = experts.mixture_backward(dtau, mixture_cache)          # (n, J, d_att), (n, J)
    dscore = experts.softmax_backward(datt, softmax_cache)              # (n, J)
    if not softmax:
        dscore = np.zeros_like(dscore)
    dkey = dscore[:, :, None] * q * c                                  # (n, J, d_att)
    dqry = dscore[:, :, None] * k * c
    dW_v = np.einsum("njd,nja->da", cand, dval)
    dW_k = np.einsum("njd,nja->da", cand, dkey)
    dW_q = np.einsum("njd,nja->da", cand, dqry)
    dcand = dval @ W_v.T if value else np.zeros_like(cand)
    if key:
        dcand = dcand + dkey @ W_k.T
    if query:
        dcand = dcand + dqry @ W_q.T
    return dcand, dW_v, dW_k, dW_q


def _att_no_key(dtau, cache):
    return _attention(dtau, cache, key=False)


def _att_no_query(dtau, cache):
    return _attention(dtau, cache, query=False)


def _att_value_only(dtau, cache):
    return _attention(dtau, cache, key=False, query=False)


def _att_no_scale(dtau, cache):
    return _attention(dtau, cache, scale=False)


def _att_constant_weights(dtau, cache):
    return _attention(dtau, cache, softmax=False)


def _att_swapped_kq(dtau, cache):
    dcand, dW_v, dW_k, dW_q = _attention(dtau, cache)
    return dcand, dW_v, dW_q, dW_k


_JACOBIAN = "the softmax's Jacobian is d psi_i / d g_k = psi_i (delta_ik - psi_k)"

MISTAKES = {
    "softmax_forward": [
        (_sm_batch_axis, "normalised over the batch axis (axis 0): each row is one gate's "
                         "distribution over the K experts, so the max and the sum run over "
                         "axis 1"),
    ],
    "softmax_backward": [
        (_smb_diagonal_delta, "this is psi * dpsi, only the delta_ik part of the Jacobian: "
                              "every logit also moves every other weight through the "
                              "normalisation; subtract the weighted mean sum_i psi_i dpsi_i "
                              "before multiplying by psi (" + _JACOBIAN + ")"),
        (_smb_diagonal, "this is psi (1 - psi) dpsi, only the diagonal of the Jacobian: the "
                        "off-diagonal entries -psi_i psi_k carry every other weight's "
                        "gradient (" + _JACOBIAN + ")"),
        (_smb_no_psi, "the factor psi is missing: dgate_logit = psi * (dpsi - sum_i psi_i "
                      "dpsi_i), not dpsi minus the weighted mean alone"),
        (_smb_plain_mean, "the mean subtracted is the plain mean of dpsi; it must be weighted "
                          "by the gate: sum_i psi_i dpsi_i"),
        (_smb_batch_sum, "the weighted sum runs over the batch (axis 0); it runs over the "
                         "experts of each row (axis 1)"),
    ],
    "mixture_backward": [
        (_mix_dpsi_batch_sum, "dpsi is summed over the batch: each row has its own gate "
                              "weights, so dpsi keeps the batch axis, dpsi[i, k] = "
                              "<o[i, k], dm[i]>"),
        (_mix_no_gate, "do is dm copied to every expert, without the gate weight: expert k's "
                       "output was scaled by psi_k, so do_k = psi_k dm"),
        (_mix_dpsi_with_psi, "dpsi has an extra factor psi: m is linear in psi_k with "
                             "coefficient o_k, so dpsi_k = <o_k, dm>"),
        (_mix_do_summed, "do is summed over the experts: each expert gets its own gradient, "
                         "do has o's shape (n, K, d)"),
    ],
    "attention_backward": [
        (_att_value_only, "dcand comes from the value path only: each candidate also enters "
                          "its score through its key and its query, so dcand = dval W_v^T + "
                          "dkey W_k^T + dqry W_q^T"),
        (_att_no_key, "dcand is missing the key path: key_j = cand_j W_k, so add "
                      "dkey @ W_k.T"),
        (_att_no_query, "dcand is missing the query path: qry_j = cand_j W_q, so add "
                        "dqry @ W_q.T"),
        (_att_no_scale, "the 1/sqrt(d_att) of the score is missing from dkey and dqry: "
                        "score_j = <key_j, qry_j> / sqrt(d_att)"),
        (_att_constant_weights, "the attention weights are treated as constants: the "
                                "gradient also flows through att = softmax(score) into the "
                                "keys and queries (dW_k and dW_q are not zero)"),
        (_att_swapped_kq, "dW_k and dW_q are swapped: dkey = dscore * qry / sqrt(d_att) "
                          "pairs with W_k, dqry = dscore * key / sqrt(d_att) with W_q"),
    ],
}
