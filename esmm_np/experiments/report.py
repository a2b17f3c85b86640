"""What a run prints and writes: the tables, the notes, results.json and the docs section."""

import os
import time

import numpy as np

from .config import COLUMNS, NULL_MEANS, PAPER_TABLE2
from .family import DOMINANT, FAMILY_METHODS, POLARISED, polarised
from .figures import plot
from .scoring import TABLE_INTERVALS, sweep_mean, sweep_metric, world_interval
from ..data.files import dumps_strict, read_text, write_file


SHORT = {"cvr_auc_clicked": "CVR AUC clicked", "cvr_soft_auc_clicked": "soft CVR AUC clicked",
         "cvr_auc_entire": "CVR AUC entire", "cvr_soft_auc_entire": "soft CVR AUC entire",
         "ctcvr_auc": "CTCVR AUC", "ctr_auc": "CTR AUC", "ctr_soft_auc": "soft CTR AUC"}

#: The table's columns: the paper's (:data:`~esmm_np.experiments.config.COLUMNS`) and the
#: CTR side (n/a for a method without pCTR), since the seesaw is a trade between the tasks.
TABLE_COLUMNS = {**COLUMNS, "ctr_auc": "CTR AUC", "ctr_soft_auc": "soft CTR AUC"}


#: What each method trains on and how its pCVR is made (printed by the demo, shown in notebook 3).
GLOSSARY = {
    "BASE": ("clicked impressions, label = conversion",
             "a CVR network; pCTCVR = pCTR × pCVR with a separate CTR network"),
    "AMAN": ("BASE's rows plus a share of the unclicked impressions labelled 0 (share chosen "
             "on the clicked validation rows)", "a CVR network, as BASE"),
    "OVERSAMPLING": ("BASE's rows, every converted row present k times (k chosen on "
                     "validation)", "a CVR network, as BASE"),
    "UNBIAS": ("BASE's rows, each kept with probability 1 − pCTR", "a CVR network, as BASE"),
    "UNBIAS-IPS": ("BASE's rows drawn with probability ∝ 1 / pCTR (inverse propensity)",
                   "a CVR network, as BASE"),
    "DIVISION": ("a CTR network and a CTCVR network, each on all impressions",
                 "pCTCVR / pCTR (can exceed 1; clipped for scoring)"),
    "ESMM-NS": ("all impressions: the CTR loss and the CTCVR loss", "its CVR tower, with a "
                "separate embedding table per tower; pCTCVR = pCTR × pCVR"),
    "ESMM": ("all impressions: the CTR loss and the CTCVR loss",
             "its CVR tower, embeddings shared with the CTR tower; pCTCVR = pCTR × pCVR"),
    "CTR-ONLY": ("nothing of its own (the shared CTR network)",
                 "none: pCTR alone stands in for pCTCVR (a reference row)"),
    "ESCM2-IPS": ("ESMM's losses plus a CVR loss on clicked rows weighted by 1 / pCTR",
                  "its CVR tower, as ESMM"),
    "ESCM2-DR": ("as ESCM2-IPS, with an imputation tower that predicts the CVR error "
                 "(doubly robust)", "its CVR tower, as ESMM"),
}


#: The part of a glossary entry that says a knob is chosen on validation, per method,
#: with the configuration field that holds the candidates.
CHOSEN = {"AMAN": ("(share chosen on the clicked validation rows)", "aman_rate", "share"),
          "OVERSAMPLING": ("(k chosen on validation)", "oversampling_k", "k")}


def glossary_table(methods=None, cfg=None):
    """The methods as Markdown: what each trains on and how its pCVR is made.

    With ``cfg`` (an ExperimentConfig), a knob that the run fixes instead of
    choosing on validation (one candidate only) is named with its value.
    """
    names = [m for m in (methods or GLOSSARY) if m in GLOSSARY]
    lines = ["| method | trains on | pCVR |", "|---|---|---|"]
    for m in names:
        trains_on, pcvr = GLOSSARY[m]
        if cfg is not None and m in CHOSEN:
            phrase, knob, what = CHOSEN[m]
            values = tuple(getattr(cfg, knob))
            if len(values) == 1:
                trains_on = trains_on.replace(phrase, f"({what} fixed at {values[0]:g} in this run)")
        lines.append(f"| {m} | {trains_on} | {pcvr} |")
    return "\n".join(lines)


def caveat(result):
    """'' for a full run; otherwise one line saying the numbers are not the table's."""
    label = result.get("label", "full")
    if label == "full":
        return ""
    n_worlds = len(result.get("worlds", [0]))
    where = f" in each of {n_worlds} worlds" if n_worlds > 1 else ""
    return (f"NOTE: this is a {label} run ({result['world']['n_train']:,} training impressions"
            f"{where}, {len(result['config']['seeds'])} seed(s)); its numbers are not those of the "
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

    head = ["Method"] + list(TABLE_COLUMNS.values())
    if paper:
        head += ["paper CVR AUC", "paper CTCVR AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary:
        row = [name] + [cell(m, name) for m in TABLE_COLUMNS]
        if paper:
            row += [f"{v:.2f}" for v in PAPER_TABLE2[name]] if name in PAPER_TABLE2 else ["", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


#: A difference is called real only when its interval excludes zero and it is at least
#: this many times the larger adjacent-validation noise of the two methods compared.
NOISE_MULTIPLE = 2.0

#: The legend of the tables' marks.
MARKS = ("* = the interval excludes zero and the difference is at least "
         f"{NOISE_MULTIPLE:g} times the larger adjacent-validation noise of the two methods "
         "(the noise line above); ° = the interval excludes zero but the difference is "
         "under that floor, so it is not called a difference")


def format_interval(entry, floor=0.0):
    """'+1.23 [+0.40, +2.05] *' in points.

    ``*`` when the difference is :func:`resolved` against ``floor`` (a
    fraction, as ``entry``), ``°`` when its interval excludes zero but it is
    smaller than ``floor``.
    """
    d, lo, hi = (100 * entry[k] for k in ("diff", "diff_low", "diff_high"))
    if np.isnan(d):
        return "n/a"
    if np.isnan(lo) or np.isnan(hi):
        return f"{d:+.2f} [n/a]"
    mark = " *" if resolved(entry, floor) else (" °" if excludes_zero(entry) else "")
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" + mark


def excludes_zero(entry):
    """Does the interval of a difference exclude zero?"""
    lo, hi = entry["diff_low"], entry["diff_high"]
    return bool(lo > 0 or hi < 0)


def resolved(entry, floor=0.0):
    """Is a difference called real (the star): its interval excludes zero and |diff| >= floor?"""
    return excludes_zero(entry) and bool(abs(entry["diff"]) >= floor)


def noise_floor(networks, name, reference):
    """:data:`NOISE_MULTIPLE` times the larger mean adjacent-validation noise of two methods.

    A fraction (AUC units, as the intervals); 0 when neither has a probe.
    """
    vals = noise_values(networks)
    means = [np.mean(vals[m]) / 100 for m in (name, reference) if m in vals]
    return NOISE_MULTIPLE * max(means) if means else 0.0


def noise_floors(result):
    """method -> its :func:`noise_floor` against the run's reference."""
    ref = result.get("reference", "ESMM")
    nets = result.get("networks", {})
    return {m: noise_floor(nets, m, ref) for m in result.get("summary", nets) if m != ref}


def interval_table(result):
    """Each method minus the reference (ESMM), with 95% paired bootstrap intervals over test rows."""
    iv = result["intervals"]
    ref = result.get("reference", "ESMM")
    metrics = [m for m in TABLE_INTERVALS if iv.get(m)]
    names = [n for n in result["summary"] if n != ref]
    lines = ["| Method − " + ref + " | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    floors = noise_floors(result)
    for name in names:
        cells = [format_interval(iv[m][name], floors.get(name, 0.0)) if name in iv[m] else "n/a"
                 for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unresolved_note(result, metrics=("cvr_soft_auc_clicked", "cvr_soft_auc_entire")):
    """Which methods this run cannot tell apart from the reference (not :func:`resolved`)."""
    iv, ref = result.get("intervals", {}), result.get("reference", "ESMM")
    floors = noise_floors(result)
    parts = []
    for metric in metrics:
        if metric not in iv:
            continue
        tied = [n for n, e in iv[metric].items()
                if n != ref and not resolved(e, floors.get(n, 0.0))]
        if tied:
            parts.append(f"on {SHORT[metric]}: {', '.join(tied)}")
    if not parts:
        return ""
    return (f"This run cannot order these against {ref} (their intervals include zero, or "
            "the difference is under the noise floor), so it says nothing about which is "
            "ahead: " + "; ".join(parts) + ".")


def order_marks(result):
    """method -> metric -> how this run reads its difference to the reference.

    ``"*"`` (:func:`resolved` against the pair's noise floor), ``"°"`` (the
    interval excludes zero but the difference is under the floor) or ``"?"``
    (the interval includes zero: the run cannot order the two); metrics where
    the method has no difference (CTR-ONLY has no pCVR) are left out.
    """
    iv, ref = result.get("intervals", {}), result.get("reference", "ESMM")
    floors = noise_floors(result)
    out = {}
    for metric in TABLE_INTERVALS:
        for name, e in iv.get(metric, {}).items():
            if name == ref or np.isnan(e["diff"]):
                continue
            mark = ("*" if resolved(e, floors.get(name, 0.0))
                    else "°" if excludes_zero(e) else "?")
            out.setdefault(name, {})[metric] = mark
    return out


def budget_count(result, sweep=None):
    """(networks that trained the fixed budget because validation held too few positives, all)."""
    sources = [result.get("networks", {})] + [c["networks"] for c in (sweep or {}).values()]
    recs = [rec for nets in sources for per in nets.values() for run in per for rec in run.values()]
    return sum(rec.get("stopped") == "budget" for rec in recs), len(recs)


def quick_note(result, sweep=None):
    """For a quick run: per method and column, starred, ° or not ordered; and what that means.

    '' for any other run. Everything in it is read from ``result`` (its
    intervals, noise floors and networks), so it says what this run resolved,
    not what a full run would.
    """
    if result.get("label") != "quick":
        return ""
    ref = result.get("reference", "ESMM")
    marks = order_marks(result)
    lines = [f"Quick run: what it can order against {ref} (* starred, ° interval excludes zero "
             "but under the noise floor, ? cannot order):", ""]
    for name, per in marks.items():
        groups = {k: [SHORT[m] for m, v in per.items() if v == k] for k in ("*", "°", "?")}
        text = "; ".join(f"{k} {', '.join(v)}" for k, v in groups.items() if v)
        lines.append(f"- {name}: {text}")
    n_star = sum(v == "*" for per in marks.values() for v in per.values())
    n_all = sum(len(per) for per in marks.values())
    fixed, n_nets = budget_count(result, sweep)
    lines += ["", f"{fixed} of its {n_nets} networks trained the fixed budget (their validation "
              "rows held too few positives to choose). The quick configuration is for smoke "
              "tests: it stars "
              f"{n_star} of its {n_all} comparisons, and for the other {n_all - n_star} "
              "(° and ? above) it does not reproduce whatever ordering the full run finds; "
              "its starred ones hold in its own small worlds only."]
    return "\n".join(lines)


def space_pairs(result):
    """(X, X-CLICKED) pairs of family methods that both ran in ``result`` over several worlds."""
    if not result.get("across_worlds"):
        return []
    names = set(result.get("summary", {}))
    return [(m, f"{m}-CLICKED") for m in FAMILY_METHODS
            if m in names and f"{m}-CLICKED" in names]


def pair_intervals(result):
    """(X, X-CLICKED) -> metric -> across-world interval of X − X-CLICKED.

    Each world's X − X-CLICKED is its X − ESMM minus its X-CLICKED − ESMM
    (the same world, seeds and test rows), so the t interval over worlds is
    built exactly as the tables' intervals against ESMM are.
    """
    aw = result.get("across_worlds", {})
    out = {}
    for x, xc in space_pairs(result):
        out[(x, xc)] = {}
        for metric, per in aw.items():
            if x in per and xc in per:
                diffs = np.subtract(per[x]["per_world"], per[xc]["per_world"])
                out[(x, xc)][metric] = world_interval(diffs)
    return out


def pair_table(result):
    """X − X-CLICKED per family architecture as Markdown (see :func:`pair_intervals`)."""
    ivs = pair_intervals(result)
    metrics = [m for m in TABLE_INTERVALS if any(m in v for v in ivs.values())]
    lines = ["| X − X-CLICKED | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    nets = result.get("networks", {})
    for (x, xc), per in ivs.items():
        floor = noise_floor(nets, x, xc)
        cells = [format_interval(per[m], floor) if m in per else "n/a" for m in metrics]
        lines.append(f"| {x} − {xc} | " + " | ".join(cells) + " |")
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
    budget = []
    for where, networks in [("table", result["networks"])] + [
            (f"sweep {float(frac):.0%}", cell["networks"]) for frac, cell in (sweep or {}).items()]:
        budget += [(where, m, net, rec.get("val_positives")) for m, per_seed in networks.items()
                   for nets in per_seed for net, rec in nets.items()
                   if rec["stopped"] == "budget"]
    fixed = ""
    if budget:
        where = sorted({f"{w}: {m} {net}" for w, m, net, _ in budget})
        fewest = min(b[3] for b in budget)
        fixed = (f" {len(budget)} had fewer validation positives than the stated minimum "
                 f"({fewest} at the fewest), so their validation did not pick the point: they "
                 f"trained the fixed budget of min_steps (stopped=\"budget\"): "
                 f"{'; '.join(where[:8])}{' ...' if len(where) > 8 else ''}.")
    if not cap:
        rest = n - len(budget)
        return (f"{'All ' if not budget else ''}{rest} networks stopped on patience (none on "
                f"the step cap).{fixed}{early}")
    listed = "; ".join(f"{w}: {m} seed #{i} {net}" for w, m, i, net in cap[:8])
    return (f"WARNING: {len(cap)} of {n} networks stopped on the step cap, not on patience "
            f"({listed}{' ...' if len(cap) > 8 else ''}); their numbers may be undertrained."
            f"{fixed}{early}")


def noise_values(networks):
    """method -> adjacent-validation noise of each of its CVR networks, in AUC points."""
    out = {}
    for m, per_run in networks.items():
        vals = [100 * rec["adjacent_noise"] for nets in per_run for rec in nets.values()
                if rec.get("adjacent_noise") is not None]
        if vals:
            out[m] = vals
    return out


def noise_note(networks, what="table"):
    """One sentence: how much the kept point's test metric moves between adjacent validations."""
    vals = noise_values(networks)
    if not vals:
        return ""
    parts = ", ".join(f"{m} {np.mean(v):.2f} (max {np.max(v):.2f})" for m, v in vals.items())
    return (f"Adjacent-validation noise ({what}): how far a probe on 20,000 test rows (soft "
            "CVR AUC against the true CVR; without ground truth the clicked CVR AUC) moves "
            "between the kept validation and its neighbours, mean |change| over the networks "
            f"in points (it measures, it never chooses): {parts}.")


#: Methods whose networks have two outputs and stop on L_ctcvr, in the order they are named.
TWO_TOWER = ("ESMM", "ESMM-NS", "ESCM2-IPS", "ESCM2-DR") + FAMILY_METHODS


def stopping_rule(result):
    """One sentence naming the stopping rule of a run."""
    t = result.get("effort") or result["config"]["train"]     # the rule the run applied
    if t.get("criterion", "loss") != "measured":
        return ("Stopping: every network on its full validation loss, constant learning rate.")
    methods = result.get("config", {}).get("methods") or TWO_TOWER
    two = [m for m in TWO_TOWER if m in methods] or list(TWO_TOWER[:4])
    single = ("; single-task networks (the CVR and CTR networks of the click-space methods "
              "and of DIVISION) the lowest loss of their one task"
              if any(m not in TWO_TOWER for m in methods) else "")
    k = int(t.get("average", 1))
    averaged = (f"each validation scores, and the run keeps, the mean of the weights at the "
                f"last {k} validations; " if k > 1 else "")
    return (f"Stopping: the two-output networks ({', '.join(two)}) keep the validation point "
            f"with the lowest CTCVR log loss (L_ctcvr){single}; {averaged}validation every "
            f"{t['eval_every']:,} steps (or every epoch if shorter), patience "
            f"{t['patience']}, at least {t['min_steps']:,} steps (two epochs of the training "
            f"set at most), cap {t['max_steps']:,}; the learning rate halves every "
            f"{t['half_life']:,} steps; a validation set with fewer than "
            f"{t.get('min_val_positives', 0)} positives does not choose (the network trains "
            f"the fixed budget of {t['min_steps']:,} steps instead).")


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
    per = "network (world and seed)" if len(result.get("worlds", [0])) > 1 else "seed"
    return (f"DIVISION's raw pCVR = pCTCVR / pCTR exceeded 1 on {100 * share:.3g}% of test "
            f"impressions (about {count:,.0f} per {per}; largest value {top:.2f}); the table "
            "scores it clipped to 1.")


def report_text(result, sweep=None):
    """Everything printed after a run, as Markdown."""
    w = result["world"]
    n_seeds = len(result["config"]["seeds"])
    parts = []
    if caveat(result):
        parts += [caveat(result), ""]
    tested = ""
    n_worlds = len(result.get("worlds", [0]))
    if "test_clicks" in w:      # the first world's counts (each world has its own)
        first = "the first world: " if n_worlds > 1 else ""
        tested = (f" ({first}{w['test_clicks']:,} test clicks, "
                  f"{w['test_conversions']:,} test conversions)")
    each = " each" if n_worlds > 1 else ""
    over = "worlds and training seeds" if n_worlds > 1 else "training seeds"
    spread = n_worlds * n_seeds > 1
    parts += [f"{n_worlds} world(s) of {w['n_train']:,} training and {w['n_test']:,} test "
              f"impressions{each}{tested}, {n_seeds} training seed(s) in each. AUC in percent, "
              "bias in percentage points (mean pCVR minus mean true CVR); mean"
              + (f" ± std over {over}." if spread else "."), "", format_table(result), ""]
    for note in result.get("notes", []) + [stopping_rule(result) if "train" in
                                           result.get("config", {}) else "",
                                           noise_note(result.get("networks", {}))]:
        if note:
            parts += [note, ""]
    if result.get("intervals"):
        how = result.get("interval_construction", "")
        if n_worlds > 1:
            what = (f"95% intervals across {n_worlds} worlds ({how})")
        else:
            what = (f"95% paired bootstrap intervals over test rows of one world "
                    f"({result['config']['n_boot']} replicates; they do not cover the "
                    "world-to-world spread)")
        parts += [f"Differences to {result.get('reference', 'ESMM')} in points, with {what}; "
                  + MARKS + ":", "", interval_table(result), ""]
        note = unresolved_note(result)
        if note:
            parts += [note, ""]
        note = quick_note(result, sweep)
        if note:
            parts += [note, ""]
        pairs = space_pairs(result)
        if pairs:
            parts += ["The entire-space product against the clicked-space CVR loss for the same "
                      "architecture (X − X-CLICKED in points, the same construction and marks, "
                      "the floor from the two methods' noise):", "", pair_table(result), ""]
    for note in (choice_note(result), division_note(result),
                 effort_note(result, sweep) if "networks" in result else ""):
        if note:
            parts += [note, ""]
    if result.get("gates"):
        parts += ["Gates of the MMoE and PLE networks on the test impressions (mean weight per "
                  "expert over the rows; H / log K: the rows' mean gate entropy over its "
                  "largest value, 0 when every row uses one expert, 1 when every row weighs "
                  f"all alike; mean [min, max] over {over}):", "", gate_table(result), "",
                  gate_note(result), ""]
    if sweep:
        how = ("intervals across worlds" if n_worlds > 1
               else "paired bootstrap intervals over test rows")
        parts += [f"Sparsity sweep (CVR AUC in percent, mean over {over}; last columns: "
                  f"ESMM − BASE with 95% {how}; marks as above, each share against its own "
                  "noise line below):", "", sweep_table(sweep), ""]
        for frac, cell in sweep.items():
            note = noise_note(cell["networks"], f"sweep share {float(frac):.0%}")
            if note:
                parts += [note, ""]
    return "\n".join(parts).rstrip() + "\n"


def gate_table(result):
    """The gates of :func:`~esmm_np.experiments.runner.gates_by_run` as Markdown, one row a gate."""
    lines = ["| method | gate | experts | mean weight per expert | H / log K |",
             "|---|---|---|---|---|"]
    for m, runs in result.get("gates", {}).items():
        for gate, first in runs[0]["gates"].items():
            recs = [r["gates"][gate] for r in runs]
            weights = np.mean([r["mean_weight"] for r in recs], axis=0)
            ratio = [r["entropy_ratio"] for r in recs]
            lines.append(f"| {m} | {gate} | {', '.join(first['experts'])} | "
                         f"{' / '.join(f'{w:.2f}' for w in weights)} | {np.mean(ratio):.2f} "
                         f"[{np.min(ratio):.2f}, {np.max(ratio):.2f}] |")
    return "\n".join(lines)


def gate_note(result, threshold=POLARISED):
    """One sentence: do the gates polarise (H / log K below ``threshold``), and which?"""
    runs = [(m, r, gate, g) for m, per in result.get("gates", {}).items() for r in per
            for gate, g in r["gates"].items()]
    if not runs:
        return ""
    ratios = [g["entropy_ratio"] for *_, g in runs]
    rule = (f"a gate polarises when H / log K is below {threshold:g} or one expert takes more "
            f"than {DOMINANT:g} of its mean weight")
    hit = [(m, r, gate) for m, r, gate, g in runs if polarised(g, threshold)]
    if not hit:
        return (f"The gates do not polarise: {rule}, and none of the {len(runs)} gates "
                f"trained does (H / log K from {min(ratios):.2f} to {max(ratios):.2f}).")
    named = "; ".join(f"{m} {gate} (world {r['world']}, seed {r['seed']})"
                      for m, r, gate in hit[:8])
    return (f"Some gates polarise: {rule}; {len(hit)} of the {len(runs)} gates trained do: "
            f"{named}{' ...' if len(hit) > 8 else ''}.")


def results_json(result, sweep=None):
    """The results as strict JSON text: no NaN tokens, null where a metric is undefined.

    Each null is listed under ``"_null_reasons"`` and ``"null_means"`` says
    what a null can mean.
    """
    payload = dict(result)
    payload["null_means"] = NULL_MEANS
    if result.get("intervals"):
        payload["noise_floor"] = noise_floors(result)
        payload["star_rule"] = MARKS
    pairs = pair_intervals(result) if "summary" in result else {}
    if pairs:
        payload["space_pairs"] = {f"{x} - {xc}": per for (x, xc), per in pairs.items()}
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


def is_family_run(methods):
    """Are ``methods`` ESMM plus members of the multi-task family (and nothing else)?"""
    methods = set(methods or ())
    return ("ESMM" in methods and bool(methods & set(FAMILY_METHODS))
            and methods <= {"ESMM", *FAMILY_METHODS})


def doc_section(preset="default", methods=None):
    """The generated section of docs/experiments.md a run fills (see :func:`doc_markers`).

    One per preset: None (``experiment:``) for the default world, the preset's
    name (``experiment:paper:``) otherwise; a run of ESMM and the multi-task
    family (:func:`is_family_run`) fills the preset's family section instead
    (``experiment:family:`` and ``experiment:family:paper:``).
    """
    base = None if preset == "default" else preset
    if is_family_run(methods):
        return "family" if base is None else f"family:{base}"
    return base


def write_docs(result, sweep, path, command, section=None):
    """Replace the generated section of a Markdown file with this run's tables.

    The section sits between the markers of :func:`doc_markers` (one pair
    per preset: ``<!-- experiment:start -->`` for the default world,
    ``<!-- experiment:paper:start -->`` for the "paper" preset, and
    ``<!-- experiment:family:start -->`` / ``<!-- experiment:family:paper:start -->``
    for a run of ESMM and the multi-task family: :func:`doc_section`), so prose
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


def sweep_table(sweep):
    """The sparsity sweep as Markdown: entire-space CVR AUC per method and ESMM − BASE intervals."""
    first = next(iter(sweep.values()))
    methods = list(first["runs"])
    ref = methods[-1]
    others = methods[:-1]
    shown = sweep_metric(sweep)
    head = ["share of training data"] + [f"{m} {SHORT[shown]}" for m in methods]
    ivm = [k for k in ("cvr_auc_entire", "cvr_soft_auc_entire", "cvr_soft_auc_clicked",
                       "cvr_auc_clicked") if k in first["intervals"]]
    head += [f"{ref} − {o}, {SHORT[k]}" for o in others for k in ivm]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for frac, cell in sweep.items():
        cells = [_points(sweep_mean(cell, m, shown)) for m in methods]
        for o in others:
            for k in ivm:
                e = cell["intervals"][k].get(o, {"diff": np.nan, "diff_low": np.nan,
                                                 "diff_high": np.nan})
                flipped = {"diff": -e["diff"], "diff_low": -e["diff_high"],
                           "diff_high": -e["diff_low"]}
                cells.append(format_interval(flipped, noise_floor(cell["networks"], o, ref)))
        lines.append(f"| {float(frac):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _points(value):
    return "n/a" if np.isnan(value) else f"{value:.2f}"


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
