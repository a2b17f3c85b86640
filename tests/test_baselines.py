"""Each baseline's defining property, and the experiment runner end to end (small)."""

import json
import os

import numpy as np
import pytest

from esmm_np.experiments import baselines as B
import esmm_np.experiments as E
from esmm_np.data.simulator import simulate


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    click = (rng.random(5000) < 0.2).astype(np.int8)
    conversion = (click * (rng.random(5000) < 0.3)).astype(np.int8)
    return click, conversion


def test_base_is_the_clicked_impressions(labels):
    click, conversion = labels
    idx, y = B.base_rows(click, conversion)
    np.testing.assert_array_equal(idx, np.flatnonzero(click))
    np.testing.assert_array_equal(y, conversion[click == 1])


@pytest.mark.parametrize("rate", [0.1, 0.5, 1.0])
def test_aman_holds_the_sampled_share_of_unclicked(labels, rate):
    click, conversion = labels
    idx, y = B.aman_rows(click, conversion, rate, np.random.default_rng(1))
    n_unclicked = int((click == 0).sum())
    assert len(np.unique(idx)) == len(idx)                             # no repeats
    assert np.all(click[idx[y == 1]] == 1)
    assert int((click[idx] == 0).sum()) == round(rate * n_unclicked)   # the sampled share
    assert np.all(y[click[idx] == 0] == 0)                             # labelled non-conversion
    assert set(np.flatnonzero(click)) <= set(idx)                      # every click kept


@pytest.mark.parametrize("k", [1, 2, 10])
def test_oversampling_holds_k_copies_of_each_positive(labels, k):
    click, conversion = labels
    idx, y = B.oversampling_rows(click, conversion, k)
    counts = np.bincount(idx, minlength=len(click))
    assert np.all(counts[(click == 1) & (conversion == 1)] == k)
    assert np.all(counts[(click == 1) & (conversion == 0)] == 1)
    assert np.all(counts[click == 0] == 0)
    np.testing.assert_array_equal(y, conversion[idx])


def test_unbias_rejects_with_probability_pctr(labels):
    click, conversion = labels
    p_ctr = np.where(np.arange(len(click)) % 3 == 0, 1.0, 0.3)
    p_ctr[np.arange(len(click)) % 3 == 1] = 0.0
    idx, y = B.unbias_rows(click, conversion, p_ctr, np.random.default_rng(2))
    assert np.all(click[idx] == 1)
    assert not np.any(p_ctr[idx] == 1.0)                       # rejected for sure
    clicked = np.flatnonzero(click)
    assert set(clicked[p_ctr[clicked] == 0.0]) <= set(idx)      # never rejected
    mid = clicked[p_ctr[clicked] == 0.3]
    kept = np.isin(mid, idx).mean()
    # Binomial(len(mid) ~ 330, 0.7): std ~0.025, so 0.1 is four standard deviations.
    assert abs(kept - 0.7) < 0.1


@pytest.fixture(scope="module")
def trained():
    data = simulate(30_000, seed=3, n_users=300, n_items=200)
    train, test = data.split(0.3, seed=0)
    arch = dict(embed_dim=4, tower_units=(8,), dtype=np.float64)
    methods = B.train_methods(train, B.METHODS, arch=arch,
                              train=dict(epochs=1, batch_size=256, lr=3e-3), seed=0)
    return methods, test


def test_division_is_the_ratio(trained):
    methods, test = trained
    div = methods["DIVISION"]
    p = div.predict(test.X)
    np.testing.assert_allclose(p["p_cvr_raw"], div.ctcvr_net.predict(test.X)["p"]
                               / div.ctr_net.predict(test.X)["p"], rtol=1e-12)
    np.testing.assert_array_equal(p["p_cvr"], np.minimum(p["p_cvr_raw"], 1.0))


def test_click_space_ctcvr_uses_the_independent_ctr_net(trained):
    methods, test = trained
    ctr = methods["_ctr_net"].predict(test.X)["p"]
    for name in ("BASE", "AMAN", "OVERSAMPLING", "UNBIAS"):
        p = methods[name].predict(test.X)
        assert methods[name].ctr_net is methods["_ctr_net"]
        np.testing.assert_allclose(p["p_ctcvr"], ctr * p["p_cvr"], rtol=1e-12)


def test_esmm_ns_has_separate_embeddings(trained):
    methods, _ = trained
    assert set(methods["ESMM"].model.tables) == {"embedding"}
    assert set(methods["ESMM-NS"].model.tables) == {"ctr.embedding", "cvr.embedding"}


def test_unknown_method_refused():
    with pytest.raises(ValueError, match="unknown method"):
        B.train_methods(None, ["BASE", "MAGIC"], arch={}, train={})


def test_ips_rows_reweight_the_clicks_towards_the_entire_space():
    """Resampling clicked rows by 1 / pCTR recovers the entire space's mean true CVR."""
    d = simulate(200_000, seed=4)
    rng = np.random.default_rng(0)
    idx, y = B.ips_rows(d.click, d.conversion, d.true_ctr, rng, clip_quantile=0.0)
    assert np.all(d.click[idx] == 1) and len(idx) == d.click.sum()
    np.testing.assert_array_equal(y, d.conversion[idx])
    clicked_mean = d.true_cvr[d.click == 1].mean()
    entire_mean = d.true_cvr.mean()
    # rho = 0.6: the clicked convert about twice as often as the entire space.
    assert clicked_mean > 1.5 * entire_mean
    # With the true propensities the reweighted mean is the entire space's, up to
    # resampling noise (about 8,000 draws of values with sd ~0.1: se ~0.001).
    assert abs(d.true_cvr[idx].mean() - entire_mean) < 0.25 * (clicked_mean - entire_mean)


def test_choice_picks_the_best_candidate_on_validation():
    data = simulate(30_000, seed=3, n_users=300, n_items=200)
    arch = dict(embed_dim=4, tower_units=(8,), dtype=np.float64)
    m = B.train_methods(data, ["AMAN"], arch=arch, train=dict(epochs=1, batch_size=256, lr=3e-3),
                        aman_rate=(0.1, 1.0), seed=0)["AMAN"]
    c = m.choice
    assert c["candidates"] == [0.1, 1.0] and len(m.networks) == 2
    assert c["aman_rate"] == c["candidates"][int(np.nanargmax(c["val_cvr_auc_clicked"]))]


def test_every_trainer_is_listed_and_records_its_networks(trained):
    methods, _ = trained
    assert set(B.METHODS) | set(B.EXTRA_METHODS) == set(B.TRAINERS)
    for name in B.METHODS:
        for rec in methods[name].networks.values():
            assert rec["stopped"] in ("patience", "cap") and 0 < rec["kept"] <= rec["steps"]


def test_experiment_runner_end_to_end(tmp_path, capsys):
    cfg = E.quick_config()
    cfg.n_impressions, cfg.sweep_fractions, cfg.workers = 40_000, (0.5, 1.0), 1
    result, sweep = E.run_all(cfg)
    assert set(result["summary"]) == set(B.METHODS) | set(B.EXTRA_METHODS)
    for name, metrics in result["summary"].items():
        for m in ("cvr_auc_clicked", "cvr_auc_entire", "cvr_soft_auc_clicked", "ctcvr_auc"):
            assert name == "CTR-ONLY" and m != "ctcvr_auc" or 0 <= metrics[m][0] <= 1, (name, m)
    # Even this tiny run learns: ESMM ranks entire-space conversions better than chance.
    assert result["summary"]["ESMM"]["cvr_soft_auc_entire"][0] > 0.55
    out = capsys.readouterr().out
    assert "trained ESMM" in out and "done in" in out           # progress was shown
    table = E.format_table(result)
    assert table.count("\n") == 1 + len(B.TRAINERS)
    assert "68.56" in table                                      # the paper's ESMM CVR AUC
    text = E.report_text(result, sweep)
    assert "quick run" in text and "not those of the documented table" in text
    assert "networks stopped" in text and "AMAN chose aman_rate" in text
    paths = E.save(result, sweep, str(tmp_path), figure=False)
    raw = open(os.path.join(tmp_path, "results.json")).read()
    assert ": NaN" not in raw and "Infinity" not in raw    # strict JSON: no NaN tokens
    saved = json.loads(raw)
    assert set(saved["runs"]) == set(B.TRAINERS) and set(saved["sweep"]) == {"0.5", "1.0"}
    assert saved["runs"]["CTR-ONLY"][0]["cvr_auc_clicked"] is None and saved["null_means"]
    for name, per_seed in saved["networks"].items():
        for nets in per_seed:
            for rec in nets.values():
                assert set(rec) >= {"steps", "kept", "stopped"}
    ci = saved["intervals"]["cvr_soft_auc_clicked"]["BASE"]
    assert ci["diff_low"] <= ci["diff"] <= ci["diff_high"]
    assert "DIVISION's raw pCVR" in open(paths[0]).read()


def test_workers_give_the_same_results_as_one_process():
    """Each training is seeded on its own, so spawning workers changes nothing but the time."""
    cfg = E.quick_config()
    cfg.n_impressions, cfg.methods, cfg.sweep_fractions = 30_000, ("BASE", "ESMM"), ()
    serial, _ = E.run_all(cfg, progress=None)
    cfg.workers = 2
    parallel, _ = E.run_all(cfg, progress=None)
    for m in cfg.methods:
        for k, v in serial["runs"][m][0].items():
            # One BLAS thread in the workers, maybe more here: float32 sums may round
            # differently, so equal to 1e-5, far below any difference the table shows.
            assert parallel["runs"][m][0][k] == pytest.approx(v, abs=1e-5, nan_ok=True), (m, k)


def test_budget_check_and_stopping_curves_run_small():
    cfg = E.quick_config()
    cfg.n_impressions, cfg.sweep_fractions, cfg.workers = 30_000, (0.5,), 1
    rows = E.budget_check(cfg, factor=2, progress=None)
    assert [(r["frac"], r["method"]) for r in rows] == [(0.5, "BASE"), (0.5, "ESMM")]
    for r in rows:
        assert r["steps_more"] >= r["steps"] and abs(r["move"]) < 100
    assert E.budget_table(rows).count("\n") == 3
    curves = E.stopping_curves(cfg, chunk=50, n_chunks=3)
    for c in curves.values():
        assert c["step"] == [50, 100, 150] and c["stop_total"] in c["step"]
        np.testing.assert_allclose(c["total"], np.add(c["ctr_loss"], c["ctcvr_loss"]))
