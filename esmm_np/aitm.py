"""AITM: the Adaptive Information Transfer Multi-task model (Xi et al., KDD 2021).

AITM models the funnel task by task. Each task has a tower on the shared
input ``h0``; the CTCVR tower also reads what the CTR tower learned, through
an *information layer* and the *transfer* attention of :mod:`esmm_np.transfer`:

    rep_ctr   = stack_ctr(h0)                 (n, d_ctr)  the CTR tower's hidden layers
    rep_ctcvr = stack_ctcvr(h0)               (n, d)      the CTCVR tower's
    info      = stack_info(rep_ctr)           (n, d)      one hidden layer, d units
    tau       = attention([info, rep_ctcvr])  (n, d)      J = 2 candidates per row
    logit_ctr   = rep_ctr W_out_ctr + b_out_ctr,   pCTR   = sigmoid(logit_ctr)
    logit_ctcvr = tau W_out_ctcvr + b_out_ctcvr, pCTCVR = sigmoid(logit_ctcvr)

    L = w_ctr mean BCE(click, pCTR) + w_ctcvr mean BCE(click * conversion, pCTCVR)
        + calibrator_weight * mean max(pCTCVR - pCTR, 0)

Both cross-entropies are over every impression (the entire space). AITM
predicts pCTCVR directly, never pCVR; like DIVISION, its pCVR is the ratio
pCTCVR / pCTR clipped to [0, 1] (``predict`` also returns the raw ratio as
``p_cvr_raw``), and it is scored as DIVISION is. The calibrator is a mean
over rows, not a sum, so its weight does not change with the batch size.

Parameter names: ``embedding``; ``ctr.W{i}``, ``ctr.b{i}`` ... ``ctr.W_out``,
``ctr.b_out`` (and batch norm / PReLU parameters as in ESMM's towers); the
same for ``ctcvr``; ``info.W0``, ``info.b0`` (...); ``transfer.W_v``,
``transfer.W_k``, ``transfer.W_q``, each (d, d). ``l2_reg_dnn`` penalises
every weight matrix.
"""

from collections import namedtuple

import numpy as np

from . import layers as L
from . import validate
from .data.bags import slice_bags
from .losses import bce_with_logits, softplus
from .model import check_logits
from .multitask import MultiTaskModel, init_stack, stack_backward, stack_forward
from .tower import init_tower
from .transfer import attention_backward, attention_forward, calibrator_backward, calibrator_forward

#: AITM's forward cache: the input path's, the three stacks', the attention's, the two logit layers'.
AITMCache = namedtuple("AITMCache", ["embed", "ctr", "ctcvr", "info", "attention", "out_ctr",
                                     "out_ctcvr"])


class AITM(MultiTaskModel):
    """Adaptive Information Transfer Multi-task model (Xi et al., KDD 2021).

    Parameters
    ----------
    field_dims, embed_dim : as :class:`esmm_np.ESMM`
    tower_units : tuple of int, or pair of tuples, non-empty
        Hidden widths of the CTR and CTCVR towers; the CTCVR tower's last
        width ``d`` is also the information layer's and the attention's.
    calibrator_weight : float >= 0
        The behavioural-expectation calibrator's weight (the paper's alpha;
        its best value there, 0.6, is the default). 0 switches it off.
    **options
        ESMM's: activation, dropout, batch_norm (in every stack, the
        information layer included), l2_reg_embedding, l2_reg_dnn,
        n_dense, loss_weights ``(w_ctr, w_ctcvr)``, dtype, seed,
        bn_momentum, bag_dims, bag_pooling. No ``ctcvr_loss`` (pCTCVR is not a
        product here) and no ``space`` (both losses are over every impression).

    ``predict(X)`` returns ``p_ctr``, ``p_cvr`` (pCTCVR / pCTR clipped to
    [0, 1], as DIVISION), ``p_cvr_raw`` (the unclipped ratio) and ``p_ctcvr``;
    ``loss(X, click, conversion)`` returns ``(value, grads keyed like params)``;
    :meth:`transfer_weights` the attention's mean weight on each candidate.
    """

    towers = ("ctr", "ctcvr")

    def __init__(self, field_dims, embed_dim=8, tower_units=(64, 32), *,
                 calibrator_weight=0.6, **options):
        for name, why in (("ctcvr_loss", "AITM's pCTCVR has its own logit, it is not a product"),
                          ("space", "AITM's two losses are both over every impression")):
            if name in options:
                raise TypeError(f"AITM takes no {name}: {why}")
        calibrator_weight = validate.check_float(calibrator_weight, "calibrator_weight", low=0)
        super().__init__(field_dims, embed_dim, tower_units, **options)
        if not all(self.tower_units):
            raise ValueError("AITM's towers need at least one hidden layer each (their last "
                             f"layer is the representation the transfer reads), got "
                             f"tower_units={tower_units!r}")
        self.calibrator_weight = calibrator_weight
        for t, units in zip(self.towers, self.tower_units):
            p, s = init_tower(self.rng, t, self.d_in, units, self.activation, self.batch_norm,
                              self.dtype)         # the CTCVR logit layer reads tau, also width d
            self.params.update(p)
            self.state.update(s)
        d_ctr, d = self.tower_units[0][-1], self.tower_units[1][-1]
        p, s = init_stack(self.rng, "info", d_ctr, (d,), self.activation, self.batch_norm,
                          self.dtype)
        self.params.update(p)
        self.state.update(s)
        limit = np.sqrt(6.0 / (2 * d))
        for w in ("W_v", "W_k", "W_q"):
            self.params[f"transfer.{w}"] = self.rng.uniform(-limit, limit,             # (d, d)
                                                            size=(d, d)).astype(self.dtype)

    def get_config(self):
        config = super().get_config()
        del config["ctcvr_loss"], config["space"]
        config["calibrator_weight"] = self.calibrator_weight
        return config

    def _configs(self):
        d = self.tower_units[1][-1]
        return (self.tower_config(self.tower_units[0]), self.tower_config(self.tower_units[1]),
                self.tower_config((d,)))

    def _forward(self, rows, dense, train, rng=None, masks=None, bags=None):
        """Embeddings -> the two towers -> information layer -> transfer -> two logits."""
        if masks is not None:
            raise ValueError("AITM takes no fixed dropout masks; pass seed= for repeatable masks")
        P, S = self.params, self.state
        cfg_ctr, cfg_ctcvr, cfg_info = self._configs()
        h0, emb = self._embed(P["embedding"], rows, dense, bags)                      # (n, d_in)
        rep_ctr, c_ctr = stack_forward(P, S, "ctr", h0, cfg_ctr, train, rng)          # (n, d_ctr)
        rep_ctcvr, c_ctcvr = stack_forward(P, S, "ctcvr", h0, cfg_ctcvr, train, rng)  # (n, d)
        info, c_info = stack_forward(P, S, "info", rep_ctr, cfg_info, train, rng)     # (n, d)
        cand = np.stack([info, rep_ctcvr], axis=1)                                    # (n, 2, d)
        tau, c_att = attention_forward(cand, P["transfer.W_v"], P["transfer.W_k"],
                                       P["transfer.W_q"])                             # (n, d)
        logit_ctr, c_out_ctr = L.affine_forward(rep_ctr, P["ctr.W_out"],
                                                P["ctr.b_out"])                       # (n, 1)
        logit_ctcvr, c_out_ctcvr = L.affine_forward(tau, P["ctcvr.W_out"],
                                                    P["ctcvr.b_out"])                 # (n, 1)
        return ({"ctr": logit_ctr[:, 0], "ctcvr": logit_ctcvr[:, 0]},
                AITMCache(emb, c_ctr, c_ctcvr, c_info, c_att, c_out_ctr, c_out_ctcvr))

    def _loss_at_logits(self, logits, labels):
        """The two cross-entropies and the calibrator; returns (loss, dlogit per task)."""
        click, conversion = labels
        logit_ctr, logit_ctcvr = logits["ctr"], logits["ctcvr"]                       # (n,), (n,)
        w_ctr, w_ctcvr = self.loss_weights
        lam_cal = self.calibrator_weight
        loss_ctr, dlogit_ctr = bce_with_logits(logit_ctr, click)                       # (n,)
        loss_ctcvr, dlogit_ctcvr = bce_with_logits(logit_ctcvr, click * conversion)    # (n,)
        p_ctr, s_ctr = L.sigmoid_forward(logit_ctr)                                    # (n,)
        p_ctcvr, s_ctcvr = L.sigmoid_forward(logit_ctcvr)                              # (n,)
        cal, cal_cache = calibrator_forward(p_ctcvr, p_ctr)
        dp_ctcvr, dp_ctr = calibrator_backward(lam_cal, cal_cache)                     # (n,) each
        dlogit = {"ctr": w_ctr * dlogit_ctr + L.sigmoid_backward(dp_ctr, s_ctr),
                  "ctcvr": w_ctcvr * dlogit_ctcvr + L.sigmoid_backward(dp_ctcvr, s_ctcvr)}
        return w_ctr * loss_ctr + w_ctcvr * loss_ctcvr + lam_cal * cal, dlogit

    def _loss_grads(self, rows, dense, labels, train, rng, masks=None, bags=None):
        logits, cache = self._forward(rows, dense, train, rng, masks, bags=bags)
        loss, dlogit = self._loss_at_logits(logits, labels)
        cfg_ctr, cfg_ctcvr, cfg_info = self._configs()
        grads = {}
        drep_ctr, grads["ctr.W_out"], grads["ctr.b_out"] = L.affine_backward(
            dlogit["ctr"][:, None], cache.out_ctr)                                     # (n, d_ctr)
        dtau, grads["ctcvr.W_out"], grads["ctcvr.b_out"] = L.affine_backward(
            dlogit["ctcvr"][:, None], cache.out_ctcvr)                                 # (n, d)
        dcand, grads["transfer.W_v"], grads["transfer.W_k"], grads["transfer.W_q"] = \
            attention_backward(dtau, cache.attention)                                  # (n, 2, d)
        dinfo, drep_ctcvr = dcand[:, 0], dcand[:, 1]                                   # (n, d) each
        # The CTR tower's representation feeds its own logit and the information layer.
        drep_ctr = drep_ctr + stack_backward(dinfo, cache.info, "info", cfg_info, grads)  # (n, d_ctr)
        dh0 = (stack_backward(drep_ctr, cache.ctr, "ctr", cfg_ctr, grads)
               + stack_backward(drep_ctcvr, cache.ctcvr, "ctcvr", cfg_ctcvr, grads))   # (n, d_in)
        grads["embedding"] = self._embed_backward(dh0, cache.embed)
        return loss, grads, cache

    def _stacks(self, cache):
        return [("ctr", cache.ctr), ("ctcvr", cache.ctcvr), ("info", cache.info)]

    def predict(self, X, dense=None, batch_size=65536, bags=None):
        """Inference-mode probabilities for every impression.

        Returns
        -------
        dict with "p_ctr", "p_ctcvr" (the two sigmoids), "p_cvr" (pCTCVR / pCTR
        clipped to [0, 1]) and "p_cvr_raw" (the ratio unclipped: it exceeds 1
        wherever pCTCVR > pCTR, which the calibrator penalises), each shape (n,)
        """
        out = {"p_ctr": [], "p_ctcvr": [], "p_cvr_raw": []}
        for s, logits, _ in self._chunks(X, dense, batch_size, bags):
            check_logits(logits, s)
            logit_ctr, logit_ctcvr = logits["ctr"], logits["ctcvr"]                   # (b,), (b,)
            out["p_ctr"].append(L.sigmoid(logit_ctr))
            out["p_ctcvr"].append(L.sigmoid(logit_ctcvr))
            # The ratio of the two sigmoids in log space: no 0 / 0 where pCTR underflows.
            with np.errstate(over="ignore"):
                out["p_cvr_raw"].append(np.exp(softplus(-logit_ctr)
                                               - softplus(-logit_ctcvr)))              # (b,)
        out = {k: np.concatenate(v) for k, v in out.items()}
        out["p_cvr"] = np.clip(out["p_cvr_raw"], 0.0, 1.0)
        return out

    def transfer_weights(self, X, dense=None, batch_size=65536, bags=None):
        """The transfer attention's mean weight on each candidate, in inference mode.

        Returns
        -------
        dict with "info" (the CTR tower's transferred representation) and "own"
        (the CTCVR tower's own), the rows' mean attention weights (they sum to one)
        """
        total, n = 0.0, 0
        for _, _, cache in self._chunks(X, dense, batch_size, bags):
            *_, att, _ = cache.attention       # the softmax's cache is att itself: (b, 2)
            total = total + att.sum(axis=0)
            n += att.shape[0]
        return {"info": float(total[0] / n), "own": float(total[1] / n)}

    def _chunks(self, X, dense, batch_size, bags):
        """Validated inference forwards, chunk by chunk: yields (first row, logits, cache)."""
        batch_size = validate.check_int(batch_size, "batch_size", low=1)
        X, dense = self.check_inputs(X, dense)
        bags = self.check_bags(bags, X.shape[0])
        for s in range(0, X.shape[0], batch_size):
            d = None if dense is None else dense[s:s + batch_size]
            logits, cache = self._forward(X[s:s + batch_size] + self.offsets, d, train=False,
                                          bags=slice_bags(bags, s, s + batch_size))
            yield s, logits, cache
