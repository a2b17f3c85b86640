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

from .baselines import USES_CTR_NET, make_context
from .methods import TRAINERS
from .checks import check_world
from .config import ExperimentConfig, effort_for, make_world, model_arch, world_seeds
from .scoring import (ACROSS_WORLDS, ONE_WORLD, SWEEP_INTERVALS, SWEEP_INTERVALS_NO_TRUTH,
                      TABLE_INTERVALS, across_worlds, config_dict,
                      describe, score, summarise)
from .workers import executor, get_world, make_task, run_intervals, run_tasks, world_key
from ..metrics import auc, log_loss
from ..model import ESMM
from ..optim import Adam
from ..train import fit


def run_all(cfg, progress=print, data=None, sweep=True):
    """The table and (with ``sweep``) the sparsity sweep over every world, in one pool of workers.

    Every world seed of ``cfg`` (:func:`~esmm_np.experiments.config.world_seeds`)
    gives a world with its own training and test impressions; every method
    trains in each of them with each training seed. Before the first training
    every split is checked (:func:`~esmm_np.experiments.checks.check_world`).

    Parameters
    ----------
    cfg : ExperimentConfig
    progress : callable(str) or None
        Receives one line per network trained, with elapsed time.
    data : (train, test) Datasets, optional
        Given data (one "world") instead of simulated worlds.
    sweep : bool

    Returns
    -------
    (result, sweep_result): see :func:`run_experiment` and :func:`sparsity_sweep`.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    unknown = set(cfg.methods) - set(TRAINERS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {tuple(TRAINERS)}")
    if data is not None:
        worlds = {"given": "given"}
        given = {"given": data}
    else:
        worlds = {ws: world_key(cfg, ws) for ws in world_seeds(cfg)}
        given = {}
    fracs = tuple(cfg.sweep_fractions) if sweep else ()
    infos, notes = {}, []
    for ws, key in worlds.items():                     # every check before any training
        train, test = given[ws] if ws in given else get_world(key)
        infos[ws] = describe(train, test)
        where = "the given data" if ws == "given" else f"world {ws}"
        fracs, dropped = check_world(cfg, train, test, fracs, where)
        notes += dropped
    first = next(iter(worlds))
    info = infos[first]
    effort = effort_for(cfg.train, round(len_part(info["n_train"], cfg.validation_fraction)))
    say(f"{len(worlds)} world(s): {info['n_train']:,} training and {info['n_test']:,} test "
        f"impressions each, CTR {info['ctr']:.3f}, CVR given click {info['cvr']:.4f}"
        + ("" if cfg.label == "full" else f"  [{cfg.label} run: its numbers are not the "
           "documented table's]"))
    for note in notes:
        say(note)
    tasks = {}
    for ws, key in worlds.items():
        for seed in cfg.seeds:
            if any(m in USES_CTR_NET for m in cfg.methods):
                tasks[(ws, "table", "_ctr_net", seed, None)] = make_task(
                    cfg, "_ctr_net", seed, world=key, train=effort)
            for m in cfg.methods:
                needs = (ws, "table", "_ctr_net", seed, None) if m in USES_CTR_NET else None
                tasks[(ws, "table", m, seed, None)] = make_task(cfg, m, seed, world=key,
                                                                needs=needs, train=effort)
        for frac in fracs:
            for seed in cfg.seeds:
                for m in cfg.sweep_methods:
                    if frac >= 1.0 and m in cfg.methods:
                        continue            # the same training as the table's: reused below
                    tasks[(ws, "sweep", m, seed, frac)] = make_task(cfg, m, seed, frac=frac,
                                                                    world=key, train=effort)
    say(f"{len(tasks)} trainings on {max(cfg.workers, 1)} worker(s)")
    reference = "ESMM" if "ESMM" in cfg.methods else (cfg.methods or (None,))[0]
    sweep_ref = cfg.sweep_methods[-1] if cfg.sweep_methods else None
    sweep_metrics = SWEEP_INTERVALS if "true_cvr_clicked" in info else SWEEP_INTERVALS_NO_TRUTH
    one_world = len(worlds) == 1
    with executor(cfg.workers, data) as pool:
        done = run_tasks(tasks, pool, say)
        preds, cells = {}, {}
        for ws in worlds:
            preds[ws] = {m: [done[(ws, "table", m, s, None)]["pred"] for s in cfg.seeds]
                         for m in cfg.methods}
            for frac in fracs:
                cells[(ws, frac)] = {
                    m: [done[(ws, "table", m, s, None) if (frac >= 1.0 and m in cfg.methods)
                             else (ws, "sweep", m, s, frac)] for s in cfg.seeds]
                    for m in cfg.sweep_methods}
        jobs = {}
        if one_world:   # one world: paired bootstrap over test rows (and seeds) in it
            say(f"paired bootstrap intervals ({cfg.n_boot} replicates) ...")
            for metric in (TABLE_INTERVALS if cfg.methods else ()):
                jobs[("table", metric)] = pool.submit(run_intervals, worlds[first], preds[first],
                                                      reference, (metric,), cfg.n_boot)
            for frac in fracs:
                cell_preds = {m: [o["pred"] for o in outs]
                              for m, outs in cells[(first, frac)].items()}
                jobs[("sweep", frac)] = pool.submit(run_intervals, worlds[first], cell_preds,
                                                    sweep_ref, sweep_metrics, cfg.n_boot)
        ivs = {k: f.result() for k, f in jobs.items()}

    per_world, sweep_worlds = {}, {}
    for ws, key in worlds.items():
        test = (given[ws] if ws in given else get_world(key))[1]
        per_world[ws] = {
            "world": infos[ws],
            "runs": {m: [score(p, test) for p in preds[ws][m]] for m in cfg.methods},
            "networks": {m: [done[(ws, "table", m, s, None)]["networks"] for s in cfg.seeds]
                         for m in cfg.methods},
            "choices": {m: [done[(ws, "table", m, s, None)]["choice"] for s in cfg.seeds]
                        for m in cfg.methods
                        if done[(ws, "table", m, cfg.seeds[0], None)]["choice"]},
            "gates": {m: [done[(ws, "table", m, s, None)]["gates"] for s in cfg.seeds]
                      for m in cfg.methods
                      if done[(ws, "table", m, cfg.seeds[0], None)].get("gates")}}
        if (ws, "table", "_ctr_net", cfg.seeds[0], None) in done:
            per_world[ws]["networks"]["_ctr_net"] = [
                done[(ws, "table", "_ctr_net", s, None)]["networks"] for s in cfg.seeds]
        for frac in fracs:
            sweep_worlds[(ws, frac)] = {
                "runs": {m: [score(o["pred"], test) for o in outs]
                         for m, outs in cells[(ws, frac)].items()},
                "networks": {m: [o["networks"] for o in outs]
                             for m, outs in cells[(ws, frac)].items()}}

    def flat(parts, field):
        return {m: [x for p in parts for x in p[field].get(m, [])] for m in parts[0][field]}

    tables = list(per_world.values())
    result = {"config": config_dict(cfg), "world": info, "label": cfg.label,
              "worlds": list(worlds), "effort": effort, "notes": notes,
              "runs": flat(tables, "runs"), "networks": flat(tables, "networks"),
              "choices": flat(tables, "choices"), "reference": reference,
              "gates": gates_by_run(per_world, cfg.seeds)}
    result["summary"] = summarise(result["runs"])
    across = across_worlds([p["runs"] for p in tables], reference, TABLE_INTERVALS) \
        if cfg.methods else {}
    for ws, p in per_world.items():
        p["differences"] = {metric: {n: e["per_world"][list(worlds).index(ws)]
                                     for n, e in per.items()} for metric, per in across.items()}
    result["per_world"] = {str(ws): p for ws, p in per_world.items()}
    if one_world:
        result["intervals"] = {m: v for metric in TABLE_INTERVALS if ("table", metric) in ivs
                               for m, v in ivs[("table", metric)].items()}
        result["interval_construction"] = ONE_WORLD
    else:
        result["across_worlds"] = across
        result["intervals"] = across
        result["interval_construction"] = ACROSS_WORLDS
    sweep_out = None
    if fracs:
        sweep_out = {}
        for frac in fracs:
            parts = [sweep_worlds[(ws, frac)] for ws in worlds]
            cell = {"runs": flat(parts, "runs"), "networks": flat(parts, "networks")}
            if one_world:
                cell["intervals"] = ivs[("sweep", frac)]
            else:
                cell["intervals"] = across_worlds([p["runs"] for p in parts], sweep_ref,
                                                  sweep_metrics)
            sweep_out[frac] = cell
    result["seconds"] = time.perf_counter() - start
    say(f"done in {result['seconds']:.0f} s")
    return result, sweep_out


def gates_by_run(per_world, seeds):
    """method -> list over (world, seed) of ``{"world", "seed", "gates"}`` (MMOE and PLE only).

    ``gates`` is :func:`~esmm_np.experiments.family.gate_record` of that
    training on its world's test rows.
    """
    out = {}
    for ws, p in per_world.items():
        for m, per_seed in p["gates"].items():
            out.setdefault(m, []).extend({"world": ws, "seed": s, "gates": g}
                                         for s, g in zip(seeds, per_seed))
    return out


def len_part(n_train, validation_fraction):
    """Rows left for training once the validation share is held out."""
    return n_train - round(validation_fraction * n_train) if validation_fraction > 0 else n_train


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

    The effort rule the run applies (:func:`effort_for`) has its patience,
    minimum, cap and learning-rate half-life multiplied by ``factor``
    (validation stays every ``eval_every`` steps); one world, one seed. If a cell's
    AUC moves by less than a point, the sweep measures the methods and not
    the budget.

    Returns
    -------
    list of dicts: ``frac``, ``method``, ``auc`` and ``auc_more`` (entire-space
    CVR AUC, and soft), steps of both runs, and the ``move`` in points.
    """
    seeds = world_seeds(cfg)[:1]
    base = ExperimentConfig(**{**asdict(cfg), "methods": (), "seeds": (seed,), "n_boot": 2,
                               "world_seeds": seeds})
    train, _ = make_world(base, seeds[0])
    effort = effort_for(cfg.train, len_part(len(train), cfg.validation_fraction))
    more_train = {**effort, "fixed_effort": True, "patience": factor * effort["patience"],
                  "min_steps": factor * effort["min_steps"],
                  "max_steps": factor * effort["max_steps"]}
    if effort.get("half_life"):
        more_train["half_life"] = factor * effort["half_life"]   # the decay stretched alike
    more = ExperimentConfig(**{**asdict(base), "train": more_train})
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
