"""The relatedness sweep and the gate diagnostics: MMoE's synthetic experiment.

Over the simulator's ``rho`` (task relatedness: the correlation of the
conversion score with the click score) and the CVR given click, MMoE and PLE
train against Shared-Bottom and ESMM, in several simulated worlds per cell,
and each is scored on the entire space (soft CVR AUC against ``true_cvr``
over every test impression) and on the CTR side (soft CTR AUC against
``true_ctr``).

**Intervals over worlds.** In each world every method's AUCs (averaged over
its training seeds) are computed on the world's test rows, so a difference
A − B has one paired value per world. The reported difference is their mean,
and its interval the Student t interval over worlds that the experiment
tables use (:func:`esmm_np.experiments.scoring.world_interval`, whose
coverage tests/test_worlds.py checks): each world's value carries its
world's draw, its training seeds and its test rows. A difference is starred
only when its interval excludes zero and it is at least
:data:`~esmm_np.experiments.report.NOISE_MULTIPLE` times the larger
adjacent-validation noise of the two methods in that cell
(:func:`~esmm_np.experiments.report.noise_floor`), the rule of the tables.
(:func:`two_level_interval`, a bootstrap over worlds and rows, is kept for
comparison: with few worlds it is narrower than the t interval.)

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
from .family import DOMINANT, POLARISED, gate_diagnostics
from .methods import TRAINERS
from .scoring import config_dict, describe
from .report import noise_floor, noise_values
from .scoring import world_interval
from .stopping import MIN_VAL_POSITIVES, make_probe
from .workers import executor, forget_world, get_world, make_task, world_key

#: The sweep's methods: the reference, the shared bottom, the experts (entire space)
#: and the same bodies with the CVR loss on clicked impressions only.
METHODS = ("ESMM", "SB", "MMOE", "PLE", "SB-CLICKED", "MMOE-CLICKED", "PLE-CLICKED")
QUICK_METHODS = ("ESMM", "SB", "MMOE", "PLE")
RHOS = (-0.3, 0.3, 0.6, 0.95)
CVRS = (0.02, 0.1)
#: Metrics: soft AUC of p_cvr against true_cvr over every test row, of p_ctr against true_ctr.
METRICS = {"cvr_soft_auc_entire": ("p_cvr", "true_cvr"), "ctr_soft_auc": ("p_ctr", "true_ctr")}


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
                                              max_steps=2000, batch_size=512, lr=3e-3,
                                              min_val_positives=MIN_VAL_POSITIVES),
                            validation_fraction=0.25,
                            sweep_fractions=(), n_boot=30, workers=2, label="small")


# ---------------------------------------------------------------- in a worker

def train_and_read(task):
    """Train one method in a worker; returns its test predictions, record and gates."""
    start = time.perf_counter()
    train, test = get_world(task["world"])
    ctx = make_context(train, arch=task["arch"], train=task["train"], seed=task["seed"],
                       validation_fraction=task["validation_fraction"], ctr_net=None,
                       options=task["options"])
    if task["train"].get("criterion") == "measured":      # record, never choose: see .stopping
        ctx.probes = {kind: make_probe(test, kind == "tower") for kind in ("tower", "two-tower")}
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


def across(per_world, floor=0.0):
    """A difference's per-world values as the sweep stores them: the t interval over worlds.

    Returns ``diff``, ``low``, ``high``, ``per_world`` and ``floor`` (the
    noise floor a starred difference must reach, :func:`starred`).
    """
    e = world_interval(per_world)
    return {"diff": e["diff"], "low": e["diff_low"], "high": e["diff_high"],
            "per_world": e["per_world"], "floor": float(floor)}


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
                                 for m in methods}, 0, wk[2])
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
            cell["networks"] = {m: [done[k + (m, s)]["networks"] for k in wk for s in cfg.seeds]
                                for m in methods}
            for metric in METRICS:
                for a, b in pairs:
                    per = [reps[k][metric][a]["value"] - reps[k][metric][b]["value"] for k in wk]
                    cell["diffs"][metric][f"{a} − {b}"] = across(
                        per, noise_floor(cell["networks"], a, b))
            cell["gates"] = _gates(done, wk, cfg.seeds, methods)
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


# ---------------------------------------------------------------- the report

def _fmt(e):
    """A difference in AUC points with its interval: * when :func:`starred`, ° when its
    interval excludes 0 but the difference is under its noise floor."""
    mark = "*" if starred(e) else ("°" if e["low"] > 0 or e["high"] < 0 else "")
    return f"{100 * e['diff']:+.2f}{mark} [{100 * e['low']:+.2f}, {100 * e['high']:+.2f}]"


def starred(e):
    """Is a difference read as one: its interval excludes zero and |diff| >= its ``floor``?"""
    return bool((e["low"] > 0 or e["high"] < 0) and abs(e["diff"]) >= e.get("floor", 0.0))


def sign(e):
    """+1 / -1 when the difference is :func:`starred` above / below zero, 0 otherwise."""
    return 0 if not starred(e) else (1 if e["diff"] > 0 else -1)


def noise_line(sweep):
    """One sentence: each method's adjacent-validation noise over the sweep's networks."""
    vals = {}
    for c in sweep["cells"]:
        for m, v in noise_values(c["networks"]).items():
            vals.setdefault(m, []).extend(v)
    if not vals:
        return "No network recorded an adjacent-validation noise."
    parts = ", ".join(f"{m} {np.mean(v):.2f} (max {np.max(v):.2f})" for m, v in vals.items())
    return ("**Adjacent-validation noise** (how far a probe on 20,000 test rows, the soft CVR "
            "AUC against the true CVR, moves between a network's kept validation and its "
            "neighbours; mean over the sweep's networks, in points; it measures, never "
            f"chooses): {parts}. A cell's floor for A − B is twice the larger of A's and B's "
            "noise in that cell.")


def sweep_tables(sweep):
    """metric -> Markdown table of every comparison per cell (AUC points, intervals)."""
    out = {}
    comps = sweep["comparisons"]
    for metric in METRICS:
        lines = ["| rho | CVR given click | " + " | ".join(comps) + " |",
                 "|---|---|" + "---|" * len(comps)]
        for c in sweep["cells"]:
            lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | "
                         + " | ".join(_fmt(c["diffs"][metric][k]) for k in comps) + " |")
        out[metric] = "\n".join(lines)
    return out


def score_table(sweep):
    """Each method's soft AUCs per cell (percent, mean over worlds): CVR entire / CTR."""
    ms = sweep["methods"]
    lines = ["| rho | CVR given click | " + " | ".join(ms) + " |", "|---|---|" + "---|" * len(ms)]
    for c in sweep["cells"]:
        s = c["scores"]
        lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | " + " | ".join(
            f"{100 * s['cvr_soft_auc_entire'][m]:.2f} / {100 * s['ctr_soft_auc'][m]:.2f}"
            for m in ms) + " |")
    return "\n".join(lines)


def gate_table(sweep):
    """Every gate's mean weight per expert and entropy / log K, per cell, as Markdown."""
    lines = ["| rho | CVR given click | method | gate | mean weight per expert | "
             "entropy / log K (per run) | polarised |", "|---|---|---|---|---|---|---|"]
    for c in sweep["cells"]:
        for m, gates in c["gates"].items():
            for g, d in gates.items():
                w = ", ".join(f"{e} {x:.2f}" for e, x in zip(d["experts"], d["mean_weight"]))
                runs = ", ".join(f"{x:.2f}" for x in d["per_run_normalised_entropy"])
                lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | {m} | {g} | {w} | "
                             f"{d['normalised_entropy']:.2f} ({runs}) | "
                             f"{'yes' if d['polarised'] else 'no'} |")
    return "\n".join(lines)


def plot_gates(sweep, path=None):
    """Heat maps over rho x CVR of each gate's entropy / log K (text: its largest mean weight)."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos, cvrs = sweep["rhos"], sweep["cvrs"]
    panels = []
    for c in sweep["cells"]:
        for m, gates in c["gates"].items():
            for g in gates:
                if (m, g) not in panels:
                    panels.append((m, g))
    ncols = min(4, max(len(panels), 1))
    nrows = -(-max(len(panels), 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.9 * nrows), squeeze=False)
    fig.subplots_adjust(hspace=0.5, wspace=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for i, (ax, (m, g)) in enumerate(zip(axes.flat, panels)):
        grid = np.full((len(rhos), len(cvrs)), np.nan)
        for c in sweep["cells"]:
            d = c["gates"].get(m, {}).get(g)
            if d is None:
                continue
            i, j = rhos.index(c["rho"]), cvrs.index(c["cvr"])
            grid[i, j] = d["normalised_entropy"]
            k = int(np.argmax(d["mean_weight"]))
            ax.text(j, i, f"{d['normalised_entropy']:.2f}\n{d['experts'][k]} "
                    f"{d['mean_weight'][k]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if d["normalised_entropy"] < 0.45 else "black")
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, origin="lower", aspect="auto")
        ax.set_xticks(range(len(cvrs)), [f"{100 * c:g}%" for c in cvrs])
        ax.set_yticks(range(len(rhos)), [str(r) for r in rhos])
        ax.set_xlabel("CVR given click")
        if i % ncols == 0:
            ax.set_ylabel("rho")
        ax.set_title(f"{m} {g}", fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="gate entropy / log K (0: one expert)")
    if path is None:
        return fig
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _cells(cells):
    return ", ".join(f"rho {c['rho']} / CVR {100 * c['cvr']:g}%" for c in cells) or "none"


def findings(sweep):
    """Sentences the intervals support (each names the cells it holds in)."""
    cells, n = sweep["cells"], len(sweep["cells"])
    comps = sweep["comparisons"]
    out = []

    def where(comp, metric, s):
        return [c for c in cells if sign(c["diffs"][metric][comp]) == s]

    for comp in [k for k in comps if k.endswith("− SB") and "CLICKED" not in k]:
        for metric, what in (("cvr_soft_auc_entire", "entire-space CVR"),
                             ("ctr_soft_auc", "CTR")):
            up, down = where(comp, metric, 1), where(comp, metric, -1)
            out.append(f"- **Experts, {comp}, {what}**: ahead in {len(up)} of {n} cells "
                       f"({_cells(up)}); behind in {len(down)} ({_cells(down)}); "
                       f"unresolved in the rest.")
    for comp in [k for k in comps if k.endswith("− ESMM") and "CLICKED" not in k]:
        for metric, what in (("cvr_soft_auc_entire", "entire-space CVR"),
                             ("ctr_soft_auc", "CTR")):
            up, down = where(comp, metric, 1), where(comp, metric, -1)
            out.append(f"- **{comp}, {what}**: ahead of ESMM in {len(up)} of {n} cells "
                       f"({_cells(up)}); behind in {len(down)} ({_cells(down)}).")
    saw = []
    for comp in comps:
        hits = []
        for c in cells:
            a = sign(c["diffs"]["cvr_soft_auc_entire"][comp])
            b = sign(c["diffs"]["ctr_soft_auc"][comp])
            if a * b == -1:
                hits.append(f"rho {c['rho']} / CVR {100 * c['cvr']:g}% "
                            f"(CVR {'+' if a > 0 else '−'}, CTR {'+' if b > 0 else '−'})")
        if hits:
            saw.append(f"{comp} in {len(hits)} of {n} cells: " + ", ".join(hits))
    out.append("- **Seesaw** (one task's soft AUC ahead, the other's behind, both intervals "
               "excluding 0): " + ("; ".join(saw) if saw else "in no comparison and no cell")
               + ".")
    for comp in [k for k in comps if "-CLICKED −" in k and not k.endswith("ESMM")]:
        down = where(comp, "cvr_soft_auc_entire", -1)
        up = where(comp, "cvr_soft_auc_entire", 1)
        out.append(f"- **Entire space or clicked, {comp}, entire-space CVR** (same body, the "
                   f"CVR loss on clicked impressions only against ESMM's product over every "
                   f"impression): the entire space ahead in {len(down)} of {n} cells "
                   f"({_cells(down)}); the clicked space ahead in {len(up)} ({_cells(up)}).")
    pol = [f"{m} {g} at rho {c['rho']} / CVR {100 * c['cvr']:g}% "
           f"(entropy / log K {d['normalised_entropy']:.2f}, largest weight "
           f"{max(d['mean_weight']):.2f})"
           for c in cells for m, gates in c["gates"].items() for g, d in gates.items()
           if d["polarised"]]
    every = [(d["normalised_entropy"], max(d["mean_weight"]))
             for c in cells for gates in c["gates"].values() for d in gates.values()]
    spread = ""
    if every:
        spread = (f" Across all of them entropy / log K runs from {min(e for e, _ in every):.2f} "
                  f"to {max(e for e, _ in every):.2f} and the largest mean weight of one expert "
                  f"from {min(w for _, w in every):.2f} to {max(w for _, w in every):.2f}.")
    out.append(f"- **Polarised gates** (entropy / log K under {POLARISED} or one expert over "
               f"{DOMINANT} of the mean weight): {len(every) and len(pol)} of {len(every)} "
               f"gate-cells" + (": " + "; ".join(pol) if pol else "") + "." + spread)
    return out


def save_sweep(sweep, out_dir, figure=True):
    """Write ``relatedness.md``, ``relatedness.json`` and (optionally) ``gates.png``; the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("relatedness.md", "relatedness.json", "gates.png")]
    t = sweep_tables(sweep)
    write_file(paths[0], "# Relatedness sweep\n\n## Entire-space soft CVR AUC\n\n"
               + t["cvr_soft_auc_entire"] + "\n\n## Soft CTR AUC\n\n" + t["ctr_soft_auc"]
               + "\n\n## Gates\n\n" + gate_table(sweep) + "\n")
    write_file(paths[1], dumps_strict(sweep, indent=1))
    if not figure:
        return paths[:2]
    write_file(paths[2], lambda f: plot_gates(sweep, f))
    return paths


def budget_note(sweep):
    """How many networks had too few validation positives to choose, and in which cells."""
    n, cells, steps = 0, [], set()
    total = 0
    for c in sweep["cells"]:
        hit = 0
        for m, runs_list in c["networks"].items():
            for runs in runs_list:
                for r in runs.values():
                    total += 1
                    if r.get("stopped") == "budget":
                        hit += 1
                        steps.add(r.get("steps"))
        if hit:
            cells.append(f"rho {c['rho']:g} / CVR {100 * c['cvr']:g}%: {hit}")
        n += hit
    if not n:
        return (f"Every one of the {total} networks had at least {MIN_VAL_POSITIVES} positives "
                "in its validation rows, so each kept the point its criterion chose.")
    budget = ", ".join(f"{s:,}" for s in sorted(x for x in steps if x is not None))
    return (f"{n} of {total} networks had fewer than {MIN_VAL_POSITIVES} positives in their "
            f"validation rows: their validation did not choose, they trained the fixed budget "
            f"({budget} steps) and are recorded stopped=\"budget\" ({'; '.join(cells)}).")


def kept_steps(sweep):
    """Per method: the median and range of the steps its networks kept, over every cell."""
    parts = []
    for m in sweep["methods"]:
        kept = [r["kept"] for c in sweep["cells"] for runs in c["networks"][m]
                for r in runs.values() if r.get("kept") is not None]
        if kept:
            parts.append(f"{m} median {int(np.median(kept))} ({min(kept)}–{max(kept)})")
    return "; ".join(parts) or "not recorded"


def family_doc(sweep, command, figure=None):
    """docs/family.md from a sweep: its size, the tables, the figure, what the intervals support."""
    cfg = sweep["config"]
    t = sweep_tables(sweep)
    size = (f"{len(sweep['rhos'])} rho x {len(sweep['cvrs'])} CVR cells, "
            f"{len(sweep['world_seeds'])} simulated worlds per cell (world seeds "
            f"{', '.join(map(str, sweep['world_seeds']))}), {cfg['n_impressions']:,} impressions "
            f"per world (a quarter of them the test rows), {len(cfg['seeds'])} training "
            f"seed(s), label \"{cfg['label']}\"")
    parts = [
        "# The multi-task family on known truth: the relatedness sweep and the gates",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} in "
        f"{sweep['seconds'] / 60:.1f} min; every number below is that run's. Size: {size}. "
        "This is a small run (worlds far smaller than the documented experiment's, few worlds, "
        "one training seed): read its unresolved cells as unresolved, not as ties.",
        "",
        "Each world is `simulate(n, seed=world_seed, preset=\"default\", rho=rho, cvr=cvr)`: "
        "`rho` is the task relatedness (the conversion score's correlation with the click "
        "score), `cvr` the CVR given click. Methods (esmm_np.experiments.family): "
        + ", ".join(sweep["methods"]) + "; X-CLICKED is body X with the CVR loss on clicked "
        "impressions only, X its entire-space form (ESMM's product pCTCVR = pCTR · pCVR).",
        "",
        "**Metrics.** Entire-space soft CVR AUC: `soft_auc(true_cvr, p_cvr)` over every test "
        "impression; soft CTR AUC: `soft_auc(true_ctr, p_ctr)`. Differences in AUC points.",
        "",
        "**Intervals: Student t over worlds.** In each world a difference is measured on "
        "that world's test rows (paired: the same rows for every method); the difference "
        "reported is the mean over worlds of the per-world differences, and its 95% interval "
        f"the Student t interval over the {len(sweep['world_seeds'])} worlds, as in "
        "docs/experiments.md, so it covers the world-to-world spread, the training seeds and "
        "the test rows (the per-world differences are in the run's relatedness.json). * : "
        "the interval excludes 0 and the difference is at least twice the larger "
        "adjacent-validation noise of the two methods in that cell; ° : the interval excludes "
        "0 but the difference is under that floor. Only starred differences are read as "
        "differences.",
        "",
        noise_line(sweep),
        "",
        "## What the intervals support",
        "",
        *findings(sweep),
        "",
        "Every sentence above names the cells it holds in; a claim not listed for a cell is "
        "not supported there by this run.",
        "",
        "**Where training stopped** (the fair-effort rule of docs/experiments.md: two-tower "
        "networks keep the validation point with the lowest L_ctcvr, single-task ones their "
        "own loss's): " + kept_steps(sweep) + ". " + budget_note(sweep) + " A network that "
        "keeps an early step is the rule's choice, not a failure, but differences between "
        "methods that stop at different epochs are partly differences of stopping.",
        "",
        "## Entire-space soft CVR AUC: differences",
        "",
        t["cvr_soft_auc_entire"],
        "",
        "## Soft CTR AUC: differences",
        "",
        t["ctr_soft_auc"],
        "",
        "## Each method's soft AUCs (entire-space CVR / CTR, percent, mean over worlds)",
        "",
        score_table(sweep),
        "",
        "## Gate diagnostics",
        "",
        "Each gate's mean weight per expert over its world's test rows and its mean entropy "
        "over log K (1: every row weighs all experts equally; 0: every row uses one), "
        "averaged over worlds and seeds (the per-run values in brackets). MMoE has 4 experts "
        "and one gate per task; PLE (one level, CGC) one task expert per task and 2 shared.",
        "",
        gate_table(sweep),
    ]
    if figure:
        parts += ["", f"![gate entropy over rho and CVR]({figure})"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- the command

def add_parser(sub, formatter_class=None, count=int):
    """Register ``esmm-np relatedness`` on the command line's subparsers."""
    r = sub.add_parser("relatedness", formatter_class=formatter_class,
                       help="MMoE and PLE against Shared-Bottom and ESMM over rho x CVR, "
                            "intervals over worlds, gate diagnostics")
    r.add_argument("--out", default="results", help="folder for relatedness.md/.json, gates.png")
    r.add_argument("--quick", action="store_true",
                   help="two small cells, two tiny worlds each (under a minute); not a result")
    r.add_argument("--workers", type=count, default=2,
                   help="worker processes, one BLAS thread each")
    r.add_argument("--world-seeds", type=int, nargs="+", default=None,
                   help="world seeds per cell (at least 2)")
    r.add_argument("--impressions", type=int, default=None, help="impressions per world")
    r.add_argument("--family-doc", default=None,
                   help="also write this Markdown file (docs/family.md) from the run")
    r.set_defaults(run=run_command)
    return r


def run_command(args):
    """``esmm-np relatedness``: run the sweep, print the tables, write the files."""
    cfg = relatedness_config(quick=args.quick)
    rhos, cvrs = (RHOS, CVRS) if not args.quick else ((0.3, 0.95), (0.1,))
    if args.quick:
        print("QUICK relatedness sweep: tiny worlds; its numbers are not a result.")
    cfg.workers = args.workers
    if args.world_seeds:
        cfg.world_seeds = tuple(args.world_seeds)
    if args.impressions:
        cfg.n_impressions = args.impressions
    sweep = relatedness_sweep(cfg, rhos, cvrs)
    t = sweep_tables(sweep)
    print("\nentire-space soft CVR AUC, differences (points)\n" + t["cvr_soft_auc_entire"])
    print("\nsoft CTR AUC, differences (points)\n" + t["ctr_soft_auc"])
    print("\ngates\n" + gate_table(sweep))
    print("\n" + "\n".join(findings(sweep)))
    figure = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        figure = False
    paths = save_sweep(sweep, args.out, figure=figure)
    print("\nwrote " + ", ".join(paths))
    if args.family_doc:
        fig = None
        if figure:
            fig = "family_gates.png"
            where = os.path.join(os.path.dirname(os.path.abspath(args.family_doc)), fig)
            write_file(where, lambda f: plot_gates(sweep, f))
            print(f"wrote {where}")
        write_file(args.family_doc, family_doc(sweep, "esmm-np relatedness " + " ".join(args.argv),
                                               figure=fig))
        print(f"wrote {args.family_doc}")
    return 0
