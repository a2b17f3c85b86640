"""How fast does esmm_np train, next to this machine's matmul peak and PyTorch?

Run from the repository root:

    python benchmarks/bench_training.py            # full run: 2 minutes, up to 10 when busy
    python benchmarks/bench_training.py --quick    # smoke run: one to two minutes
    python benchmarks/bench_training.py --only mmoe --quick   # the MMoE rows alone

It prints, all measured in this one run on this machine:

1. The float32 matrix-product peak: the best of several ``a @ b`` with
   4096 x 4096 float32 matrices.
2. One training step (forward, backward, Adam update), float32, median of
   many repetitions after warm-up, at the paper's architecture (20 fields of
   10,000 ids, embeddings of 18, both towers 200-80, batch 1024 and 4096) and
   at a notebook-sized one (the simulator's 4 fields, embeddings of 8, towers
   64-32, batch 1024). Adam with dense semantics (``lazy=False``, every table
   row moves every step) and lazy semantics (``lazy=True``, only the batch's
   rows). Where PyTorch is importable, the same step in PyTorch eager:
   ``nn.Embedding`` + ``torch.optim.Adam`` for the dense pair, and
   ``nn.Embedding(sparse=True)`` + ``torch.optim.SparseAdam`` (PyTorch's lazy
   Adam) for the table in the lazy pair. Each implementation runs in its own
   process (never two threading runtimes in one), and the processes alternate
   over rounds, so that a burst of load from elsewhere hits every column.
   The same for an MMoE step (:data:`MMOE`; ``--only mmoe`` runs it alone).
3. GFLOP/s of each step: the matmul FLOPs counted analytically (2 n d_in d_out
   per affine layer forward, twice that backward), divided by the step's time.
4. One epoch of ``esmm_np.fit`` over 1 million simulated impressions at the
   notebook configuration, batching included.
5. Peak memory of each part: every part runs in its own worker process,
   started by a small launcher that reads ``resource.getrusage(
   RUSAGE_CHILDREN).ru_maxrss`` after its one child exits.

PyTorch is never a dependency of esmm_np; ``pip install torch==2.13.0``
installs a CPU build on the project's machines. See docs/performance.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: name -> (field_dims, embed_dim, tower_units)
CONFIGS = {
    "paper": ((10_000,) * 20, 18, (200, 80)),
    # The simulator's default world: user, item, category, segment.
    "notebook": ((4000, 3000, 40, 8), 8, (64, 32)),
}

#: The MMoE rows' network (``--only mmoe`` runs them alone): the paper's input (20
#: fields of 10,000 ids, embeddings of 18, so h0 is 360 wide), 4 experts of one
#: hidden layer of 200 (the width of ESMM's towers' first layer), one softmax
#: gate per task, and each task's tower of 80 on its mixture: ESMM's 200-80
#: towers with the first layer turned into 4 shared experts.
MMOE = {"config": "paper", "n_experts": 4, "expert_units": (200,), "tower_units": (80,)}


# ------------------------------------------------------------ helpers


def step_flops(config, batch, model="esmm"):
    """Matmul FLOPs of one training step: 6 n d_in d_out per affine layer, both towers.

    For ``model="mmoe"``: the experts, the two gates and the towers on the
    mixtures (the mixtures themselves are elementwise and count for nothing).

    Forward ``x @ W`` costs 2 n d_in d_out; backward ``dout @ W.T`` and
    ``x.T @ dout`` cost as much again each. Elementwise work is not counted.
    """
    field_dims, k, units = CONFIGS[config]
    d_in = len(field_dims) * k
    if model == "mmoe":
        return 6 * batch * sum(a * b for a, b in _mmoe_layers(d_in))
    per_tower = 0
    for d_out in tuple(units) + (1,):
        per_tower += d_in * d_out
        d_in = d_out
    return 6 * batch * 2 * per_tower


def _mmoe_layers(d_in):
    """(d_in, d_out) of every affine layer of :data:`MMOE`: experts, gates, both towers."""
    K, (e,), (t,) = MMOE["n_experts"], MMOE["expert_units"], MMOE["tower_units"]
    return [(d_in, e)] * K + [(d_in, K)] * 2 + [(e, t), (t, 1)] * 2


def n_parameters(config, model="esmm"):
    """Trainable scalars of the float32 ESMM (or MMoE) of ``config``: the table and the rest."""
    field_dims, k, units = CONFIGS[config]
    if model == "mmoe":
        return sum(field_dims) * k + sum(a * b + b for a, b in _mmoe_layers(len(field_dims) * k))
    total, d_in = sum(field_dims) * k, len(field_dims) * k
    for d_out in tuple(units) + (1,):
        total += 2 * (d_in * d_out + d_out)          # two towers, weights and biases
        d_in = d_out
    return total


def blas_threads():
    """Threads NumPy's BLAS uses (threadpoolctl when installed, else the usable cores)."""
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            if info.get("user_api") == "blas":
                return int(info["num_threads"]), f"{info.get('internal_api')} {info.get('version')}"
    except ImportError:
        pass
    return len(os.sched_getaffinity(0)), "unknown BLAS"


class OtherLoad:
    """Share of the machine's cores that *other* processes used during a measurement.

    ``/proc/stat`` counts every process's busy CPU time; subtracting this
    process's own (all threads, from ``resource``) leaves the others'. On a
    2-core machine shared with other jobs, a timing taken while they ran is
    not this code's speed; the report shows the share and retries such parts.
    """

    def __init__(self):
        self.start = self._now()

    @staticmethod
    def _now():
        import resource
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is inside user);
        # steal is time the hypervisor gave to other machines: load from outside.
        busy = sum(fields[:8]) - fields[3] - fields[4]
        own = resource.getrusage(resource.RUSAGE_SELF)
        return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime, time.perf_counter()

    def share(self):
        busy, own, wall = (b - a for a, b in zip(self.start, self._now()))
        return max(0.0, busy - own) / (wall * len(os.sched_getaffinity(0)))


#: Seconds the whole run may spend waiting for a quiet machine (``--max-wait``).
WAIT_BUDGET = [600.0]


def wait_for_quiet(limit_s=60.0, share=0.05):
    """Sleep until other processes use under ``share`` of the cores for a second.

    Gives up after ``limit_s``, or when the run's :data:`WAIT_BUDGET` is spent.
    """
    start = time.perf_counter()
    limit_s = min(limit_s, WAIT_BUDGET[0])
    while time.perf_counter() - start < limit_s:
        probe = OtherLoad()
        time.sleep(1.0)
        if probe.share() < share:
            break
    waited = time.perf_counter() - start
    WAIT_BUDGET[0] -= waited
    return waited


def median_ms(ts):
    ts = sorted(ts)
    mid = len(ts) // 2
    return 1e3 * (ts[mid] if len(ts) % 2 else 0.5 * (ts[mid - 1] + ts[mid]))


# ------------------------------------------------------------ the workers


def worker_idle(_args):
    """Interpreter + NumPy + esmm_np imported, nothing else: the memory floor."""
    sys.path.insert(0, ROOT)
    import numpy  # noqa: F401
    import esmm_np  # noqa: F401
    return {}


def worker_peak(args):
    """Best of several float32 ``a @ b``; returns GFLOP/s."""
    import numpy as np
    n, reps = args["n"], args["reps"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    best = float("inf")
    load = OtherLoad()
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9, "seconds": best, "others": load.share()}


def _batch(config, batch, seed=0):
    """Random ids (already offset into table rows) and labels for one batch."""
    import numpy as np
    field_dims, _, _ = CONFIGS[config]
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, size=batch) for d in field_dims], axis=1)  # (n, F)
    click = (rng.random(batch) < 0.2).astype(np.int8)
    conversion = click * (rng.random(batch) < 0.3).astype(np.int8)
    return X, click, conversion


def _numpy_stepper(config, batch, lazy, model="esmm"):
    """A float32 ESMM (or :data:`MMOE`), its optimiser and a closure doing one training step."""
    import numpy as np
    sys.path.insert(0, ROOT)
    import esmm_np
    field_dims, k, units = CONFIGS[config]
    if model == "mmoe":
        model = esmm_np.MMoE(field_dims, embed_dim=k, n_experts=MMOE["n_experts"],
                             expert_units=MMOE["expert_units"], tower_units=MMOE["tower_units"],
                             dtype=np.float32, seed=0)
    else:
        model = esmm_np.ESMM(field_dims, embed_dim=k, tower_units=units, dtype=np.float32, seed=0)
    opt = esmm_np.Adam(lr=1e-3, lazy=lazy)
    X, click, conversion = _batch(config, batch)
    rows = X + model.offsets                       # what fit() hands train_loss
    labels = (click, conversion)
    split = {"loss": [], "update": []}

    def step(record=False):
        t0 = time.perf_counter()
        loss, grads = model.train_loss(rows, None, labels, model.rng, lazy=lazy)
        t1 = time.perf_counter()
        opt.step(model.params, grads)
        if record:
            split["loss"].append(t1 - t0)
            split["update"].append(time.perf_counter() - t1)
        return loss

    return model, step, split


def _torch_stepper(config, batch, lazy, threads, np_model=None, model="esmm"):
    """The same network in PyTorch eager; returns (step closure, loss at np_model's weights)."""
    import numpy as np
    import torch
    import torch.nn.functional as Fn
    torch.set_num_threads(threads)
    field_dims, k, units = CONFIGS[config]
    d_in = len(field_dims) * k

    def tower():
        layers, d = [], d_in
        for u in units:
            layers += [torch.nn.Linear(d, u), torch.nn.ReLU()]
            d = u
        return torch.nn.Sequential(*layers, torch.nn.Linear(d, 1))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(sum(field_dims), k, sparse=lazy)
            self.ctr, self.cvr = tower(), tower()

        def forward(self, rows):
            h0 = self.embedding(rows).reshape(rows.shape[0], d_in)
            return self.ctr(h0)[:, 0], self.cvr(h0)[:, 0]

    def loss_fn(a, b, y, z):
        """ESMM's loss from the logits: BCE(click) + BCE(click*conversion) in log space."""
        loss_ctr = Fn.binary_cross_entropy_with_logits(a, y)
        sp_neg_a, sp_neg_b = Fn.softplus(-a), Fn.softplus(-b)
        log_p = -sp_neg_a - sp_neg_b                                     # log p_ctcvr
        log_1mp = torch.logsumexp(torch.stack([-a, -b, -a - b]), dim=0) + log_p
        loss_ctcvr = -(z * log_p + (1 - z) * log_1mp).mean()
        return loss_ctr + loss_ctcvr

    class MMoENet(torch.nn.Module):
        """:data:`MMOE`: ReLU experts, a softmax gate per task, a tower on each mixture."""

        def __init__(self):
            super().__init__()
            K, (e,), (t,) = MMOE["n_experts"], MMOE["expert_units"], MMOE["tower_units"]
            self.embedding = torch.nn.Embedding(sum(field_dims), k, sparse=lazy)
            self.experts = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(d_in, e), torch.nn.ReLU()) for _ in range(K))
            self.gates = torch.nn.ModuleList(torch.nn.Linear(d_in, K) for _ in range(2))
            self.towers = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(e, t), torch.nn.ReLU(), torch.nn.Linear(t, 1))
                for _ in range(2))

        def forward(self, rows):
            h0 = self.embedding(rows).reshape(rows.shape[0], d_in)
            o = torch.stack([ex(h0) for ex in self.experts], dim=1)             # (n, K, e)
            out = []
            for gate, tower in zip(self.gates, self.towers):
                psi = torch.softmax(gate(h0), dim=1)                             # (n, K)
                out.append(tower((psi.unsqueeze(2) * o).sum(dim=1))[:, 0])       # (n,)
            return out

        def copy_from(self, params):
            """esmm_np's MMoE weights into this network (same names, W transposed)."""
            pairs = [(ex[0], f"expert{i}.W0", f"expert{i}.b0") for i, ex in enumerate(self.experts)]
            for t, gate, tower in zip(("ctr", "cvr"), self.gates, self.towers):
                pairs += [(gate, f"gate_{t}.W", f"gate_{t}.b"), (tower[0], f"{t}.W0", f"{t}.b0"),
                          (tower[2], f"{t}.W_out", f"{t}.b_out")]
            self.embedding.weight.copy_(torch.from_numpy(params["embedding"]))
            for lin, w, b in pairs:
                lin.weight.copy_(torch.from_numpy(params[w].T))
                lin.bias.copy_(torch.from_numpy(params[b]))

    net = MMoENet() if model == "mmoe" else Net()
    agreement = None
    if np_model is not None and model == "mmoe":
        with torch.no_grad():
            net.copy_from(np_model.params)
    elif np_model is not None:   # copy esmm_np's weights: both must compute the same loss
        with torch.no_grad():
            net.embedding.weight.copy_(torch.from_numpy(np_model.params["embedding"]))
            for t in ("ctr", "cvr"):
                linears = [m for m in getattr(net, t) if isinstance(m, torch.nn.Linear)]
                names = [f"{t}.W{i}" for i in range(len(units))] + [f"{t}.W_out"]
                for lin, name in zip(linears, names):
                    lin.weight.copy_(torch.from_numpy(np_model.params[name].T))
                    lin.bias.copy_(torch.from_numpy(np_model.params[name.replace("W", "b")]))
    if lazy:
        opt = [torch.optim.SparseAdam([net.embedding.weight], lr=1e-3),
               torch.optim.Adam([p for n, p in net.named_parameters() if n != "embedding.weight"],
                                lr=1e-3)]
    else:
        opt = [torch.optim.Adam(net.parameters(), lr=1e-3)]
    X, click, conversion = _batch(config, batch)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    rows = torch.from_numpy((X + offsets).astype(np.int64))
    y = torch.from_numpy(click.astype(np.float32))
    z = torch.from_numpy((click * conversion).astype(np.float32))
    if np_model is not None:
        with torch.no_grad():
            agreement = float(loss_fn(*net(rows), y, z))

    def step(record=False):
        for o in opt:
            o.zero_grad()
        a, b = net(rows)
        loss = loss_fn(a, b, y, z)
        loss.backward()
        for o in opt:
            o.step()
        return float(loss)

    return step, agreement


def worker_step(args):
    """Time one implementation's training step alone in this process.

    NumPy and PyTorch never share a process: OpenBLAS's and OpenMP's worker
    threads both spin while waiting for work, and four spinning threads on
    two cores slow both libraries several times over.
    """
    config, batch, impl = args["config"], args["batch"], args["impl"]
    lazy, model = impl.endswith("lazy"), args.get("model", "esmm")
    split = None
    if impl.startswith("numpy"):
        _, step, split = _numpy_stepper(config, batch, lazy, model)
    else:
        step, _ = _torch_stepper(config, batch, lazy, args["threads"], model=model)
    for _ in range(args["warmup"]):
        step()
    times = []
    load = OtherLoad()
    for _ in range(args["reps"]):
        t = time.perf_counter()
        step(record=True)
        times.append(time.perf_counter() - t)
    return {"times": times, "split": split, "others": load.share()}


def worker_agree(args):
    """Copy esmm_np's initial weights into the PyTorch network: the losses must agree."""
    out = {}
    for config, kind in args["which"]:
        model, _, _ = _numpy_stepper(config, 256, False, kind)
        X, click, conversion = _batch(config, 256)
        np_loss = float(model.loss(X, click, conversion, train=False)[0])
        _, torch_loss = _torch_stepper(config, 256, False, args["threads"], np_model=model,
                                       model=kind)
        out[f"{config}-{kind}"] = (np_loss, torch_loss)
    return out


def worker_simulate(args):
    """Simulate the impressions (or draw random ones) and save the arrays fit() needs."""
    import numpy as np
    sys.path.insert(0, ROOT)
    t = time.perf_counter()
    try:
        from esmm_np.data.simulator import simulate
    except ImportError:
        simulate = None
    n = args["n"]
    if simulate is not None:
        ds = simulate(n, seed=0)
        X, click, conversion, source = ds.X, ds.click, ds.conversion, "esmm_np.data.simulator.simulate"
        assert tuple(ds.field_dims) == CONFIGS["notebook"][0]
    else:   # stand-in until the simulator exists: uniform ids, 4% CTR, 10% CVR
        rng = np.random.default_rng(0)
        X = np.stack([rng.integers(0, d, size=n, dtype=np.int32)
                      for d in CONFIGS["notebook"][0]], axis=1)
        click = (rng.random(n) < 0.04).astype(np.int8)
        conversion = click * (rng.random(n) < 0.10).astype(np.int8)
        source = "random numpy ids (simulator not importable)"
    np.savez(args["path"], X=X, click=click, conversion=conversion)
    return {"seconds": time.perf_counter() - t, "source": source,
            "dataset_bytes": int(X.nbytes + click.nbytes + conversion.nbytes)}


def worker_epoch(args):
    """Load the saved impressions and train one epoch with esmm_np.fit."""
    import numpy as np
    sys.path.insert(0, ROOT)
    import esmm_np
    data = np.load(args["path"])
    X, click, conversion = data["X"], data["click"], data["conversion"]
    field_dims, k, units = CONFIGS["notebook"]
    model = esmm_np.ESMM(field_dims, embed_dim=k, tower_units=units, dtype=np.float32, seed=0)
    t = time.perf_counter()
    load = OtherLoad()
    history = esmm_np.fit(model, X, click, conversion, epochs=1, batch_size=args["batch"],
                          optimizer=esmm_np.Adam(lr=1e-3, lazy=args["lazy"]), verbose=False)
    wall = time.perf_counter() - t
    return {"seconds": wall, "epoch_seconds": history["seconds"][0],
            "loss": history["loss"][0], "n": int(X.shape[0]), "others": load.share(),
            "dataset_bytes": int(X.nbytes + click.nbytes + conversion.nbytes)}


WORKERS = {"idle": worker_idle, "peak": worker_peak, "step": worker_step, "agree": worker_agree,
           "simulate": worker_simulate, "epoch": worker_epoch}


# ------------------------------------------------------------ launching


#: A timed part during which other processes used more than this share of the
#: cores is run again (up to ``--tries`` times); the quietest attempt is kept.
NOISY = 0.10
TRIES = [3]


def launch_timed(part, **args):
    """:func:`launch` after waiting for a quiet machine, retried while others' load is high."""
    best = None
    for _ in range(TRIES[0]):
        if TRIES[0] > 1:
            wait_for_quiet()
        r = launch(part, **args)
        if best is None or r["others"] < best["others"]:
            best = r
        if r["others"] <= NOISY:
            break
    return best


def launch(part, **args):
    """Run one part in a fresh worker; return its result with ``maxrss_mb``.

    The worker is the only child of a launcher process, so the launcher's
    RUSAGE_CHILDREN peak is exactly the worker's own peak resident memory.
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--launch", part, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"part {part} failed:\n{out.stdout}\n{out.stderr}")
    result, maxrss_kb = None, None
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        elif line.startswith("MAXRSS_KB "):
            maxrss_kb = int(line.split()[1])
    result["maxrss_mb"] = maxrss_kb / 1024   # Linux reports ru_maxrss in KiB
    return result


def _launcher_main(part, args_json):
    import resource
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", part, args_json])
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
    sys.exit(proc.returncode)


def _worker_main(part, args_json):
    result = WORKERS[part](json.loads(args_json))
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------ the report


def torch_available():
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def step_table(model, cases, impls, rounds, threads, peak, torch_version):
    """Time ``cases`` of ``model`` ("esmm" or "mmoe") for every impl, print the rows, return them."""
    header = (f"{'config':<9} {'batch':>5} {'Adam':<6} {'reps':>4} {'NumPy ms':>9} {'GFLOP/s':>8} "
              f"{'% peak':>6} {'PyTorch ms':>10} {'NumPy/PT':>8} {'mem NumPy':>9} {'mem PT':>7} "
              f"{'others':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for config, batch, warmup, reps in cases:
        times = {impl: [] for impl in impls}
        mem = {impl: 0.0 for impl in impls}
        others = {impl: 0.0 for impl in impls}
        split = {impl: {"loss": [], "update": []} for impl in impls if impl.startswith("numpy")}
        for _ in range(rounds):   # alternate, so that a burst of load hits every column
            for impl in impls:
                r = launch_timed("step", config=config, batch=batch, impl=impl, model=model,
                                 warmup=warmup, reps=reps, threads=threads)
                others[impl] = max(others[impl], r["others"])
                times[impl] += r["times"]
                mem[impl] = max(mem[impl], r["maxrss_mb"])
                if r["split"]:
                    for part in ("loss", "update"):
                        split[impl][part] += r["split"][part]
        flops = step_flops(config, batch, model)
        for name in ("dense", "lazy"):
            ms = median_ms(times[f"numpy-{name}"])
            gflops = flops / (ms / 1e3) / 1e9
            row = {"model": model, "config": config, "batch": batch, "adam": name,
                   "reps": rounds * reps,
                   "numpy_ms": ms, "numpy_min_ms": 1e3 * min(times[f"numpy-{name}"]),
                   "gflops": gflops, "pct_peak": 100 * gflops / peak["gflops"], "flops": flops,
                   "split_ms": {part: median_ms(ts) for part, ts in split[f"numpy-{name}"].items()},
                   "mem_numpy_mb": mem[f"numpy-{name}"],
                   "state_mb": 3 * 4 * n_parameters(config, model) / 2 ** 20}   # w, m, v float32
            torch_cols, mem_pt = f"{'-':>10} {'-':>8}", "-"
            if torch_version:
                t_ms = median_ms(times[f"torch-{name}"])
                row.update(torch_ms=t_ms, torch_min_ms=1e3 * min(times[f"torch-{name}"]),
                           ratio=ms / t_ms, mem_torch_mb=mem[f"torch-{name}"])
                torch_cols = f"{t_ms:>10.2f} {ms / t_ms:>8.2f}"
                mem_pt = f"{mem[f'torch-{name}']:.0f} MB"
            row["others"] = max(v for impl, v in others.items() if impl.endswith(name))
            rows.append(row)
            print(f"{config:<9} {batch:>5} {name:<6} {rounds * reps:>4} {ms:>9.2f} {gflops:>8.1f} "
                  f"{row['pct_peak']:>5.0f}% {torch_cols} {row['mem_numpy_mb']:>6.0f} MB "
                  f"{mem_pt:>7} {100 * row['others']:>5.0f}%")
    print()
    print("Where the NumPy step's time goes (medians, ms): forward + backward | Adam update")
    for row in rows:
        s = row["split_ms"]
        print(f"  {row['config']:<9} {row['batch']:>5} {row['adam']:<6} "
              f"{s['loss']:>7.2f} | {s['update']:>6.2f}   "
              f"(parameters + Adam moments: {row['state_mb']:.0f} MB)")
    return rows


def agreement(which, threads, results):
    """Copy esmm_np's initial weights into PyTorch's network(s) ``which``; print the worst gap."""
    agree = launch("agree", threads=threads, which=which)
    agree.pop("maxrss_mb")
    results.setdefault("agree", {}).update(agree)
    worst = max(abs(a - b) / abs(a) for a, b in agree.values())
    print(f"Same network: with esmm_np's initial weights copied in, PyTorch's loss equals "
          f"esmm_np's to {worst:.1e} relative (float32).")


def _finish(results, opts):
    """The closing lines (load after, what ``others`` means); the JSON file if asked."""
    load_after = os.getloadavg()
    results["load"] = (results.pop("load_before"), load_after)
    print()
    print(f"others: the share of the {len(os.sched_getaffinity(0))} cores that other processes "
          f"used while a part was timed (for a step row, the")
    print(f"busiest of its processes). Parts over {NOISY:.0%} were rerun, up to {TRIES[0]} "
          f"tries, keeping the quietest. Load average after: {load_after[0]:.2f}.")
    if opts.json:
        from esmm_np.data.files import write_json   # atomic, strict JSON (no NaN tokens)
        write_json(opts.json, results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions, one round, a 2048 peak matmul, 100,000 impressions")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if importable")
    parser.add_argument("--threads", type=int,
                        help="BLAS and PyTorch threads in the workers (default: what NumPy's BLAS "
                             "uses); 1 is far more robust when other processes share the cores")
    parser.add_argument("--tries", type=int,
                        help="runs of a timed part while other processes load the cores "
                             f"(more than {100 * NOISY:.0f}%% of them); the quietest is kept "
                             "(default 3, 1 with --quick)")
    parser.add_argument("--max-wait", type=float, default=600.0,
                        help="seconds the run may spend in all waiting for other processes to "
                             "quiet down before a timed part (default 600; none with --quick)")
    parser.add_argument("--only", choices=("esmm", "mmoe"),
                        help="run only these step rows (after the matmul peak): esmm's, or the "
                             "MMoE step's; skips the epoch")
    parser.add_argument("--json", help="also write the raw results to this file")
    opts = parser.parse_args()

    import numpy as np
    TRIES[0] = max(1, opts.tries or (1 if opts.quick else 3))
    WAIT_BUDGET[0] = opts.max_wait
    threads, blas = blas_threads()
    if opts.threads:   # the workers inherit these before NumPy or PyTorch start their pools
        threads = opts.threads
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    torch_version = None if opts.no_torch else torch_available()
    q = opts.quick
    load_before = os.getloadavg()
    print(f"esmm_np training benchmark, {time.strftime('%Y-%m-%d %H:%M')}"
          f"{'  (--quick)' if q else ''}")
    print(f"NumPy {np.__version__} ({blas}, {threads} threads); "
          + (f"PyTorch {torch_version} ({threads} threads)" if torch_version
             else "PyTorch not importable: its columns are skipped"))
    print(f"usable cores {len(os.sched_getaffinity(0))}; load average before "
          f"{load_before[0]:.2f} (other processes share these cores)")
    print()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": q, "numpy": np.__version__,
               "blas": blas, "threads": threads, "torch": torch_version,
               "load_before": load_before}

    idle = launch("idle")
    peak_n = 2048 if q else 4096
    peak = launch_timed("peak", n=peak_n, reps=3 if q else 6)
    results["idle"], results["peak"] = idle, peak
    print(f"float32 matmul peak ({peak_n} x {peak_n} @ {peak_n} x {peak_n}, best of "
          f"{3 if q else 6}): {peak['gflops']:.1f} GFLOP/s   "
          f"[peak memory {peak['maxrss_mb']:.0f} MB; others {100 * peak['others']:.0f}%]")
    print(f"memory floor (Python + NumPy + esmm_np imported): {idle['maxrss_mb']:.0f} MB")
    print()

    rounds = 1 if q else 2
    impls = ["numpy-dense", "numpy-lazy"] + (["torch-dense", "torch-lazy"] if torch_version else [])
    if opts.only in (None, "esmm"):   # ---- one training step
        cases = [("paper", 1024, 10, 20 if q else 40),
                 ("paper", 4096, 3, 5 if q else 12),
                 ("notebook", 1024, 20, 50 if q else 100)]
        print("One training step (forward, backward, Adam), float32: median of "
              f"{'the' if q else f'{rounds} rounds of'} reps after warm-up, NumPy and PyTorch")
        print("in separate processes, alternated. GFLOP/s counts the towers' matmul FLOPs only; "
              "% is of the matmul peak above.")
        results["step"] = step_table("esmm", cases, impls, rounds, threads, peak, torch_version)
        if torch_version:
            agreement([(c, "esmm") for c in CONFIGS], threads, results)
        print()
    if opts.only in (None, "mmoe"):   # ---- the MMoE step
        K, (e,), (t,) = MMOE["n_experts"], MMOE["expert_units"], MMOE["tower_units"]
        cases = [("paper", 1024, 10, 20 if q else 40), ("paper", 4096, 3, 5 if q else 12)]
        print(f"One MMoE training step (esmm_np.MMoE: {K} experts of {e} on the paper's input, a "
              f"softmax gate per task, towers {t}-1), as above; GFLOP/s: experts, gates, towers.")
        results["mmoe_step"] = step_table("mmoe", cases, impls, rounds, threads, peak,
                                          torch_version)
        if torch_version:
            agreement([("paper", "mmoe")], threads, results)
        print()
    if opts.only is not None:
        _finish(results, opts)
        return

    # ---- one epoch end to end
    n = 100_000 if q else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "impressions.npz")
        sim = launch("simulate", n=n, path=path)
        print(f"One epoch of esmm_np.fit over {n:,} impressions, notebook configuration, batch 1024")
        print(f"data: {sim['source']}, made in {sim['seconds']:.1f} s "
              f"[peak memory {sim['maxrss_mb']:.0f} MB]; the arrays fit() trains on "
              f"(X, click, conversion): {sim['dataset_bytes'] / 2 ** 20:.1f} MB")
        header = (f"{'Adam':<6} {'epoch s':>8} {'impressions/s':>14} {'final loss':>10} "
                  f"{'peak mem':>9} {'peak - data':>11} {'target':>7} {'others':>6}")
        print(header)
        print("-" * len(header))
        results["epoch"] = []
        for lazy in (False, True):
            e = launch_timed("epoch", path=path, batch=1024, lazy=lazy)
            data_mb = e["dataset_bytes"] / 2 ** 20
            over = e["maxrss_mb"] - data_mb
            e.update(adam="lazy" if lazy else "dense", over_data_mb=over)
            results["epoch"].append(e)
            print(f"{e['adam']:<6} {e['epoch_seconds']:>8.2f} {e['n'] / e['epoch_seconds']:>14,.0f} "
                  f"{e['loss']:>10.4f} {e['maxrss_mb']:>6.0f} MB {over:>8.0f} MB "
                  f"{'ok' if over <= 500 else 'OVER':>7} {100 * e['others']:>5.0f}%")
        print("target: peak resident memory <= the dataset's arrays + 500 MB "
              "(the peak includes the interpreter and NumPy, see the memory floor)")
    _finish(results, opts)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--launch":
        _launcher_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        main()
