"""The simulator: every knob does what docs/simulator.md says it does.

Most tolerances are a number of standard errors. Impressions are i.i.d.
given the world (each picks its user, item, features and outcomes
independently), so the usual standard error of a mean applies to any
per-impression quantity. Where a quantity was fitted on the simulator's own
calibration sample (intercepts, the neutralised selection gap), that
sample's error adds to ours; it is a sample of the same kind with
``_N_CALIBRATION`` rows, hence the factor ``sqrt(1 + n / _N_CALIBRATION)``.
Four standard errors fail a correct simulator about once in 16,000 runs,
and every test here uses a fixed seed, so the outcome does not change
between runs.
"""

import numpy as np
import pytest

from esmm_np.data import Dataset
from esmm_np.data.simulator import _N_CALIBRATION, FIELD_NAMES, simulate

N = 300_000
SEED = 11


@pytest.fixture(scope="module")
def worlds():
    """The default world at three values of rho, same seed (so same users, items, draws)."""
    return {rho: simulate(N, seed=SEED, rho=rho) for rho in (-0.6, 0.0, 0.6)}


@pytest.fixture(scope="module")
def confounded():
    return simulate(N, seed=SEED, confounder=1.5)


def se_mean(x):
    """Standard error of the mean of i.i.d. values ``x``."""
    x = np.asarray(x, dtype=np.float64)
    return x.std() / np.sqrt(x.size)


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1.0 - p))


def cvr_gap(ds):
    """Mean true CVR of clicked minus unclicked impressions, and its standard error."""
    clicked = ds.click == 1
    a, b = ds.true_cvr[clicked], ds.true_cvr[~clicked]
    gap = a.mean(dtype=np.float64) - b.mean(dtype=np.float64)
    return gap, np.hypot(se_mean(a), se_mean(b))


# ----------------------------------------------------------------- structure

def test_arrays_have_documented_shapes_dtypes_and_field_order(worlds):
    ds = worlds[0.6]
    assert isinstance(ds, Dataset) and len(ds) == N
    assert ds.X.shape == (N, 4) and ds.X.dtype == np.int32
    assert ds.field_names == FIELD_NAMES == ("user_id", "item_id", "item_category",
                                             "user_segment")
    assert ds.field_dims == (4000, 3000, 40, 8)
    for name in ("click", "conversion", "conversion_if_clicked"):
        assert getattr(ds, name).dtype == np.int8, name
    assert ds.true_ctr.dtype == np.float32 and ds.true_cvr.dtype == np.float32
    assert ds.dense is None
    assert ds.info["rho"] == 0.6 and "intercept_ctr" in ds.info


def test_category_and_segment_are_functions_of_item_and_user(worlds):
    X = worlds[0.6].X
    for id_col, group_col in ((1, 2), (0, 3)):
        # Every id must map to exactly one group: sort by id, group must not change within an id.
        order = np.lexsort((X[:, group_col], X[:, id_col]))
        ids, groups = X[order, id_col], X[order, group_col]
        same_id = ids[1:] == ids[:-1]
        assert np.all(groups[1:][same_id] == groups[:-1][same_id])


def test_no_conversion_without_a_click(worlds, confounded):
    for ds in (*worlds.values(), confounded):
        assert not np.any((ds.click == 0) & (ds.conversion == 1))
        assert np.array_equal(ds.conversion, ds.click * ds.conversion_if_clicked)
        # The potential outcome is not all zeros on unclicked rows: the truth exists there too.
        assert ds.conversion_if_clicked[ds.click == 0].sum() > 0


# ----------------------------------------------------------------- randomness

def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    a, b, c = simulate(20_000, seed=3), simulate(20_000, seed=3), simulate(20_000, seed=4)
    for name in ("X", "click", "conversion", "true_ctr", "true_cvr", "conversion_if_clicked"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.info == b.info
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.true_ctr, c.true_ctr)


def test_a_longer_run_starts_with_the_shorter_run():
    # 70,000 and 140,000 both cross the 65,536-row block boundary; the random
    # streams are keyed by block, not by how many rows were asked for.
    short, long = simulate(70_000, seed=5, n_dense=2), simulate(140_000, seed=5, n_dense=2)
    head = long.subset(np.arange(70_000))
    for name in ("X", "click", "conversion", "true_ctr", "true_cvr", "conversion_if_clicked",
                 "dense"):
        assert np.array_equal(getattr(short, name), getattr(head, name)), name


# ----------------------------------------------------------------- ctr, cvr

@pytest.fixture(scope="module")
def high_rates():
    return simulate(200_000, seed=SEED, ctr=0.15, cvr=0.30)


@pytest.mark.parametrize("which", ["default", "high"])
def test_realised_rates_land_on_the_targets(worlds, high_rates, which):
    ds = worlds[0.6] if which == "default" else high_rates
    ctr, cvr = ds.info["ctr"], ds.info["cvr"]
    n = len(ds)
    widen = np.sqrt(1.0 + n / _N_CALIBRATION)  # the intercepts were fitted on another sample
    # Mean true CTR: no Bernoulli noise, only which impressions were drawn.
    assert abs(ds.true_ctr.mean(dtype=np.float64) - ctr) < 4 * widen * se_mean(ds.true_ctr)
    # Observed click rate: adds the Bernoulli noise of each click.
    assert abs(ds.click.mean() - ctr) < 4 * widen * se_mean(ds.click)
    # CVR given click = expected conversions / expected clicks, a ratio of
    # means; its standard error by the delta method is se(a - R b) / mean(b).
    a = ds.true_ctr.astype(np.float64) * ds.true_cvr
    b = ds.true_ctr.astype(np.float64)
    ratio = a.mean() / b.mean()
    assert abs(ratio - cvr) < 4 * widen * se_mean(a - ratio * b) / b.mean()
    # Observed conversions / clicks: binomial noise over the clicks.
    observed = ds.conversion.sum() / ds.click.sum()
    assert abs(observed - cvr) < 4 * widen * np.sqrt(cvr * (1 - cvr) / ds.click.sum())


def test_rate_targets_move_the_rates(worlds, high_rates):
    assert high_rates.click.mean() > 3 * worlds[0.6].click.mean()
    assert (high_rates.conversion.sum() / high_rates.click.sum()
            > 2 * worlds[0.6].conversion.sum() / worlds[0.6].click.sum())


# ----------------------------------------------------------------- rho

def test_positive_rho_clicked_convert_more(worlds):
    gap, se = cvr_gap(worlds[0.6])
    assert gap > 10 * se
    clicked = worlds[0.6].click == 1
    # Visible, not just significant: the unclicked convert at well under the clicked rate.
    assert worlds[0.6].true_cvr[~clicked].mean() < 0.7 * worlds[0.6].true_cvr[clicked].mean()


def test_negative_rho_unclicked_convert_more(worlds):
    gap, se = cvr_gap(worlds[-0.6])
    assert gap < -10 * se


def test_zero_rho_no_selection_gap(worlds):
    gap, se = cvr_gap(worlds[0.0])
    # The gap was set to exactly 0 on the calibration sample; here it differs
    # by the sampling error of both samples.
    assert abs(gap) < 4 * np.sqrt(1.0 + N / _N_CALIBRATION) * se
    # And it is small next to what rho = 0.6 gives in the same world.
    assert abs(gap) < 0.05 * abs(cvr_gap(worlds[0.6])[0])


def test_zero_rho_no_selection_gap_across_worlds():
    # One world has few effective users and items (the popular head), so a
    # clicks-vs-conversions link could hide in it by chance; the simulator
    # removes it (docs/simulator.md, "neutralising"). Over six worlds the
    # standardised gaps z should look like standard normals: mean(z^2) is
    # then chi-square(6) / 6, which exceeds 4.64 with probability 1e-4.
    # (Without the neutralising angle these six worlds give about 13.)
    n, z = 200_000, []
    for seed in range(101, 107):
        gap, se = cvr_gap(simulate(n, seed=seed, rho=0.0))
        z.append(gap / (se * np.sqrt(1.0 + n / _N_CALIBRATION)))
    assert np.mean(np.square(z)) < 4.64, z


@pytest.mark.parametrize("rho", [-0.6, 0.0, 0.6])
def test_rho_is_the_correlation_of_the_two_logits(worlds, rho):
    ds = worlds[rho]
    # Without confounder or dense features each logit is intercept + signal * score,
    # so their correlation is that of the scores: exactly rho on the calibration
    # sample. 0.02 is about ten standard errors of a correlation over 300k rows.
    r = np.corrcoef(logit(ds.true_ctr), logit(ds.true_cvr))[0, 1]
    assert abs(r - rho) < 0.02


# ----------------------------------------------------------------- confounder

def test_confounder_makes_unclicked_convert_less_than_true_cvr_says(worlds, confounded):
    for ds, kappa in ((worlds[0.6], 0.0), (confounded, 1.5)):
        clicked = ds.click == 1
        # On clicked impressions true_cvr is exactly P(convert | click, x) either way.
        y, p = ds.conversion[clicked], ds.true_cvr[clicked]
        assert abs(y.mean() - p.mean(dtype=np.float64)) < 4 * se_mean(y - p), kappa
        # On the unclicked, the potential outcome agrees with true_cvr only without confounder.
        y, p = ds.conversion_if_clicked[~clicked], ds.true_cvr[~clicked]
        shortfall = p.mean(dtype=np.float64) - y.mean()
        if kappa == 0:
            assert abs(shortfall) < 4 * se_mean(y - p)
        else:
            assert shortfall > 20 * se_mean(y - p)


def test_confounder_correlates_outcomes_beyond_the_true_probabilities(worlds, confounded):
    def residual_corr(ds):
        return np.corrcoef(ds.click - ds.true_ctr.astype(np.float64),
                           ds.conversion_if_clicked - ds.true_cvr.astype(np.float64))[0, 1]
    # Independent given x: the correlation of residuals is 0 up to 1 / sqrt(n) per SE.
    assert abs(residual_corr(worlds[0.6])) < 4 / np.sqrt(N)
    assert residual_corr(confounded) > 20 / np.sqrt(N)


# ----------------------------------------------------------------- sparsity

def id_counts(ds, field):
    counts = np.bincount(ds.X[:, field], minlength=ds.field_dims[field])
    return counts[counts > 0]


def test_more_users_and_items_mean_rarer_ids():
    small = simulate(60_000, seed=SEED, n_users=500, n_items=400)
    large = simulate(60_000, seed=SEED, n_users=20_000, n_items=16_000)
    for field in (0, 1):
        rare_small = np.mean(id_counts(small, field) < 5)
        rare_large = np.mean(id_counts(large, field) < 5)
        assert rare_large > 0.5 > 0.05 > rare_small, (field, rare_small, rare_large)


def top1pct_share(ds):
    """Share of impressions that go to the 1% most frequent users."""
    counts = np.sort(np.bincount(ds.X[:, 0], minlength=ds.field_dims[0]))[::-1]
    return counts[: len(counts) // 100].sum() / counts.sum()


def test_popularity_skew_concentrates_impressions_on_the_head(worlds):
    uniform = simulate(100_000, seed=SEED, popularity_skew=0.0)
    # Uniform: the top 40 of 4000 users get 1% of impressions plus the upward
    # bias of picking the top of 4000 noisy counts (about 25 expected each):
    # well under 2%.
    assert top1pct_share(uniform) < 0.02
    # Default Zipf(1): sum_{r<=40} 1/r / sum_{r<=4000} 1/r = 4.28 / 8.87 = 48%.
    assert top1pct_share(worlds[0.6]) > 0.4


def spread_within_groups(ds):
    """Largest difference of true_ctr between two impressions of the same (category, segment)."""
    group = ds.X[:, 2].astype(np.int64) * ds.field_dims[3] + ds.X[:, 3]
    order = np.argsort(group, kind="stable")
    g, p = group[order], ds.true_ctr[order]
    same = g[1:] == g[:-1]
    return np.max(np.abs(p[1:][same] - p[:-1][same]))


def test_groups_alone_decide_when_group_share_is_one(worlds):
    ds = simulate(50_000, seed=SEED, n_categories=5, n_segments=3, group_share=1.0)
    assert ds.field_dims[2:] == (5, 3)
    assert set(np.unique(ds.X[:, 2])) == set(range(5))
    assert set(np.unique(ds.X[:, 3])) == set(range(3))
    # With group_share = 1 a user's latent vectors are its segment's and an
    # item's its category's, so (category, segment) fixes true_ctr exactly...
    assert spread_within_groups(ds) == 0.0
    # ...while by default (0.5) ids within a group differ.
    assert spread_within_groups(worlds[0.6]) > 0.05


def n_significant_singular_values(ds, k=12):
    """Numerical rank of logit(true CTR) over the k most popular users x k most popular items."""
    top_u = np.argsort(np.bincount(ds.X[:, 0]))[::-1][:k]
    top_i = np.argsort(np.bincount(ds.X[:, 1]))[::-1][:k]
    lg = logit(ds.true_ctr)
    L = np.full((k, k), np.nan)
    for a, u in enumerate(top_u):
        rows = np.flatnonzero(ds.X[:, 0] == u)
        for b, i in enumerate(top_i):
            hit = rows[ds.X[rows, 1] == i]
            L[a, b] = lg[hit[0]] if hit.size else np.nan
    assert not np.isnan(L).any(), "every top user x top item pair should occur"
    s = np.linalg.svd(L, compute_uv=False)
    # float32 probabilities give logits good to ~1e-6; 1e-3 of the largest
    # singular value separates real directions from that rounding.
    return int(np.sum(s > 1e-3 * s[0]))


def test_latent_dim_bounds_the_rank_of_user_item_affinity(worlds):
    # logit = const + user effect + item effect + rank-d affinity: rank <= d + 2.
    assert n_significant_singular_values(simulate(200_000, seed=SEED, latent_dim=2)) <= 4
    assert worlds[0.6].info["latent_dim"] == 8
    assert n_significant_singular_values(worlds[0.6]) >= 6


# ----------------------------------------------------------------- dense, signal

def test_dense_features_change_both_probabilities(worlds):
    with_dense = simulate(100_000, seed=SEED, n_dense=3)
    without = worlds[0.6]
    assert with_dense.dense.shape == (100_000, 3) and with_dense.dense.dtype == np.float32
    assert without.dense is None

    def spread_on_most_common_pair(ds):
        pair = ds.X[:, 0].astype(np.int64) * ds.field_dims[1] + ds.X[:, 1]
        values, counts = np.unique(pair, return_counts=True)
        rows = pair == values[np.argmax(counts)]
        return np.ptp(ds.true_ctr[rows]), np.ptp(ds.true_cvr[rows])
    # Same user and item: only the dense features can make the probabilities differ.
    assert spread_on_most_common_pair(without) == (0.0, 0.0)
    ctr_spread, cvr_spread = spread_on_most_common_pair(with_dense)
    assert ctr_spread > 0.01 and cvr_spread > 0.01

    # The features explain a real share of each logit's variance (least squares R^2).
    D = np.column_stack([np.ones(len(with_dense)), with_dense.dense])
    for p in (with_dense.true_ctr, with_dense.true_cvr):
        y = logit(p)
        resid = y - D @ np.linalg.lstsq(D, y, rcond=None)[0]
        assert 1 - resid.var() / y.var() > 0.05


def test_signal_is_the_spread_of_the_click_logit(worlds):
    # The click score has variance 1 on the calibration sample; 5% covers the
    # sampling error of a standard deviation over 100k+ heavy-tailed values.
    weak = simulate(100_000, seed=SEED, signal=0.5)
    assert logit(weak.true_ctr).std() == pytest.approx(0.5, rel=0.05)
    assert logit(worlds[0.6].true_ctr).std() == pytest.approx(1.5, rel=0.05)


def test_zero_signal_gives_everyone_the_target_rates():
    ds = simulate(10_000, seed=SEED, signal=0.0)
    # float32 storage: the values equal the float32 nearest the target.
    assert np.all(ds.true_ctr == np.float32(0.04))
    assert np.all(ds.true_cvr == np.float32(0.10))


# ----------------------------------------------------------------- bad knobs

@pytest.mark.parametrize("kwargs, match", [
    (dict(rho=1.5), "rho is a correlation"),
    (dict(ctr=0.0), "ctr is a target rate"),
    (dict(cvr=1.0), "cvr is a target rate"),
    (dict(n_users=0), "n_users must be a positive integer"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(confounder=-1.0), "confounder must be a finite number >= 0"),
    (dict(group_share=2.0), "group_share must be in"),
    (dict(n_dense=-1), "n_dense must be a non-negative integer"),
])
def test_bad_knobs_raise_with_the_knob_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(100, **kwargs)


def test_unreachable_rates_raise():
    # A mean CTR of 1e-15 needs an intercept below -30, outside the searched range.
    with pytest.raises(ValueError, match="could not solve for an intercept"):
        simulate(100, ctr=1e-15)


# ----------------------------------------------------------------- presets

def test_default_preset_is_the_default_world_bit_for_bit():
    from esmm_np.data.simulator import PRESETS
    a = simulate(70_000, seed=5)
    b = simulate(70_000, seed=5, preset="default", **PRESETS["default"])
    for name in ("X", "click", "conversion", "conversion_if_clicked", "true_ctr", "true_cvr"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.field_names == FIELD_NAMES


def test_paper_preset_has_ali_ccp_like_rates_and_more_fields():
    d = simulate(N, seed=SEED, preset="paper")
    clicked = d.click == 1
    assert len(d.field_dims) == 8 and d.X.shape[1] == 8
    assert np.all(d.X.max(axis=0) < np.array(d.field_dims))
    # Targets 4% and 0.8%; 4 standard errors of the realised rates, inflated as above.
    se_ctr = 4 * se_mean(d.true_ctr) * np.sqrt(1 + N / _N_CALIBRATION)
    assert abs(d.true_ctr.mean() - 0.04) < se_ctr
    cvr = d.true_cvr[clicked].mean()
    assert 0.005 <= cvr <= 0.01
    # Strong shared structure: the clicked convert several times more than the unclicked.
    assert cvr > 2 * d.true_cvr[~clicked].mean()
    # Long tails: the most common id of an attribute field is far above its mean share.
    counts = np.bincount(d.X[:, 4], minlength=d.field_dims[4])
    assert counts.max() > 50 * counts.mean() and np.mean(counts < counts.mean()) > 0.8


def test_an_explicit_knob_beats_the_preset():
    d = simulate(20_000, seed=1, preset="paper", n_attribute_fields=0, cvr=0.05)
    assert d.X.shape[1] == 4 and d.info["cvr"] == 0.05 and d.info["preset"] == "paper"


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="preset"):
        simulate(100, preset="taobao")
