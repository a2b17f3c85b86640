"""Does ``esmm-np demo`` stall on a busy machine? Wall time alone and beside CPU-bound processes.

Run from the repository root:

    python benchmarks/bench_busy.py                 # the full demo, 4 runs: 3 minutes on a quiet machine
    python benchmarks/bench_busy.py --n 200000 --rounds 2   # a smaller world, repeated

Each run starts ``python -m esmm_np.cli demo`` in a fresh process (output to
a temporary folder) and times it, in two settings and two conditions:

- settings: **before**, BLAS free to use every core, which is what esmm_np
  did before it limited threads (set here through ``OPENBLAS_NUM_THREADS`` =
  the number of cores, OpenBLAS's own default; esmm_np leaves BLAS alone
  whenever that variable is set), or with ``--before-code DIR`` the esmm_np
  of another source tree (the code before the change, exported with
  ``git archive``); **after**, the environment without any
  thread variable, so esmm_np applies its own limit (one BLAS thread in
  training and in the command line, see ``esmm_np/threads.py``; needs
  threadpoolctl, which the benchmark reports).
- conditions: **alone**, and **busy**: beside ``--busy`` processes that
  spin on the CPU (``while True: pass``) for the whole run.

It prints the seconds of every run as it ends and, per setting, the median
of busy / the median alone. The
issue's target: beside one CPU-bound process the demo takes at most 2.5
times as long as alone. Other work on the machine changes every figure;
run it on a quiet machine, or read the ratios with that in mind.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


#: Source tree each setting imports esmm_np from; ``--before-code`` changes "before".
CODE = {"before": ROOT, "after": ROOT}


def _env(setting):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = CODE[setting] + os.pathsep + env.get("PYTHONPATH", "")
    if setting == "before" and CODE["before"] == ROOT:
        env["OPENBLAS_NUM_THREADS"] = str(os.cpu_count())
    return env


def run_demo(setting, n_busy, n, seed):
    """Seconds of one ``esmm-np demo`` run, beside ``n_busy`` spinning processes."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(n_busy)]
    try:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "esmm_np.cli", "demo", "--out", out]
            if seed is not None:
                cmd += ["--seed", str(seed)]
            if n is not None:
                cmd += ["--n", str(n)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=_env(setting), cwd=CODE[setting], capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"demo failed ({setting}, busy={n_busy}):\n{proc.stderr[-2000:]}")
        return seconds
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, help="impressions of the demo's world (default: the demo's)")
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes beside the demo")
    parser.add_argument("--seed", type=int, help="the demo's training seed (default: the demo's)")
    parser.add_argument("--before-code", metavar="DIR",
                        help="run 'before' with the esmm_np of this source tree (e.g. an export "
                             "of an older commit, whose demo may lack --seed and --n) instead of "
                             "this tree with BLAS free")
    parser.add_argument("--settings", nargs="+", default=["before", "after"],
                        choices=["before", "after"])
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of every run")
    args = parser.parse_args()
    if args.before_code:
        CODE["before"] = os.path.abspath(args.before_code)

    probe = subprocess.run(
        [sys.executable, "-c", "import numpy, esmm_np.threads as t; "
         "print(numpy.__version__, t.available(), t.TRAINING_THREADS)"],
        env=_env("after"), capture_output=True, text=True, check=True).stdout.split()
    print(f"{os.cpu_count()} cores; NumPy {probe[0]}; threadpoolctl installed: {probe[1]}; "
          f"esmm_np.threads.TRAINING_THREADS = {probe[2]}")
    print(f"command: {sys.executable} -m esmm_np.cli demo --out TMP"
          + (f" --seed {args.seed}" if args.seed is not None else "")
          + (f" --n {args.n}" if args.n else "") + f"; busy = {args.busy} x 'while True: pass'")
    print("before: " + (f"esmm_np from {CODE['before']}" if CODE["before"] != ROOT else
                        f"this tree with OPENBLAS_NUM_THREADS={os.cpu_count()}")
          + "; after: this tree, no thread variable set\n")
    # Settings alternate within each round, so that load from elsewhere falls on both.
    times = {(st, busy): [] for st in args.settings for busy in (0, args.busy)}
    print(f"{'round':>5} {'setting':<8} {'condition':<10} {'seconds':>8}", flush=True)
    for r in range(args.rounds):
        for busy in (0, args.busy):
            for setting in args.settings:
                seconds = run_demo(setting, busy, args.n, args.seed)
                times[setting, busy].append(seconds)
                print(f"{r + 1:>5} {setting:<8} {'busy' if busy else 'alone':<10} {seconds:>8.1f}",
                      flush=True)
    print(f"\n{'setting':<8} {'alone s':>9} {'busy s':>9} {'busy/alone':>11}   (medians)")
    for setting in args.settings:
        alone = float(np.median(times[setting, 0]))
        busy = float(np.median(times[setting, args.busy]))
        print(f"{setting:<8} {alone:>9.1f} {busy:>9.1f} {busy / alone:>11.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes add to every figure)")

if __name__ == "__main__":
    main()
