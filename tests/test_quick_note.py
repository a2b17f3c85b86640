"""`esmm-np experiment --quick` says which orderings it cannot resolve: the quick note agrees
with the run's own intervals, noise floors and networks, and changes when they do."""

import copy
import re

import numpy as np
import pytest

import esmm_np.experiments as E
from esmm_np.experiments import report as R


@pytest.fixture(scope="module")
def quick_run():
    cfg = E.quick_config()                 # the --quick configuration, fewer methods for speed
    cfg.methods, cfg.workers = ("BASE", "ESMM-NS", "ESMM"), 1
    result, _ = E.run_all(cfg, progress=None, sweep=False)
    return result


def _marks_in_note(note):
    """method -> column title -> mark, read back from the note's text."""
    out = {}
    for line in note.splitlines():
        m = re.match(r"- (\S+): (.*)$", line)
        if not m:
            continue
        for group in m.group(2).split("; "):
            mark, cols = group[0], group[2:]
            for col in cols.split(", "):
                out.setdefault(m.group(1), {})[col] = mark
    return out


def _expected_mark(result, name, metric):
    """The star rule recomputed from the intervals and the networks' adjacent noise."""
    e = result["intervals"][metric][name]
    noise = [[rec["adjacent_noise"] for run in result["networks"][m] for rec in run.values()
              if rec.get("adjacent_noise") is not None] for m in (name, "ESMM")]
    floor = 2 * max([np.mean(v) for v in noise if v], default=0.0)
    excludes = e["diff_low"] > 0 or e["diff_high"] < 0
    return "*" if excludes and abs(e["diff"]) >= floor else "°" if excludes else "?"


def test_the_quick_note_marks_every_comparison_as_the_intervals_read(quick_run):
    note = R.quick_note(quick_run)
    marks = _marks_in_note(note)
    assert set(marks) == {"BASE", "ESMM-NS"}
    title = {v: k for k, v in R.SHORT.items()}
    n_all = 0
    for name, per in marks.items():
        assert set(per) == {R.SHORT[m] for m in quick_run["intervals"] if name in
                            quick_run["intervals"][m]}
        for col, mark in per.items():
            assert mark == _expected_mark(quick_run, name, title[col]), (name, col)
            n_all += 1
    n_star = sum(v == "*" for per in marks.values() for v in per.values())
    assert f"stars {n_star} of its {n_all} comparisons" in note
    assert f"for the other {n_all - n_star} " in note
    assert "smoke tests" in note and "does not reproduce" in note


def test_the_quick_note_counts_the_networks_that_trained_the_fixed_budget(quick_run):
    recs = [rec for per in quick_run["networks"].values() for run in per for rec in run.values()]
    fixed = sum(rec["stopped"] == "budget" for rec in recs)
    assert f"{fixed} of its {len(recs)} networks trained the fixed budget" in R.quick_note(quick_run)


def test_the_note_follows_the_result_when_an_interval_changes(quick_run):
    changed = copy.deepcopy(quick_run)
    e = changed["intervals"]["cvr_soft_auc_entire"]["BASE"]
    e.update(diff=0.5, diff_low=0.4, diff_high=0.6)     # +50 points: above any floor
    assert _marks_in_note(R.quick_note(changed))["BASE"]["soft CVR AUC entire"] == "*"
    e.update(diff=0.001, diff_low=-0.1, diff_high=0.102)   # an interval across zero
    assert _marks_in_note(R.quick_note(changed))["BASE"]["soft CVR AUC entire"] == "?"


def test_the_note_is_printed_and_written_for_quick_runs_only(quick_run):
    assert R.quick_note(quick_run).splitlines()[0] in R.report_text(quick_run)
    full = dict(quick_run, label="full")
    assert R.quick_note(full) == "" and "Quick run:" not in R.report_text(full)
