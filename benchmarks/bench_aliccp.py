"""Ali-CCP conversion throughput, and one training epoch over the converted cache.

Usage::

    python benchmarks/bench_aliccp.py [--lines 200000 800000] [--dir DIR] [--batch 1024]

Every step runs once per ``--lines`` value, so the output shows how time
and memory grow with the number of lines. ``--traced`` adds a run of each
step under ``tracemalloc`` (slow, so not timed) for the peak of the memory
Python and NumPy allocate, without the file pages.

1. Writes raw files shaped like Ali-CCP from a simulated world
   (``esmm_np.aliccp.write_raw``): requests of 1 to 100 impressions sharing
   one common-features line with 9 single-valued user fields and 4 user bags
   of 0 to 40 valued ids each; skeleton lines with 9 single-valued ad fields
   and an ad bag of 0 to 4 ids. The real files are not downloaded.
2. Converts them (``esmm_np.aliccp.convert``, min_count 10) in a fresh
   interpreter: wall time, CPU time, skeleton lines per second, peak memory,
   and the cache's size beside the raw text's (the cache stores each
   request's common-feature bags once, as the raw files do).
3. Trains a float32 ESMM (embedding 8, towers 64-32, mean pooling, lazy
   Adam, batch ``--batch``) for one epoch over the memory-mapped training
   split, in a fresh interpreter: time, impressions per second, peak memory.

Peak memory is the child's maximum resident set size
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``). It counts the pages of the
memory-mapped cache the child touched, which the kernel can drop at any
time; the anonymous part at the end of the run (``RssAnon`` in
``/proc/self/status``) is printed beside it, since memory-mapped pages are not
memory the process needs. The machine's load average is printed too: other
processes on the cores slow every figure.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1]], check=True,
                     capture_output=True, text=True).stdout
print(out, end="")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

_BASELINE = "import numpy, esmm_np.aliccp"

_ANON = """
def _anon():
    try:
        with open("/proc/self/status") as fh:
            return [int(l.split()[1]) / 1024 for l in fh if l.startswith("RssAnon")][0]
    except (OSError, IndexError):
        return float("nan")
"""

_CONVERT = _ANON + """
import json, time, tracemalloc
from esmm_np.data import aliccp   # the module itself: _JOIN_IDS is patched below
if {join_ids}:
    aliccp._JOIN_IDS = {join_ids}
if {traced}:
    tracemalloc.start()
start, cpu = time.perf_counter(), time.process_time()
report = aliccp.convert({src!r}, {out!r}, min_count=10, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "report": report, "anon": _anon(),
                  "traced": tracemalloc.get_traced_memory()[1] / 2**20}}))
"""

_EPOCH = _ANON + """
import json, time
import numpy as np
import esmm_np
from esmm_np.data import aliccp   # the module itself: _JOIN_IDS is patched below
ds = aliccp.load({out!r})
model = esmm_np.ESMM(ds.field_dims, embed_dim=8, tower_units=(64, 32), bag_dims=ds.bag_dims,
                     bag_pooling="mean", dtype=np.float32, seed=0)
import tracemalloc
if {traced}:
    tracemalloc.start()
start, cpu = time.perf_counter(), time.process_time()
h = esmm_np.fit(model, ds.X, ds.click, ds.conversion, bags=ds.bags, epochs=1,
                batch_size={batch}, optimizer=esmm_np.Adam(lr=1e-3, lazy=True), verbose=False)
print(json.dumps({{"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "rows": len(ds), "loss": h["loss"][0], "anon": _anon(),
                  "traced": tracemalloc.get_traced_memory()[1] / 2**20,
                  "params_mb": sum(p.nbytes for p in model.params.values()) / 2**20}}))
"""


def _mib(value):
    return value / 2**20 if sys.platform == "darwin" else value / 2**10   # Linux: KiB


def run_measured(code):
    """Run ``code`` in a fresh interpreter; return (its stdout lines, its peak RSS in MiB)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    res = subprocess.run([sys.executable, "-c", _PROBE, code], check=True, capture_output=True,
                         text=True, env=env)
    lines = res.stdout.strip().splitlines()
    return lines[:-1], _mib(int(lines[-1]))


def _size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, nargs="+", default=[200_000, 800_000],
                    help="skeleton lines to generate (one run per value)")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--traced", action="store_true",
                    help="also run conversion and epoch once more under tracemalloc and print "
                         "the peak of the memory Python and NumPy allocate (slow; memory only)")
    ap.add_argument("--join-ids", type=int, default=0,
                    help="cap on the ids of one join step of the conversion (default: "
                         "aliccp._JOIN_IDS); smaller caps show what the blocks cost")
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    from esmm_np import aliccp

    work = args.dir or tempfile.mkdtemp(prefix="bench_aliccp_")
    try:
        _, base = run_measured(_BASELINE)
        print(f"an interpreter with NumPy and esmm_np: peak memory {base:.0f} MiB")
        for n in args.lines:
            _one(aliccp, os.path.join(work, str(n)), n, args.batch, args.traced, args.join_ids)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


def _one(aliccp, work, n_lines, batch, traced, join_ids):
    src, out = os.path.join(work, "raw"), os.path.join(work, "cache")
    print(f"\n=== {n_lines:,} skeleton lines (load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores)")
    start = time.perf_counter()
    aliccp.write_raw(src, n_lines, 0, seed=0, user_bag_len=(0, 40), ad_bag_len=(0, 4),
                     n_user_bag_fields=4, request_size=(1, 100), n_extra_fields=7,
                     replace=True)       # the files of an interrupted earlier run, if any
    raw_bytes = _size(src)
    print(f"generated {raw_bytes / 2**20:.0f} MiB of raw files ({raw_bytes / n_lines:.0f} bytes "
          f"per impression with its share of the common features) in "
          f"{time.perf_counter() - start:.0f} s")
    shutil.rmtree(out, ignore_errors=True)
    lines, peak = run_measured(_CONVERT.format(src=src, out=out, traced=False,
                                               join_ids=join_ids))
    conv = json.loads(lines[-1])
    rep = conv["report"]
    cache_bytes = _size(out)
    print(f"convert (min_count 10): {conv['seconds']:.1f} s wall, {conv['cpu']:.1f} s CPU; "
          f"{n_lines / conv['seconds']:,.0f} skeleton lines/s wall, "
          f"{n_lines / conv['cpu']:,.0f} per CPU second")
    print(f"  peak memory {peak:.0f} MiB; anonymous memory at the end {conv['anon']:.0f} MiB")
    print(f"  cache {cache_bytes / 2**20:.0f} MiB on disk ({cache_bytes / n_lines:.0f} bytes "
          f"per impression, {100 * cache_bytes / raw_bytes:.0f}% of the raw text); "
          f"{len(rep['single_fields'])} single-valued fields, bags "
          f"{' '.join(rep['bag_fields'])}")
    lines, peak = run_measured(_EPOCH.format(out=out, batch=batch, traced=False))
    ep = json.loads(lines[-1])
    print(f"one epoch of ESMM (float32, embedding 8, towers 64-32, mean pooling, lazy Adam, "
          f"batch {batch}) over the memory-mapped training split:")
    print(f"  {ep['rows']:,} impressions in {ep['seconds']:.1f} s wall, {ep['cpu']:.1f} s CPU "
          f"({ep['rows'] / ep['seconds']:,.0f} impressions/s wall, "
          f"{ep['rows'] / ep['cpu']:,.0f} per CPU second); loss {ep['loss']:.4f}")
    print(f"  peak memory {peak:.0f} MiB; anonymous memory at the end {ep['anon']:.0f} MiB; "
          f"parameters {ep['params_mb']:.1f} MiB")
    print(f"  load average now: {os.getloadavg()[0]:.2f}")
    if traced:
        shutil.rmtree(out, ignore_errors=True)
        code = _CONVERT.format(src=src, out=out, traced=True, join_ids=join_ids)
        conv = json.loads(run_measured(code)[0][-1])
        ep = json.loads(run_measured(_EPOCH.format(out=out, batch=batch, traced=True))[0][-1])
        print(f"tracemalloc peak (memory Python and NumPy allocate): conversion "
              f"{conv['traced']:.0f} MiB, epoch {ep['traced']:.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
