"""The paper's experiments on a simulated world where the truth is known.

:func:`run_experiment` trains every method of the ESMM paper's Table 2 with
the same architecture and budget on the same simulated world, over several
seeds, and scores them on held-out impressions with
:func:`esmm_np.metrics.evaluate_esmm`: the paper's CVR AUC on clicked
impressions, the CVR AUC on the entire space that the paper could not
measure, the CTCVR AUC, and the bias of mean pCVR on unclicked impressions.
:func:`sparsity_sweep` repeats BASE and ESMM on shrinking shares of the
training data (the paper's Figure 3). ``esmm-np experiment`` runs both and
writes a Markdown table, JSON and a figure; ``esmm-np demo`` is a one-minute
version.
"""

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .baselines import METHODS, train_methods
from .files import dumps_strict, read_text, write_file
from .metrics import evaluate_esmm
from .simulator import simulate

#: The ESMM paper's Table 2 (public dataset), AUC in percent: (CVR AUC, CTCVR AUC).
PAPER_TABLE2 = {
    "BASE": (66.00, 62.07), "AMAN": (65.21, 63.53), "OVERSAMPLING": (67.18, 63.05),
    "UNBIAS": (66.65, 63.56), "DIVISION": (67.56, 63.62), "ESMM-NS": (68.25, 64.44),
    "ESMM": (68.56, 65.32),
}

#: Metrics reported per method, with their column titles.
COLUMNS = {
    "cvr_auc_clicked": "CVR AUC, clicked (paper's protocol)",
    "cvr_auc_entire": "CVR AUC, entire space",
    "ctcvr_auc": "CTCVR AUC",
    "pcvr_bias_unclicked": "pCVR bias, unclicked",
    "pcvr_bias_clicked": "pCVR bias, clicked",
}


@dataclass
class ExperimentConfig:
    """Everything one experiment run depends on.

    Every method gets the same architecture (``arch``) and the same budget
    (``train``: at most ``epochs`` passes over its own training rows, batch
    size, Adam's rate), and every network keeps the epoch with the lowest loss
    on its own validation rows (``validation_fraction`` of the training set).
    The world (``world``, ``world_seed``) and its train/test split are fixed;
    ``seeds`` vary the networks' initialisation, shuffling and sampling.
    """

    n_impressions: int = 1_000_000
    test_fraction: float = 0.25
    world: dict = field(default_factory=dict)        # extra simulate() knobs
    world_seed: int = 0
    seeds: tuple = (0, 1, 2)
    methods: tuple = METHODS
    arch: dict = field(default_factory=lambda: dict(embed_dim=8, tower_units=(64, 32),
                                                    dtype="float32"))
    train: dict = field(default_factory=lambda: dict(epochs=4, batch_size=512, lr=2e-3))
    validation_fraction: float = 0.1
    aman_rate: float = 0.5
    oversampling_k: int = 5
    sweep_fractions: tuple = (0.05, 0.1, 0.25, 0.5, 1.0)
    sweep_methods: tuple = ("BASE", "ESMM")


def quick_config():
    """A configuration small enough for the test suite (tens of seconds)."""
    return ExperimentConfig(n_impressions=80_000, seeds=(0,),
                            arch=dict(embed_dim=4, tower_units=(16,), dtype="float32"),
                            train=dict(epochs=2, batch_size=256, lr=3e-3),
                            sweep_fractions=(0.25, 1.0))


def demo_config():
    """The ``esmm-np demo`` configuration: every method, one seed, under a minute.

    The world of the full experiment, so the demo is its first seed.
    """
    return ExperimentConfig(seeds=(0,), sweep_fractions=())


def make_world(cfg):
    """Simulate the world of ``cfg`` and split it; returns (train, test)."""
    data = simulate(cfg.n_impressions, seed=cfg.world_seed, **cfg.world)
    return data.split(cfg.test_fraction, seed=cfg.world_seed)


def _arch(cfg):
    arch = dict(cfg.arch)
    arch["dtype"] = np.dtype(arch.get("dtype", "float64"))
    return arch


def _score(method, test):
    """evaluate_esmm on the test set, plus DIVISION's share of pCVR above 1."""
    pred = method.predict(test.X, test.dense)
    scores = evaluate_esmm({k: pred[k] for k in ("p_ctr", "p_cvr", "p_ctcvr")}, test)
    if "p_cvr_raw" in pred:
        raw = pred["p_cvr_raw"]
        scores["pcvr_above_1"] = float(np.mean(raw > 1))
        scores["pcvr_max"] = float(raw.max())
    return scores, pred


def run_experiment(cfg, progress=print, data=None):
    """Train every method over every seed and score it on the held-out impressions.

    Parameters
    ----------
    cfg : ExperimentConfig
    progress : callable(str) or None
        Receives one line per network trained, with elapsed time.
    data : (train, test) Datasets, optional
        Defaults to :func:`make_world` of ``cfg``.

    Returns
    -------
    dict with ``"runs"`` (method -> list of per-seed score dicts),
    ``"summary"`` (method -> metric -> (mean, std)), ``"world"`` (counts and
    rates of the training set) and ``"config"``.
    """
    say = progress or (lambda s: None)
    start = time.perf_counter()
    train, test = make_world(cfg) if data is None else data
    world = _describe(train, test)
    say(f"world: {world['n_train']:,} training and {world['n_test']:,} test impressions, "
        f"CTR {world['ctr']:.3f}, CVR given click {world['cvr']:.3f}")
    runs = {m: [] for m in cfg.methods}
    for i, seed in enumerate(cfg.seeds):
        def note(name, i=i, seed=seed):
            say(f"[seed {seed}, {i + 1}/{len(cfg.seeds)}] training {name} "
                f"({time.perf_counter() - start:.0f} s elapsed)")
        methods = train_methods(train, cfg.methods, arch=_arch(cfg), train=cfg.train, seed=seed,
                                aman_rate=cfg.aman_rate, oversampling_k=cfg.oversampling_k,
                                validation_fraction=cfg.validation_fraction, progress=note)
        for name in cfg.methods:
            runs[name].append(_score(methods[name], test)[0])
    say(f"done in {time.perf_counter() - start:.0f} s")
    return {"config": _config_dict(cfg), "world": world, "runs": runs,
            "summary": summarise(runs)}


def sparsity_sweep(cfg, progress=print, data=None):
    """BASE and ESMM (``cfg.sweep_methods``) trained on shrinking shares of the training set.

    The paper's Figure 3: for each fraction in ``cfg.sweep_fractions`` the
    training impressions are subsampled (seeded, nested: a smaller share is a
    subset of a larger one) and each method is scored on the same test set.

    Returns
    -------
    dict fraction -> method -> list of per-seed score dicts
    """
    say = progress or (lambda s: None)
    train, test = make_world(cfg) if data is None else data
    out = {}
    for frac in cfg.sweep_fractions:
        out[frac] = {m: [] for m in cfg.sweep_methods}
        for seed in cfg.seeds:
            order = np.random.default_rng(seed).permutation(len(train))
            part = train.subset(np.sort(order[:int(round(frac * len(train)))]))
            say(f"sweep: {frac:.0%} of the training data, seed {seed}")
            methods = train_methods(part, cfg.sweep_methods, arch=_arch(cfg), train=cfg.train,
                                    seed=seed, validation_fraction=cfg.validation_fraction)
            for name in cfg.sweep_methods:
                out[frac][name].append(_score(methods[name], test)[0])
    return out


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
    return {"n_train": len(train), "n_test": len(test), "ctr": float(train.click.mean()),
            "cvr": float(train.conversion.sum() / max(clicks, 1)),
            "true_cvr_clicked": float(test.true_cvr[test.click == 1].mean()),
            "true_cvr_unclicked": float(test.true_cvr[test.click == 0].mean())}


def _config_dict(cfg):
    d = asdict(cfg)
    d["arch"] = {k: (str(v) if k == "dtype" else v) for k, v in d["arch"].items()}
    return d


# ------------------------------------------------------------------ output

def format_table(result, paper=True):
    """The comparison as a Markdown table (AUC in percent, bias in percentage points)."""
    summary = result["summary"]
    n_seeds = len(next(iter(result["runs"].values())))
    pm = " ± " if n_seeds > 1 else ""

    def cell(metric, name, scale=100.0):
        mean, std = summary[name][metric]
        if np.isnan(mean):
            return "n/a"
        return f"{scale * mean:.2f}" + (f"{pm}{scale * std:.2f}" if pm else "")

    head = ["Method"] + list(COLUMNS.values())
    if paper:
        head += ["paper CVR AUC", "paper CTCVR AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary:
        row = [name] + [cell(m, name) for m in COLUMNS]
        if paper:
            row += [f"{v:.2f}" for v in PAPER_TABLE2[name]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def division_note(result):
    """One sentence on DIVISION's pCVR above 1, or '' if DIVISION was not run."""
    runs = result["runs"].get("DIVISION")
    if not runs:
        return ""
    share = np.mean([r["pcvr_above_1"] for r in runs])
    top = max(r["pcvr_max"] for r in runs)
    return (f"DIVISION's raw pCVR = pCTCVR / pCTR exceeded 1 on {100 * share:.2f}% of test "
            f"impressions (largest value {top:.2f}); the table scores it clipped to 1.")


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

    md = ["# ESMM and its baselines on a simulated world\n",
          f"{result['world']['n_train']:,} training impressions, "
          f"{result['world']['n_test']:,} test impressions, "
          f"{len(next(iter(result['runs'].values())))} seed(s). AUC in percent, bias in "
          "percentage points (mean pCVR minus mean true CVR), mean ± std over seeds.\n",
          format_table(result), "", division_note(result)]
    if sweep:
        md += ["", "## Sparsity sweep (entire-space CVR AUC, percent)", "", sweep_table(sweep)]
    put("table.md", "\n".join(md) + "\n")
    payload = dict(result)
    if sweep:
        payload["sweep"] = {str(k): v for k, v in sweep.items()}
    put("results.json", dumps_strict(payload, indent=1))   # NaN -> null, with the reason
    if figure:
        path = os.path.join(out_dir, "figure.png")
        write_file(path, lambda f: plot(result, sweep, f))
        written.append(path)
    return written


DOC_START, DOC_END = "<!-- experiment:start -->", "<!-- experiment:end -->"


def write_docs(result, sweep, path, command):
    """Replace the generated section of a Markdown file with this run's tables.

    The section sits between the markers :data:`DOC_START` and :data:`DOC_END`,
    so prose around it is kept and every number inside it comes from the run.
    """
    text = read_text(path)
    if DOC_START not in text or DOC_END not in text:
        raise ValueError(f"{path} has no {DOC_START} ... {DOC_END} section to fill")
    w = result["world"]
    body = [DOC_START,
            f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}: "
            f"{w['n_train']:,} training and {w['n_test']:,} test impressions "
            f"(CTR {100 * w['ctr']:.2f}%, CVR given click {100 * w['cvr']:.2f}%; mean true CVR "
            f"{100 * w['true_cvr_clicked']:.2f}% on clicked and "
            f"{100 * w['true_cvr_unclicked']:.2f}% on unclicked test impressions), "
            f"{len(result['config']['seeds'])} training seeds, mean ± std.",
            "", format_table(result), "", division_note(result)]
    if sweep:
        body += ["", "Sparsity sweep, entire-space CVR AUC (percent), mean over seeds:", "",
                 sweep_table(sweep)]
    body.append(DOC_END)
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    write_file(path, head + "\n".join(body) + tail)


def sweep_table(sweep):
    """The sparsity sweep as a Markdown table of entire-space CVR AUC (percent, mean over seeds)."""
    methods = list(next(iter(sweep.values())))
    lines = ["| share of training data | " + " | ".join(methods) + " |",
             "|" + "---|" * (len(methods) + 1)]
    for frac, per in sweep.items():
        cells = [f"{100 * np.mean([r['cvr_auc_entire'] for r in per[m]]):.2f}" for m in methods]
        lines.append(f"| {frac:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result, sweep, path):
    """The comparison as a figure: AUCs, unclicked bias, and the sparsity sweep."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = list(summary)
    x = np.arange(len(names))
    ncols = 3 if sweep else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.2))
    ax = axes[0]
    for off, metric, label in ((-0.2, "cvr_auc_clicked", "clicked impressions (paper)"),
                               (0.2, "cvr_auc_entire", "entire space (ground truth)")):
        means = [100 * summary[n][metric][0] for n in names]
        errs = [100 * summary[n][metric][1] for n in names]
        ax.bar(x + off, means, 0.4, yerr=errs, label=label)
    lo = np.nanmin([100 * summary[n][m][0] for n in names
                    for m in ("cvr_auc_clicked", "cvr_auc_entire")] + [np.inf])
    if np.isfinite(lo):   # every AUC is NaN when the test set has a single class
        ax.set_ylim(lo - 3, None)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("CVR AUC (%)")
    ax.set_title("Ranking: CVR AUC")
    ax.legend(fontsize=8)
    ax = axes[1]
    bias = [100 * summary[n]["pcvr_bias_unclicked"][0] for n in names]
    bars = ax.bar(x, bias, color=["tab:red" if b > 0 else "tab:blue" for b in bias])
    ax.bar_label(bars, fmt="%+.1f", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("mean pCVR − mean true CVR (points)")
    ax.set_title("Calibration on unclicked impressions (0 is right)")
    if sweep:
        ax = axes[2]
        fracs = sorted(sweep)
        for m in next(iter(sweep.values())):
            ax.plot([100 * f for f in fracs],
                    [100 * np.mean([r["cvr_auc_entire"] for r in sweep[f][m]]) for f in fracs],
                    marker="o", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("share of training data (%)")
        ax.set_ylabel("CVR AUC, entire space (%)")
        ax.set_title("Data sparsity")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
