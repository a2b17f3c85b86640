"""The multi-task family as methods of the experiment runner.

Each method trains one model on every training impression, under the same
fair-effort rule as ESMM (:func:`~esmm_np.experiments.baselines.fit_network`),
and predicts ``p_ctr``, ``p_cvr``, ``p_ctcvr`` like ESMM, so the runner
scores it with the same metrics and the same paired intervals against ESMM:

- ``SB``, ``MMOE``, ``PLE``: Shared-Bottom, MMoE, PLE (one level, CGC) in
  ESMM's entire space (``space="entire"``: the product and its two losses);
- ``SB-CLICKED``, ``MMOE-CLICKED``, ``PLE-CLICKED``: the same architectures
  with the classic recipe (``space="clicked"``: the CVR loss over clicked
  impressions only), the same question as BASE against ESMM for each body;
- ``AITM``: pCVR = pCTCVR / pCTR clipped to [0, 1], scored as DIVISION
  (its raw ratio is kept, so ``pcvr_above_1`` is reported).

Architecture at the same width as ESMM's: with the run's ``tower_units``
``(u_1, u_2, ...)``, the bottom (SB) or every expert (MMoE, PLE) is one
layer of ``u_1`` units and the towers above it keep ``(u_2, ...)``; AITM's
towers are ``tower_units`` itself. MMoE has 4 experts, PLE 2 shared and 1
per task. ``ctx.options["family"]`` may override any option per method
(``{"MMOE": {"n_experts": 8}}``).

:func:`ctr_scores` gives the CTR side (CTR AUC against clicks, soft CTR AUC
against ``true_ctr``), and :func:`ctr_intervals` their paired intervals
against ESMM: the seesaw is a trade between the two tasks. :func:`gate_diagnostics`
reads a trained MMoE's or PLE's gates, :func:`gate_record` as results.json keeps
them, and :func:`polarised` says whether a gate has polarised.
"""

import numpy as np

from ..aitm import AITM
from ..gated import MMoE, PLE
from ..metrics import auc, paired_bootstrap, soft_auc
from ..multitask import SharedBottom
from .baselines import ESMMMethod, bag_kw, fit_network

#: The family's method names, in the order the tables show them.
FAMILY_METHODS = ("SB", "SB-CLICKED", "MMOE", "MMOE-CLICKED", "PLE", "PLE-CLICKED", "AITM")

#: The CTR side's metrics (:func:`ctr_scores`): AUC against clicks, soft AUC against true_ctr.
CTR_METRICS = ("ctr_auc", "ctr_soft_auc")


def _units(arch):
    """The run's tower widths as one tuple (the CTR tower's if it gives one per tower)."""
    units = tuple(arch.get("tower_units", (64, 32)))
    return tuple(units[0]) if units and isinstance(units[0], (tuple, list)) else units


def family_options(name, arch):
    """The class and constructor options of family method ``name`` for the run's ``arch``."""
    units = _units(arch)
    rest = {k: v for k, v in arch.items() if k != "tower_units"}
    space = "clicked" if name.endswith("-CLICKED") else "entire"
    body = name.split("-")[0]
    if body == "AITM":
        return AITM, dict(rest, tower_units=units)
    if not units:
        raise ValueError(f"{name} needs tower_units with at least one width, got {units!r}")
    above = units[1:]
    if body == "SB":
        return SharedBottom, dict(rest, bottom_units=units[:1], tower_units=above, space=space)
    if body == "MMOE":
        return MMoE, dict(rest, n_experts=4, expert_units=units[:1], tower_units=above,
                          space=space)
    if body == "PLE":
        return PLE, dict(rest, n_levels=1, n_shared_experts=2, n_task_experts=1,
                         expert_units=units[:1], tower_units=above, space=space)
    raise ValueError(f"unknown family method {name!r}; the family's are {FAMILY_METHODS}")


def train_family(ctx, name):
    """Train family method ``name`` on every impression of ``ctx.part``; returns the method."""
    part, val = ctx.part, ctx.val
    cls, options = family_options(name, ctx.arch)
    options.update(ctx.options.get("family", {}).get(name, {}))
    bag_dims = {"bag_dims": part.bag_dims} if getattr(part, "bags", None) is not None else {}
    model = cls(part.field_dims, n_dense=part.n_dense, seed=ctx.seed, **bag_dims, **options)
    v = None if val is None else (val.X, val.click, val.conversion) + (
        () if val.dense is None else (val.dense,)) + tuple(bag_kw(val).values())
    record = fit_network(model, part.X, (part.click, part.conversion), part.dense, v,
                         ctx.train, ctx.seed, ctx.verbose, **bag_kw(part),
                         probe=ctx.probes.get("two-tower"))   # records, never chooses
    return ESMMMethod(name, model, {f"{name} net": record})


#: Method name -> trainer(ctx) -> method, for the runner (esmm_np.experiments.methods).
TRAINERS = {name: (lambda ctx, name=name: train_family(ctx, name)) for name in FAMILY_METHODS}


# ----------------------------------------------------------- the CTR side

def ctr_scores(pred, test):
    """CTR AUC against the clicks and soft CTR AUC against ``true_ctr`` (NaN where undefined).

    Parameters
    ----------
    pred : dict with "p_ctr", ndarray of shape (n,)
    test : Dataset of n rows

    Returns
    -------
    dict with "ctr_auc", "ctr_soft_auc"
    """
    nan = float("nan")
    if "p_ctr" not in pred:
        return {"ctr_auc": nan, "ctr_soft_auc": nan}
    p = np.asarray(pred["p_ctr"], dtype=np.float64)
    y = test.click
    out = {"ctr_auc": auc(y, p) if 0 < y.sum() < y.size else nan, "ctr_soft_auc": nan}
    if getattr(test, "true_ctr", None) is not None:
        out["ctr_soft_auc"] = soft_auc(test.true_ctr, p)
    return out


def ctr_intervals(preds, test, reference="ESMM", n_boot=200, seed=0):
    """Paired bootstrap intervals of each method's CTR AUCs minus the reference's.

    Parameters
    ----------
    preds : dict method -> list over seeds of prediction dicts on ``test``
        (methods without ``p_ctr`` are left out)

    Returns
    -------
    dict metric -> method -> :func:`esmm_np.metrics.paired_bootstrap` entry
    """
    scores = {name: np.stack([np.asarray(p["p_ctr"], dtype=np.float64) for p in runs])
              for name, runs in preds.items() if all("p_ctr" in p for p in runs)}
    if reference not in scores:
        raise ValueError(f"the reference {reference!r} has no p_ctr among {sorted(preds)}")
    out = {"ctr_auc": paired_bootstrap(test.click, scores, reference, n_boot=n_boot, seed=seed)}
    if getattr(test, "true_ctr", None) is not None:
        out["ctr_soft_auc"] = paired_bootstrap(test.true_ctr, scores, reference, n_boot=n_boot,
                                               seed=seed)
    return out


def gate_diagnostics(method, data):
    """A trained MMOE / PLE method's gates on ``data``: :meth:`esmm_np.gated.GatedModel.gates`."""
    model = getattr(method, "model", None)
    if not hasattr(model, "gates"):
        raise TypeError(f"{getattr(method, 'name', method)!r} has no gates (MMOE and PLE do)")
    return model.gates(data.X, data.dense, **bag_kw(data))


#: A gate has polarised when its rows' mean entropy is below this share of log K (1 would
#: be every row weighing all experts alike, 0 every row using one) ...
POLARISED = 0.5
#: ... or when one expert takes more than this share of its mean weight.
DOMINANT = 0.8


def gate_record(method, data):
    """:func:`gate_diagnostics` as plain numbers for results.json; None for a method without gates.

    Returns
    -------
    dict gate -> dict with ``experts`` (names), ``mean_weight`` (list over
    the experts, sums to one), ``entropy`` (nats), ``max_entropy`` (log K)
    and ``entropy_ratio`` (entropy / log K, in [0, 1]).
    """
    if not hasattr(getattr(method, "model", None), "gates"):
        return None
    out = {}
    for name, g in gate_diagnostics(method, data).items():
        ratio = g["entropy"] / g["max_entropy"] if g["max_entropy"] > 0 else float("nan")
        out[name] = {"experts": list(g["experts"]),
                     "mean_weight": [float(w) for w in g["mean_weight"]],
                     "entropy": float(g["entropy"]), "max_entropy": float(g["max_entropy"]),
                     "entropy_ratio": float(ratio)}
    return out


def polarised(record, threshold=POLARISED, dominant=DOMINANT):
    """Has a gate of :func:`gate_record` polarised?

    Yes when its entropy is below ``threshold`` × log K or one expert takes
    more than ``dominant`` of its mean weight: the one rule the runner, the
    relatedness sweep and notebook 5 use.
    """
    return bool(record["entropy_ratio"] < threshold or max(record["mean_weight"]) > dominant)
