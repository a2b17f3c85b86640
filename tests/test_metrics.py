"""Metrics against their definitions: brute-force AUC, hand-computed log loss and ECE."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmm_np.data import Dataset
from esmm_np.metrics import (auc, average_ranks, calibration, evaluate_esmm,
                             expected_calibration_error, log_loss, paired_bootstrap, soft_auc)
from esmm_np.data.simulator import simulate


def brute_force_auc(y, score):
    """Fraction of (positive, negative) pairs ordered correctly, ties counting 1/2."""
    pos = [s for s, t in zip(score, y) if t == 1]
    neg = [s for s, t in zip(score, y) if t == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# Scores from a handful of values, so ties are common; both classes present.
labelled_scores = st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)),
                           min_size=2, max_size=60).filter(
    lambda rows: 0 < sum(t for t, _ in rows) < len(rows))


# ----------------------------------------------------------------- auc

@settings(max_examples=200, deadline=None)
@given(labelled_scores)
def test_auc_equals_the_pairwise_definition_with_ties(rows):
    y = [t for t, _ in rows]
    score = [s / 2 for _, s in rows]
    # Both sides are sums of halves over at most 900 pairs: exact in float64
    # up to the final division, hence 1e-12.
    assert auc(y, score) == pytest.approx(brute_force_auc(y, score), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(labelled_scores)
def test_auc_depends_only_on_the_order_of_scores(rows):
    y = np.array([t for t, _ in rows])
    score = np.array([s for _, s in rows], dtype=float)
    assert auc(y, np.exp(score)) == pytest.approx(auc(y, score), abs=1e-12)
    # Reversing the order turns every won pair into a lost one.
    assert auc(y, -score) == pytest.approx(1.0 - auc(y, score), abs=1e-12)


def test_auc_known_values():
    y = [0, 0, 1, 1]
    assert auc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    # Pairs: (0.3 vs 0.1) win, (0.3 vs 0.35) loss, (0.8 vs both) win: 3 of 4.
    assert auc(y, [0.1, 0.35, 0.3, 0.8]) == 0.75


def test_auc_on_many_rows_matches_the_pairwise_count():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.3).astype(int)
    score = np.round(rng.normal(size=3000) + y, 1)  # rounded: many ties
    pos, neg = score[y == 1], score[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert auc(y, score) == pytest.approx(expected, abs=1e-12)


def test_average_ranks_share_ranks_within_ties():
    assert average_ranks(np.array([10.0, 20.0, 10.0, 30.0, 20.0])).tolist() == \
        [1.5, 3.5, 1.5, 5.0, 3.5]


@pytest.mark.parametrize("y, score, match", [
    ([1, 1, 1], [0.1, 0.2, 0.3], r"only one class: got 3 positive\(s\) and 0 negative\(s\)"),
    ([0, 0], [0.1, 0.2], r"only one class: got 0 positive\(s\) and 2 negative\(s\)"),
    ([0, 1, 1], [0.1, 0.2], "y has length 3 but score has length 2"),
    ([0, 1], [0.1, np.nan], r"score has 1 NaN value\(s\), first at row 1"),
    ([0, 2], [0.1, 0.2], "y must hold only 0 and 1"),
    ([[0, 1]], [0.1, 0.2], "y must be 1-d"),
    ([0, 1], [], "score is empty"),
])
def test_auc_input_errors(y, score, match):
    with pytest.raises(ValueError, match=match):
        auc(y, score)


# ----------------------------------------------------------------- log loss

def test_log_loss_hand_computed():
    # -(ln 0.9 + ln 0.8 + ln 0.6) / 3 = (0.10536 + 0.22314 + 0.51083) / 3 = 0.27978
    assert log_loss([1, 0, 1], [0.9, 0.2, 0.6]) == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3, rel=1e-12)
    assert log_loss([1, 0, 1], [0.9, 0.2, 0.6]) == pytest.approx(0.279776, abs=1e-6)
    assert log_loss([0, 1], [0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-12)


def test_log_loss_clips_certain_mistakes_to_eps():
    assert log_loss([1], [0.0], eps=1e-12) == pytest.approx(-math.log(1e-12), rel=1e-9)
    assert log_loss([0], [1.0], eps=1e-6) == pytest.approx(-math.log(1e-6), rel=1e-6)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-12), abs=1e-15)


@pytest.mark.parametrize("y, p, match", [
    ([0, 1], [0.2, 1.2], r"p must be probabilities in \[0, 1\]; 1 value\(s\)"),
    ([0, 1], [0.2], "y has length 2 but p has length 1"),
    ([0, 1], [np.nan, 0.5], "p has 1 NaN"),
])
def test_log_loss_input_errors(y, p, match):
    with pytest.raises(ValueError, match=match):
        log_loss(y, p)


# ----------------------------------------------------------------- calibration

def test_calibration_table_and_ece_hand_computed():
    y = [0, 1, 1, 0]
    p = [0.05, 0.15, 0.55, 0.95]
    t = calibration(y, p, n_bins=4)  # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert t["count"].tolist() == [2, 0, 1, 1]
    np.testing.assert_allclose(t["mean_pred"][[0, 2, 3]], [0.10, 0.55, 0.95])
    np.testing.assert_allclose(t["mean_obs"][[0, 2, 3]], [0.5, 1.0, 0.0])
    assert np.isnan(t["mean_pred"][1]) and np.isnan(t["mean_obs"][1])
    # ECE = (2 |0.5 - 0.1| + 1 |1 - 0.55| + 1 |0 - 0.95|) / 4 = (0.8 + 0.45 + 0.95) / 4
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.55, abs=1e-12)


def test_calibration_accepts_true_probabilities_and_the_top_edge():
    p = np.array([0.1, 0.3, 1.0])
    assert expected_calibration_error(p, p, n_bins=5) == 0.0
    assert calibration(p, p, n_bins=5)["count"].tolist() == [1, 1, 0, 0, 1]
    assert expected_calibration_error(p, p * 0.5, n_bins=1) == pytest.approx(
        np.mean(p) * 0.5, abs=1e-12)


def test_quantile_bins_hold_equal_counts():
    p = np.linspace(0.001, 0.05, 1000)  # CTR-like: uniform bins would put all in bin 0
    assert calibration(p, p, n_bins=10)["count"][0] == 1000
    assert calibration(p, p, n_bins=10, strategy="quantile")["count"].tolist() == [100] * 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(y_or_true_prob=[0.1, 0.2], p=[0.1]), "y_or_true_prob has length 2 but p has length 1"),
    (dict(y_or_true_prob=[0.1, -0.2], p=[0.1, 0.2]),
     r"y_or_true_prob must be probabilities in \[0, 1\]"),
    (dict(y_or_true_prob=[0, 1], p=[0.1, 0.2], n_bins=0), "n_bins must be >= 1"),
    (dict(y_or_true_prob=[0, 1], p=[0.1, 0.2], strategy="log"), "strategy must be"),
])
def test_calibration_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibration(**kwargs)


# ----------------------------------------------------------------- evaluate_esmm

def tiny_dataset(with_truth=True):
    # click:      1  1  1  0  0  0
    # conversion: 1  0  1  0  0  0
    # potential:  1  0  1  1  0  0
    truth = dict(true_ctr=np.array([0.8, 0.7, 0.6, 0.3, 0.2, 0.1]),
                 true_cvr=np.array([0.5, 0.2, 0.4, 0.3, 0.1, 0.1]),
                 conversion_if_clicked=np.array([1, 0, 1, 1, 0, 0])) if with_truth else {}
    return Dataset(X=np.zeros((6, 1), dtype=int), click=[1, 1, 1, 0, 0, 0],
                   conversion=[1, 0, 1, 0, 0, 0], field_dims=(1,), **truth)


def test_evaluate_esmm_hand_computed():
    ds = tiny_dataset()
    pred = {"p_ctr": np.array([0.9, 0.6, 0.7, 0.4, 0.1, 0.2]),
            "p_cvr": np.array([0.6, 0.1, 0.3, 0.5, 0.2, 0.1]),
            "p_ctcvr": np.array([0.54, 0.06, 0.21, 0.20, 0.02, 0.02])}
    m = evaluate_esmm(pred, ds)
    assert m["ctr_auc"] == 1.0  # every clicked p_ctr (0.6..0.9) above every unclicked (<= 0.4)
    # Clicked only: positives 0.6, 0.3 vs negative 0.1: both win.
    assert m["cvr_auc_clicked"] == 1.0
    # Entire space: positives 0.6, 0.3, 0.5 vs negatives 0.1, 0.2, 0.1: all 9 win.
    assert m["cvr_auc_entire"] == 1.0
    # CTCVR: positives 0.54, 0.21 vs negatives 0.06, 0.20, 0.02, 0.02: all 8 win.
    assert m["ctcvr_auc"] == 1.0
    # pCVR means: clicked (0.6+0.1+0.3)/3 = 1/3, unclicked 0.8/3; true: 1.1/3 and 0.5/3.
    assert m["pcvr_bias_clicked"] == pytest.approx((1.0 - 1.1) / 3)
    assert m["pcvr_bias_unclicked"] == pytest.approx((0.8 - 0.5) / 3)
    assert m["pcvr_bias_entire"] == pytest.approx((1.8 - 1.6) / 6)


def test_evaluate_esmm_without_ground_truth_or_keys_gives_nan():
    m = evaluate_esmm({"p_cvr": np.full(6, 0.3)}, tiny_dataset(with_truth=False))
    assert m["cvr_auc_clicked"] == 0.5  # constant scores: every pair tied
    for key in ("ctr_auc", "ctcvr_auc", "cvr_auc_entire", "pcvr_bias_clicked",
                "pcvr_bias_unclicked", "pcvr_bias_entire"):
        assert np.isnan(m[key]), key


def test_evaluate_esmm_single_class_group_gives_nan_not_an_error():
    ds = Dataset(X=np.zeros((3, 1), dtype=int), click=[1, 1, 0], conversion=[0, 0, 0],
                 field_dims=(1,))
    m = evaluate_esmm({"p_ctr": np.array([0.5, 0.4, 0.1]), "p_cvr": np.full(3, 0.1)}, ds)
    assert m["ctr_auc"] == 1.0
    assert np.isnan(m["cvr_auc_clicked"])  # no clicked conversion: undefined


@pytest.mark.parametrize("pred, error, match", [
    ({"pcvr": np.zeros(6)}, ValueError, r"unknown key\(s\) \['pcvr'\]"),
    ({}, ValueError, "pred is empty"),
    ({"p_ctr": np.zeros(5)}, ValueError, "p_ctr has length 5 but the dataset has 6 rows"),
    ({"p_cvr": np.array([0.1, np.nan, 0, 0, 0, 0])}, ValueError, "p_cvr has 1 NaN"),
    ({"p_ctcvr": np.full(6, 2.0)}, ValueError, r"p_ctcvr must be probabilities in \[0, 1\]"),
    ([0.1] * 6, TypeError, "pred must be a dict"),
])
def test_evaluate_esmm_input_errors(pred, error, match):
    with pytest.raises(error, match=match):
        evaluate_esmm(pred, tiny_dataset())


def test_evaluate_esmm_sees_the_bias_of_a_clicked_only_estimate():
    ds = simulate(100_000, seed=0)  # default rho = 0.6: clicked convert more
    clicked = ds.click == 1
    truth = {"p_ctr": ds.true_ctr, "p_cvr": ds.true_cvr,
             "p_ctcvr": ds.true_ctr * ds.true_cvr}
    m = evaluate_esmm(truth, ds)
    # The truth itself has zero pCVR bias everywhere, up to float32 sums.
    for group in ("clicked", "unclicked", "entire"):
        assert abs(m[f"pcvr_bias_{group}"]) < 1e-6
    assert m["ctr_auc"] > 0.7 and m["cvr_auc_entire"] > 0.7
    # A "model" that predicts the clicked mean CVR everywhere, which is what a
    # clicked-only model knows at best for an id it never saw clicked,
    # overshoots on the unclicked by the selection gap.
    clicked_mean = ds.conversion[clicked].mean()
    m = evaluate_esmm({"p_cvr": np.full(len(ds), clicked_mean)}, ds)
    assert m["pcvr_bias_unclicked"] == pytest.approx(
        clicked_mean - ds.true_cvr[~clicked].mean(dtype=np.float64), abs=1e-9)
    assert m["pcvr_bias_unclicked"] > 0.03
    # On the clicked it is right up to the binomial noise of the observed mean.
    se = np.sqrt(clicked_mean * (1 - clicked_mean) / clicked.sum())
    assert abs(m["pcvr_bias_clicked"]) < 4 * se


# ------------------------------------------- bias against the potential outcome

def test_potential_outcome_bias_hand_computed():
    from esmm_np.metrics import potential_outcome_bias
    ds = tiny_dataset()
    p = np.array([0.6, 0.1, 0.3, 0.5, 0.2, 0.1])
    # unclicked rows: p 0.5, 0.2, 0.1 against potential 1, 0, 0 -> d = -0.5, 0.2, 0.1
    r = potential_outcome_bias(p, ds.conversion_if_clicked, ds.click == 0)
    d = np.array([-0.5, 0.2, 0.1])
    half = 1.959963984540054 * d.std(ddof=1) / np.sqrt(3)
    assert r["n"] == 3 and r["bias"] == pytest.approx(d.mean())
    assert (r["low"], r["high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)
    m = evaluate_esmm({"p_cvr": p}, ds)
    assert m["pcvr_bias_potential_unclicked"] == pytest.approx(d.mean())
    assert m["pcvr_bias_potential_clicked"] == pytest.approx((1.0 - 2.0) / 3)
    assert np.isnan(potential_outcome_bias(p, ds.conversion_if_clicked,
                                           np.zeros(6, dtype=bool))["bias"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(mask=np.ones(6)), "mask must be a boolean"),
    (dict(level=1.0), "level"),
])
def test_potential_outcome_bias_input_errors(kwargs, match):
    from esmm_np.metrics import potential_outcome_bias
    with pytest.raises(ValueError, match=match):
        potential_outcome_bias(np.full(6, 0.2), tiny_dataset().conversion_if_clicked, **kwargs)


def test_potential_outcome_bias_sees_the_hidden_confounder():
    """The true CVR itself: no bias against true_cvr, but against the potential outcome
    on unclicked impressions only when the confounder is on (interval excludes zero)."""
    from esmm_np.metrics import potential_outcome_bias
    for kappa in (0.0, 1.5):
        ds = simulate(100_000, seed=0, confounder=kappa)
        unclicked = ds.click == 0
        r = potential_outcome_bias(ds.true_cvr, ds.conversion_if_clicked, unclicked)
        if kappa == 0:
            assert r["low"] < 0 < r["high"], r       # the truth is unbiased
        else:
            assert r["low"] > 0, r                   # true_cvr overstates the unclicked


def test_t_quantile_matches_the_table():
    from esmm_np.metrics import _t_quantile
    # two-sided 95% Student-t critical values (any statistics table)
    for df, t in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert _t_quantile(0.975, df) == pytest.approx(t, abs=1e-3), df


def test_seed_interval_hand_computed():
    from esmm_np.metrics import seed_interval, _t_quantile
    v = np.array([1.0, 2.0, 4.0])
    r = seed_interval(v)
    half = _t_quantile(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert (r["mean"], r["low"], r["high"], r["n"]) == pytest.approx(
        (7 / 3, 7 / 3 - half, 7 / 3 + half, 3))
    r2 = seed_interval(v, row_se=[0.5, 0.5, 0.5])
    assert r2["high"] - r2["mean"] == pytest.approx(np.hypot(half, 1.959963984540054 * 0.5))
    with pytest.raises(ValueError, match="at least 2"):
        seed_interval([1.0])


def test_binned_gap_hand_computed():
    from esmm_np.metrics import binned_gap
    p = np.array([0.1, 0.2, 0.3, 0.4])
    target = np.array([0.0, 0.0, 1.0, 0.0])
    by = np.array([0.4, 0.1, 0.3, 0.2])          # bins of 2: {0.1, 0.2} and {0.3, 0.4}
    r = binned_gap(p, target, by, n_bins=2)
    assert r["count"].tolist() == [2, 2]
    assert r["gap"] == pytest.approx([(0.2 + 0.4) / 2, ((0.3 - 1) + 0.1) / 2])


def test_gap_interval_against_true_probabilities():
    from esmm_np.metrics import gap_interval
    p = np.array([0.2, 0.4, 0.6])
    t = np.array([0.1, 0.1, 0.4])
    r = gap_interval(p, t)
    d = p - t
    assert r["bias"] == pytest.approx(d.mean()) and r["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="target must be probabilities"):
        gap_interval(p, np.array([0.1, 2.0, 0.1]))


# ----------------------------------------------------------------- soft AUC

def brute_force_soft_auc(p, score):
    """sum over ordered pairs i != j of p_i (1 - p_j) [s_i > s_j, ties 1/2], normalised."""
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                num += w * (1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0)
                den += w
    return num / den


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(-3, 3)), min_size=2, max_size=40))
def test_soft_auc_is_the_weighted_pair_sum(rows):
    p = np.array([r[0] / 20 for r in rows])     # probabilities on a grid, 0 and 1 included
    s = np.array([r[1] for r in rows], dtype=float)
    den = p.sum() * (1 - p).sum() - np.sum(p * (1 - p))
    if den <= 0:
        with pytest.raises(ValueError, match="undefined"):
            soft_auc(p, s)
        return
    # Sums of at most 40 * 39 products of numbers in [0, 1]: 1e-9 is far above rounding.
    assert soft_auc(p, s) == pytest.approx(brute_force_soft_auc(p, s), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(labelled_scores)
def test_soft_auc_of_0_1_labels_is_the_auc(rows):
    y = np.array([t for t, _ in rows])
    s = np.array([v for _, v in rows], dtype=float)
    assert soft_auc(y, s) == pytest.approx(auc(y, s), abs=1e-12)


def test_soft_auc_is_the_mean_auc_over_sampled_labels():
    """Drawing labels from p many times, the mean AUC approaches the soft AUC."""
    rng = np.random.default_rng(0)
    n, draws = 2000, 400
    p = rng.beta(1, 6, n)
    s = p + rng.normal(0, 0.1, n)
    aucs = [auc((rng.random(n) < p).astype(int), s) for _ in range(draws)]
    # The mean of 400 draws has standard error std / 20 (about 0.001 here); the
    # ratio-of-expectations vs expectation-of-ratio gap is O(1/n), far smaller.
    se = np.std(aucs) / np.sqrt(draws)
    assert abs(np.mean(aucs) - soft_auc(p, s)) < 4 * se
    # ... and one draw scatters far more than the soft AUC's own error (zero here).
    assert np.std(aucs) > 10 * se


def test_soft_auc_refuses_bad_input():
    with pytest.raises(ValueError, match="p_true"):
        soft_auc([0.2, 1.5], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        soft_auc([0.2, 0.5], [0.1])
    with pytest.raises(ValueError, match="undefined"):
        soft_auc([0.0, 0.0], [0.1, 0.2])


# ----------------------------------------------------------------- paired bootstrap

def test_paired_bootstrap_values_and_difference():
    rng = np.random.default_rng(1)
    n = 4000
    p = rng.beta(1, 8, n)
    good = p + rng.normal(0, 0.03, n)
    bad = p + rng.normal(0, 0.2, n)
    out = paired_bootstrap(p, {"good": good, "bad": np.stack([bad, bad + 1e-9])}, "good",
                           n_boot=100, seed=0)
    assert out["good"]["value"] == pytest.approx(soft_auc(p, good), abs=1e-12)
    assert out["bad"]["value"] == pytest.approx(soft_auc(p, bad), abs=1e-12)
    assert out["good"]["diff"] == 0 and out["good"]["diff_se"] == 0
    d = out["bad"]
    assert d["diff"] == pytest.approx(d["value"] - out["good"]["value"])
    assert d["diff_low"] < d["diff"] < d["diff_high"] < 0      # clearly worse, and it says so
    assert out["bad"]["low"] < out["bad"]["value"] < out["bad"]["high"]


def test_paired_bootstrap_interval_covers_zero_for_equal_scorers():
    """Two scorers of the same quality: the interval of their difference contains 0."""
    rng = np.random.default_rng(2)
    n = 3000
    y = (rng.random(n) < 0.2).astype(int)
    a = y + rng.normal(0, 1.0, n)
    b = y + rng.normal(0, 1.0, n)
    out = paired_bootstrap(y, {"a": a, "b": b}, "a", n_boot=200, seed=0)
    assert out["b"]["diff_low"] < 0 < out["b"]["diff_high"]
    # Pairing: the difference is tighter than either AUC alone would suggest.
    assert out["b"]["diff_high"] - out["b"]["diff_low"] < 2 * (out["b"]["high"] - out["b"]["low"])


def test_paired_bootstrap_refuses_bad_input():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="reference"):
        paired_bootstrap(y, {"a": y * 1.0}, "b")
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(y, {"a": np.ones(3)}, "a")


def test_bootstrap_weights_count_each_copy_as_a_row():
    """A replicate with row counts c is scored exactly like the data with rows repeated."""
    from esmm_np.metrics import _pair_auc, _tie_groups
    rng = np.random.default_rng(3)
    p = rng.random(30) * 0.5
    s = np.round(rng.random(30), 1)
    c = rng.integers(0, 4, 30).astype(float)
    weighted = _pair_auc(c * p, c, *_tie_groups(s), float(c @ (p * (1 - p))))
    rep = np.repeat(np.arange(30), c.astype(int))
    assert weighted == pytest.approx(soft_auc(p[rep], s[rep]), abs=1e-12)
