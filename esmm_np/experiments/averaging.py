"""Does averaging recent weights make the kept point stable? A measurement.

    python -m esmm_np.experiments.averaging --ks 1 4 --methods ESMM BASE

runs the documented default-preset configuration (its worlds, training
seeds, size and stopping rule) once per ``k`` of ``fair_effort(average=k)``
(:func:`esmm_np.fit`'s ``average``: validation scores, and early stopping
keeps, the mean of the weights at the last ``k`` validations) and prints,
per ``k``: each method's adjacent-validation noise (how far the test-row
probe moves between the kept validation and its neighbours; it measures,
never chooses), the median kept step, and each method's difference to
ESMM on the soft entire-space CVR AUC with its interval across worlds.
Every ``k`` follows the same training path (averaging changes only
which weights are scored and kept, and so where patience ends the run).
"""

import argparse
import time
from dataclasses import replace

import numpy as np

from .config import ExperimentConfig
from .report import NOISE_MULTIPLE, format_interval, noise_values
from .runner import run_all


def measure(ks=(1, 4), methods=("ESMM", "BASE"), cfg=None, progress=None):
    """One run per ``k``; returns {k: {"noise": {method: [points]}, "kept": {method: [steps]},
    "diff": {method: across-world entry}, "seconds": float}}."""
    out = {}
    for k in ks:
        base = cfg or ExperimentConfig()
        run_cfg = replace(base, methods=tuple(methods), train=dict(base.train, average=int(k)))
        start = time.perf_counter()
        result, _ = run_all(run_cfg, progress=progress, sweep=False)
        kept = {m: [rec["kept"] for nets in per_run for name, rec in nets.items()
                    if rec.get("adjacent_noise") is not None]
                for m, per_run in result["networks"].items()}
        out[k] = {"noise": noise_values(result["networks"]),
                  "kept": {m: v for m, v in kept.items() if v},
                  "diff": result["across_worlds"].get("cvr_soft_auc_entire", {}),
                  "seconds": time.perf_counter() - start}
    return out


def format_measure(out):
    """The measurement as a Markdown table, one row per (k, method)."""
    lines = ["| k (weights averaged) | method | adjacent-validation noise, mean (max) | "
             "median kept step | − ESMM, soft CVR AUC entire |", "|---|---|---|---|---|"]
    for k, rec in out.items():
        ref = np.mean(rec["noise"].get("ESMM", [0.0])) / 100
        for m, vals in rec["noise"].items():
            floor = NOISE_MULTIPLE * max(np.mean(vals) / 100, ref)    # the tables' star rule
            diff = format_interval(rec["diff"][m], floor) if m in rec["diff"] else ""
            lines.append(f"| {k} | {m} | {np.mean(vals):.2f} ({np.max(vals):.2f}) | "
                         f"{int(np.median(rec['kept'][m]))} | {diff} |")
    secs = ", ".join(f"k = {k}: {rec['seconds'] / 60:.1f} min" for k, rec in out.items())
    return ("\n".join(lines) + f"\n\nMarks (* and °) as in the tables (the floor from this run's "
            f"noise at each k). Run times: {secs}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--methods", nargs="+", default=["ESMM", "BASE"])
    args = parser.parse_args(argv)
    print(format_measure(measure(args.ks, args.methods)))


if __name__ == "__main__":
    main()
