"""The paper's experiments on a simulated world where the truth is known.

:func:`run_all` trains every method of the ESMM paper's Table 2 (plus our
UNBIAS-IPS and a CTR-only reference row) with the same architecture and the
same effort rule on the same simulated world, over several seeds, and scores
them on held-out impressions: the paper's CVR AUC on clicked impressions
(on 0/1 labels and as :func:`~esmm_np.metrics.soft_auc` against the true
CVR), the CVR AUC on the entire space that the paper could not measure, the
CTCVR AUC, and the pCVR bias. Each method's difference to ESMM carries a
paired bootstrap interval over test rows. It also runs the sparsity sweep
(the paper's Figure 3: BASE and ESMM on shrinking shares of the training
data). :func:`regime_map` measures ESMM - BASE across worlds (rho x CVR).

**Fair effort.** Every network trains until its own validation loss stops
improving: validation every ``eval_every`` optimiser steps (or every epoch
when an epoch is shorter), stop after ``patience`` validations without
improvement but never before ``min_steps`` steps, cap ``max_steps``. Each
network's ``steps``, ``kept`` (the step kept) and ``stopped`` (``"patience"``
or ``"cap"``) are recorded in the results.

**Workers.** Independent trainings (seeds, methods, sweep cells, worlds) run
in ``workers`` processes started with "spawn", each with one BLAS thread.
Each worker simulates the world itself from the configuration (the same
seed gives the same world bit for bit), so no data is shipped between
processes. A method's result does not depend on the number of workers.

Adding a method: see :mod:`esmm_np.experiments.baselines` (``TRAINERS``); then list its
name in ``ExperimentConfig.methods``.
"""

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.files import dumps_strict, read_text, write_file
from .baselines import (AMAN_RATES, EXTRA_METHODS, METHODS, OVERSAMPLING_KS, TRAINERS,
                        USES_CTR_NET, bag_kw, make_context, train_ctr_net)
from ..metrics import evaluate_esmm, paired_bootstrap, soft_auc
from ..data.simulator import simulate

#: The ESMM paper's Table 2 (public dataset), AUC in percent: (CVR AUC, CTCVR AUC).
PAPER_TABLE2 = {
    "BASE": (66.00, 62.07), "AMAN": (65.21, 63.53), "OVERSAMPLING": (67.18, 63.05),
    "UNBIAS": (66.65, 63.56), "DIVISION": (67.56, 63.62), "ESMM-NS": (68.25, 64.44),
    "ESMM": (68.56, 65.32),
}

#: Metrics reported per method, with their column titles.
COLUMNS = {
    "cvr_auc_clicked": "CVR AUC, clicked (paper's protocol)",
    "cvr_soft_auc_clicked": "soft CVR AUC, clicked",
    "cvr_auc_entire": "CVR AUC, entire space",
    "cvr_soft_auc_entire": "soft CVR AUC, entire space",
    "ctcvr_auc": "CTCVR AUC",
    "pcvr_bias_unclicked": "pCVR bias, unclicked",
    "pcvr_bias_clicked": "pCVR bias, clicked",
    "pcvr_bias_potential_unclicked": "pCVR bias vs potential outcome, unclicked",
}

#: Metrics with a paired bootstrap interval of their difference to ESMM:
#: metric -> (test rows it is computed on, target).
INTERVAL_METRICS = ("cvr_auc_clicked", "cvr_soft_auc_clicked", "cvr_auc_entire",
                    "cvr_soft_auc_entire", "ctcvr_auc")

#: What a null in results.json means.
NULL_MEANS = ("undefined: the method has no prediction the metric needs (CTR-ONLY has no "
              "pCVR), the test data has no ground truth for it, or one class is missing")


def fair_effort(eval_every=200, patience=5, min_steps=2000, max_steps=60_000, batch_size=512,
                lr=2e-3):
    """The training budget every network of a run gets (see the module docstring)."""
    return dict(batch_size=batch_size, lr=lr, eval_every=eval_every, patience=patience,
                min_steps=min_steps, max_steps=max_steps)


@dataclass
class ExperimentConfig:
    """Everything one experiment run depends on.

    Every method gets the same architecture (``arch``) and the same effort
    rule (``train``, :func:`fair_effort`); every network keeps the step with
    the lowest loss on its own validation rows (``validation_fraction`` of
    the training set). The world (``preset``, ``world``, ``world_seed``) and
    its train/test split are fixed; ``seeds`` vary the networks'
    initialisation, shuffling, sampling and validation split. ``label`` is
    "full" for a run whose numbers are the documented table's; anything
    else ("quick", "demo", "small") makes every printed table say it is not.
    """

    n_impressions: int = 1_000_000
    test_fraction: float = 0.25
    preset: str = "default"
    world: dict = field(default_factory=dict)        # extra simulate() knobs
    world_seed: int = 0
    seeds: tuple = (0, 1, 2)
    methods: tuple = METHODS + EXTRA_METHODS
    arch: dict = field(default_factory=lambda: dict(embed_dim=8, tower_units=(64, 32),
                                                    dtype="float32"))
    train: dict = field(default_factory=fair_effort)
    validation_fraction: float = 0.1
    aman_rate: tuple = AMAN_RATES
    oversampling_k: tuple = OVERSAMPLING_KS
    sweep_fractions: tuple = (0.05, 0.1, 0.25, 0.5, 1.0)
    sweep_methods: tuple = ("BASE", "ESMM")
    n_boot: int = 200
    workers: int = 2
    label: str = "full"


def quick_config():
    """A configuration small enough for the test suite (tens of seconds); its numbers are not the table's."""
    return ExperimentConfig(n_impressions=80_000, seeds=(0,),
                            arch=dict(embed_dim=4, tower_units=(16,), dtype="float32"),
                            train=fair_effort(eval_every=50, patience=3, min_steps=300,
                                              max_steps=5000, batch_size=256, lr=3e-3),
                            aman_rate=(0.1, 1.0), oversampling_k=(2, 10),
                            sweep_fractions=(0.25, 1.0), n_boot=50, label="quick")


def paper_config():
    """The "paper" preset's run: an Ali-CCP-like world (CVR given click 0.8%), 1M impressions."""
    return ExperimentConfig(n_impressions=1_000_000, preset="paper")


def demo_config():
    """The ``esmm-np demo`` configuration: every method, one seed, about a minute.

    The world of the full experiment (so the demo is its first seed) with a
    smaller effort cap; its numbers are one seed's, not the table's.
    """
    return ExperimentConfig(seeds=(0,), sweep_fractions=(), n_boot=100,
                            aman_rate=(0.3,), oversampling_k=(5,), label="demo")


CONFIGS = {"default": ExperimentConfig, "paper": paper_config, "quick": quick_config}


def make_world(cfg):
    """Simulate the world of ``cfg`` and split it; returns (train, test)."""
    data = simulate(cfg.n_impressions, seed=cfg.world_seed, preset=cfg.preset, **cfg.world)
    return data.split(cfg.test_fraction, seed=cfg.world_seed)


def _arch(cfg):
    arch = dict(cfg.arch)
    arch["dtype"] = np.dtype(arch.get("dtype", "float64"))
    return arch


# ----------------------------------------------------------------- workers

_WORLDS = {}      # world key -> (train, test), cached per process
_GIVEN = None     # data handed to the runner (not simulated), set per process


def _world_key(cfg):
    return (cfg.n_impressions, cfg.preset, tuple(sorted(cfg.world.items())), cfg.world_seed,
            cfg.test_fraction)


def _get_world(key):
    """(train, test) of a world key; "given" is the data the runner was handed."""
    if key == "given":
        return _GIVEN
    if key not in _WORLDS:
        n, preset, world, world_seed, test_fraction = key
        if len(_WORLDS) >= 3:   # a few worlds at a time keeps a worker's memory bounded
            _WORLDS.pop(next(iter(_WORLDS)))
        data = simulate(n, seed=world_seed, preset=preset, **dict(world))
        _WORLDS[key] = data.split(test_fraction, seed=world_seed)
    return _WORLDS[key]


def _init_worker(given):
    """Runs first in each worker: one BLAS thread (if threadpoolctl is there), the given data."""
    global _GIVEN
    _GIVEN = given
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass   # the environment variables set before spawning already ask for one thread


def _subset(train, frac, seed):
    """A seeded share of the training rows (nested: a smaller share is a subset of a larger one)."""
    if frac is None or frac >= 1.0:
        return train
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(np.sort(order[:int(round(frac * len(train)))]))


def _run_task(task):
    """Train one network or method in a worker; returns its test predictions and records.

    ``task`` is a dict: ``world`` (key), ``method`` (a TRAINERS name or
    "_ctr_net"), ``seed``, ``frac`` (share of the training data or None),
    ``arch``, ``train``, ``validation_fraction``, ``options``, ``ctr_net``.
    """
    start = time.perf_counter()
    train, test = _get_world(task["world"])
    data = _subset(train, task["frac"], task["seed"])
    ctx = make_context(data, arch=task["arch"], train=task["train"], seed=task["seed"],
                       validation_fraction=task["validation_fraction"],
                       ctr_net=task["ctr_net"], options=task["options"])
    out = {"seconds": None}
    if task["method"] == "_ctr_net":
        model, record = train_ctr_net(ctx)
        out.update(model=model, networks={"CTR net": record}, choice=None,
                   pred={"p_ctr": model.predict(test.X, test.dense,
                                                **bag_kw(test))["p"].astype(np.float32)})
    else:
        method = TRAINERS[task["method"]](ctx)
        pred = method.predict(test.X, test.dense, **bag_kw(test))
        out.update(networks=method.networks, choice=method.choice,
                   pred={k: np.asarray(v, dtype=np.float32) for k, v in pred.items()})
        if "p_cvr_raw" in pred:
            out["pred"]["p_cvr_raw"] = np.asarray(pred["p_cvr_raw"], dtype=np.float64)
    out["seconds"] = time.perf_counter() - start
    return out


class _InProcess:
    """The executor used with ``workers <= 1``: runs each task at once, in this process."""

    def submit(self, fn, *args):
        f = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:          # noqa: BLE001 - handed over like a pool would
            f.set_exception(e)
        return f

    def shutdown(self, wait=True):
        pass


_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _executor(workers, given):
    """A pool of ``workers`` spawned processes with one BLAS thread each, or in-process."""
    global _GIVEN
    if workers <= 1:
        old, _GIVEN = _GIVEN, given
        try:
            yield _InProcess()
        finally:
            _GIVEN = old
        return
    import multiprocessing
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})   # spawned children read them at start
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(given,))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_tasks(tasks, pool, say):
    """Run training tasks, each after the CTR network it depends on; returns key -> output.

    ``tasks`` maps a key to a task dict; a task with ``needs`` (the key of a
    "_ctr_net" task) is submitted once that one is done, with its model.
    """
    results = {}
    start = time.perf_counter()
    pending = {}

    def submit(key):
        pending[pool.submit(_run_task, tasks[key])] = key

    waiting = [k for k, t in tasks.items() if t.get("needs") is not None]
    for key, t in tasks.items():           # CTR networks first: others wait for them
        if t["method"] == "_ctr_net":
            submit(key)
    for key, t in tasks.items():
        if t["method"] != "_ctr_net" and t.get("needs") is None:
            submit(key)
    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for f in done:
            key = pending.pop(f)
            results[key] = f.result()
            say(f"  trained {_describe_key(key)} in {results[key]['seconds']:.0f} s "
                f"({time.perf_counter() - start:.0f} s elapsed)")
            for other in [k for k in waiting if tasks[k]["needs"] == key]:
                waiting.remove(other)
                tasks[other]["ctr_net"] = results[key]["model"]
                submit(other)
    return results


def _describe_key(key):
    part, method, seed, frac = key[0], key[1], key[2], key[3]
    name = "CTR network" if method == "_ctr_net" else method
    where = "" if part == "table" else (f", {frac:.0%} of the data" if part == "sweep"
                                        else f", world {part}")
    return f"{name} (seed {seed}{where})"


def _task(cfg, method, seed, frac=None, world=None, needs=None):
    return {"world": world if world is not None else _world_key(cfg), "method": method,
            "seed": seed, "frac": frac, "arch": _arch(cfg), "train": dict(cfg.train),
            "validation_fraction": cfg.validation_fraction,
            "options": {"aman_rate": tuple(np.atleast_1d(cfg.aman_rate).tolist()),
                        "oversampling_k": tuple(np.atleast_1d(cfg.oversampling_k).tolist())},
            "ctr_net": None, "needs": needs}


# ----------------------------------------------------------------- scoring

def _score(pred, test):
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


def _run_intervals(world, preds, reference, metrics, n_boot):
    """:func:`intervals` on the test set of ``world``, in a worker."""
    return intervals(preds, _get_world(world)[1], reference, metrics, n_boot=n_boot)


def summarise(runs):
    """method -> metric -> (mean, std over seeds); std is 0 for a single seed."""
    summary = {}
    for name, scores in runs.items():
        keys = scores[0].keys()
        summary[name] = {k: (float(np.mean([s[k] for s in scores])),
                             float(np.std([s[k] for s in scores]))) for k in keys}
    return summary


def _describe(train, test):
    clicks = int(train.click.sum())
    out = {"n_train": len(train), "n_test": len(test), "ctr": float(train.click.mean()),
           "cvr": float(train.conversion.sum() / max(clicks, 1)),
           "test_clicks": int(test.click.sum()), "test_conversions": int(test.conversion.sum())}
    if test.true_cvr is not None:
        out["true_cvr_clicked"] = float(test.true_cvr[test.click == 1].mean())
        out["true_cvr_unclicked"] = float(test.true_cvr[test.click == 0].mean())
    return out


def _config_dict(cfg):
    d = asdict(cfg)
    d["arch"] = {k: (str(v) if k == "dtype" else v) for k, v in d["arch"].items()}
    return d


# ----------------------------------------------------------------- runners

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
    world = "given" if data is not None else _world_key(cfg)
    train, test = data if data is not None else _get_world(world)
    info = _describe(train, test)
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
            tasks[("table", "_ctr_net", seed, None)] = _task(cfg, "_ctr_net", seed, world=world)
        for m in cfg.methods:
            needs = ("table", "_ctr_net", seed, None) if m in USES_CTR_NET else None
            tasks[("table", m, seed, None)] = _task(cfg, m, seed, world=world, needs=needs)
    fracs = tuple(cfg.sweep_fractions) if sweep else ()
    for frac in fracs:
        for seed in cfg.seeds:
            for m in cfg.sweep_methods:
                if frac >= 1.0 and m in cfg.methods:
                    continue            # the same training as the table's: reused below
                tasks[("sweep", m, seed, frac)] = _task(cfg, m, seed, frac=frac, world=world)
    say(f"{len(tasks)} trainings on {max(cfg.workers, 1)} worker(s)")
    with _executor(cfg.workers, data) as pool:
        done = _run_tasks(tasks, pool, say)
        preds = {m: [done[("table", m, s, None)]["pred"] for s in cfg.seeds]
                 for m in cfg.methods}
        say(f"paired bootstrap intervals ({cfg.n_boot} replicates) ...")
        reference = "ESMM" if "ESMM" in cfg.methods else (cfg.methods or (None,))[0]
        jobs = {("table", metric): pool.submit(_run_intervals, world, preds, reference,
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
            jobs[("sweep", frac)] = pool.submit(_run_intervals, world, cell_preds,
                                                cfg.sweep_methods[-1], SWEEP_INTERVALS,
                                                cfg.n_boot)
        ivs = {k: f.result() for k, f in jobs.items()}

    result = {"config": _config_dict(cfg), "world": info, "label": cfg.label,
              "runs": {m: [_score(p, test) for p in preds[m]] for m in cfg.methods},
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
                "runs": {m: [_score(o["pred"], test) for o in outs] for m, outs in cell.items()},
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


def capped(result, sweep=None):
    """Networks that stopped on their cap: a list of (where, method, seed, network)."""
    out = []
    sources = [("table", result["networks"])] + [
        (f"sweep {frac:.0%}", cell["networks"]) for frac, cell in (sweep or {}).items()]
    for where, networks in sources:
        for m, per_seed in networks.items():
            for i, nets in enumerate(per_seed):
                for net, rec in nets.items():
                    if rec["stopped"] == "cap":
                        out.append((where, m, i, net))
    return out


def effort_table(result):
    """Per method and network: mean steps, mean kept step, and how many stopped on patience."""
    lines = ["| method | network | steps (mean) | kept step (mean) | stopped on patience |",
             "|---|---|---|---|---|"]
    for m, per_seed in result["networks"].items():
        names = per_seed[0].keys()
        for net in names:
            recs = [nets[net] for nets in per_seed if net in nets]
            lines.append(f"| {m} | {net} | {np.mean([r['steps'] for r in recs]):,.0f} | "
                         f"{np.mean([r['kept'] for r in recs]):,.0f} | "
                         f"{sum(r['stopped'] == 'patience' for r in recs)} of {len(recs)} |")
    return "\n".join(lines)


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
    from ..metrics import auc, log_loss
    from ..model import ESMM
    from ..optim import Adam
    from ..train import fit

    train, _ = make_world(cfg)
    ctx = make_context(train, arch=_arch(cfg), train=cfg.train, seed=seed,
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


# --------------------------------------------------------------- regime map

def regime_config():
    """The regime map's run: BASE and ESMM in each world, smaller worlds, two seeds."""
    return ExperimentConfig(n_impressions=400_000, seeds=(0, 1), methods=("BASE", "ESMM"),
                            sweep_fractions=(), n_boot=100)


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
            key = _world_key(wcfg)
            worlds[(rho, cvr)] = key
            for seed in cfg.seeds:
                for m in ("ESMM", "BASE"):
                    tasks[(f"rho {rho}, cvr {cvr}", m, seed, None)] = _task(wcfg, m, seed,
                                                                           world=key)
    say(f"regime map: {len(rhos) * len(cvrs)} worlds, {len(tasks)} trainings on "
        f"{max(cfg.workers, 1)} worker(s)")
    metrics = ("cvr_soft_auc_clicked", "cvr_soft_auc_entire")
    with _executor(cfg.workers, None) as pool:
        done = _run_tasks(tasks, pool, say)
        jobs = {}
        for (rho, cvr), key in worlds.items():
            name = f"rho {rho}, cvr {cvr}"
            preds = {m: [done[(name, m, s, None)]["pred"] for s in cfg.seeds]
                     for m in ("BASE", "ESMM")}
            jobs[(rho, cvr)] = pool.submit(_run_intervals, key, preds, "ESMM", metrics,
                                           cfg.n_boot)
        ivs = {k: f.result() for k, f in jobs.items()}
    cells = []
    for (rho, cvr), key in worlds.items():
        name = f"rho {rho}, cvr {cvr}"
        train, test = _get_world(key)
        diff = {}
        for metric in metrics:
            e = ivs[(rho, cvr)][metric]["BASE"]          # BASE − ESMM: flip the sign
            diff[metric] = {"diff": -e["diff"], "low": -e["diff_high"], "high": -e["diff_low"]}
        cells.append({"rho": rho, "cvr": cvr, "rates": _describe(train, test),
                      "esmm_minus_base": diff,
                      "networks": {m: [done[(name, m, s, None)]["networks"] for s in cfg.seeds]
                                   for m in ("BASE", "ESMM")}})
        _WORLDS.pop(key, None)
    say(f"regime map done in {time.perf_counter() - start:.0f} s")
    return {"config": _config_dict(cfg), "rhos": list(rhos), "cvrs": list(cvrs),
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
            cells.append(_ci({"diff": e["diff"], "diff_low": e["low"], "diff_high": e["high"]}))
        lines.append(f"| {c['rho']} | {100 * c['cvr']:g}% | {n_click:,} / "
                     f"{round(r['cvr'] * n_click):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_regime_map(rmap, path=None, axes=None):
    """Two heat maps of ESMM − BASE (soft clicked AUC, soft entire-space AUC), intervals inside."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos, cvrs = rmap["rhos"], rmap["cvrs"]
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in zip(axes, ("cvr_soft_auc_clicked", "cvr_soft_auc_entire"),
                                 ("clicked impressions (paper's protocol, soft)",
                                  "entire space (soft)")):
        grid = np.full((len(rhos), len(cvrs)), np.nan)
        text = {}
        for c in rmap["cells"]:
            i, j = rhos.index(c["rho"]), cvrs.index(c["cvr"])
            e = c["esmm_minus_base"][metric]
            grid[i, j] = 100 * e["diff"]
            star = "*" if e["low"] > 0 or e["high"] < 0 else ""
            text[i, j] = f"{100 * e['diff']:+.2f}{star}\n[{100 * e['low']:+.2f}, {100 * e['high']:+.2f}]"
        lim = max(1.0, np.nanmax(np.abs(grid)))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
        for (i, j), t in text.items():
            ax.text(j, i, t, ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(cvrs)), [f"{100 * c:g}%" for c in cvrs])
        ax.set_yticks(range(len(rhos)), [str(r) for r in rhos])
        ax.set_xlabel("CVR given click")
        ax.set_ylabel("rho (shared structure of CTR and CVR)")
        ax.set_title(f"ESMM − BASE, {title}", fontsize=9)
        plt.colorbar(im, ax=ax, label="AUC points (* : interval excludes 0)")
    if fig is not None:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100, format="png")
            plt.close(fig)
    return axes


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


# ------------------------------------------------------------------ output

SHORT = {"cvr_auc_clicked": "CVR AUC clicked", "cvr_soft_auc_clicked": "soft CVR AUC clicked",
         "cvr_auc_entire": "CVR AUC entire", "cvr_soft_auc_entire": "soft CVR AUC entire",
         "ctcvr_auc": "CTCVR AUC"}


def caveat(result):
    """'' for a full run; otherwise one line saying the numbers are not the table's."""
    label = result.get("label", "full")
    if label == "full":
        return ""
    return (f"NOTE: this is a {label} run ({result['world']['n_train']:,} training impressions, "
            f"{len(result['config']['seeds'])} seed(s)); its numbers are not those of the "
            "documented table (docs/experiments.md) and its orderings may differ from it.")


def format_table(result, paper=True):
    """The comparison as a Markdown table (AUC in percent, bias in percentage points).

    Mean over seeds, ± the standard deviation over seeds when there are several.
    """
    summary = result["summary"]
    n_seeds = len(next(iter(result["runs"].values())))

    def cell(metric, name, scale=100.0):
        mean, std = summary[name].get(metric, (float("nan"), 0.0))
        if np.isnan(mean):
            return "n/a"
        return f"{scale * mean:.2f}" + (f" ± {scale * std:.2f}" if n_seeds > 1 else "")

    head = ["Method"] + list(COLUMNS.values())
    if paper:
        head += ["paper CVR AUC", "paper CTCVR AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary:
        row = [name] + [cell(m, name) for m in COLUMNS]
        if paper:
            row += [f"{v:.2f}" for v in PAPER_TABLE2[name]] if name in PAPER_TABLE2 else ["", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _ci(entry):
    """'+1.23 [+0.40, +2.05]' in points; a star when the interval excludes zero."""
    d, lo, hi = (100 * entry[k] for k in ("diff", "diff_low", "diff_high"))
    star = " *" if lo > 0 or hi < 0 else ""
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]{star}"


def interval_table(result):
    """Each method minus the reference (ESMM), with 95% paired bootstrap intervals over test rows."""
    iv = result["intervals"]
    ref = result.get("reference", "ESMM")
    metrics = [m for m in INTERVAL_METRICS if m in iv]
    names = [n for n in result["summary"] if n != ref]
    lines = ["| Method − " + ref + " | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for name in names:
        cells = [_ci(iv[m][name]) if name in iv[m] else "n/a" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choice_note(result):
    """Which AMAN rate and OVERSAMPLING k each seed chose on validation."""
    parts = []
    for name, per_seed in result.get("choices", {}).items():
        key = next(k for k in per_seed[0] if k not in ("candidates", "val_cvr_auc_clicked"))
        picks = ", ".join(f"{c[key]:g}" for c in per_seed)
        cands = ", ".join(f"{v:g}" for v in per_seed[0]["candidates"])
        if len(per_seed[0]["candidates"]) == 1:
            parts.append(f"{name}'s {key} was fixed at {cands} (no search in this run)")
            continue
        parts.append(f"{name} chose {key} = {picks} (per seed) from {cands} by CVR AUC on the "
                     "clicked validation rows")
    return "; ".join(parts) + "." if parts else ""


def effort_note(result, sweep=None):
    """One sentence: did every network stop on patience? Names those that hit the cap."""
    cap = capped(result, sweep)
    n = sum(len(nets) for per_seed in result["networks"].values() for nets in per_seed)
    n += sum(len(nets) for cell in (sweep or {}).values()
             for per_seed in cell["networks"].values() for nets in per_seed)
    first = []
    sources = [result["networks"]] + [cell["networks"] for cell in (sweep or {}).values()]
    for networks in sources:
        for m, per_seed in networks.items():
            first += [(m, net) for nets in per_seed for net, rec in nets.items()
                      if rec.get("kept_first_validation")]
    early = ""
    if first:
        early = (f" {len(first)} kept their very first validation point, so their best may lie "
                 f"earlier: {', '.join(sorted({f'{m} {net}' for m, net in first}))}.")
    if not cap:
        return f"All {n} networks stopped on patience (none on the step cap).{early}"
    listed = "; ".join(f"{w}: {m} seed #{i} {net}" for w, m, i, net in cap[:8])
    return (f"WARNING: {len(cap)} of {n} networks stopped on the step cap, not on patience "
            f"({listed}{' ...' if len(cap) > 8 else ''}); their numbers may be undertrained.{early}")


def division_note(result):
    """One sentence on DIVISION's pCVR above 1, or '' if DIVISION was not run."""
    runs = result["runs"].get("DIVISION")
    if not runs:
        return ""
    share = np.mean([r["pcvr_above_1"] for r in runs])
    top = max(r["pcvr_max"] for r in runs)
    if share == 0:
        return (f"DIVISION's raw pCVR = pCTCVR / pCTR never exceeded 1 on the test impressions "
                f"(largest value {top:.2f}).")
    count = share * result["world"]["n_test"]
    return (f"DIVISION's raw pCVR = pCTCVR / pCTR exceeded 1 on {100 * share:.3g}% of test "
            f"impressions (about {count:,.0f} per seed; largest value {top:.2f}); the table "
            "scores it clipped to 1.")


def report_text(result, sweep=None):
    """Everything printed after a run, as Markdown."""
    w = result["world"]
    n_seeds = len(result["config"]["seeds"])
    parts = []
    if caveat(result):
        parts += [caveat(result), ""]
    tested = ""
    if "test_clicks" in w:
        tested = f" ({w['test_clicks']:,} test clicks, {w['test_conversions']:,} test conversions)"
    parts += [f"{w['n_train']:,} training and {w['n_test']:,} test impressions{tested}, "
              f"{n_seeds} seed(s). AUC in percent, bias in percentage points (mean pCVR minus "
              "mean true CVR); mean" + (" ± std over training seeds." if n_seeds > 1 else "."),
              "", format_table(result), ""]
    if result.get("intervals"):
        parts += [f"Differences to {result.get('reference', 'ESMM')} in points, with 95% paired "
                  f"bootstrap intervals over test rows ({result['config']['n_boot']} replicates; "
                  "* = the interval excludes zero):", "", interval_table(result), ""]
    for note in (choice_note(result), division_note(result),
                 effort_note(result, sweep) if "networks" in result else ""):
        if note:
            parts += [note, ""]
    if sweep:
        parts += ["Sparsity sweep (CVR AUC in percent, mean over seeds; last columns: "
                  "ESMM − BASE with 95% paired bootstrap intervals):", "", sweep_table(sweep), ""]
    return "\n".join(parts).rstrip() + "\n"


def results_json(result, sweep=None):
    """The results as strict JSON text: no NaN tokens, null where a metric is undefined.

    Each null is listed under ``"_null_reasons"`` and ``"null_means"`` says
    what a null can mean.
    """
    payload = dict(result)
    payload["null_means"] = NULL_MEANS
    if sweep:
        payload["sweep"] = {str(k): v for k, v in sweep.items()}
    return dumps_strict(payload, indent=1)


def save(result, sweep, out_dir, figure=True):
    """Write ``table.md``, ``results.json`` and (with matplotlib) ``figure.png``.

    Returns the list of paths written. Files are written to a temporary name
    and renamed, so an interrupted run never leaves a half-written file.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def put(name, text):
        path = os.path.join(out_dir, name)
        write_file(path, text)
        written.append(path)

    put("table.md", "# ESMM and its baselines on a simulated world\n\n"
        + report_text(result, sweep))
    put("results.json", results_json(result, sweep))
    if figure:
        path = os.path.join(out_dir, "figure.png")
        write_file(path, lambda f: plot(result, sweep, f))
        written.append(path)
    return written


DOC_START, DOC_END = "<!-- experiment:start -->", "<!-- experiment:end -->"


def doc_markers(section=None):
    """The start and end markers of a generated section (``section``: e.g. "paper")."""
    if section is None:
        return DOC_START, DOC_END
    return f"<!-- experiment:{section}:start -->", f"<!-- experiment:{section}:end -->"


def write_docs(result, sweep, path, command, section=None):
    """Replace the generated section of a Markdown file with this run's tables.

    The section sits between the markers of :func:`doc_markers` (one pair
    per preset: ``<!-- experiment:start -->`` for the default world,
    ``<!-- experiment:paper:start -->`` for the "paper" preset), so prose
    around it is kept and every number inside it comes from the run.
    """
    start, end = doc_markers(section)
    text = read_text(path)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} section to fill")
    w = result["world"]
    truth = ""
    if "true_cvr_clicked" in w:
        truth = (f"; mean true CVR {100 * w['true_cvr_clicked']:.2f}% on clicked and "
                 f"{100 * w['true_cvr_unclicked']:.3f}% on unclicked test impressions")
    body = [start,
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} in "
            f"{result.get('seconds', 0) / 60:.1f} min: preset "
            f"\"{result['config'].get('preset', 'default')}\", CTR {100 * w['ctr']:.2f}%, CVR given click "
            f"{100 * w['cvr']:.2f}%{truth}.", "", report_text(result, sweep).rstrip(), end]
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    write_file(path, head + "\n".join(body) + tail)


def _sweep_mean(cell, m, metric):
    return 100 * np.mean([r[metric] for r in cell["runs"][m]])


def sweep_table(sweep):
    """The sparsity sweep as Markdown: entire-space CVR AUC per method and ESMM − BASE intervals."""
    first = next(iter(sweep.values()))
    methods = list(first["runs"])
    ref = methods[-1]
    others = methods[:-1]
    head = ["share of training data"] + [f"{m} CVR AUC entire" for m in methods]
    ivm = [k for k in ("cvr_auc_entire", "cvr_soft_auc_entire", "cvr_soft_auc_clicked")
           if k in first["intervals"]]
    head += [f"{ref} − {o}, {SHORT[k]}" for o in others for k in ivm]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for frac, cell in sweep.items():
        cells = [f"{_sweep_mean(cell, m, 'cvr_auc_entire'):.2f}" for m in methods]
        for o in others:
            for k in ivm:
                e = cell["intervals"][k][o]
                flipped = {"diff": -e["diff"], "diff_low": -e["diff_high"],
                           "diff_high": -e["diff_low"]}
                cells.append(_ci(flipped))
        lines.append(f"| {float(frac):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result, sweep, path):
    """The comparison as a figure (``path``: a file name or a binary file object).

    Panels: CVR AUCs, each method's difference to ESMM with its interval,
    the bias on unclicked impressions, and the sparsity sweep.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = [n for n in summary if not np.isnan(summary[n]["cvr_auc_entire"][0])
             or not np.isnan(summary[n]["cvr_auc_clicked"][0])]
    x = np.arange(len(names))
    ncols = 4 if sweep else 3
    fig, axes = plt.subplots(1, ncols, figsize=(4.8 * ncols, 4.4))
    ax = axes[0]
    for off, metric, label in ((-0.2, "cvr_auc_clicked", "clicked impressions (paper)"),
                               (0.2, "cvr_auc_entire", "entire space (ground truth)")):
        means = [100 * summary[n][metric][0] for n in names]
        errs = [100 * summary[n][metric][1] for n in names]
        ax.bar(x + off, means, 0.4, yerr=errs, label=label)
    ax.axhline(50, color="black", lw=0.8, ls=":")
    ax.set_ylim(40, 100)          # from below chance, so bar heights are not exaggerated
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("CVR AUC (%)")
    ax.set_title("CVR AUC (dotted: chance)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    ref = result.get("reference", "ESMM")
    iv = result.get("intervals", {})
    for off, metric, label in ((-0.2, "cvr_soft_auc_clicked", "soft, clicked"),
                               (0.2, "cvr_soft_auc_entire", "soft, entire space")):
        if metric not in iv:
            continue
        others = [n for n in names if n != ref and n in iv[metric]]
        xs = np.array([names.index(n) for n in others])
        d = np.array([100 * iv[metric][n]["diff"] for n in others])
        lo = d - np.array([100 * iv[metric][n]["diff_low"] for n in others])
        hi = np.array([100 * iv[metric][n]["diff_high"] for n in others]) - d
        ax.errorbar(xs + off, d, yerr=[lo, hi], fmt="o", capsize=3, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel(f"method − {ref} (AUC points)")
    ax.set_title("Difference to ESMM, 95% bootstrap interval")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax = axes[2]
    bias = [100 * summary[n]["pcvr_bias_unclicked"][0] for n in names]
    bars = ax.bar(x, bias, color=["tab:red" if b > 0 else "tab:blue" for b in bias])
    ax.bar_label(bars, fmt="%+.2f", fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("mean pCVR − mean true CVR (points)")
    ax.set_title("Calibration on unclicked (0 is right)")
    if sweep:
        ax = axes[3]
        fracs = sorted(sweep, key=float)
        for m in next(iter(sweep.values()))["runs"]:
            ax.plot([100 * float(f) for f in fracs],
                    [_sweep_mean(sweep[f], m, "cvr_auc_entire") for f in fracs],
                    marker="o", label=m)
        ax.axhline(50, color="black", lw=0.8, ls=":")
        ax.set_ylim(40, 100)
        ax.set_xscale("log")
        ax.set_xlabel("share of training data (%)")
        ax.set_ylabel("CVR AUC, entire space (%)")
        ax.set_title("Data sparsity")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
