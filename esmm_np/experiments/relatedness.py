"""The relatedness sweep and the gate diagnostics (issue 19): MMoE's synthetic experiment.

Over the simulator's ``rho`` (task relatedness: the correlation of the
conversion score with the click score) and the CVR given click, MMoE and PLE
train against Shared-Bottom and ESMM, in several simulated worlds per cell,
and each is scored on the entire space (soft CVR AUC against ``true_cvr``
over every test impression) and on the CTR side (soft CTR AUC against
``true_ctr``).

**Intervals over worlds and rows (a two-level bootstrap).** In each world
the test rows are resampled ``n_boot`` times, the same rows for every method
(paired), and every method's AUCs (averaged over its training seeds) are
computed on each replicate. A difference A − B then has, per world, its
value on the full test set and ``n_boot`` replicate values. The reported
difference is the mean over worlds of the per-world differences; its
interval is the percentile interval of ``n_outer`` two-level replicates,
each drawing the worlds with replacement and, for each world drawn, one of
its row replicates, averaged. The interval so covers the world-to-world
spread as well as the test rows (with few worlds it is still narrower than
a t-interval over worlds would be; the per-world differences are in the
JSON). A difference is starred only when its interval excludes zero.

**Gates.** Every MMoE and PLE network reports, on its world's test rows,
each gate's mean weight per expert and its mean entropy against ``log K``
(:meth:`esmm_np.gated.GatedModel.gates`); the sweep averages them over
seeds and worlds and calls a gate *polarised* when its normalised entropy
(entropy / log K) is under :data:`POLARISED` or one expert takes more than
:data:`DOMINANT` of its mean weight.
"""

import os
import time
from dataclasses import asdict

import numpy as np

from ..data.files import dumps_strict, write_file
from ..metrics import soft_auc
from .baselines import bag_kw, make_context
from .config import ExperimentConfig, fair_effort
from .family import gate_diagnostics
from .methods import TRAINERS
from .scoring import config_dict, describe
from .workers import executor, forget_world, get_world, make_task, world_key

#: The sweep's methods: the reference, the shared bottom, the experts (entire space)
#: and the same bodies with the CVR loss on clicked impressions only.
METHODS = ("ESMM", "SB", "MMOE", "PLE", "SB-CLICKED", "MMOE-CLICKED", "PLE-CLICKED")
QUICK_METHODS = ("ESMM", "SB", "MMOE", "PLE")
RHOS = (-0.3, 0.3, 0.6, 0.95)
CVRS = (0.02, 0.1)
#: Metrics: soft AUC of p_cvr against true_cvr over every test row, of p_ctr against true_ctr.
METRICS = {"cvr_soft_auc_entire": ("p_cvr", "true_cvr"), "ctr_soft_auc": ("p_ctr", "true_ctr")}
#: The comparisons reported: (A, B) means A − B.
POLARISED = 0.5
DOMINANT = 0.8


def comparisons(methods):
    """The differences the sweep reports, as (A, B) pairs meaning A − B."""
    out = [(m, "ESMM") for m in methods if m != "ESMM"]
    out += [(m, "SB") for m in ("MMOE", "PLE") if m in methods and "SB" in methods]
    out += [(f"{m}-CLICKED", m) for m in ("SB", "MMOE", "PLE")
            if m in methods and f"{m}-CLICKED" in methods]
    return out


def relatedness_config(quick=False):
    """The sweep's run: ``quick`` is the test suite's size (well under a minute on one core)."""
    if quick:
        return ExperimentConfig(n_impressions=20_000, seeds=(0,), world_seeds=(0, 1),
                                methods=QUICK_METHODS,
                                arch=dict(embed_dim=4, tower_units=(8,), dtype="float32"),
                                train=fair_effort(eval_every=50, patience=2, min_steps=100,
                                                  max_steps=300, batch_size=256, lr=5e-3),
                                sweep_fractions=(), n_boot=20, workers=1, label="quick")
    return ExperimentConfig(n_impressions=60_000, seeds=(0,), world_seeds=(0, 1),
                            methods=METHODS,
                            arch=dict(embed_dim=8, tower_units=(32, 16), dtype="float32"),
                            train=fair_effort(eval_every=100, patience=3, min_steps=400,
                                              max_steps=2000, batch_size=512, lr=3e-3),
                            sweep_fractions=(), n_boot=30, workers=2, label="small")


# ---------------------------------------------------------------- in a worker

def train_and_read(task):
    """Train one method in a worker; returns its test predictions, record and gates."""
    start = time.perf_counter()
    train, test = get_world(task["world"])
    ctx = make_context(train, arch=task["arch"], train=task["train"], seed=task["seed"],
                       validation_fraction=task["validation_fraction"], ctr_net=None,
                       options=task["options"])
    method = TRAINERS[task["method"]](ctx)
    pred = method.predict(test.X, test.dense, **bag_kw(test))
    out = {"pred": {k: np.asarray(pred[k], dtype=np.float32) for k in ("p_ctr", "p_cvr")},
           "networks": method.networks, "gates": None}
    if hasattr(getattr(method, "model", None), "gates"):
        out["gates"] = {g: {"experts": list(d["experts"]),
                            "mean_weight": [float(w) for w in d["mean_weight"]],
                            "entropy": float(d["entropy"]), "max_entropy": float(d["max_entropy"])}
                        for g, d in gate_diagnostics(method, test).items()}
    out["seconds"] = time.perf_counter() - start
    return out


def row_replicates(world, preds, n_boot, seed=0):
    """Every method's AUCs on the full test set and on ``n_boot`` paired row resamples.

    Parameters
    ----------
    world : a world key (:func:`~esmm_np.experiments.workers.world_key`)
    preds : dict method -> list over training seeds of {"p_ctr", "p_cvr"} on its test set

    Returns
    -------
    dict metric -> method -> {"value": float, "boot": list of n_boot floats}
    (each the mean over the method's seeds)
    """
    test = get_world(world)[1]
    rng = np.random.default_rng(seed)
    n = len(test)
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = {}
    for metric, (key, truth) in METRICS.items():
        target = np.asarray(getattr(test, truth), dtype=np.float64)
        out[metric] = {}
        for name, runs in preds.items():
            scores = [np.asarray(p[key], dtype=np.float64) for p in runs]
            out[metric][name] = {
                "value": float(np.mean([soft_auc(target, s) for s in scores])),
                "boot": [float(np.mean([soft_auc(target[i], s[i]) for s in scores]))
                         for i in draws]}
    return out


# ---------------------------------------------------------------- the sweep

def two_level_interval(per_world, n_outer=2000, seed=0, level=0.95):
    """Mean over worlds of a difference, with a two-level bootstrap interval.

    Parameters
    ----------
    per_world : list over worlds of (value, replicates): the difference on the
        full test set and its row-bootstrap replicates in that world

    Returns
    -------
    dict with ``diff`` (mean over worlds), ``low``, ``high`` (percentile
    interval of replicates drawing worlds with replacement, then one row
    replicate in each), ``per_world`` (the worlds' differences)
    """
    rng = np.random.default_rng(seed)
    values = np.array([v for v, _ in per_world], dtype=np.float64)
    boots = [np.asarray(b, dtype=np.float64) for _, b in per_world]
    w = len(per_world)
    reps = np.empty(n_outer)
    for r in range(n_outer):
        pick = rng.integers(0, w, w)
        reps[r] = np.mean([boots[k][rng.integers(0, boots[k].size)] for k in pick])
    a = (1 - level) / 2
    diff = float(values.mean())
    low, high = (float(x) for x in np.quantile(reps, [a, 1 - a]))
    # the percentile interval of a skewed few-world bootstrap can miss its own
    # estimate; widen it to contain the estimate rather than report it outside
    return {"diff": diff, "low": min(low, diff), "high": max(high, diff),
            "per_world": [float(v) for v in values]}


def relatedness_sweep(cfg, rhos=RHOS, cvrs=CVRS, progress=print):
    """MMoE and PLE against Shared-Bottom and ESMM over rho x CVR, in several worlds each.

    Each world is ``simulate(cfg.n_impressions, seed=world_seed,
    preset=cfg.preset, rho=rho, cvr=cvr, **cfg.world)`` for each of
    ``cfg.world_seeds``; every method of ``cfg.methods`` trains in it for each
    of ``cfg.seeds`` under ``cfg``'s effort rule.

    Returns
    -------
    dict with ``"cells"``: list of dicts (``rho``, ``cvr``, ``rates`` (first
    world), ``scores``: metric -> method -> mean over worlds, ``diffs``: metric
    -> "A − B" -> :func:`two_level_interval`, ``gates``: method -> gate ->
    mean weights / entropy / normalised entropy / polarised, ``networks``),
    ``"config"``, ``"rhos"``, ``"cvrs"``, ``"comparisons"``, ``"seconds"``.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    methods = tuple(cfg.methods)
    if "ESMM" not in methods:
        raise ValueError(f"the sweep compares with ESMM; methods {methods} leave it out")
    unknown = [m for m in methods if m not in TRAINERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; the runner has {sorted(TRAINERS)}")
    wseeds = tuple(cfg.world_seeds) or (cfg.world_seed,)
    if len(wseeds) < 2:
        raise ValueError(f"the sweep's intervals are over worlds: give at least 2 world seeds, "
                         f"got {wseeds}")
    worlds, tasks = {}, {}
    for rho in rhos:
        for cvr in cvrs:
            wcfg = ExperimentConfig(**{**asdict(cfg), "world": {**cfg.world, "rho": rho,
                                                                "cvr": cvr}})
            for ws in wseeds:
                key = world_key(wcfg, ws)
                worlds[(rho, cvr, ws)] = key
                for seed in cfg.seeds:
                    for m in methods:
                        tasks[(rho, cvr, ws, m, seed)] = make_task(wcfg, m, seed, world=key)
    say(f"relatedness sweep: {len(rhos)} x {len(cvrs)} cells, {len(wseeds)} worlds each, "
        f"{len(tasks)} trainings on {max(cfg.workers, 1)} worker(s)")
    with executor(cfg.workers, None) as pool:
        futures = {k: pool.submit(train_and_read, t) for k, t in tasks.items()}
        done = {}
        for k, f in futures.items():
            done[k] = f.result()
            say(f"  trained {k[3]} (rho {k[0]}, cvr {k[1]}, world {k[2]}, seed {k[4]}) in "
                f"{done[k]['seconds']:.0f} s ({time.perf_counter() - start:.0f} s elapsed)")
        jobs = {wk: pool.submit(row_replicates, key,
                                {m: [done[wk + (m, s)]["pred"] for s in cfg.seeds]
                                 for m in methods}, cfg.n_boot, wk[2])
                for wk, key in worlds.items()}
        reps = {wk: f.result() for wk, f in jobs.items()}
    pairs = comparisons(methods)
    cells = []
    for rho in rhos:
        for cvr in cvrs:
            wk = [(rho, cvr, ws) for ws in wseeds]
            cell = {"rho": rho, "cvr": cvr, "scores": {}, "diffs": {}}
            for metric in METRICS:
                cell["scores"][metric] = {m: float(np.mean([reps[k][metric][m]["value"]
                                                            for k in wk])) for m in methods}
                cell["diffs"][metric] = {}
                for a, b in pairs:
                    per = [(reps[k][metric][a]["value"] - reps[k][metric][b]["value"],
                            np.subtract(reps[k][metric][a]["boot"], reps[k][metric][b]["boot"]))
                           for k in wk]
                    cell["diffs"][metric][f"{a} − {b}"] = two_level_interval(per)
            cell["gates"] = _gates(done, wk, cfg.seeds, methods)
            cell["networks"] = {m: [done[k + (m, s)]["networks"] for k in wk for s in cfg.seeds]
                                for m in methods}
            train, test = get_world(worlds[wk[0]])
            cell["rates"] = describe(train, test)
            for k in wk:
                forget_world(worlds[k])
            cells.append(cell)
    seconds = time.perf_counter() - start
    say(f"relatedness sweep done in {seconds:.0f} s")
    return {"config": config_dict(cfg), "world_seeds": list(wseeds), "rhos": list(rhos),
            "cvrs": list(cvrs), "methods": list(methods),
            "comparisons": [f"{a} − {b}" for a, b in pairs], "cells": cells,
            "seconds": seconds}


def _gates(done, wk, seeds, methods):
    """method -> gate -> diagnostics averaged over the cell's worlds and seeds."""
    out = {}
    for m in methods:
        runs = [done[k + (m, s)]["gates"] for k in wk for s in seeds]
        if not runs or runs[0] is None:
            continue
        out[m] = {}
        for g in runs[0]:
            w = np.mean([r[g]["mean_weight"] for r in runs], axis=0)
            ent = float(np.mean([r[g]["entropy"] for r in runs]))
            k = runs[0][g]["max_entropy"]
            norm = ent / k if k > 0 else 1.0
            out[m][g] = {"experts": runs[0][g]["experts"], "mean_weight": [float(x) for x in w],
                         "entropy": ent, "max_entropy": k, "normalised_entropy": norm,
                         "per_run_normalised_entropy": [r[g]["entropy"] / k if k > 0 else 1.0
                                                        for r in runs],
                         "polarised": bool(norm < POLARISED or max(w) > DOMINANT)}
    return out
