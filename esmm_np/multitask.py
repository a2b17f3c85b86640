"""The multi-task family's common ground, and the Shared-Bottom model (Caruana, 1997).

Every model of the family (Shared-Bottom here; MMoE and PLE in
:mod:`esmm_np.gated`; AITM in :mod:`esmm_np.aitm`) reads the same input as
ESMM, ``h0 = [embeddings, pooled bags, dense]`` from one shared table, and
ends in ESMM's two towers. What differs is the *body* between them:

    h0 --body--> tower_in["ctr"], tower_in["cvr"] --towers--> logit_ctr, logit_cvr

Shared-Bottom's body is one MLP whose output ``shared`` both towers read;
MMoE's and PLE's are experts and gates (docs/derivation.md, sections 13 and 14).

Where the CVR loss lives is an option, ``space``:

- ``"entire"`` (default): ESMM's recipe. ``pCTCVR = pCTR * pCVR`` and the
  two losses ``w_ctr * mean BCE(click, pCTR) + w_ctcvr * mean BCE(click *
  conversion, pCTCVR)``, both over every impression (``loss_weights``,
  ``ctcvr_loss`` as in ESMM).
- ``"clicked"``: the classic multi-task recipe. ``w_ctr * mean BCE(click,
  pCTR)`` over every impression plus ``w_cvr * BCE(conversion, pCVR)``
  averaged over the batch's *clicked* impressions only (its sum over the
  clicked rows divided by their number; 0 for a batch without a click);
  ``loss_weights = (w_ctr, w_cvr)``. Unclicked rows never reach the CVR
  tower's loss, so its pCVR inherits the selection bias ESMM was built to
  avoid. :meth:`eval_loss` averages its chunks by rows, as ESMM's does.

Parameter names: ``embedding``; the body's (``bottom.W{i}``, ``bottom.b{i}``,
with batch norm ``bottom.gamma{i}``, ``bottom.beta{i}``, with PReLU
``bottom.alpha{i}``); the towers' as in ESMM (``ctr.W{i}`` ... ``ctr.W_out``,
``ctr.b_out``, the same for ``cvr``). ``l2_reg_dnn`` penalises every weight
matrix (body, gates and towers; never a bias).
"""

from collections import namedtuple

import numpy as np

from . import layers as L
from . import validate
from .experts import softmax_backward, softmax_forward
from .losses import bce_with_logits, l2_penalty
from .model import ESMM, check_tower_units
from .tower import (ACTIVATION_FORWARD, HiddenCache, TowerCache, check_batch_stats,
                    fold_running_stats, hidden_backward, init_tower, tower_backward,
                    tower_forward)

#: Where the CVR loss lives (see the module docstring).
SPACES = ("entire", "clicked")

#: What a family model's forward keeps: the input path's cache, the body's, each tower's.
ForwardCache = namedtuple("ForwardCache", ["embed", "body", "towers"])


# ------------------------------------------------- a stack of hidden layers

def init_stack(rng, prefix, d_in, units, activation, batch_norm, dtype):
    """Parameters of a tower's hidden layers alone (a bottom, an expert, AITM's info layer).

    :func:`esmm_np.tower.init_tower` without its logit layer (which it draws
    and this drops), so a stack and a tower of the same widths start alike.
    """
    params, state = init_tower(rng, prefix, d_in, units, activation, batch_norm, dtype)
    del params[f"{prefix}.W_out"], params[f"{prefix}.b_out"]
    return params, state


def stack_forward(params, state, prefix, h, cfg, train, rng=None):
    """Hidden layers, each affine -> [batch norm] -> activation -> [dropout].

    :func:`esmm_np.tower.tower_forward` without the logit layer.

    Parameters
    ----------
    h : ndarray of shape (n, d_in)
    cfg : esmm_np.tower.TowerConfig (``cfg.units`` at least one width)

    Returns
    -------
    h : ndarray of shape (n, units[-1])
    cache : TowerCache with ``out=None`` (no logit layer)
    """
    hidden = []
    for i in range(len(cfg.units)):
        u, affine = L.affine_forward(h, params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"])  # (n, u_i)
        bn = stats = None
        if cfg.batch_norm:
            u, bn, stats = L.batchnorm_forward(                                          # (n, u_i)
                u, params[f"{prefix}.gamma{i}"], params[f"{prefix}.beta{i}"],
                state[f"{prefix}.bn_mean{i}"], state[f"{prefix}.bn_var{i}"], train)
        if cfg.activation == "prelu":
            h, act = L.prelu_forward(u, params[f"{prefix}.alpha{i}"])                    # (n, u_i)
        else:
            h, act = ACTIVATION_FORWARD[cfg.activation](u)                                     # (n, u_i)
        mask = None
        if train and cfg.dropout > 0:
            h, mask = L.dropout_forward(h, cfg.dropout, rng=rng)                         # (n, u_i)
        hidden.append(HiddenCache(affine, bn, stats, act, mask))
    return h, TowerCache(hidden, None)


def stack_backward(dh, cache, prefix, cfg, grads):
    """Walk :func:`stack_forward` in reverse, writing its gradients into ``grads``.

    Parameters
    ----------
    dh : ndarray of shape (n, units[-1])

    Returns
    -------
    dh_in : ndarray of shape (n, d_in)
    """
    # The same walk as a tower's hidden layers: one implementation, in tower.py.
    return hidden_backward(dh, cache, prefix, cfg, grads)                                # (n, d_in)


# ------------------------------------------------------------------ a gate

def init_gate(rng, name, d_in, n_experts, dtype):
    """A gate's affine layer ``name.W`` (d_in, K), Glorot-uniform, and ``name.b`` (K,), zero."""
    limit = np.sqrt(6.0 / (d_in + n_experts))
    return {f"{name}.W": rng.uniform(-limit, limit, size=(d_in, n_experts)).astype(dtype),  # (d_in, K)
            f"{name}.b": np.zeros(n_experts, dtype=dtype)}                                  # (K,)


def gate_forward(params, name, h):
    """A task's gate: ``psi = softmax(h W + b)``, one weight per expert and row.

    Returns
    -------
    psi : ndarray of shape (n, K)
    cache : (affine cache, softmax cache)
    """
    gate_logit, affine = L.affine_forward(h, params[f"{name}.W"], params[f"{name}.b"])   # (n, K)
    psi, soft = softmax_forward(gate_logit)                                              # (n, K)
    return psi, (affine, soft)


def gate_backward(dpsi, cache, name, grads):
    """Gradient of :func:`gate_forward`: softmax's backward, then the affine layer's.

    Returns
    -------
    dh : ndarray of shape (n, d_in)
    """
    affine, soft = cache
    dgate_logit = softmax_backward(dpsi, soft)                                           # (n, K)
    dh, grads[f"{name}.W"], grads[f"{name}.b"] = L.affine_backward(dgate_logit, affine)
    return dh                                                                            # (n, d_in)


# ------------------------------------------------------- the common model

class MultiTaskModel(ESMM):
    """ESMM's input, options and two towers around a body that subclasses define.

    A subclass builds its body's parameters in ``__init__`` (then calls
    :meth:`_build_towers` with the body's output width) and defines
    ``_body_forward(h0, train, rng) -> ({"ctr": tower_in_ctr, "cvr": tower_in_cvr}, cache)``,
    ``_body_backward(dtower_in, cache, grads) -> dh0`` and ``_body_stacks(cache)``,
    the ``(prefix, TowerCache)`` pairs whose batch norm the training loop folds.
    """

    def __init__(self, field_dims, embed_dim, tower_units, *, space="entire",
                 share_embedding=True, **options):
        name = type(self).__name__
        space = validate.check_choice(space, "space", SPACES)
        if not validate.check_bool(share_embedding, "share_embedding"):
            raise ValueError(f"{name} reads one embedding table shared by both tasks; "
                             "share_embedding=False (separate tables, ESMM-NS) is ESMM's option")
        super().__init__(field_dims, embed_dim, tower_units, share_embedding=True, **options)
        self.space = space
        # ESMM's constructor built the table and checked every shared option; the
        # towers it built read the embeddings, ours read the body: drop them.
        for d in (self.params, self.state):
            for k in [k for k in d if k.split(".")[0] in self.towers]:
                del d[k]

    def _build_towers(self, d_body):
        """ESMM's two towers, on the body's output of width ``d_body``."""
        for t, units in zip(self.towers, self.tower_units):
            p, s = init_tower(self.rng, t, d_body, units, self.activation, self.batch_norm,
                              self.dtype)
            self.params.update(p)
            self.state.update(s)

    def get_config(self):
        config = super().get_config()
        config["space"] = self.space
        return config

    def _forward(self, rows, dense, train, rng=None, masks=None, bags=None):
        """Embeddings -> body -> the two towers; returns logits and a ForwardCache."""
        if masks is not None:
            raise ValueError(f"{type(self).__name__} takes no fixed dropout masks; pass "
                             "seed= for repeatable masks")
        h0, emb_cache = self._embed(self.params["embedding"], rows, dense, bags)      # (n, d_in)
        tower_in, body_cache = self._body_forward(h0, train, rng)                     # (n, d) each
        logits, towers = {}, {}
        for t, units in zip(self.towers, self.tower_units):
            logits[t], towers[t] = tower_forward(self.params, self.state, t, tower_in[t],  # (n,)
                                                 self.tower_config(units), train, rng)
        return logits, ForwardCache(emb_cache, body_cache, towers)

    def _loss_grads(self, rows, dense, labels, train, rng, masks=None, bags=None):
        """Forward and backward on validated input; returns (data loss, grads, cache)."""
        logits, cache = self._forward(rows, dense, train, rng, masks, bags=bags)
        loss, dlogit = self._loss_at_logits(logits, labels)
        grads = {}
        dtower_in = {t: tower_backward(dlogit[t], cache.towers[t], t,                 # (n, d)
                                       self.tower_config(units), grads)
                     for t, units in zip(self.towers, self.tower_units)}
        dh0 = self._body_backward(dtower_in, cache.body, grads)                       # (n, d_in)
        grads["embedding"] = self._embed_backward(dh0, cache.embed)
        return loss, grads, cache

    def _loss_at_logits(self, logits, labels):
        """ESMM's two losses (space="entire") or the click-space recipe (space="clicked")."""
        if self.space == "entire":
            return super()._loss_at_logits(logits, labels)
        click, conversion = labels
        w_ctr, w_cvr = self.loss_weights
        loss_ctr, dlogit_ctr = bce_with_logits(logits["ctr"], click)                  # (n,)
        logit_cvr = logits["cvr"]                                                      # (n,)
        clicked = np.flatnonzero(click)                                                # (n_y,) rows
        dlogit_cvr = np.zeros_like(logit_cvr)                                          # (n,)
        loss_cvr = 0.0
        if clicked.size:        # a mean over the clicked rows: 1 / n_y, not 1 / n, in the gradient
            loss_cvr, dlogit_cvr[clicked] = bce_with_logits(logit_cvr[clicked], conversion[clicked])
        return (w_ctr * loss_ctr + w_cvr * loss_cvr,
                {"ctr": w_ctr * dlogit_ctr, "cvr": w_cvr * dlogit_cvr})

    def _stacks(self, cache):
        """Every (prefix, stack or tower cache) pair of one forward: the body's, then the towers'."""
        return list(self._body_stacks(cache.body)) + [(t, cache.towers[t]) for t in self.towers]

    def _fold_bn(self, cache):
        stacks = self._stacks(cache)
        for prefix, c in stacks:          # every stack checked before any moves
            check_batch_stats(prefix, c)
        for prefix, c in stacks:
            fold_running_stats(self.state, prefix, c, self.bn_momentum)

    def _l2(self, grads, lazy=False):
        """ESMM's penalties (tables, towers), plus ``l2_reg_dnn`` on the body's weight matrices."""
        total = super()._l2(grads, lazy=lazy)
        if self.l2_reg_dnn > 0:
            for name in self.params:
                if name.split(".")[0] not in self.towers and name not in self.tables \
                        and name.split(".")[-1].startswith("W"):
                    pen, dpen = l2_penalty(self.params[name], self.l2_reg_dnn)
                    total += pen
                    grads[name] = grads[name] + dpen
        return total


def check_units(units, name):
    """A non-empty tuple of widths >= 1 (a bottom or an expert needs at least one layer)."""
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise TypeError(f"{name} must be a non-empty tuple of widths >= 1, got {units!r}")
    units = tuple(units)
    if not units:
        raise ValueError(f"{name} must be a non-empty tuple of widths >= 1, got ()")
    return tuple(validate.check_int(u, f"{name} entry", low=1) for u in units)


# ------------------------------------------------------------ Shared-Bottom

class SharedBottom(MultiTaskModel):
    """Shared-Bottom: one MLP under the two towers (Caruana, "Multitask Learning", 1997).

    ``shared = bottom(h0)``; both towers read it: ``pCTR = sigmoid(tower_ctr(shared))``,
    ``pCVR = sigmoid(tower_cvr(shared))``, ``pCTCVR = pCTR * pCVR``. The bottom's
    gradient is the sum of the two towers' (``dshared = dtower_in_ctr + dtower_in_cvr``).

    Parameters
    ----------
    field_dims, embed_dim : as :class:`esmm_np.ESMM`
    bottom_units : tuple of int, non-empty
        Hidden widths of the shared bottom (its output width is the last).
    tower_units : tuple of int, or pair of tuples
        Hidden widths of the towers above the bottom, as ESMM's.
    space : {"entire", "clicked"}
        Where the CVR loss lives (module docstring): ESMM's product and two
        losses over every impression (default), or the CVR loss over the
        clicked impressions only, averaged over them.
    **options
        ESMM's: activation, dropout (after every hidden activation, bottom
        included), batch_norm, l2_reg_embedding, l2_reg_dnn (every weight
        matrix), n_dense, loss_weights, ctcvr_loss (entire space), dtype,
        seed, bn_momentum, bag_dims, bag_pooling. The table is always shared.

    ``predict(X)`` returns ``p_ctr``, ``p_cvr``, ``p_ctcvr``; ``loss(X, click,
    conversion)`` returns ``(value, grads keyed like params)``.
    """

    def __init__(self, field_dims, embed_dim=8, bottom_units=(64,), tower_units=(32,), *,
                 space="entire", **options):
        bottom_units = check_units(bottom_units, "bottom_units")
        super().__init__(field_dims, embed_dim, tower_units, space=space, **options)
        self.bottom_units = bottom_units
        p, s = init_stack(self.rng, "bottom", self.d_in, bottom_units, self.activation,
                          self.batch_norm, self.dtype)
        self.params.update(p)
        self.state.update(s)
        self._build_towers(bottom_units[-1])

    def get_config(self):
        config = super().get_config()
        config["bottom_units"] = list(self.bottom_units)
        return config

    def _body_forward(self, h0, train, rng):
        shared, cache = stack_forward(self.params, self.state, "bottom", h0,          # (n, d)
                                      self.tower_config(self.bottom_units), train, rng)
        return {"ctr": shared, "cvr": shared}, cache

    def _body_backward(self, dtower_in, cache, grads):
        dshared = dtower_in["ctr"] + dtower_in["cvr"]   # both towers read the bottom: (n, d)
        return stack_backward(dshared, cache, "bottom", self.tower_config(self.bottom_units),
                              grads)                                                   # (n, d_in)

    def _body_stacks(self, cache):
        return [("bottom", cache)]
