"""esmm_np.metrics never hands back a quiet NaN or inf, and wrong option types get a sentence.

Each probe below returned NaN or inf intervals, or died in a comparison
deep inside, before (issue 18): ``paired_bootstrap`` on an all-zero or
all-one target or one row, ``seed_interval`` on inf values, inf or negative
standard errors and sums that overflow, and options given as strings.
"""

import numpy as np
import pytest

from esmm_np import metrics as M

Y = np.array([0, 1, 0, 1, 1, 0])
P = np.array([0.1, 0.8, 0.3, 0.6, 0.9, 0.2])


# ------------------------------------------------------------ paired_bootstrap

@pytest.mark.parametrize("target, scores", [
    (np.zeros(6), {"a": P}),
    (np.ones(6), {"a": P}),
    (np.array([1.0]), {"a": np.array([0.3])}),
    (np.array([0.4]), {"a": np.array([0.3])}),            # a soft target of one row
], ids=["all zero", "all one", "one row", "one soft row"])
def test_paired_bootstrap_refuses_a_target_without_a_pair(target, scores):
    with pytest.raises(ValueError, match="AUC is undefined on this target.*no pair"):
        M.paired_bootstrap(target, scores, "a", n_boot=5)


def test_paired_bootstrap_redraws_replicates_without_a_pair():
    # Two rows, one positive: half the replicates draw one row twice and have no AUC.
    out = M.paired_bootstrap(np.array([1.0, 0.0]), {"a": np.array([0.3, 0.1]),
                                                     "b": np.array([0.1, 0.3])}, "a", n_boot=50)
    for row in out.values():
        assert all(np.isfinite(v) for v in row.values()), row
    assert out["a"]["value"] == 1.0 and out["b"]["value"] == 0.0


def test_paired_bootstrap_with_one_positive_stays_finite():
    y = np.zeros(40)
    y[0] = 1.0                                   # one positive in 40: a third of draws miss it
    out = M.paired_bootstrap(y, {"a": np.linspace(0, 1, 40)}, "a", n_boot=100)
    assert all(np.isfinite(v) for v in out["a"].values()), out


def test_paired_bootstrap_unchanged_where_every_replicate_has_a_pair():
    """The redraw never triggers on ordinary data: the same draws as the plain loop."""
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    s = y + rng.normal(0, 1, 300)
    out = M.paired_bootstrap(y, {"a": s}, "a", n_boot=30, seed=4)
    draws = np.random.default_rng(4)
    aucs = []
    for _ in range(30):
        idx = draws.integers(0, 300, size=300)
        aucs.append(M.auc(y[idx], s[idx]))
    assert out["a"]["low"] == pytest.approx(np.percentile(aucs, 2.5), abs=1e-12)
    assert out["a"]["high"] == pytest.approx(np.percentile(aucs, 97.5), abs=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_boot="200"), ValueError, "n_boot must be an integer >= 2, got '200'"),
    (dict(n_boot=None), ValueError, "n_boot must be an integer >= 2, got None"),
    (dict(n_boot=True), ValueError, "n_boot must be an integer >= 2"),
    (dict(seed="0"), TypeError, "seed must be an integer"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(level="0.9"), TypeError, "level must be a number"),
    (dict(level=None), TypeError, "level must be a number"),
    (dict(scores=[P]), TypeError, "scores must be a dict"),
    (dict(scores={"a": ["x"] * 6}), TypeError, r"scores\['a'\] must be numeric"),
])
def test_paired_bootstrap_option_errors(kwargs, error, match):
    args = dict(target=Y, scores={"a": P}, reference="a", n_boot=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        M.paired_bootstrap(**args)


# ---------------------------------------------------------------- seed_interval

@pytest.mark.parametrize("values, row_se, match", [
    ([1.0, np.inf], None, r"values has 1 infinite value\(s\), first at row 1"),
    ([-np.inf, 1.0, 2.0], None, "values has 1 infinite"),
    ([1.0, 2.0], [np.inf, 1.0], "row_se has 1 infinite"),
    ([1.0, 2.0], [-1.0, 0.5], r"row_se are standard errors, >= 0; 1 negative"),
    ([1e308, -1e308], None, "overflows float64"),
    ([1.0, 2.0], [1e308, 1e308], "overflows float64"),
], ids=["inf", "-inf", "inf se", "negative se", "values overflow", "se overflow"])
def test_seed_interval_refuses_what_gives_inf_or_nan(values, row_se, match):
    with pytest.raises(ValueError, match=match):
        M.seed_interval(values, row_se=row_se)


def test_seed_interval_equal_values_is_a_point():
    r = M.seed_interval([1.0, 1.0])
    assert (r["mean"], r["low"], r["high"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("level", ["0.9", None, [0.9], True])
def test_seed_interval_level_of_the_wrong_type(level):
    with pytest.raises(TypeError, match="level must be a number"):
        M.seed_interval([1.0, 2.0], level=level)


# ---------------------------------------------------------- other metric options

@pytest.mark.parametrize("call, error, match", [
    (lambda: M.log_loss(Y, P, eps="1e-12"), TypeError, "eps must be a number"),
    (lambda: M.log_loss(Y, P, eps=None), TypeError, "eps must be a number"),
    (lambda: M.gap_interval(P, Y, level="0.95"), TypeError, "level must be a number"),
    (lambda: M.potential_outcome_bias(P, Y, level=None), TypeError, "level must be a number"),
    (lambda: M.binned_gap(P, Y, P, n_bins="3"), TypeError, "n_bins must be an integer"),
    (lambda: M.binned_gap(P, Y, P, n_bins=0), ValueError, "n_bins must be >= 1"),
    (lambda: M.calibration(Y, P, n_bins="10"), TypeError, "n_bins must be an integer"),
])
def test_metric_options_of_the_wrong_type_get_a_sentence(call, error, match):
    with pytest.raises(error, match=match):
        call()
