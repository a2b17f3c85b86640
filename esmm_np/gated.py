"""Experts and gates under the two towers: MMoE (Ma et al., KDD 2018) and PLE (Tang et
al., RecSys 2020), on :class:`esmm_np.multitask.MultiTaskModel`.

One *gated level* is the unit both are made of: some experts (hidden stacks,
:func:`esmm_np.multitask.stack_forward`), each reading one of the level's
inputs, and some gates, each a softmax over a list of those experts
(:func:`esmm_np.multitask.gate_forward`) that mixes them into one output
(:func:`esmm_np.experts.mixture_forward`):

    MMoE:  experts o_1 .. o_K of h0;  m_t = sum_k psi_t,k o_k,  psi_t = softmax(h0 W_t + b_t)
    PLE:   per level l, each task's own experts and the shared ones; task t's gate
           mixes its own and the shared experts, the shared gate (every level but the
           last) mixes all of them; level l + 1 reads level l's outputs.

PLE with one level is CGC; with ``n_task_experts=0`` and one level it is MMoE.
The backward walks a level in reverse: every gate's mixture gives its
experts ``do = psi dm`` and itself ``dpsi = <o, dm>``; an expert read by
several gates (a shared one) adds their gradients; every input collects
what its experts and its gate send back. docs/derivation.md derives it.

:meth:`GatedModel.gates` reports, per gate, each expert's mean weight and
the gates' mean entropy: the diagnostics of polarised gates.
"""

from collections import namedtuple

import numpy as np

from . import validate
from .data.bags import slice_bags
from .experts import gate_entropy, mixture_backward, mixture_forward
from .multitask import (MultiTaskModel, check_units, gate_backward, gate_forward, init_gate,
                        init_stack, stack_backward, stack_forward)

#: One gate of a level: the key of its output, the key of its input, its
#: parameters' name, and the names of the experts it mixes (in order).
Gate = namedtuple("Gate", ["out", "inp", "name", "experts"])

#: A level's cache: expert name -> its stack cache; gate out -> (gate cache, mixture cache, psi).
LevelCache = namedtuple("LevelCache", ["experts", "gates"])


# ------------------------------------------- the mixture as matrix products

def mixture_forward_matmul(o, psi):
    """:func:`esmm_np.experts.mixture_forward`, as one small matrix product per row.

    ``m_n = psi_n @ o_n``: a (1, K) row times the (K, d) experts, all rows in
    one batched ``np.matmul``, instead of broadcasting ``psi`` to (n, K, d)
    and summing over K. The same numbers (up to rounding), a few times faster;
    tests/test_gated_fast.py checks it against the plain form.

    Returns ``m`` of shape (n, d) and the cache ``(o, psi)``, as the plain form.
    """
    m = np.matmul(psi[:, None, :], o)[:, 0]        # (n, 1, K) @ (n, K, d) -> (n, d)
    return m, (o, psi)


def mixture_backward_matmul(dm, cache):
    """:func:`esmm_np.experts.mixture_backward` with ``dpsi_k = <o_k, dm>`` as a batched matmul.

    ``do = psi_k dm`` is the same outer product as in the plain form; the
    gate's gradient ``dpsi_n = o_n @ dm_n`` is one (K, d) @ (d, 1) product per
    row instead of an (n, K, d) temporary summed over d.

    Returns ``do`` of shape (n, K, d) and ``dpsi`` of shape (n, K).
    """
    o, psi = cache
    do = psi[:, :, None] * dm[:, None, :]          # (n, K, 1) * (n, 1, d) -> (n, K, d)
    dpsi = np.matmul(o, dm[:, :, None])[:, :, 0]   # (n, K, d) @ (n, d, 1) -> (n, K)
    return do, dpsi


class GatedModel(MultiTaskModel):
    """What MMoE and PLE share: gated levels, their forward and backward, the diagnostics.

    A subclass sets ``self.levels``, a list of ``(experts, gates)`` with
    ``experts`` a list of ``(name, input key)`` and ``gates`` a list of
    :data:`Gate`; level 0 reads ``h0`` under every input key, level l + 1
    reads level l's gate outputs; the last level's gates are ``"ctr"`` and
    ``"cvr"``, the towers' inputs.

    ``fast_mixture`` (True unless set False on a model) mixes with
    :func:`mixture_forward_matmul` / :func:`mixture_backward_matmul` and stacks
    a level's experts once per distinct list of them; False runs the plain
    :func:`esmm_np.experts.mixture_forward` / ``mixture_backward`` and stacks
    per gate, as the docstring above reads. Both give the same numbers.
    """

    fast_mixture = True

    def _init_levels(self, d_in):
        """Parameters of every expert and gate in ``self.levels``; returns the output width."""
        d = d_in
        for experts, gates in self.levels:
            for name, _ in experts:
                p, s = init_stack(self.rng, name, d, self.expert_units, self.activation,
                                  self.batch_norm, self.dtype)
                self.params.update(p)
                self.state.update(s)
            for g in gates:
                self.params.update(init_gate(self.rng, g.name, d, len(g.experts), self.dtype))
            d = self.expert_units[-1]
        return d

    def _body_forward(self, h0, train, rng):
        cfg = self.tower_config(self.expert_units)
        level_in = {key: h0 for key in ("ctr", "cvr", "shared", "input")}           # (n, d_in)
        caches = []
        for experts, gates in self.levels:
            out, ecache = {}, {}
            for name, key in experts:
                out[name], ecache[name] = stack_forward(self.params, self.state, name,  # (n, d_e)
                                                        level_in[key], cfg, train, rng)
            level_out, gcache, stacked = {}, {}, {}
            mix = mixture_forward_matmul if self.fast_mixture else mixture_forward
            for g in gates:
                key = tuple(g.experts) if self.fast_mixture else len(stacked)  # MMoE's gates: one stack
                if key not in stacked:
                    stacked[key] = np.stack([out[e] for e in g.experts], axis=1)    # (n, K, d_e)
                psi, gate_cache = gate_forward(self.params, g.name, level_in[g.inp]) # (n, K)
                level_out[g.out], mix_cache = mix(stacked[key], psi)                 # (n, d_e)
                gcache[g.out] = (gate_cache, mix_cache, psi)
            caches.append(LevelCache(ecache, gcache))
            level_in = level_out
        return {"ctr": level_in["ctr"], "cvr": level_in["cvr"]}, caches

    def _body_backward(self, dtower_in, caches, grads):
        cfg = self.tower_config(self.expert_units)
        dlevel_out = dict(dtower_in)      # the last level's outputs are the towers' inputs
        for (experts, gates), cache in zip(reversed(self.levels), reversed(caches)):
            dexpert = {}                  # expert name -> gradient of its output
            dlevel_in = {}                # input key -> gradient of that input
            mix_backward = mixture_backward_matmul if self.fast_mixture else mixture_backward
            for g in gates:
                gate_cache, mix_cache, _ = cache.gates[g.out]
                do, dpsi = mix_backward(dlevel_out[g.out], mix_cache)               # (n, K, d_e), (n, K)
                for k, e in enumerate(g.experts):      # a shared expert adds every gate's share
                    dexpert[e] = do[:, k] if e not in dexpert else dexpert[e] + do[:, k]  # (n, d_e)
                dh = gate_backward(dpsi, gate_cache, g.name, grads)                 # (n, d)
                dlevel_in[g.inp] = dh if g.inp not in dlevel_in else dlevel_in[g.inp] + dh
            for name, key in experts:
                dh = stack_backward(dexpert[name], cache.experts[name], name, cfg, grads)  # (n, d)
                dlevel_in[key] = dh if key not in dlevel_in else dlevel_in[key] + dh
            dlevel_out = dlevel_in
        return sum(dlevel_out.values())   # level 0 read h0 under every key: (n, d_in)

    def _body_stacks(self, caches):
        return [(name, c) for cache in caches for name, c in cache.experts.items()]

    def gates(self, X, dense=None, bags=None, batch_size=65536):
        """Gate diagnostics in inference mode: how each gate spreads its weight.

        Parameters
        ----------
        X, dense, bags, batch_size : as :meth:`predict`

        Returns
        -------
        dict gate -> dict with

        - ``experts``: tuple of the expert names the gate mixes;
        - ``mean_weight``: ndarray of shape (K,), each expert's weight averaged
          over the rows (sums to one);
        - ``entropy``: the rows' mean gate entropy in nats (0: every row uses
          one expert; ``log K``: every row weighs all equally);
        - ``max_entropy``: ``log K``.

        A gate whose mean weight sits on one expert, or whose entropy is
        near 0, has polarised.
        """
        batch_size = validate.check_int(batch_size, "batch_size", low=1)
        X, dense = self.check_inputs(X, dense)
        bags = self.check_bags(bags, X.shape[0])
        sums, ent = {}, {}
        for s in range(0, X.shape[0], batch_size):
            d = None if dense is None else dense[s:s + batch_size]
            _, cache = self._forward(X[s:s + batch_size] + self.offsets, d, train=False,
                                     bags=slice_bags(bags, s, s + batch_size))
            for level, lc in zip(self.levels, cache.body):
                for g in level[1]:
                    psi = lc.gates[g.out][2]                                         # (b, K)
                    sums[g.name] = sums.get(g.name, 0.0) + psi.sum(axis=0)
                    ent[g.name] = ent.get(g.name, 0.0) + float(gate_entropy(psi).sum())
        n = X.shape[0]
        return {g.name: {"experts": tuple(g.experts), "mean_weight": sums[g.name] / n,
                         "entropy": ent[g.name] / n, "max_entropy": float(np.log(len(g.experts)))}
                for _, gates in self.levels for g in gates}


# -------------------------------------------------------------------- MMoE

class MMoE(GatedModel):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

    ``K`` experts read ``h0``; task ``t``'s gate ``psi_t = softmax(h0 W_t + b_t)``
    mixes them, ``m_t = sum_k psi_t,k o_k``, and tower ``t`` reads ``m_t``.
    ``pCTCVR = pCTR * pCVR`` as in ESMM.

    Parameters
    ----------
    field_dims, embed_dim : as :class:`esmm_np.ESMM`
    n_experts : int >= 1
    expert_units : tuple of int, non-empty
        Hidden widths of every expert (its output width is the last).
    tower_units : tuple of int, or pair of tuples
        Hidden widths of the towers above the mixtures.
    space : {"entire", "clicked"}
        Where the CVR loss lives (:mod:`esmm_np.multitask`): ESMM's product
        and two losses over every impression (default), or the CVR loss over
        the clicked impressions only, averaged over them.
    **options
        As :class:`esmm_np.multitask.SharedBottom` (ESMM's options; dropout and
        batch norm in the experts too; ``l2_reg_dnn`` on experts, gates, towers).

    Parameter names: ``expert{k}.W{i}`` ... (a hidden stack per expert),
    ``gate_ctr.W`` (d_in, K), ``gate_ctr.b`` (K,), the same for ``gate_cvr``,
    the towers' as ESMM's, ``embedding``. :meth:`gates` gives the diagnostics.
    """

    def __init__(self, field_dims, embed_dim=8, n_experts=4, expert_units=(32,),
                 tower_units=(16,), *, space="entire", **options):
        n_experts = validate.check_int(n_experts, "n_experts", low=1)
        expert_units = check_units(expert_units, "expert_units")
        super().__init__(field_dims, embed_dim, tower_units, space=space, **options)
        self.n_experts, self.expert_units = n_experts, expert_units
        names = [f"expert{k}" for k in range(n_experts)]
        self.levels = [([(e, "input") for e in names],
                        [Gate(t, "input", f"gate_{t}", names) for t in self.towers])]
        self._build_towers(self._init_levels(self.d_in))

    def get_config(self):
        config = super().get_config()
        config.update(n_experts=self.n_experts, expert_units=list(self.expert_units))
        return config


# --------------------------------------------------------------------- PLE

class PLE(GatedModel):
    """Progressive Layered Extraction (Tang et al., RecSys 2020); one level is CGC.

    At every level ``l`` each task has ``n_task_experts`` experts of its own
    and ``n_shared_experts`` are shared. Task ``t``'s gate mixes its own and
    the shared experts into ``m_t``; below the last level a shared gate mixes
    every expert of the level into ``m_shared``. Level ``l + 1``'s task
    experts and gate read ``m_t``, its shared experts and gate ``m_shared``;
    level 0 reads ``h0`` everywhere. The towers read the last level's ``m_t``.
    ``pCTCVR = pCTR * pCVR`` as in ESMM.

    Parameters
    ----------
    field_dims, embed_dim : as :class:`esmm_np.ESMM`
    n_levels : int >= 1
        1 gives CGC (Customized Gate Control).
    n_shared_experts : int >= 1
    n_task_experts : int >= 0
        Experts of each task's own at every level (0 with one level is MMoE).
    expert_units : tuple of int, non-empty
        Hidden widths of every expert, at every level.
    tower_units, space, **options : as :class:`MMoE`

    Parameter names: ``l{l}.ctr{j}.W{i}`` (task experts), ``l{l}.shared{j}.W{i}``,
    gates ``l{l}.gate_ctr.W`` / ``.b`` (and ``cvr``; ``l{l}.gate_shared`` below
    the last level), the towers', ``embedding``.
    """

    def __init__(self, field_dims, embed_dim=8, n_levels=1, n_shared_experts=2,
                 n_task_experts=1, expert_units=(32,), tower_units=(16,), *, space="entire",
                 **options):
        n_levels = validate.check_int(n_levels, "n_levels", low=1)
        n_shared = validate.check_int(n_shared_experts, "n_shared_experts", low=1)
        n_task = validate.check_int(n_task_experts, "n_task_experts", low=0)
        expert_units = check_units(expert_units, "expert_units")
        super().__init__(field_dims, embed_dim, tower_units, space=space, **options)
        self.n_levels, self.n_shared_experts, self.n_task_experts = n_levels, n_shared, n_task
        self.expert_units = expert_units
        self.levels = []
        for lv in range(n_levels):
            own = {t: [f"l{lv}.{t}{j}" for j in range(n_task)] for t in self.towers}
            shared = [f"l{lv}.shared{j}" for j in range(n_shared)]
            experts = [(e, t) for t in self.towers for e in own[t]] + [(e, "shared") for e in shared]
            gates = [Gate(t, t, f"l{lv}.gate_{t}", own[t] + shared) for t in self.towers]
            if lv < n_levels - 1:      # the next level's shared experts read this mixture
                gates.append(Gate("shared", "shared", f"l{lv}.gate_shared",
                                  [e for e, _ in experts]))
            self.levels.append((experts, gates))
        self._build_towers(self._init_levels(self.d_in))

    def get_config(self):
        config = super().get_config()
        config.update(n_levels=self.n_levels, n_shared_experts=self.n_shared_experts,
                      n_task_experts=self.n_task_experts, expert_units=list(self.expert_units))
        return config
