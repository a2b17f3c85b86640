"""The star rule of every table: an interval that excludes zero AND a difference at least
NOISE_MULTIPLE times the larger adjacent-validation noise of the two methods; the
X − X-CLICKED pairs of the family; the stopping sentence names the run's networks."""

import numpy as np
import pytest

import esmm_np.experiments as E
from esmm_np.experiments import report as R
from esmm_np.experiments.config import fair_effort
from esmm_np.experiments.scoring import world_interval


def _entry(diff, half):
    return {"diff": diff, "diff_low": diff - half, "diff_high": diff + half}


def _nets(noise):   # method -> one run with one CVR network of that adjacent noise (fraction)
    return {m: [{f"{m} net": {"adjacent_noise": v}}] for m, v in noise.items()}


def test_a_difference_under_the_noise_floor_is_not_called_real():
    e = _entry(0.006, 0.002)                      # +0.60 [+0.40, +0.80]: excludes zero
    assert R.excludes_zero(e) and R.resolved(e) and R.resolved(e, floor=0.006)
    assert not R.resolved(e, floor=0.0061)
    assert R.format_interval(e).endswith(" *")
    assert R.format_interval(e, floor=0.01).endswith(" °")
    tie = _entry(0.006, 0.01)                     # includes zero: neither mark
    assert not R.resolved(tie) and R.format_interval(tie)[-1] == "]"
    assert R.format_interval(_entry(-0.02, 0.005), floor=0.01).endswith(" *")   # |diff| counts


def test_the_floor_is_twice_the_larger_noise_of_the_pair():
    nets = _nets({"ESMM": 0.003, "BASE": 0.005, "AMAN": 0.001})
    assert R.noise_floor(nets, "BASE", "ESMM") == pytest.approx(R.NOISE_MULTIPLE * 0.005)
    assert R.noise_floor(nets, "AMAN", "ESMM") == pytest.approx(R.NOISE_MULTIPLE * 0.003)
    assert R.noise_floor(nets, "CTR-ONLY", "ESMM") == pytest.approx(R.NOISE_MULTIPLE * 0.003)
    assert R.noise_floor({}, "BASE", "ESMM") == 0.0
    assert R.NOISE_MULTIPLE >= 2          # "well below": the noise is at most half a real difference


@pytest.fixture(scope="module")
def family_run():
    cfg = E.quick_config()
    cfg.n_impressions, cfg.workers, cfg.world_seeds = 30_000, 1, (0, 1, 2)
    cfg.methods = ("ESMM", "SB", "SB-CLICKED", "AITM")
    cfg.train = fair_effort(eval_every=50, patience=2, min_steps=100, max_steps=400,
                            batch_size=256, lr=3e-3)
    result, _ = E.run_all(cfg, progress=None, sweep=False)
    return result


def test_x_minus_x_clicked_is_the_t_interval_of_the_per_world_paired_differences(family_run):
    pairs = R.pair_intervals(family_run)
    assert list(pairs) == [("SB", "SB-CLICKED")]
    metric = "cvr_soft_auc_entire"
    direct = []                        # straight from the scores, world by world
    for ws in family_run["worlds"]:
        runs = family_run["per_world"][str(ws)]["runs"]
        direct.append(np.mean([s[metric] for s in runs["SB"]])
                      - np.mean([s[metric] for s in runs["SB-CLICKED"]]))
    expect = world_interval(direct)
    got = pairs[("SB", "SB-CLICKED")][metric]
    for k in ("diff", "diff_low", "diff_high"):
        assert got[k] == pytest.approx(expect[k], abs=1e-12)
    table = R.pair_table(family_run)
    assert table.splitlines()[2].startswith("| SB − SB-CLICKED |")
    text = R.report_text(family_run)
    assert "X − X-CLICKED" in text and "| SB − SB-CLICKED |" in text
    payload = R.results_json(family_run)
    assert '"space_pairs"' in payload and '"noise_floor"' in payload


def test_the_stopping_sentence_names_the_runs_two_output_networks(family_run):
    s = R.stopping_rule(family_run)
    assert "(ESMM, SB, SB-CLICKED, AITM)" in s
    assert "single-task" not in s                  # no single-task network in this run
    assert "last 4 validations" in s               # the averaging the configurations use
    assert "ESCM2" not in s


def test_the_tables_star_only_what_clears_the_floor(family_run):
    floors = R.noise_floors(family_run)
    table = R.interval_table(family_run)
    for line in table.splitlines()[2:]:
        name = line.split("|")[1].strip()
        iv = family_run["intervals"]
        for metric, cell in zip([m for m in R.TABLE_INTERVALS if iv.get(m)],
                                line.split("|")[2:-1]):
            if name not in iv[metric]:
                continue
            e = iv[metric][name]
            assert cell.strip().endswith("*") == R.resolved(e, floors[name]), (name, metric)
