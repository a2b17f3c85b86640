"""One MLP tower: its parameters, its forward pass and its backward pass.

Per hidden layer ``i``: ``u_i = h_i W_i + b_i`` (affine), optionally batch
norm, the activation φ (relu, sigmoid, tanh or PReLU), optionally inverted
dropout, giving ``h_{i+1}``; then the logit layer ``ℓ = h W_out + b_out``.
docs/derivation.md, sections 1 and 5, in the same symbols. ESMM has two
towers (``ctr``, ``cvr``) on one shared input, :class:`esmm_np.TowerModel`
one (``net``); esmm_np/reference.py writes the plain ReLU tower out by hand.

The forward returns a :class:`TowerCache` of named fields, one
:class:`HiddenCache` per hidden layer; the backward walks it in reverse.
"""

from collections import namedtuple

import numpy as np

from . import layers as L

ACTIVATION_FORWARD = {"relu": L.relu_forward, "sigmoid": L.sigmoid_forward, "tanh": L.tanh_forward}
ACTIVATION_BACKWARD = {"relu": L.relu_backward, "sigmoid": L.sigmoid_backward, "tanh": L.tanh_backward}

#: A tower's options: hidden widths, activation name, batch norm on/off, dropout rate.
TowerConfig = namedtuple("TowerConfig", ["units", "activation", "batch_norm", "dropout"])

#: What one hidden layer's forward keeps for the backward: the affine layer's
#: cache, batch norm's cache and batch statistics (None without batch norm),
#: the activation's cache, the dropout mask (None when no dropout ran).
HiddenCache = namedtuple("HiddenCache", ["affine", "batchnorm", "batch_stats", "activation",
                                         "dropout"])

#: A tower's cache: one HiddenCache per hidden layer, and the logit layer's affine cache.
TowerCache = namedtuple("TowerCache", ["hidden", "out"])



# ----------------------------------------------------------------- one tower

def init_tower(rng, prefix, d_in, units, activation, batch_norm, dtype):
    """Create the parameters and batch-norm state of one MLP tower.

    Weights use He-uniform scaling (variance 2 / d_in), suited to ReLU-like
    units; biases start at 0, PReLU slopes at 0.25, BN scale 1 and shift 0.

    Returns
    -------
    params : dict[str, ndarray]
    state : dict[str, ndarray]  batch-norm running mean and variance
    """
    params, state = {}, {}
    d = d_in
    for i, u in enumerate(units):
        limit = np.sqrt(6.0 / d)
        params[f"{prefix}.W{i}"] = rng.uniform(-limit, limit, size=(d, u)).astype(dtype)  # (d, u)
        params[f"{prefix}.b{i}"] = np.zeros(u, dtype=dtype)                              # (u,)
        if batch_norm:
            params[f"{prefix}.gamma{i}"] = np.ones(u, dtype=dtype)                       # (u,)
            params[f"{prefix}.beta{i}"] = np.zeros(u, dtype=dtype)                       # (u,)
            state[f"{prefix}.bn_mean{i}"] = np.zeros(u, dtype=dtype)                     # (u,)
            state[f"{prefix}.bn_var{i}"] = np.ones(u, dtype=dtype)                       # (u,)
        if activation == "prelu":
            params[f"{prefix}.alpha{i}"] = np.full(u, 0.25, dtype=dtype)                 # (u,)
        d = u
    limit = np.sqrt(6.0 / (d + 1))  # Glorot-uniform for the single-unit logit layer
    params[f"{prefix}.W_out"] = rng.uniform(-limit, limit, size=(d, 1)).astype(dtype)    # (d, 1)
    params[f"{prefix}.b_out"] = np.zeros(1, dtype=dtype)                                 # (1,)
    return params, state


def tower_forward(params, state, prefix, h, cfg, train, rng=None, masks=None):
    """Run one tower: per hidden layer affine -> [batch norm] -> activation -> [dropout].

    Parameters
    ----------
    params, state : the model's dicts
    prefix : "ctr", "cvr", ...
    h : ndarray of shape (n, d_in), the tower input
    cfg : TowerConfig
    train : bool; dropout and batch statistics only in training mode
    rng : numpy.random.Generator for the dropout masks
    masks : list of fixed dropout masks, one per hidden layer (gradient checks)

    Returns
    -------
    logit : ndarray of shape (n,)
    cache : TowerCache, for :func:`tower_backward`
    """
    hidden = []
    for i in range(len(cfg.units)):
        u, affine = L.affine_forward(h, params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"])  # (n, u_i)
        u, bn, stats = (L.batchnorm_forward(u, params[f"{prefix}.gamma{i}"],               # (n, u_i)
                                            params[f"{prefix}.beta{i}"],
                                            state[f"{prefix}.bn_mean{i}"],
                                            state[f"{prefix}.bn_var{i}"], train)
                        if cfg.batch_norm else (u, None, None))
        h, act = (L.prelu_forward(u, params[f"{prefix}.alpha{i}"])                         # (n, u_i)
                  if cfg.activation == "prelu" else ACTIVATION_FORWARD[cfg.activation](u))
        h, mask = (L.dropout_forward(h, cfg.dropout, rng=rng,                               # (n, u_i)
                                     mask=None if masks is None else masks[i])
                   if train and cfg.dropout > 0 else (h, None))
        hidden.append(HiddenCache(affine, bn, stats, act, mask))
    logit, out = L.affine_forward(h, params[f"{prefix}.W_out"], params[f"{prefix}.b_out"])  # (n, 1)
    return logit[:, 0], TowerCache(hidden, out)


def tower_backward(dlogit, cache, prefix, cfg, grads):
    """Walk the tower in reverse, writing parameter gradients into ``grads``.

    Parameters
    ----------
    dlogit : ndarray of shape (n,)
    cache : TowerCache from :func:`tower_forward`
    cfg : TowerConfig
    grads : dict, filled with ``prefix.W{i}`` etc.

    Returns
    -------
    dh : ndarray of shape (n, d_in), gradient of the tower input
    """
    dh, grads[f"{prefix}.W_out"], grads[f"{prefix}.b_out"] = L.affine_backward(
        dlogit[:, None], cache.out)                                                      # (n, u_last)
    return hidden_backward(dh, cache, prefix, cfg, grads)                                # (n, d_in)


def hidden_backward(dh, cache, prefix, cfg, grads):
    """Walk a tower's hidden layers in reverse (the tower without its logit layer).

    Parameters
    ----------
    dh : ndarray of shape (n, u_last), gradient of the last hidden layer's output
    cache : TowerCache (its ``hidden`` entries are read)
    cfg : TowerConfig
    grads : dict, filled with ``prefix.W{i}`` etc.

    Returns
    -------
    dh : ndarray of shape (n, d_in), gradient of the stack's input
    """
    for i in reversed(range(len(cache.hidden))):
        c = cache.hidden[i]
        dh = dh if c.dropout is None else L.dropout_backward(dh, c.dropout)              # (n, u_i)
        if cfg.activation == "prelu":
            du, grads[f"{prefix}.alpha{i}"] = L.prelu_backward(dh, c.activation)         # (n, u_i)
        else:
            du = ACTIVATION_BACKWARD[cfg.activation](dh, c.activation)                   # (n, u_i)
        if c.batchnorm is not None:
            du, grads[f"{prefix}.gamma{i}"], grads[f"{prefix}.beta{i}"] = \
                L.batchnorm_backward(du, c.batchnorm)                                    # (n, u_i)
        dh, grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = L.affine_backward(du, c.affine)
    return dh                                                                            # (n, d_in)


def check_batch_stats(prefix, cache):
    """Raise ``FloatingPointError`` if a batch's BN mean or variance is NaN or inf.

    A finite input can still have an inf variance (its square overflows)
    while the normalised output and the loss stay finite.
    """
    for i, c in enumerate(cache.hidden):
        if c.batch_stats is not None and not (np.isfinite(c.batch_stats[0]).all()
                                              and np.isfinite(c.batch_stats[1]).all()):
            raise FloatingPointError(f"the batch statistics of {prefix}.bn_mean{i} / "
                                     f"{prefix}.bn_var{i} are NaN or inf")


def fold_running_stats(state, prefix, cache, momentum):
    """Move the running BN statistics toward this batch's (training loop only)."""
    for i, c in enumerate(cache.hidden):
        if c.batch_stats is not None:
            mu, var = c.batch_stats                                  # (u_i,), (u_i,)
            m = state[f"{prefix}.bn_mean{i}"]
            v = state[f"{prefix}.bn_var{i}"]
            m *= momentum
            m += (1 - momentum) * mu
            v *= momentum
            v += (1 - momentum) * var
