"""Experts and gates: the layers that Multi-gate Mixture-of-Experts is built from.

MMoE (Ma et al., KDD 2018) replaces the shared bottom of a multi-task network
by ``K`` small networks, the *experts*, and gives each task a *gate*: a
softmax over the experts, computed from the same input, that says how much of
each expert the task's tower sees. PLE (Tang et al., RecSys 2020) adds experts
that only one task's gate may use. Both need two new layers, written here in
the style of :mod:`esmm_np.layers` (forward returns ``(out, cache)``,
backward takes the upstream gradient and the cache):

    gate logits a --softmax--> gate weights g --+
    expert outputs x_1 .. x_K --stack--> x -----+--mixture--> m = sum_k g_k x_k

The symbols follow docs/derivation.md, section "Experts and gates".
"""

import numpy as np


def softmax_forward(a):
    """Softmax over the last axis, one distribution per row.

    Parameters
    ----------
    a : ndarray of shape (n, K)
        Gate logits, one per expert.

    Returns
    -------
    g : ndarray of shape (n, K)
        Gate weights: positive, each row sums to one.
    cache : ndarray, g itself (the backward needs only the output)
    """
    shifted = a - a.max(axis=1, keepdims=True)     # (n, K); exp cannot overflow, g is unchanged
    w = np.exp(shifted)                            # (n, K)
    g = w / w.sum(axis=1, keepdims=True)           # (n, K)
    return g, g


def softmax_backward(dg, cache):
    """Gradient of the softmax: da_k = g_k (dg_k - sum_j g_j dg_j).

    The Jacobian dg_j / da_k = g_j (delta_jk - g_k) is never built: its
    product with dg collapses to one weighted mean per row.

    Parameters
    ----------
    dg : ndarray of shape (n, K)
    cache : the g returned by :func:`softmax_forward`

    Returns
    -------
    da : ndarray of shape (n, K)
    """
    g = cache                                      # (n, K)
    mean_dg = np.sum(g * dg, axis=1, keepdims=True)  # (n, 1): sum_j g_j dg_j
    da = g * (dg - mean_dg)                        # (n, K)
    return da


def mixture_forward(x, g):
    """Mix the experts' outputs with one gate's weights, row by row.

    Parameters
    ----------
    x : ndarray of shape (n, K, d)
        The K experts' outputs for each row, stacked on axis 1.
    g : ndarray of shape (n, K)
        The gate's weights (rows sum to one when they come from a softmax;
        the layer itself does not need that).

    Returns
    -------
    m : ndarray of shape (n, d)
        m = sum_k g_k x_k.
    cache : tuple (x, g)
    """
    m = np.sum(g[:, :, None] * x, axis=1)          # (n, K, 1) * (n, K, d) -> (n, d)
    return m, (x, g)


def mixture_backward(dm, cache):
    """Gradients of the mixture with respect to the experts and to the gate.

    dx_k = g_k dm (each expert receives the upstream gradient scaled by its
    weight) and dg_k = <x_k, dm> (a weight moves the output along its expert).

    Parameters
    ----------
    dm : ndarray of shape (n, d)
    cache : tuple (x, g) from :func:`mixture_forward`

    Returns
    -------
    dx : ndarray of shape (n, K, d)
    dg : ndarray of shape (n, K)
    """
    x, g = cache
    dx = g[:, :, None] * dm[:, None, :]            # (n, K, 1) * (n, 1, d) -> (n, K, d)
    dg = np.sum(x * dm[:, None, :], axis=2)        # (n, K, d) -> (n, K)
    return dx, dg


def gate_entropy(g):
    """Entropy of each row's gate weights, in nats (0: one expert; log K: uniform).

    Parameters
    ----------
    g : ndarray of shape (n, K)

    Returns
    -------
    ndarray of shape (n,)
    """
    # 0 log 0 = 0: a weight that underflowed to zero adds nothing.
    safe = np.where(g > 0, g, 1.0)                 # (n, K)
    return -np.sum(np.where(g > 0, g * np.log(safe), 0.0), axis=1)
