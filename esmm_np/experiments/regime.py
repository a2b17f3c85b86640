"""The regime map: ESMM − BASE across worlds (rho x CVR given click)."""

import os
import time
from dataclasses import asdict

from .config import ExperimentConfig
from .figures import plot_regime_map
from .report import doc_markers, format_interval
from .scoring import config_dict, describe
from .workers import executor, forget_world, get_world, make_task, run_intervals, run_tasks, world_key
from ..data.files import dumps_strict, read_text, write_file


def regime_config():
    """The regime map's run: BASE and ESMM in each world, smaller worlds, two seeds."""
    return ExperimentConfig(n_impressions=400_000, world_seeds=(), seeds=(0, 1),
                            methods=("BASE", "ESMM"), sweep_fractions=(), n_boot=100)


def regime_map(cfg, rhos=(0.3, 0.6, 0.9), cvrs=(0.01, 0.03, 0.1), progress=print):
    """ESMM − BASE across worlds: rho (shared structure) x CVR given click (sparsity).

    Each world is ``simulate(cfg.n_impressions, preset=cfg.preset, rho=rho,
    cvr=cvr, **cfg.world)``; BASE and ESMM train in it under ``cfg``'s effort
    rule for every seed, and the difference ESMM − BASE is measured on its
    test set with paired bootstrap intervals, on the soft CVR AUC of the
    clicked test impressions (the paper's protocol without the label noise)
    and of the entire space.

    Returns
    -------
    dict with ``"cells"``: list of dicts (``rho``, ``cvr``, ``rates``,
    ``esmm_minus_base``: metric -> {diff, low, high}, ``networks``), and
    ``"config"``.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    worlds = {}
    tasks = {}
    for rho in rhos:
        for cvr in cvrs:
            wcfg = ExperimentConfig(**{**asdict(cfg), "world": {**cfg.world, "rho": rho,
                                                                "cvr": cvr}})
            key = world_key(wcfg)
            worlds[(rho, cvr)] = key
            for seed in cfg.seeds:
                for m in ("ESMM", "BASE"):
                    tasks[(f"rho {rho}, cvr {cvr}", m, seed, None)] = make_task(wcfg, m, seed,
                                                                           world=key)
    say(f"regime map: {len(rhos) * len(cvrs)} worlds, {len(tasks)} trainings on "
        f"{max(cfg.workers, 1)} worker(s)")
    metrics = ("cvr_soft_auc_clicked", "cvr_soft_auc_entire")
    with executor(cfg.workers, None) as pool:
        done = run_tasks(tasks, pool, say)
        jobs = {}
        for (rho, cvr), key in worlds.items():
            name = f"rho {rho}, cvr {cvr}"
            preds = {m: [done[(name, m, s, None)]["pred"] for s in cfg.seeds]
                     for m in ("BASE", "ESMM")}
            jobs[(rho, cvr)] = pool.submit(run_intervals, key, preds, "ESMM", metrics,
                                           cfg.n_boot)
        ivs = {k: f.result() for k, f in jobs.items()}
    cells = []
    for (rho, cvr), key in worlds.items():
        name = f"rho {rho}, cvr {cvr}"
        train, test = get_world(key)
        diff = {}
        for metric in metrics:
            e = ivs[(rho, cvr)][metric]["BASE"]          # BASE − ESMM: flip the sign
            diff[metric] = {"diff": -e["diff"], "low": -e["diff_high"], "high": -e["diff_low"]}
        cells.append({"rho": rho, "cvr": cvr, "rates": describe(train, test),
                      "esmm_minus_base": diff,
                      "networks": {m: [done[(name, m, s, None)]["networks"] for s in cfg.seeds]
                                   for m in ("BASE", "ESMM")}})
        forget_world(key)
    say(f"regime map done in {time.perf_counter() - start:.0f} s")
    return {"config": config_dict(cfg), "rhos": list(rhos), "cvrs": list(cvrs),
            "cells": cells, "seconds": time.perf_counter() - start}


def regime_table(rmap):
    """The regime map as Markdown: ESMM − BASE (points) with 95% intervals per world."""
    lines = ["| rho | CVR given click (target) | clicks / conversions in training | "
             "ESMM − BASE, soft CVR AUC clicked | ESMM − BASE, soft CVR AUC entire |",
             "|---|---|---|---|---|"]
    for c in rmap["cells"]:
        r = c["rates"]
        n_click = round(r["ctr"] * r["n_train"])
        cells = []
        for metric in ("cvr_soft_auc_clicked", "cvr_soft_auc_entire"):
            e = c["esmm_minus_base"][metric]
            cells.append(format_interval({"diff": e["diff"], "diff_low": e["low"], "diff_high": e["high"]}))
        lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | {n_click:,} / "
                     f"{round(r['cvr'] * n_click):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_regime_map(rmap, out_dir, figure=True):
    """Write ``regime.md``, ``regime.json`` and (with matplotlib) ``regime.png``; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("regime.md", "regime.json", "regime.png")]
    write_file(paths[0], "# ESMM − BASE across worlds\n\n" + regime_table(rmap) + "\n")
    write_file(paths[1], dumps_strict(rmap, indent=1))
    if not figure:
        return paths[:2]
    write_file(paths[2], lambda f: plot_regime_map(rmap, f))
    return paths


def write_regime_docs(rmap, path, command, figure=None):
    """Fill the ``regime`` section of a Markdown file with the map's table (and figure link)."""
    start, end = doc_markers("regime")
    text = read_text(path)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} section to fill")
    cfg = rmap["config"]
    body = [start, f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} in "
            f"{rmap['seconds'] / 60:.1f} min: preset \"{cfg['preset']}\" with rho and CVR "
            f"given click set per world, {cfg['n_impressions']:,} impressions per world, "
            f"{len(cfg['seeds'])} training seeds, {cfg['n_boot']} bootstrap replicates; "
            "ESMM − BASE in AUC points with 95% paired bootstrap intervals (* : excludes 0).",
            "", regime_table(rmap)]
    if figure:
        body += ["", f"![ESMM minus BASE across worlds]({figure})"]
    body.append(end)
    head, rest = text.split(start, 1)
    write_file(path, head + "\n".join(body) + rest.split(end, 1)[1])
