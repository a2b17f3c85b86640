"""The regime map: ESMM − BASE across worlds (rho x CVR given click).

Each cell of the map (one ``rho``, one CVR given click) is several simulated
worlds of its kind (``cfg.world_seeds``; empty: the one ``cfg.world_seed``),
with BASE and ESMM trained in each under the run's effort rule for every
training seed. In each world the difference ESMM − BASE is read on that
world's test rows (each method's soft CVR AUC averaged over its seeds); the
cell reports the mean over worlds and the Student t interval over worlds of
the tables (:func:`~esmm_np.experiments.scoring.world_interval`), which
carries each world's draw, its training seeds and its test rows. A cell's
difference is starred by the tables' rule: the interval excludes zero and
the difference reaches its noise floor
(:func:`~esmm_np.experiments.report.noise_floor`, twice the larger
adjacent-validation noise of BASE's and ESMM's networks in that cell).

:func:`regime_map` returns ``{"config", "rhos", "cvrs", "cells", "seconds"}``;
each cell holds ``rho``, ``cvr``, ``world_seeds``, ``rates`` (the training
and test counts, averaged over the cell's worlds), ``esmm_minus_base``
(metric -> ``diff``, ``low``, ``high``, ``per_world``, ``n_worlds``,
``floor``, ``starred``; fractions of AUC) and ``networks`` (method -> one
record per world and seed).
"""

import os
import time
from dataclasses import asdict

import numpy as np

from .config import ExperimentConfig, world_seeds
from .figures import plot_regime_map
from .report import doc_markers, format_interval, noise_floor, noise_values, resolved
from .scoring import config_dict, describe, world_interval
from .workers import executor, forget_world, get_world, make_task, run_tasks, world_key
from ..data.files import dumps_strict, read_text, write_file
from ..metrics import soft_auc

#: The map's two metrics: soft CVR AUC (against the true CVR) on clicked test rows, on all.
METRICS = ("cvr_soft_auc_clicked", "cvr_soft_auc_entire")


def regime_config():
    """The regime map's run: BASE and ESMM, six small worlds per cell, one training seed.

    A quarter of each world's training impressions validate (as in the
    "paper" run), so that more of the sparse cells' networks have enough
    validation conversions to choose their point.
    """
    return ExperimentConfig(n_impressions=300_000, world_seeds=(0, 1, 2, 3, 4, 5), seeds=(0,),
                            methods=("BASE", "ESMM"), sweep_fractions=(), n_boot=0,
                            validation_fraction=0.25)


def soft_aucs(pred, test):
    """The map's :data:`METRICS` of one network's test predictions (fractions)."""
    clicked = test.click == 1
    p = np.asarray(pred["p_cvr"], dtype=np.float64)
    return {"cvr_soft_auc_clicked": soft_auc(test.true_cvr[clicked], p[clicked]),
            "cvr_soft_auc_entire": soft_auc(test.true_cvr, p)}


def regime_map(cfg, rhos=(0.3, 0.6, 0.9), cvrs=(0.01, 0.03, 0.1), progress=print):
    """ESMM − BASE across worlds: rho (shared structure) x CVR given click (sparsity).

    World ``k`` of a cell is ``simulate(cfg.n_impressions, preset=cfg.preset,
    rho=rho, cvr=cvr, **cfg.world)`` seeded by ``world_seeds(cfg)[k]``; the
    result is described in the module docstring.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    wseeds = world_seeds(cfg)
    worlds, tasks = {}, {}
    for rho in rhos:
        for cvr in cvrs:
            wcfg = ExperimentConfig(**{**asdict(cfg), "world": {**cfg.world, "rho": rho,
                                                                "cvr": cvr}})
            for ws in wseeds:
                key = world_key(wcfg, ws)
                worlds[(rho, cvr, ws)] = key
                for seed in cfg.seeds:
                    for m in ("ESMM", "BASE"):
                        tasks[(f"rho {rho}, cvr {cvr}, world {ws}", m, seed, None)] = \
                            make_task(wcfg, m, seed, world=key)
    say(f"regime map: {len(rhos) * len(cvrs)} cells x {len(wseeds)} worlds, {len(tasks)} "
        f"trainings on {max(cfg.workers, 1)} worker(s)")
    with executor(cfg.workers, None) as pool:
        done = run_tasks(tasks, pool, say)
    cells = []
    for rho in rhos:
        for cvr in cvrs:
            per_world = {metric: [] for metric in METRICS}
            rates, networks = [], {"BASE": [], "ESMM": []}
            for ws in wseeds:
                key = worlds[(rho, cvr, ws)]
                name = f"rho {rho}, cvr {cvr}, world {ws}"
                train, test = get_world(key)
                rates.append(describe(train, test))
                auc = {m: [soft_aucs(done[(name, m, s, None)]["pred"], test) for s in cfg.seeds]
                       for m in ("ESMM", "BASE")}
                for metric in METRICS:            # seeds averaged within the world, then paired
                    per_world[metric].append(np.mean([a[metric] for a in auc["ESMM"]])
                                             - np.mean([a[metric] for a in auc["BASE"]]))
                for m in networks:
                    networks[m] += [done[(name, m, s, None)]["networks"] for s in cfg.seeds]
                forget_world(key)
            floor = noise_floor(networks, "ESMM", "BASE")
            diff = {}
            for metric in METRICS:
                e = world_interval(per_world[metric])
                diff[metric] = {"diff": e["diff"], "low": e["diff_low"], "high": e["diff_high"],
                                "per_world": e["per_world"], "n_worlds": e["n_worlds"],
                                "floor": floor, "starred": resolved(e, floor)}
            mean_rates = {k: float(np.mean([r[k] for r in rates])) for k in rates[0]}
            cells.append({"rho": rho, "cvr": cvr, "world_seeds": list(wseeds),
                          "rates": mean_rates, "esmm_minus_base": diff, "networks": networks})
    say(f"regime map done in {time.perf_counter() - start:.0f} s")
    return {"config": config_dict(cfg), "rhos": list(rhos), "cvrs": list(cvrs),
            "cells": cells, "seconds": time.perf_counter() - start}


def _entry(e):
    """A map difference in the tables' form (``diff``, ``diff_low``, ``diff_high``)."""
    return {"diff": e["diff"], "diff_low": e["low"], "diff_high": e["high"]}


def budget_count(cell):
    """'k of n': how many of a cell's networks trained the fixed budget (too few validation
    conversions to choose a point; they keep their last weights and record no noise)."""
    recs = [rec for m in cell["networks"] for nets in cell["networks"][m] for rec in nets.values()]
    return f"{sum(rec.get('stopped') == 'budget' for rec in recs)} of {len(recs)}"


def noise_line(rmap):
    """One sentence: BASE's and ESMM's adjacent-validation noise over the map's networks."""
    vals = {}
    for c in rmap["cells"]:
        for m, v in noise_values(c["networks"]).items():
            vals.setdefault(m, []).extend(v)
    if not vals:
        return "No network recorded an adjacent-validation noise."
    parts = ", ".join(f"{m} {np.mean(v):.2f} (max {np.max(v):.2f})" for m, v in vals.items())
    return ("Adjacent-validation noise (how far a probe on 20,000 test rows, the soft CVR AUC "
            "against the true CVR, moves between a network's kept validation and its "
            f"neighbours; mean over the map's networks, in points): {parts}. A cell's floor is "
            "twice the larger of BASE's and ESMM's mean noise in that cell; networks that "
            "trained the fixed budget record none, so a cell where all did has floor 0 and "
            "only its interval decides.")


def regime_table(rmap):
    """The regime map as Markdown: ESMM − BASE (points), 95% interval over worlds, noise floor."""
    lines = ["| rho | CVR given click (target) | clicks / conversions in training (mean per "
             "world) | ESMM − BASE, soft CVR AUC clicked | ESMM − BASE, soft CVR AUC entire "
             "| noise floor | networks on the fixed budget |",
             "|---|---|---|---|---|---|---|"]
    for c in rmap["cells"]:
        r = c["rates"]
        n_click = round(r["ctr"] * r["n_train"])
        cells = []
        for metric in METRICS:
            e = c["esmm_minus_base"][metric]
            cells.append(format_interval(_entry(e), e["floor"]))
        floor = c["esmm_minus_base"][METRICS[0]]["floor"]
        lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | {n_click:,} / "
                     f"{round(r['cvr'] * n_click):,} | " + " | ".join(cells)
                     + f" | {100 * floor:.2f} | {budget_count(c)} |")
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


def world_seeds_of(rmap):
    """The world seeds of the map's cells."""
    return rmap["cells"][0]["world_seeds"] if rmap["cells"] else []


def write_regime_docs(rmap, path, command, figure=None):
    """Fill the ``regime`` section of a Markdown file with the map's table (and figure link)."""
    start, end = doc_markers("regime")
    text = read_text(path)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} section to fill")
    cfg = rmap["config"]
    body = [start, f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} in "
            f"{rmap['seconds'] / 60:.1f} min: preset \"{cfg['preset']}\" with rho and CVR "
            f"given click set per world, {len(world_seeds_of(rmap))} worlds per cell (world "
            f"seeds {', '.join(map(str, world_seeds_of(rmap)))}) of {cfg['n_impressions']:,} "
            f"impressions, {len(cfg['seeds'])} training seed(s) in each; ESMM − BASE in AUC "
            "points, the mean over worlds with the 95% Student t interval over worlds of the "
            "per-world paired differences. * : the interval excludes 0 and the difference "
            "reaches the cell's noise floor; ° : the interval excludes 0 but the difference "
            "is under the floor.", "", noise_line(rmap),
            "", regime_table(rmap)]
    if figure:
        body += ["", f"![ESMM minus BASE across worlds]({figure})"]
    body.append(end)
    head, rest = text.split(start, 1)
    write_file(path, head + "\n".join(body) + rest.split(end, 1)[1])
