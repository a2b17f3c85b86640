"""Which validation loss should a two-tower network stop on? A measurement across worlds and presets.

    esmm-np criteria --workers 2 --docs docs/experiments.md

A network that predicts CVR through pCTCVR = pCTR · pCVR (ESMM, ESCM²)
could stop on any of three losses of its validation rows
(:data:`CANDIDATES`): its training objective ``w_ctr·L_ctr + w_ctcvr·L_ctcvr``
(``model.eval_loss``, what :func:`esmm_np.fit` stops on by default), the
CTCVR log loss L_ctcvr alone (what the experiments stop on,
:data:`~esmm_np.experiments.stopping.CRITERIA`), or the CVR log loss on the
clicked validation rows, the only CVR label a log has. To compare them
without the luck of separate trainings, each network trains **one path**
per world and every criterion reads the same validations of it:

- the path is the run's effort rule (:func:`~esmm_np.experiments.config.effort_for`):
  its batch size, learning rate, validation every ``eval_every`` steps
  (and at 25, 50, ... before), the learning-rate half-life and the average
  of the last :data:`~esmm_np.experiments.stopping.AVERAGE` validations'
  weights, but no patience: it runs :data:`HALF_LIVES` half-lives, after
  which the learning rate is 1/256 of its start and the weights hardly move;
- at every validation (of the averaged weights, as the runs score them)
  the three losses on the validation rows, and on the world's test rows the
  soft CVR AUC against the true CVR over every impression (entire space)
  and over the clicked ones;
- each criterion keeps the validation where its curve is lowest (argmin);
  the *oracle* is the validation with the best entire-space test AUC, which
  no criterion can see (for reference only).

Per preset and method, a criterion's difference to L_ctcvr is the mean over
worlds of the per-world differences of the test AUC at the kept points, with
the Student t interval over worlds of the tables
(:func:`~esmm_np.experiments.scoring.world_interval`); the star rule is the
tables' (:func:`~esmm_np.experiments.report.format_interval`), the noise
floor twice the larger mean adjacent-validation noise of the two kept points
(:func:`~esmm_np.experiments.stopping.adjacent_noise`). A world whose
validation rows hold fewer than
:data:`~esmm_np.experiments.stopping.MIN_VAL_POSITIVES` conversions is
listed but left out of the comparison: there the runs train a fixed budget
and no criterion chooses.
"""

import os
import time
from dataclasses import replace

import numpy as np

from ..data.files import dumps_strict, read_text, write_file
from ..escm2 import ESCM2
from ..metrics import log_loss, soft_auc
from ..model import ESMM
from ..optim import Adam
from ..train import fit
from .baselines import make_context
from .config import ExperimentConfig, effort_for, fair_effort, model_arch, paper_config, \
    world_seeds
from .report import NOISE_MULTIPLE, doc_markers, format_interval
from .runner import len_part
from .scoring import config_dict, world_interval
from .stopping import MIN_VAL_POSITIVES, Criterion, adjacent_noise
from .workers import executor, get_world, world_key

#: The criteria compared: key -> what early stopping would minimise on the validation rows.
CANDIDATES = {"ctcvr": "L_ctcvr (CTCVR log loss)",
              "total": "training objective (model.eval_loss; ESMM's is w_ctr·L_ctr + w_ctcvr·L_ctcvr)",
              "cvr_clicked": "CVR log loss on the clicked validation rows"}
#: The criterion the experiments use, which the others are compared with.
REFERENCE = "ctcvr"
#: Test-row metrics read at each kept point (soft AUC against the true CVR).
METRICS = {"soft_entire": "soft CVR AUC, entire space", "soft_clicked": "soft CVR AUC, clicked"}
#: Two-tower methods the measurement can train: name -> (model class, options).
MODELS = {"ESMM": (ESMM, {}), "ESMM-NS": (ESMM, {"share_embedding": False}),
          "ESCM2-IPS": (ESCM2, {"variant": "ips"}), "ESCM2-DR": (ESCM2, {"variant": "dr"})}
#: Learning-rate half-lives each path runs (the rate ends at 0.5 ** HALF_LIVES of its start).
HALF_LIVES = 8
#: Validation every this many steps along the path (the runs validate every 200).
EVAL_EVERY = 100


def criteria_config(preset="default", quick=False):
    """The worlds of one preset the measurement trains in (smaller than the documented tables').

    "default": six worlds of the default run's size (300,000 impressions);
    "paper": the "paper" run's five worlds of 500,000, with its validation
    share (about 30 validation conversions each). ``quick``: two worlds of 20,000
    default impressions and a tiny network, for the tests (seconds).
    """
    if quick:
        return ExperimentConfig(n_impressions=20_000, world_seeds=(0, 1), seeds=(0,),
                                methods=("ESMM",),
                                arch=dict(embed_dim=4, tower_units=(8,), dtype="float32"),
                                train=fair_effort(eval_every=25, min_steps=100, batch_size=256,
                                                  lr=3e-3, half_life=40, min_val_positives=0),
                                sweep_fractions=(), workers=1, label="quick")
    if preset == "paper":
        return replace(paper_config(), methods=("ESMM",), sweep_fractions=(), label="small")
    if preset != "default":
        raise ValueError(f"preset must be 'default' or 'paper', got {preset!r}")
    return ExperimentConfig(world_seeds=(0, 1, 2, 3, 4, 5), seeds=(0,), methods=("ESMM",),
                            sweep_fractions=(), label="small")


# ---------------------------------------------------------------- one path, in a worker

class TestScores:
    """The probe of :class:`~esmm_np.experiments.stopping.Criterion`: test-row soft CVR AUCs.

    Called with the model at every validation, it returns the entire-space
    soft CVR AUC (what the runs' probe measures) and keeps both AUCs of
    :data:`METRICS` in ``values``. It measures; it never chooses.
    """

    def __init__(self, test):
        self.X, self.dense, self.true_cvr = test.X, test.dense, test.true_cvr
        self.clicked = test.click == 1
        self.values = {k: [] for k in METRICS}

    def __call__(self, model):
        p_cvr = model.predict(self.X, self.dense)["p_cvr"]                      # (n_test,)
        self.values["soft_clicked"].append(soft_auc(self.true_cvr[self.clicked],
                                                    p_cvr[self.clicked]))
        self.values["soft_entire"].append(soft_auc(self.true_cvr, p_cvr))
        return self.values["soft_entire"][-1]


class Curves:
    """A ``stop_on`` for :func:`esmm_np.fit` that records every candidate criterion.

    It returns L_ctcvr through a two-tower :class:`Criterion` (which also
    halves the learning rate and calls the probe, as in the runs) and keeps,
    per validation, the values of every criterion of :data:`CANDIDATES`.
    """

    def __init__(self, criterion):
        self.criterion = criterion
        self.values = {k: [] for k in CANDIDATES}

    def __call__(self, model, X, click, conversion, dense=None):
        value = self.criterion(model, X, click, conversion, dense=dense)          # L_ctcvr
        clicked = click == 1
        p_cvr = model.predict(X, dense)["p_cvr"]                                  # (n_val,)
        self.values["ctcvr"].append(float(value))
        self.values["total"].append(float(model.eval_loss(X, click, conversion, dense=dense)))
        self.values["cvr_clicked"].append(log_loss(conversion[clicked], p_cvr[clicked]))
        return value


def train_path(task):
    """Train one two-tower network along one path and record every criterion at every validation.

    ``task``: ``world`` (a world key), ``method`` (a :data:`MODELS` name),
    ``seed``, ``arch``, ``train`` (the effort rule), ``validation_fraction``.

    Returns
    -------
    dict with ``step`` (every validation's step), ``criteria`` (key of
    :data:`CANDIDATES` -> its value at every validation), ``test`` (key of
    :data:`METRICS` -> the test AUC at every validation), ``val_loss`` (what
    ``fit`` recorded as its stopping value: L_ctcvr), ``val_positives``,
    ``steps`` and ``seconds``.
    """
    start = time.perf_counter()
    train, test = get_world(task["world"])
    rule = task["train"]
    ctx = make_context(train, arch=task["arch"], train=rule, seed=task["seed"],
                       validation_fraction=task["validation_fraction"])
    part, val = ctx.part, ctx.val
    model_class, options = MODELS[task["method"]]
    model = model_class(part.field_dims, n_dense=part.n_dense, seed=task["seed"], **options,
                        **ctx.arch)
    optimizer = Adam(lr=rule["lr"])
    scores = TestScores(test)
    curves = Curves(Criterion("two-tower", optimizer, rule["half_life"], probe=scores))
    validation = (val.X, val.click, val.conversion) + (() if val.dense is None else (val.dense,))
    h = fit(model, part.X, part.click, part.conversion, dense=part.dense,
            batch_size=rule["batch_size"], optimizer=optimizer, seed=task["seed"], verbose=False,
            validation=validation, eval_every=rule["eval_every"],
            max_steps=HALF_LIVES * rule["half_life"], stop_on=curves,
            average=rule.get("average", 1))
    return {"step": list(h["val_steps"]), "criteria": curves.values, "test": scores.values,
            "val_loss": [float(v) for v in h["val_loss"]],
            "val_positives": int(np.count_nonzero(val.click * val.conversion)),
            "steps": h["steps"], "seconds": time.perf_counter() - start}


def kept_points(path):
    """Where each criterion stops on one path, and what the test rows say there.

    Returns
    -------
    dict criterion (and ``"oracle"``) -> ``step`` (the kept validation's
    step), ``index``, each :data:`METRICS` value at it, and ``noise`` (the
    adjacent-validation noise of the entire-space AUC there, in AUC units).
    A criterion keeps its curve's argmin; the oracle the best entire-space AUC.
    """
    picks = {c: int(np.argmin(path["criteria"][c])) for c in CANDIDATES}
    picks["oracle"] = int(np.argmax(path["test"]["soft_entire"]))
    out = {}
    for c, i in picks.items():
        step = path["step"][i]
        out[c] = {"step": step, "index": i,
                  **{m: float(path["test"][m][i]) for m in METRICS},
                  "noise": adjacent_noise(path["step"], path["test"]["soft_entire"], step)}
    return out


# ---------------------------------------------------------------- across worlds

def measure(presets=("default", "paper"), methods=("ESMM",), worlds=None, workers=1,
            quick=False, progress=print):
    """Every preset x method x world: one path each, the kept points, the differences to L_ctcvr.

    Parameters
    ----------
    presets : names for :func:`criteria_config`
    methods : names of :data:`MODELS`
    worlds : tuple of world seeds, optional (default: each preset's, :func:`criteria_config`)
    workers : worker processes (one BLAS thread each)
    quick : the tests' tiny configuration

    Returns
    -------
    dict with ``"presets"``: preset -> {``"config"``, ``"rule"`` (the effort rule
    each path follows), ``"methods"``: method -> {``"worlds"``: list of
    {``world``, ``val_positives``, ``chooses``, ``kept`` (:func:`kept_points`),
    ``path``}, ``"mean"``: criterion -> metric -> mean over the choosing worlds,
    ``"kept_steps"``: criterion -> list of steps, ``"diffs"``: metric ->
    criterion -> :func:`world_interval` of criterion − L_ctcvr plus its
    ``floor``}}; and ``"seconds"``.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    unknown = [m for m in methods if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {tuple(MODELS)}")
    plans, tasks = {}, {}
    for preset in presets:
        cfg = criteria_config(preset, quick)
        if worlds:
            cfg = replace(cfg, world_seeds=tuple(worlds))
        first, _ = get_world(world_key(cfg, world_seeds(cfg)[0]))
        rule = effort_for(cfg.train, len_part(len(first), cfg.validation_fraction))
        rule = {**rule, "eval_every": min(rule["eval_every"], EVAL_EVERY)}
        plans[preset] = (cfg, rule)
        for m in methods:
            for ws in world_seeds(cfg):
                tasks[(preset, m, ws)] = {"world": world_key(cfg, ws), "method": m,
                                          "seed": cfg.seeds[0], "arch": model_arch(cfg),
                                          "train": rule,
                                          "validation_fraction": cfg.validation_fraction}
    say(f"criteria: {len(tasks)} paths ({', '.join(presets)}; {', '.join(methods)}) on "
        f"{max(workers, 1)} worker(s)")
    with executor(workers, None) as pool:
        futures = {k: pool.submit(train_path, t) for k, t in tasks.items()}
        done = {}
        for k, f in futures.items():
            done[k] = f.result()
            say(f"  {k[1]} ({k[0]}, world {k[2]}): {done[k]['steps']} steps, "
                f"{len(done[k]['step'])} validations in {done[k]['seconds']:.0f} s "
                f"({time.perf_counter() - start:.0f} s elapsed)")
    out = {"presets": {}, "candidates": dict(CANDIDATES), "reference": REFERENCE,
           "metrics": dict(METRICS), "half_lives": HALF_LIVES}
    for preset, (cfg, rule) in plans.items():
        entry = {"config": config_dict(cfg), "rule": rule, "methods": {}}
        for m in methods:
            per = []
            for ws in world_seeds(cfg):
                path = done[(preset, m, ws)]
                per.append({"world": ws, "val_positives": path["val_positives"],
                            "chooses": path["val_positives"] >= MIN_VAL_POSITIVES or quick,
                            "kept": kept_points(path), "path": path})
            entry["methods"][m] = summarise(per)
        out["presets"][preset] = entry
    out["seconds"] = time.perf_counter() - start
    say(f"criteria done in {out['seconds']:.0f} s")
    return out


def summarise(per_world):
    """Means, kept steps and the differences to L_ctcvr over the worlds whose validation chooses."""
    use = [w for w in per_world if w["chooses"]]
    picks = list(CANDIDATES) + ["oracle"]
    res = {"worlds": per_world, "n_choosing": len(use),
           "mean": {c: {m: float(np.mean([w["kept"][c][m] for w in use])) if use else float("nan")
                        for m in METRICS} for c in picks},
           "kept_steps": {c: [w["kept"][c]["step"] for w in use] for c in picks},
           "diffs": {}}
    noise = {c: [w["kept"][c]["noise"] for w in use if w["kept"][c]["noise"] is not None]
             for c in picks}
    for m in METRICS:
        res["diffs"][m] = {}
        for c in picks:
            if c == REFERENCE:
                continue
            e = world_interval([w["kept"][c][m] - w["kept"][REFERENCE][m] for w in use])
            means = [np.mean(noise[k]) for k in (c, REFERENCE) if noise[k]]
            e["floor"] = float(NOISE_MULTIPLE * max(means)) if means else 0.0
            res["diffs"][m][c] = e
    return res


# ---------------------------------------------------------------- the report

def criteria_table(result):
    """One Markdown table: per preset, method and criterion, the kept step and the test AUCs."""
    lines = ["| preset | method | criterion | kept step, median (range) | "
             "soft CVR AUC entire | − L_ctcvr | soft CVR AUC clicked | − L_ctcvr |",
             "|---|---|---|---|---|---|---|---|"]
    names = {**{c: CANDIDATES[c].split(" (")[0] for c in CANDIDATES}, "oracle": "oracle (test)"}
    names["cvr_clicked"] = "CVR loss, clicked rows"
    for preset, entry in result["presets"].items():
        for m, res in entry["methods"].items():
            for c in list(CANDIDATES) + ["oracle"]:
                steps = res["kept_steps"][c]
                kept = (f"{int(np.median(steps)):,} ({min(steps):,}–{max(steps):,})"
                        if steps else "n/a")
                cells = []
                for metric in METRICS:
                    cells.append(f"{100 * res['mean'][c][metric]:.2f}")
                    cells.append("" if c == REFERENCE else
                                 format_interval(res["diffs"][metric][c],
                                                 res["diffs"][metric][c]["floor"]))
                lines.append(f"| {preset} | {m} | {names[c]} | {kept} | " + " | ".join(cells)
                             + " |")
    return "\n".join(lines)


def worlds_note(result):
    """Per preset: worlds, their validation conversions, and which were left out (a fixed budget)."""
    parts = []
    for preset, entry in result["presets"].items():
        cfg = entry["config"]
        first = next(iter(entry["methods"].values()))
        pos = ", ".join(str(w["val_positives"]) for w in first["worlds"])
        out = [str(w["world"]) for w in first["worlds"] if not w["chooses"]]
        rule = entry["rule"]
        parts.append(f"\"{preset}\": {len(first['worlds'])} worlds of "
                     f"{cfg['n_impressions']:,} impressions (world seeds "
                     f"{', '.join(str(w['world']) for w in first['worlds'])}, training seed "
                     f"{cfg['seeds'][0]}), validation conversions {pos}"
                     + (f"; world(s) {', '.join(out)} under {MIN_VAL_POSITIVES}, left out"
                        if out else "")
                     + f"; path of {HALF_LIVES * rule['half_life']:,} steps (half-life "
                     f"{rule['half_life']:,}, validation every {rule['eval_every']})")
    return "; ".join(parts) + "."


def verdict(result):
    """Per preset and method, in words: which criteria the intervals tell apart from L_ctcvr."""
    lines = []
    for preset, entry in result["presets"].items():
        for m, res in entry["methods"].items():
            said = []
            for c in CANDIDATES:
                if c == REFERENCE:
                    continue
                for metric in METRICS:
                    e = res["diffs"][metric][c]
                    txt = format_interval(e, e["floor"])
                    if txt.endswith("*"):
                        how = "better" if e["diff"] > 0 else "worse"
                        said.append(f"{CANDIDATES[c].split(' (')[0]} {how} on the "
                                    f"{METRICS[metric]} ({txt})")
            lines.append(f"- {preset}, {m}: " + ("; ".join(said) if said else
                         "no criterion told apart from L_ctcvr on either AUC") + ".")
    return lines


DOC_START, DOC_END = doc_markers("criteria")


def doc_block(result, command):
    """The generated block of docs/experiments.md (between :data:`DOC_START` and :data:`DOC_END`)."""
    return "\n".join([
        DOC_START,
        "",
        criteria_table(result),
        "",
        f"(`{command}`, {result['seconds'] / 60:.1f} min on {time.strftime('%Y-%m-%d')}. "
        + worlds_note(result) + " AUCs in percent, means over the choosing worlds; "
        "differences in points with the t interval over worlds; * and ° as in the tables, "
        "the floor twice the larger adjacent-validation noise of the two kept points.)",
        "",
        *verdict(result),
        "",
        DOC_END])


def write_docs(result, path, command):
    """Replace the criteria block of the Markdown file ``path`` with this run's."""
    text = read_text(path)
    if DOC_START not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_START} ... {DOC_END} block to fill")
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    write_file(path, head + doc_block(result, command) + tail)


def add_parser(sub, formatter_class=None, count=int):
    """Register ``esmm-np criteria`` on the command line's subparsers."""
    c = sub.add_parser("criteria", formatter_class=formatter_class,
                       help="where each validation criterion stops ESMM, across worlds and "
                            "presets, with intervals")
    c.add_argument("--presets", nargs="+", default=["default", "paper"],
                   choices=("default", "paper"))
    c.add_argument("--methods", nargs="+", default=["ESMM", "ESCM2-IPS"], choices=tuple(MODELS))
    c.add_argument("--world-seeds", type=int, nargs="+", default=None,
                   help="world seeds per preset (default: default 0-5, paper 0-4)")
    c.add_argument("--workers", type=count, default=1,
                   help="worker processes, one BLAS thread each")
    c.add_argument("--quick", action="store_true", help="two tiny worlds (seconds); not a result")
    c.add_argument("--out", default=None, help="also write criteria.json into this folder")
    c.add_argument("--docs", default=None, help="also fill the criteria block of this file")
    c.set_defaults(run=run_command)
    return c


def run_command(args):
    """``esmm-np criteria``: run the measurement, print the table, write the files."""
    presets = ("default",) if args.quick else tuple(args.presets)
    if args.quick:
        print("QUICK criteria run: tiny worlds; its numbers are not a result.")
    result = measure(presets, tuple(args.methods), args.world_seeds, args.workers, args.quick)
    print("\n" + criteria_table(result) + "\n\n" + worlds_note(result) + "\n")
    print("\n".join(verdict(result)))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "criteria.json")
        write_file(path, dumps_strict(result, indent=1))
        print(f"wrote {path}")
    if args.docs:
        write_docs(result, args.docs, "esmm-np criteria " + " ".join(args.argv))
        print(f"wrote {args.docs}")
    return 0
