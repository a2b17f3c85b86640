"""Scoring a method's test predictions, and the intervals of its difference to ESMM."""

from dataclasses import asdict
from functools import lru_cache

import numpy as np

from .config import INTERVAL_METRICS
from .family import CTR_METRICS, ctr_scores
from ..metrics import evaluate_esmm, paired_bootstrap, seed_interval, soft_auc

#: The table's metrics with an interval of their difference to ESMM: the CVR side
#: (:data:`~esmm_np.experiments.config.INTERVAL_METRICS`) and the CTR side
#: (:data:`~esmm_np.experiments.family.CTR_METRICS`), since the seesaw trades one for the other.
TABLE_INTERVALS = INTERVAL_METRICS + CTR_METRICS


def score(pred, test):
    """evaluate_esmm, the soft AUCs against the true CVR, the CTR side, and DIVISION's pCVR above 1.

    The CTR side (:func:`~esmm_np.experiments.family.ctr_scores`): ``ctr_auc``
    against the clicks and ``ctr_soft_auc`` against ``true_ctr``, NaN for a
    method without ``p_ctr`` or test rows without the truth.
    """
    scores = evaluate_esmm({k: pred[k] for k in ("p_ctr", "p_cvr", "p_ctcvr") if k in pred},
                           test)
    nan = float("nan")
    scores["cvr_soft_auc_clicked"] = scores["cvr_soft_auc_entire"] = nan
    if "p_cvr" in pred and test.true_cvr is not None:
        clicked = test.click == 1
        scores["cvr_soft_auc_clicked"] = soft_auc(test.true_cvr[clicked], pred["p_cvr"][clicked])
        scores["cvr_soft_auc_entire"] = soft_auc(test.true_cvr, pred["p_cvr"])
    scores.update(ctr_scores(pred, test))
    if "p_cvr_raw" in pred:
        raw = pred["p_cvr_raw"]
        scores["pcvr_above_1"] = float(np.mean(raw > 1))
        scores["pcvr_max"] = float(raw.max())
    return scores


def _target(metric, test):
    """(row mask, target, prediction key) of a metric with intervals; None if not computable."""
    clicked = test.click == 1
    if metric == "cvr_auc_clicked":
        return clicked, test.conversion[clicked], "p_cvr"
    if metric == "cvr_soft_auc_clicked" and test.true_cvr is not None:
        return clicked, test.true_cvr[clicked], "p_cvr"
    if metric == "cvr_auc_entire" and test.conversion_if_clicked is not None:
        return None, test.conversion_if_clicked, "p_cvr"
    if metric == "cvr_soft_auc_entire" and test.true_cvr is not None:
        return None, test.true_cvr, "p_cvr"
    if metric == "ctcvr_auc":
        return None, test.click * test.conversion, "p_ctcvr"
    if metric == "ctr_auc":
        return None, test.click, "p_ctr"
    if metric == "ctr_soft_auc" and getattr(test, "true_ctr", None) is not None:
        return None, test.true_ctr, "p_ctr"
    return None


def intervals(preds, test, reference="ESMM", metrics=INTERVAL_METRICS, n_boot=200, seed=0):
    """Paired bootstrap intervals of each method's difference to ``reference``.

    Parameters
    ----------
    preds : dict method -> list over seeds of prediction dicts on ``test``
    test : Dataset

    Returns
    -------
    dict metric -> method -> :func:`esmm_np.metrics.paired_bootstrap` entry
    (only methods that have the prediction the metric needs).
    """
    out = {}
    for metric in metrics:
        spec = _target(metric, test)
        if spec is None:
            continue
        mask, target, key = spec
        scores = {name: np.stack([p[key] if mask is None else p[key][mask] for p in runs])
                  for name, runs in preds.items() if all(key in p for p in runs)}
        if reference not in scores or np.ptp(target) == 0:
            continue
        out[metric] = paired_bootstrap(target, scores, reference, n_boot=n_boot, seed=seed)
    return out


#: Sweep cells get intervals of ESMM - BASE on these (soft: the low-noise ones).
SWEEP_INTERVALS = ("cvr_auc_entire", "cvr_soft_auc_entire", "cvr_soft_auc_clicked")
#: ... and on this one when the test rows have no ground truth (real logs).
SWEEP_INTERVALS_NO_TRUTH = ("cvr_auc_clicked",)


def summarise(runs):
    """method -> metric -> (mean, std over seeds); std is 0 for a single seed."""
    summary = {}
    for name, scores in runs.items():
        keys = scores[0].keys()
        summary[name] = {k: (float(np.mean([s[k] for s in scores])),
                             float(np.std([s[k] for s in scores]))) for k in keys}
    return summary


def describe(train, test):
    clicks = int(train.click.sum())
    out = {"n_train": len(train), "n_test": len(test), "ctr": float(train.click.mean()),
           "cvr": float(train.conversion.sum() / max(clicks, 1)),
           "test_clicks": int(test.click.sum()), "test_conversions": int(test.conversion.sum())}
    if test.true_cvr is not None:
        out["true_cvr_clicked"] = float(test.true_cvr[test.click == 1].mean())
        out["true_cvr_unclicked"] = float(test.true_cvr[test.click == 0].mean())
    return out


def config_dict(cfg):
    d = asdict(cfg)
    d["arch"] = {k: (str(v) if k == "dtype" else v) for k, v in d["arch"].items()}
    return d


def sweep_mean(cell, m, metric):
    return 100 * np.mean([r[metric] for r in cell["runs"][m]])


#: How a one-world interval is built.
ONE_WORLD = ("paired bootstrap over test rows of one world (each replicate resamples the "
             "test rows and scores every training seed on them); it does not cover "
             "world-to-world spread")

#: How an across-world interval is built (printed beside the tables, stored in results.json).
ACROSS_WORLDS = ("Student t interval over worlds of the per-world paired differences (each "
                 "world's difference is the mean over its training seeds, scored on its own "
                 "test rows), so its spread holds the world-to-world, training-seed and "
                 "test-row noise alike")


def world_differences(runs_by_world, reference, metrics):
    """Per world, each method's mean score minus the reference's (paired: same world, same rows).

    Parameters
    ----------
    runs_by_world : list over worlds of dicts method -> list over seeds of score dicts
    reference : str
    metrics : metric names

    Returns
    -------
    dict metric -> method -> list over worlds of float (NaN where undefined)
    """
    out = {}
    for metric in metrics:
        per = {}
        for runs in runs_by_world:
            ref = np.mean([s[metric] for s in runs[reference]])
            for name, scores in runs.items():
                if name != reference:
                    per.setdefault(name, []).append(float(np.mean([s[metric] for s in scores])
                                                          - ref))
        out[metric] = {n: v for n, v in per.items() if not np.all(np.isnan(v))}
    return out


def world_interval(diffs, level=0.95):
    """The across-world interval of one method's per-world differences (:data:`ACROSS_WORLDS`).

    Returns a dict with ``diff`` (mean over worlds), ``diff_low``, ``diff_high``,
    ``per_world`` and ``n_worlds``; the bounds are NaN when fewer than two
    worlds have the metric.
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    entry = {"diff": float(d.mean()) if d.size else float("nan"),
             "diff_low": float("nan"), "diff_high": float("nan"),
             "per_world": [float(v) for v in diffs], "n_worlds": int(d.size),
             "construction": "t over worlds"}
    if d.size >= 2:
        half = t_quantile(d.size - 1, level) * d.std(ddof=1) / np.sqrt(d.size)
        entry["diff_low"], entry["diff_high"] = entry["diff"] - half, entry["diff"] + half
    return entry


@lru_cache(maxsize=None)
def t_quantile(df, level=0.95):
    """The two-sided Student t quantile of ``level`` at ``df`` degrees of freedom.

    Read off :func:`esmm_np.metrics.seed_interval` (which computes it) on a
    vector of ``df + 1`` values with a known standard error; cached, since
    the coverage check asks for it thousands of times.
    """
    v = np.zeros(df + 1)
    v[0], v[1] = -1.0, 1.0
    iv = seed_interval(v, level=level)
    return (iv["high"] - iv["mean"]) / (v.std(ddof=1) / np.sqrt(v.size))


def across_worlds(runs_by_world, reference, metrics, level=0.95):
    """metric -> method -> :func:`world_interval` of its difference to ``reference``."""
    return {metric: {n: world_interval(v, level) for n, v in per.items()}
            for metric, per in world_differences(runs_by_world, reference, metrics).items()}


def sweep_metric(sweep):
    """The CVR AUC the sweep shows: the entire space's where the test rows have it, else the clicked."""
    first = next(iter(sweep.values()))
    runs = next(iter(first["runs"].values()))
    return "cvr_auc_entire" if not np.isnan(runs[0]["cvr_auc_entire"]) else "cvr_auc_clicked"
