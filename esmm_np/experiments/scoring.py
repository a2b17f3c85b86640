"""Scoring a method's test predictions, and the intervals of its difference to ESMM."""

from dataclasses import asdict

import numpy as np

from .config import INTERVAL_METRICS
from ..metrics import evaluate_esmm, paired_bootstrap, soft_auc


def score(pred, test):
    """evaluate_esmm, the soft AUCs against the true CVR, and DIVISION's pCVR above 1."""
    scores = evaluate_esmm({k: pred[k] for k in ("p_ctr", "p_cvr", "p_ctcvr") if k in pred},
                           test)
    nan = float("nan")
    scores["cvr_soft_auc_clicked"] = scores["cvr_soft_auc_entire"] = nan
    if "p_cvr" in pred and test.true_cvr is not None:
        clicked = test.click == 1
        scores["cvr_soft_auc_clicked"] = soft_auc(test.true_cvr[clicked], pred["p_cvr"][clicked])
        scores["cvr_soft_auc_entire"] = soft_auc(test.true_cvr, pred["p_cvr"])
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
