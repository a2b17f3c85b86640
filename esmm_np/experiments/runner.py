"""The paper's experiments on simulated worlds where the truth is known: the runner.

:func:`run_all` trains every method of the ESMM paper's Table 2 (plus our
UNBIAS-IPS, ESCM², and a CTR-only reference row) with the same architecture
and the same effort rule (:mod:`.config`) on the same simulated world, over
several seeds, and scores them on held-out impressions: the paper's CVR AUC
on clicked impressions (on 0/1 labels and as
:func:`~esmm_np.metrics.soft_auc` against the true CVR), the CVR AUC on the
entire space that the paper could not measure, the CTCVR AUC, and the pCVR
bias. Each method's difference to ESMM carries an interval (:mod:`.scoring`).
It also runs the sparsity sweep (the paper's Figure 3: BASE and ESMM on
shrinking shares of the training data). The trainings run in worker
processes (:mod:`.workers`); the tables, JSON and docs are :mod:`.report`'s,
the figures :mod:`.figures`', the map across worlds :mod:`.regime`'s.

Adding a method: see :mod:`esmm_np.experiments.baselines` (``TRAINERS``); then list its
name in ``ExperimentConfig.methods``.
"""

import time
from dataclasses import asdict

import numpy as np

from .baselines import TRAINERS, USES_CTR_NET, make_context
from .config import ExperimentConfig, INTERVAL_METRICS, make_world, model_arch
from .scoring import SWEEP_INTERVALS, config_dict, describe, score, summarise
from .workers import executor, get_world, make_task, run_intervals, run_tasks, world_key
from ..metrics import auc, log_loss
from ..model import ESMM
from ..optim import Adam
from ..train import fit


def run_all(cfg, progress=print, data=None, sweep=True):
    """The table and (with ``sweep``) the sparsity sweep, in one pool of workers.

    Parameters
    ----------
    cfg : ExperimentConfig
    progress : callable(str) or None
        Receives one line per network trained, with elapsed time.
    data : (train, test) Datasets, optional
        Defaults to :func:`make_world` of ``cfg`` (simulated in each worker).
    sweep : bool

    Returns
    -------
    (result, sweep_result): see :func:`run_experiment` and :func:`sparsity_sweep`.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    world = "given" if data is not None else world_key(cfg)
    train, test = data if data is not None else get_world(world)
    info = describe(train, test)
    say(f"world: {info['n_train']:,} training and {info['n_test']:,} test impressions, "
        f"CTR {info['ctr']:.3f}, CVR given click {info['cvr']:.4f}"
        + ("" if cfg.label == "full" else f"  [{cfg.label} run: its numbers are not the "
           "documented table's]"))
    unknown = set(cfg.methods) - set(TRAINERS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {tuple(TRAINERS)}")
    tasks = {}
    for seed in cfg.seeds:
        if any(m in USES_CTR_NET for m in cfg.methods):
            tasks[("table", "_ctr_net", seed, None)] = make_task(cfg, "_ctr_net", seed, world=world)
        for m in cfg.methods:
            needs = ("table", "_ctr_net", seed, None) if m in USES_CTR_NET else None
            tasks[("table", m, seed, None)] = make_task(cfg, m, seed, world=world, needs=needs)
    fracs = tuple(cfg.sweep_fractions) if sweep else ()
    for frac in fracs:
        for seed in cfg.seeds:
            for m in cfg.sweep_methods:
                if frac >= 1.0 and m in cfg.methods:
                    continue            # the same training as the table's: reused below
                tasks[("sweep", m, seed, frac)] = make_task(cfg, m, seed, frac=frac, world=world)
    say(f"{len(tasks)} trainings on {max(cfg.workers, 1)} worker(s)")
    with executor(cfg.workers, data) as pool:
        done = run_tasks(tasks, pool, say)
        preds = {m: [done[("table", m, s, None)]["pred"] for s in cfg.seeds]
                 for m in cfg.methods}
        say(f"paired bootstrap intervals ({cfg.n_boot} replicates) ...")
        reference = "ESMM" if "ESMM" in cfg.methods else (cfg.methods or (None,))[0]
        jobs = {("table", metric): pool.submit(run_intervals, world, preds, reference,
                                               (metric,), cfg.n_boot)
                for metric in (INTERVAL_METRICS if cfg.methods else ())}
        fracs_done = {}
        for frac in fracs:
            cell = {}
            for m in cfg.sweep_methods:
                key = "table" if (frac >= 1.0 and m in cfg.methods) else "sweep"
                fr = None if key == "table" else frac
                cell[m] = [done[(key, m, s, fr)] for s in cfg.seeds]
            fracs_done[frac] = cell
            cell_preds = {m: [o["pred"] for o in outs] for m, outs in cell.items()}
            jobs[("sweep", frac)] = pool.submit(run_intervals, world, cell_preds,
                                                cfg.sweep_methods[-1], SWEEP_INTERVALS,
                                                cfg.n_boot)
        ivs = {k: f.result() for k, f in jobs.items()}

    result = {"config": config_dict(cfg), "world": info, "label": cfg.label,
              "runs": {m: [score(p, test) for p in preds[m]] for m in cfg.methods},
              "networks": {m: [done[("table", m, s, None)]["networks"] for s in cfg.seeds]
                           for m in cfg.methods},
              "choices": {m: [done[("table", m, s, None)]["choice"] for s in cfg.seeds]
                          for m in cfg.methods if done[("table", m, cfg.seeds[0], None)]["choice"]}}
    if ("table", "_ctr_net", cfg.seeds[0], None) in done:
        result["networks"]["_ctr_net"] = [done[("table", "_ctr_net", s, None)]["networks"]
                                          for s in cfg.seeds]
    result["summary"] = summarise(result["runs"])
    result["intervals"] = {m: v for metric in INTERVAL_METRICS if ("table", metric) in ivs
                           for m, v in ivs[("table", metric)].items()}
    result["reference"] = reference
    sweep_out = None
    if fracs:
        sweep_out = {}
        for frac, cell in fracs_done.items():
            sweep_out[frac] = {
                "runs": {m: [score(o["pred"], test) for o in outs] for m, outs in cell.items()},
                "networks": {m: [o["networks"] for o in outs] for m, outs in cell.items()},
                "intervals": ivs[("sweep", frac)]}
    result["seconds"] = time.perf_counter() - start
    say(f"done in {result['seconds']:.0f} s")
    return result, sweep_out


def run_experiment(cfg, progress=print, data=None):
    """Train every method over every seed and score it on the held-out impressions.

    Returns
    -------
    dict with ``"runs"`` (method -> list of per-seed score dicts),
    ``"summary"`` (method -> metric -> (mean, std)), ``"intervals"`` (metric
    -> method -> paired bootstrap of its difference to ESMM), ``"networks"``
    (method -> per seed, network -> ``steps``, ``kept``, ``stopped``, ...),
    ``"choices"`` (AMAN's rate and OVERSAMPLING's k per seed), ``"world"``
    and ``"config"``.
    """
    return run_all(cfg, progress, data, sweep=False)[0]


def sparsity_sweep(cfg, progress=print, data=None):
    """BASE and ESMM (``cfg.sweep_methods``) trained on shrinking shares of the training set.

    The paper's Figure 3: for each fraction in ``cfg.sweep_fractions`` the
    training impressions are subsampled (seeded, nested: a smaller share is a
    subset of a larger one) and each method is scored on the same test set.

    Returns
    -------
    dict fraction -> {"runs": method -> per-seed scores, "networks": ...,
    "intervals": metric -> method -> bootstrap of the difference to ESMM}
    """
    sweep_cfg = ExperimentConfig(**{**asdict(cfg), "methods": ()})
    return run_all(sweep_cfg, progress, data, sweep=True)[1]


def budget_check(cfg, factor=10, seed=0, progress=print):
    """Retrain every sweep cell with ``factor`` times the effort; how far do the AUCs move?

    The effort rule's patience, minimum and cap are all multiplied by
    ``factor`` (validation stays every ``eval_every`` steps). If a cell's
    AUC moves by less than a point, the sweep measures the methods and not
    the budget.

    Returns
    -------
    list of dicts: ``frac``, ``method``, ``auc`` and ``auc_more`` (entire-space
    CVR AUC, and soft), steps of both runs, and the ``move`` in points.
    """
    base = ExperimentConfig(**{**asdict(cfg), "methods": (), "seeds": (seed,), "n_boot": 2})
    more = ExperimentConfig(**{**asdict(base), "train": {
        **cfg.train, "patience": factor * cfg.train["patience"],
        "min_steps": factor * cfg.train["min_steps"], "max_steps": factor * cfg.train["max_steps"]}})
    a = run_all(base, progress, sweep=True)[1]
    b = run_all(more, progress, sweep=True)[1]
    rows = []
    for frac in a:
        for m in a[frac]["runs"]:
            ra, rb = a[frac]["runs"][m][0], b[frac]["runs"][m][0]
            na, nb = (next(iter(x[frac]["networks"][m][0].values())) for x in (a, b))
            rows.append({"frac": frac, "method": m,
                         "auc": ra["cvr_auc_entire"], "auc_more": rb["cvr_auc_entire"],
                         "soft": ra["cvr_soft_auc_entire"], "soft_more": rb["cvr_soft_auc_entire"],
                         "steps": na["steps"], "steps_more": nb["steps"],
                         "stopped_more": nb["stopped"], "factor": factor,
                         "move": 100 * (rb["cvr_auc_entire"] - ra["cvr_auc_entire"])})
    return rows


def budget_table(rows):
    """:func:`budget_check` as Markdown."""
    k = f"{rows[0]['factor']}x" if rows else "more"
    lines = [f"| share | method | CVR AUC entire | with {k} effort | move (points) | "
             f"soft AUC entire | with {k} effort | steps | steps with {k} |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['frac']:.0%} | {r['method']} | {100 * r['auc']:.2f} | "
                     f"{100 * r['auc_more']:.2f} | {r['move']:+.2f} | {100 * r['soft']:.2f} | "
                     f"{100 * r['soft_more']:.2f} | {r['steps']:,} | {r['steps_more']:,} |")
    return "\n".join(lines)


def stopping_curves(cfg, methods=("ESMM", "ESMM-NS"), seed=0, chunk=200, n_chunks=40):
    """Validation curves of the two halves of ESMM's loss, to see where early stopping lands.

    Each method's network trains ``n_chunks`` times ``chunk`` optimiser steps
    (no early stopping); after every chunk it is scored on its validation rows:
    the CTR log loss, the CTCVR log loss, their sum (what the effort rule
    stops on) and the CTCVR AUC.

    Returns
    -------
    dict method -> dict of lists: ``step``, ``ctr_loss``, ``ctcvr_loss``,
    ``total``, ``ctcvr_auc``; plus ``stop_total`` and ``stop_ctcvr`` (the
    steps where the total and the CTCVR loss are lowest).
    """
    train, _ = make_world(cfg)
    ctx = make_context(train, arch=model_arch(cfg), train=cfg.train, seed=seed,
                       validation_fraction=cfg.validation_fraction)
    part, val = ctx.part, ctx.val
    z_val = val.click * val.conversion
    out = {}
    for name in methods:
        model = ESMM(part.field_dims, n_dense=part.n_dense, seed=seed,
                     share_embedding=(name == "ESMM"), **ctx.arch)
        opt = Adam(lr=cfg.train["lr"])
        curve = {k: [] for k in ("step", "ctr_loss", "ctcvr_loss", "total", "ctcvr_auc")}
        for k in range(n_chunks):
            fit(model, part.X, part.click, part.conversion, batch_size=cfg.train["batch_size"],
                optimizer=opt, seed=seed * 1000 + k, verbose=False, max_steps=chunk)
            p = model.predict(val.X, val.dense)
            curve["step"].append((k + 1) * chunk)
            curve["ctr_loss"].append(log_loss(val.click, p["p_ctr"]))
            curve["ctcvr_loss"].append(log_loss(z_val, p["p_ctcvr"]))
            curve["total"].append(curve["ctr_loss"][-1] + curve["ctcvr_loss"][-1])
            curve["ctcvr_auc"].append(auc(z_val, p["p_ctcvr"]))
        curve["stop_total"] = curve["step"][int(np.argmin(curve["total"]))]
        curve["stop_ctcvr"] = curve["step"][int(np.argmin(curve["ctcvr_loss"]))]
        out[name] = curve
    return out
