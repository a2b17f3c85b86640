"""Running independent trainings in worker processes.

Independent trainings (seeds, methods, sweep cells, worlds) run in
``workers`` processes started with "spawn", each with one BLAS thread. Each
worker simulates the world itself from the configuration (the same seed
gives the same world bit for bit), so no data is shipped between processes.
A method's result does not depend on the number of workers.
"""

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager

import numpy as np

from .baselines import bag_kw, make_context, train_ctr_net
from .family import gate_record
from .methods import TRAINERS
from .config import model_arch
from .scoring import intervals
from .stopping import make_probe
from ..data.simulator import simulate

# ----------------------------------------------------------------- workers

_WORLDS = {}      # world key -> (train, test), cached per process
_GIVEN = None     # data handed to the runner (not simulated), set per process


def world_key(cfg, world_seed=None):
    """What identifies a simulated world of ``cfg`` (``world_seed``: default ``cfg.world_seed``)."""
    seed = cfg.world_seed if world_seed is None else world_seed
    return (cfg.n_impressions, cfg.preset, tuple(sorted(cfg.world.items())), seed,
            cfg.test_fraction)


def get_world(key):
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


def subset(train, frac, seed):
    """A seeded share of the training rows (nested: a smaller share is a subset of a larger one)."""
    if frac is None or frac >= 1.0:
        return train
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(np.sort(order[:int(round(frac * len(train)))]))


def run_task(task):
    """Train one network or method in a worker; returns its test predictions and records.

    ``task`` is a dict: ``world`` (key), ``method`` (a TRAINERS name or
    "_ctr_net"), ``seed``, ``frac`` (share of the training data or None),
    ``arch``, ``train``, ``validation_fraction``, ``options``, ``ctr_net``.
    The output's ``gates`` is :func:`~esmm_np.experiments.family.gate_record`
    on the test rows (None for a method without gates).
    """
    start = time.perf_counter()
    train, test = get_world(task["world"])
    data = subset(train, task["frac"], task["seed"])
    ctx = make_context(data, arch=task["arch"], train=task["train"], seed=task["seed"],
                       validation_fraction=task["validation_fraction"],
                       ctr_net=task["ctr_net"], options=task["options"])
    if task["train"].get("criterion") == "measured":      # record, never choose: see .stopping
        ctx.probes = {kind: make_probe(test, kind == "tower") for kind in ("tower", "two-tower")}
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
                   pred={k: np.asarray(v, dtype=np.float32) for k, v in pred.items()},
                   gates=gate_record(method, test))      # MMOE and PLE: their gates on test
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
def executor(workers, given):
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


def run_tasks(tasks, pool, say):
    """Run training tasks, each after the CTR network it depends on; returns key -> output.

    ``tasks`` maps a key to a task dict; a task with ``needs`` (the key of a
    "_ctr_net" task) is submitted once that one is done, with its model.
    """
    results = {}
    start = time.perf_counter()
    pending = {}

    def submit(key):
        pending[pool.submit(run_task, tasks[key])] = key

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
    if len(key) == 5:                      # (world, part, method, seed, frac)
        world, part, method, seed, frac = key
    else:                                  # (part, method, seed, frac)
        world, (part, method, seed, frac) = None, key
    name = "CTR network" if method == "_ctr_net" else method
    where = "" if part == "table" else (f", {frac:.0%} of the data" if part == "sweep"
                                        else f", world {part}")
    if world is not None and world != "given":
        where += f", world seed {world}"
    return f"{name} (seed {seed}{where})"


def make_task(cfg, method, seed, frac=None, world=None, needs=None, train=None):
    """One training of ``method`` (``train``: the effort rule, default ``cfg.train``)."""
    return {"world": world if world is not None else world_key(cfg), "method": method,
            "seed": seed, "frac": frac, "arch": model_arch(cfg),
            "train": dict(cfg.train if train is None else train),
            "validation_fraction": cfg.validation_fraction,
            "options": {"aman_rate": tuple(np.atleast_1d(cfg.aman_rate).tolist()),
                        "oversampling_k": tuple(np.atleast_1d(cfg.oversampling_k).tolist())},
            "ctr_net": None, "needs": needs}




def forget_world(key):
    """Drop a cached world from this process (the regime map's worlds are used once)."""
    _WORLDS.pop(key, None)


def run_intervals(world, preds, reference, metrics, n_boot):
    """:func:`~esmm_np.experiments.scoring.intervals` on the test set of ``world``, in a worker."""
    return intervals(preds, get_world(world)[1], reference, metrics, n_boot=n_boot)
