"""Time and peak memory of simulating an impression log (default: 10 million rows).

Usage::

    python benchmarks/bench_simulate.py [--n 10000000] [--repeats 3] [--n-dense 0]
                                        [--confounder 0.0]

Each measurement runs in a fresh interpreter, so one run's memory cannot
hide in another's. Peak memory is the child's maximum resident set size as
the kernel reports it (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), read by a
small probe process that starts exactly one child, so the number belongs to
that child alone. The same is done for an interpreter that only imports
NumPy and esmm_np: the difference is what simulating costs.
"""

import argparse
import os
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs `code` (argv[1]) in one child and prints the child's output, then its peak RSS.
_PROBE = """
import resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1]], check=True,
                     capture_output=True, text=True).stdout
print(out, end="")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

_BASELINE = "import numpy, esmm_np.data.simulator"

_SIMULATE = """
import time
from esmm_np.data.simulator import simulate
start = time.perf_counter()
ds = simulate({n}, seed=0, n_dense={n_dense}, confounder={confounder})
seconds = time.perf_counter() - start
arrays = [ds.X, ds.click, ds.conversion, ds.true_ctr, ds.true_cvr, ds.conversion_if_clicked]
arrays += [] if ds.dense is None else [ds.dense]
print(seconds)
print(sum(a.nbytes for a in arrays))
"""


def _maxrss_to_mib(value):
    # Linux reports KiB, macOS bytes.
    return value / 2**20 if sys.platform == "darwin" else value / 2**10


def run_measured(code):
    """Run ``code`` in a fresh interpreter; return (its stdout lines, its peak RSS in MiB)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", _PROBE, code], check=True, capture_output=True,
                         text=True, env=env)
    lines = res.stdout.strip().splitlines()
    return lines[:-1], _maxrss_to_mib(int(lines[-1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="impressions to simulate")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes to time")
    ap.add_argument("--n-dense", type=int, default=0)
    ap.add_argument("--confounder", type=float, default=0.0)
    args = ap.parse_args(argv)

    _, baseline = run_measured(_BASELINE)
    code = _SIMULATE.format(n=args.n, n_dense=args.n_dense, confounder=args.confounder)
    seconds, peaks = [], []
    for _ in range(args.repeats):
        (sec, nbytes), peak = run_measured(code)
        seconds.append(float(sec))
        peaks.append(peak)
    output_mib = int(nbytes) / 2**20

    print(f"simulate(n={args.n:,}, n_dense={args.n_dense}, confounder={args.confounder}) "
          f"on {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")
    print(f"  time of simulate(), {args.repeats} fresh processes: "
          + ", ".join(f"{s:.2f}" for s in seconds)
          + f" s  (best {min(seconds):.2f} s, {args.n / min(seconds) / 1e6:.2f} M rows/s)")
    print(f"  peak RSS of the simulating process: {max(peaks):.0f} MiB")
    print(f"  peak RSS of an interpreter that only imports numpy + esmm_np: {baseline:.0f} MiB")
    print(f"  simulation on top of that baseline: {max(peaks) - baseline:.0f} MiB "
          f"(of which the returned arrays: {output_mib:.0f} MiB)")
    # The parent's own figure, for the record: it never ran a simulation.
    own = _maxrss_to_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(f"  (this benchmark script itself: {own:.0f} MiB)")


if __name__ == "__main__":
    main()
