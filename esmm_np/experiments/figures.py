"""The figures: the comparison of one run, and the regime map."""

import numpy as np

from .scoring import sweep_mean, sweep_metric


def plot(result, sweep, path):
    """The comparison as a figure (``path``: a file name or a binary file object).

    Panels: CVR AUCs, each method's difference to ESMM with its interval,
    the bias on unclicked impressions, and the sparsity sweep.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

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
    shown = ((-0.2, "cvr_soft_auc_clicked", "soft, clicked"),
             (0.2, "cvr_soft_auc_entire", "soft, entire space"))
    if not any(metric in iv for _, metric, _ in shown):     # no ground truth: 0/1 labels
        shown = ((-0.2, "cvr_auc_clicked", "CVR AUC, clicked"), (0.2, "ctcvr_auc", "CTCVR AUC"))
    for off, metric, label in shown:
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
    n_worlds = len(result.get("worlds", [0]))
    ax.set_title(f"Difference to {ref}, 95% interval"
                 + (f" across {n_worlds} worlds" if n_worlds > 1 else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax = axes[2]
    bias = [100 * summary[n]["pcvr_bias_unclicked"][0] for n in names]
    known = [b for b in bias if not np.isnan(b)]
    bars = ax.bar(x, np.nan_to_num(bias), color=["tab:red" if b > 0 else "tab:blue"
                                                 for b in bias])
    ax.bar_label(bars, labels=["n/a" if np.isnan(b) else f"{b:+.2f}" for b in bias], fontsize=7)
    if not known:
        ax.text(0.5, 0.75, "no ground truth in these test rows", transform=ax.transAxes,
                ha="center", va="center")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("mean pCVR − mean true CVR (points)")
    ax.set_title("Calibration on unclicked (0 is right)")
    if sweep:
        ax = axes[3]
        fracs = sorted(sweep, key=float)
        shown = sweep_metric(sweep)
        shares = [100 * float(f) for f in fracs]
        for m in next(iter(sweep.values()))["runs"]:
            ax.plot(shares, [sweep_mean(sweep[f], m, shown) for f in fracs], marker="o", label=m)
        ax.axhline(50, color="black", lw=0.8, ls=":")
        ax.set_ylim(40, 100)
        ax.set_xscale("log")
        ax.set_xticks(shares, [f"{s:g}%" for s in shares])   # the shares themselves, as percent
        ax.xaxis.set_minor_formatter(NullFormatter())         # no "3x10^1" minor labels
        ax.set_xlabel("share of training data (log scale)")
        ax.set_ylabel("CVR AUC, " + ("entire space" if shown == "cvr_auc_entire"
                                     else "clicked impressions") + " (%)")
        ax.set_title("Data sparsity")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


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
            excl = e["low"] > 0 or e["high"] < 0
            star = "*" if e.get("starred", excl) else ("°" if excl else "")
            text[i, j] = f"{100 * e['diff']:+.2f}{star}\n[{100 * e['low']:+.2f}, {100 * e['high']:+.2f}]"
        lim = max(1.0, np.nanmax(np.abs(grid)))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
        for (i, j), t in text.items():
            dark = abs(grid[i, j]) > 0.55 * lim      # the colour map's ends are navy and red
            ax.text(j, i, t, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
        ax.set_xticks(range(len(cvrs)), [f"{100 * c:g}%" for c in cvrs])
        ax.set_yticks(range(len(rhos)), [str(r) for r in rhos])
        ax.set_xlabel("CVR given click")
        ax.set_ylabel("rho (shared structure of CTR and CVR)")
        ax.set_title(f"ESMM − BASE, {title}", fontsize=9)
        plt.colorbar(im, ax=ax, label="AUC points (* : resolved, ° : under the noise floor)")
    if fig is not None:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100, format="png")
            plt.close(fig)
    return axes
