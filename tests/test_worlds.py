"""Worlds are a source of noise: differences to ESMM get intervals across worlds.

The construction (:data:`esmm_np.experiments.scoring.ACROSS_WORLDS`): in each
world, the difference of the method's mean score (over its training seeds,
on the world's own test rows) to ESMM's; then a Student t interval over the
worlds of those per-world differences. Each per-world difference carries its
world's draw, its training seeds and its test rows, so the spread between
worlds holds all three noises.
"""

import json

import numpy as np
import pytest

import esmm_np.experiments as E
from esmm_np import cli
from esmm_np.experiments import scoring


def test_across_world_interval_covers_a_known_mean_95_percent_of_the_time():
    """A case with a known answer: mean effect mu over worlds, with world, seed and row noise.

    Each world w has its own effect mu + tau * z_w (the world-to-world spread);
    its measured difference adds seed noise (mean over S seeds) and test-row noise
    shared by the seeds of that world. 4,000 replicate runs of K = 5 worlds: the
    interval must cover mu in 95% of them; the binomial standard error of a
    coverage estimate from 4,000 runs is 0.35%, so 94% to 96% is about 3 se.
    """
    rng = np.random.default_rng(0)
    mu, tau, seed_sd, row_sd, K, S, runs = 0.7, 0.5, 0.4, 0.3, 5, 3, 4000
    covered = 0
    for _ in range(runs):
        world = mu + tau * rng.standard_normal(K)                           # (K,)
        seeds = world[:, None] + seed_sd * rng.standard_normal((K, S))      # (K, S)
        rows = row_sd * rng.standard_normal(K)                              # (K,) shared by seeds
        per_world = seeds.mean(axis=1) + rows                               # (K,)
        e = scoring.world_interval(per_world)
        covered += e["diff_low"] <= mu <= e["diff_high"]
    assert 0.94 <= covered / runs <= 0.96, covered / runs


def test_one_world_cannot_make_an_across_world_interval():
    e = scoring.world_interval([0.01])
    assert e["diff"] == 0.01 and np.isnan(e["diff_low"]) and e["n_worlds"] == 1
    assert E.format_interval(e) == "+1.00 [n/a]"          # printed, never starred


def test_a_star_only_when_the_interval_excludes_zero():
    assert E.format_interval({"diff": 0.01, "diff_low": 0.001, "diff_high": 0.02}).endswith("*")
    assert "*" not in E.format_interval({"diff": 0.01, "diff_low": -0.001, "diff_high": 0.02})


def test_world_differences_are_paired_within_each_world():
    runs = [{"ESMM": [{"m": 0.70}, {"m": 0.72}], "BASE": [{"m": 0.69}, {"m": 0.69}]},
            {"ESMM": [{"m": 0.60}, {"m": 0.60}], "BASE": [{"m": 0.62}, {"m": 0.64}]}]
    d = scoring.world_differences(runs, "ESMM", ("m",))["m"]["BASE"]
    np.testing.assert_allclose(d, [-0.02, 0.03])


def test_run_over_worlds_keeps_per_world_differences_and_intervals(tmp_path, capsys):
    assert cli.main(["experiment", "--quick", "--world-seeds", "3", "4", "--methods", "BASE",
                     "ESMM", "--n", "30000", "--workers", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "intervals across 2 worlds" in printed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["worlds"] == [3, 4] and set(saved["per_world"]) == {"3", "4"}
    for metric, per in saved["across_worlds"].items():
        e = per["BASE"]
        assert len(e["per_world"]) == 2 and e["diff"] == pytest.approx(np.mean(e["per_world"]))
        assert e["diff_low"] <= e["diff"] <= e["diff_high"]
        assert [saved["per_world"][w]["differences"][metric]["BASE"] for w in ("3", "4")] \
            == e["per_world"]
    assert saved["intervals"] == saved["across_worlds"]
    for cell in saved["sweep"].values():
        assert len(cell["intervals"]["cvr_soft_auc_entire"]["BASE"]["per_world"]) == 2
