"""Experts and gates: the layers that Multi-gate Mixture-of-Experts is built from.

MMoE (Ma et al., KDD 2018) replaces the shared bottom of a multi-task network
by ``K`` small networks, the *experts*, and gives each task a *gate*: a
softmax over the experts, computed from the same input, that says how much of
each expert the task's tower sees. PLE (Tang et al., RecSys 2020) adds experts
that only one task's gate may use. Both need two new layers, written here in
the style of :mod:`esmm_np.layers` (forward returns ``(out, cache)``,
backward takes the upstream gradient and the cache):

    gate logits --softmax--> gate weights psi -----+
    expert outputs o_1 .. o_K --stack--> o --------+--mixture--> m = sum_k psi_k o_k

The symbols follow docs/derivation.md, section "Experts and gates".
"""

import numpy as np


def softmax_forward(gate_logit):
    """Softmax over the last axis, one distribution per row.

    Parameters
    ----------
    gate_logit : ndarray of shape (n, K)
        A gate's logits, one per expert.

    Returns
    -------
    psi : ndarray of shape (n, K)
        The gate's weights: positive, each row sums to one.
    cache : ndarray, psi itself (the backward needs only the output)
    """
    shifted = gate_logit - gate_logit.max(axis=1, keepdims=True)  # (n, K); exp cannot overflow
    expd = np.exp(shifted)                         # (n, K)
    psi = expd / expd.sum(axis=1, keepdims=True)   # (n, K)
    return psi, psi


def softmax_backward(dpsi, cache):
    """Gradient of the softmax: dgate_logit_k = psi_k (dpsi_k - sum_i psi_i dpsi_i).

    The Jacobian d psi_i / d gate_logit_k = psi_i (delta_ik - psi_k) is never
    built: its product with dpsi collapses to one weighted mean per row.

    Parameters
    ----------
    dpsi : ndarray of shape (n, K)
    cache : the psi returned by :func:`softmax_forward`

    Returns
    -------
    dgate_logit : ndarray of shape (n, K)
    """
    psi = cache                                    # (n, K)
    mean_dpsi = np.sum(psi * dpsi, axis=1, keepdims=True)  # (n, 1): sum_i psi_i dpsi_i
    dgate_logit = psi * (dpsi - mean_dpsi)         # (n, K)
    return dgate_logit


def mixture_forward(o, psi):
    """Mix the experts' outputs with one gate's weights, row by row.

    Parameters
    ----------
    o : ndarray of shape (n, K, d)
        The K experts' outputs for each row, stacked on axis 1.
    psi : ndarray of shape (n, K)
        The gate's weights (rows sum to one when they come from a softmax;
        the layer itself does not need that).

    Returns
    -------
    m : ndarray of shape (n, d)
        m = sum_k psi_k o_k.
    cache : tuple (o, psi)
    """
    m = np.sum(psi[:, :, None] * o, axis=1)        # (n, K, 1) * (n, K, d) -> (n, d)
    return m, (o, psi)


def mixture_backward(dm, cache):
    """Gradients of the mixture with respect to the experts and to the gate.

    do_k = psi_k dm (each expert receives the upstream gradient scaled by its
    weight) and dpsi_k = <o_k, dm> (a weight moves the output along its expert).

    Parameters
    ----------
    dm : ndarray of shape (n, d)
    cache : tuple (o, psi) from :func:`mixture_forward`

    Returns
    -------
    do : ndarray of shape (n, K, d)
    dpsi : ndarray of shape (n, K)
    """
    o, psi = cache
    do = psi[:, :, None] * dm[:, None, :]          # (n, K, 1) * (n, 1, d) -> (n, K, d)
    dpsi = np.sum(o * dm[:, None, :], axis=2)      # (n, K, d) -> (n, K)
    return do, dpsi


def gate_entropy(psi):
    """Entropy of each row's gate weights, in nats (0: one expert; log K: uniform).

    Parameters
    ----------
    psi : ndarray of shape (n, K)

    Returns
    -------
    ndarray of shape (n,)
    """
    # 0 log 0 = 0: a weight that underflowed to zero adds nothing.
    safe = np.where(psi > 0, psi, 1.0)             # (n, K)
    return -np.sum(np.where(psi > 0, psi * np.log(safe), 0.0), axis=1)
