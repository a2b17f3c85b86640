"""Dataset, clean_dataset and describe: what they keep, drop, copy and refuse."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmm_np.data import CleanReport, Dataset, clean_dataset, describe

FIELD_DIMS = (5, 4)


def small_log():
    """Six impressions; row 2 and row 5 converted without a click (invalid)."""
    X = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [4, 0], [0, 1]])
    click = np.array([1, 1, 0, 0, 1, 0])
    conversion = np.array([1, 0, 1, 0, 0, 1])
    dense = np.arange(12, dtype=np.float64).reshape(6, 2)
    return X, click, conversion, dense


def valid_dataset(**extra):
    X, click, conversion, dense = small_log()
    keep = np.array([0, 1, 3, 4])
    return Dataset(X=X[keep], click=click[keep], conversion=conversion[keep],
                   field_dims=FIELD_DIMS, dense=dense[keep], **extra)


# ----------------------------------------------------------------- Dataset

def test_dataset_stores_compact_dtypes_and_default_names():
    ds = valid_dataset()
    assert ds.X.dtype == np.int32 and ds.click.dtype == np.int8 and ds.conversion.dtype == np.int8
    assert ds.field_dims == FIELD_DIMS
    assert ds.field_names == ("field_0", "field_1")
    assert len(ds) == 4 and ds.n_dense == 2
    assert not ds.has_ground_truth


def test_dataset_refuses_conversion_without_click():
    X, click, conversion, _ = small_log()
    with pytest.raises(ValueError, match=r"2 row\(s\) have click = 0 and conversion = 1"):
        Dataset(X=X, click=click, conversion=conversion, field_dims=FIELD_DIMS)


@pytest.mark.parametrize("change, match", [
    (dict(field_names=("a",)), "field_names has 1 names but there are 2 fields"),
    (dict(field_dims=(5, 3)), "out of range"),
    (dict(true_ctr=np.array([0.1, 0.2, 1.5, 0.3])), r"true_ctr must lie in \[0, 1\]"),
    (dict(true_cvr=np.array([0.1, np.nan, 0.5, 0.3])), r"true_cvr must lie in \[0, 1\]"),
    (dict(true_ctr=np.array([0.1, 0.2])), r"true_ctr must have shape \(4,\)"),
    (dict(dense=np.zeros((4, 0))), "n_dense >= 1"),
    (dict(dense=np.array([[0.0], [np.inf], [0.0], [0.0]])), "NaN or inf"),
])
def test_dataset_rejects_inconsistent_parts(change, match):
    X, click, conversion, _ = small_log()
    keep = np.array([0, 1, 3, 4])
    parts = dict(X=X[keep], click=click[keep], conversion=conversion[keep],
                 field_dims=FIELD_DIMS)
    parts.update(change)
    with pytest.raises(ValueError, match=match):
        Dataset(**parts)


def test_dataset_checks_conversion_against_the_potential_outcome():
    # click = [1, 1, 0, 1], conversion = [1, 0, 0, 0]; row 1 clicked, so its
    # conversion must equal its potential outcome.
    with pytest.raises(ValueError, match="conversion must equal click \\* conversion_if_clicked"):
        valid_dataset(conversion_if_clicked=np.array([1, 1, 0, 0]))
    ds = valid_dataset(conversion_if_clicked=np.array([1, 0, 1, 0]),  # row 2 unclicked: free
                       true_ctr=np.full(4, 0.5), true_cvr=np.full(4, 0.5))
    assert ds.has_ground_truth


def test_subset_by_index_and_by_mask_copies():
    ds = valid_dataset(true_ctr=np.array([0.1, 0.2, 0.3, 0.4]))
    by_index = ds.subset(np.array([3, 0]))
    assert np.array_equal(by_index.X, ds.X[[3, 0]])
    assert np.array_equal(by_index.true_ctr, np.array([0.4, 0.1]))
    assert np.array_equal(by_index.dense, ds.dense[[3, 0]])
    by_mask = ds.subset(np.array([True, False, False, True]))
    assert np.array_equal(by_mask.click, ds.click[[0, 3]])
    assert not np.shares_memory(by_mask.X, ds.X)  # the subset owns its arrays
    assert by_mask.field_dims == ds.field_dims and by_mask.field_names == ds.field_names


def test_subset_rejects_bad_indices():
    ds = valid_dataset()
    with pytest.raises(IndexError, match="out of range for 4 rows"):
        ds.subset(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"boolean mask must have shape \(4,\)"):
        ds.subset(np.array([True, False]))
    with pytest.raises(TypeError, match="integer indices or a boolean mask"):
        ds.subset(np.array([0.5]))


def test_split_is_a_seeded_partition():
    n = 1000
    rng = np.random.default_rng(0)
    click = (rng.random(n) < 0.3).astype(np.int8)
    ds = Dataset(X=np.stack([np.arange(n), np.zeros(n, dtype=int)], axis=1), click=click,
                 conversion=np.zeros(n, dtype=np.int8), field_dims=(n, 1))
    train, test = ds.split(0.25, seed=1)
    assert len(test) == 250 and len(train) == 750
    # Column 0 is the row number: the two halves are disjoint, cover everything,
    # and keep the original order.
    ids_train, ids_test = train.X[:, 0], test.X[:, 0]
    assert np.intersect1d(ids_train, ids_test).size == 0
    assert np.array_equal(np.sort(np.concatenate([ids_train, ids_test])), np.arange(n))
    assert np.all(np.diff(ids_train) > 0) and np.all(np.diff(ids_test) > 0)
    assert np.array_equal(train.click, click[ids_train])
    assert np.array_equal(ds.split(0.25, seed=1)[1].X, test.X)
    assert not np.array_equal(ds.split(0.25, seed=2)[1].X, test.X)


@pytest.mark.parametrize("fraction, match", [(0.0, r"in \(0, 1\)"), (1.0, r"in \(0, 1\)"),
                                             (0.01, "both must be non-empty")])
def test_split_rejects_fractions_that_leave_a_side_empty(fraction, match):
    with pytest.raises(ValueError, match=match):
        valid_dataset().split(fraction)


# ----------------------------------------------------------------- clean_dataset

def test_clean_dataset_counts_and_drops_the_invalid_rows():
    X, click, conversion, dense = small_log()
    ds, report = clean_dataset(X, click, conversion, dense, field_dims=FIELD_DIMS)
    assert isinstance(report, CleanReport)
    assert (report.n_in, report.n_invalid, report.n_out) == (6, 2, 4)
    assert report.dropped_rows.tolist() == [2, 5]
    keep = [0, 1, 3, 4]
    assert np.array_equal(ds.X, X[keep]) and np.array_equal(ds.dense, dense[keep])
    assert np.array_equal(ds.click, click[keep]) and np.array_equal(ds.conversion,
                                                                    conversion[keep])
    assert ds.field_dims == FIELD_DIMS


def test_clean_dataset_never_touches_or_shares_its_inputs():
    X, click, conversion, dense = small_log()
    originals = [a.copy() for a in (X, click, conversion, dense)]
    # No invalid rows here, the case where returning the inputs would be tempting.
    keep = np.array([0, 1, 3, 4])
    inputs = [np.ascontiguousarray(a[keep]) for a in (X, click, conversion, dense)]
    inputs[0] = inputs[0].astype(np.int32)
    inputs[1], inputs[2] = inputs[1].astype(np.int8), inputs[2].astype(np.int8)
    ds, report = clean_dataset(*inputs, field_dims=FIELD_DIMS)
    assert report.n_invalid == 0
    for out, given_ in zip((ds.X, ds.click, ds.conversion, ds.dense), inputs):
        assert not np.shares_memory(out, given_)
    clean_dataset(X, click, conversion, dense, field_dims=FIELD_DIMS)
    for a, b in zip((X, click, conversion, dense), originals):
        assert np.array_equal(a, b) and a.dtype == b.dtype


def test_clean_dataset_strict_mode_names_count_and_rows():
    X, click, conversion, _ = small_log()
    with pytest.raises(ValueError, match=r"2 of 6 row\(s\) have click = 0 and conversion = 1"
                                         r".*rows 2, 5"):
        clean_dataset(X, click, conversion, field_dims=FIELD_DIMS, strict=True)


def test_clean_dataset_strict_mode_passes_clean_data():
    X, click, conversion, _ = small_log()
    conversion = conversion * click
    ds, report = clean_dataset(X, click, conversion, field_dims=FIELD_DIMS, strict=True)
    assert report.n_invalid == 0 and len(ds) == 6


def test_clean_dataset_infers_field_dims_from_the_largest_ids():
    X, click, conversion, _ = small_log()
    # The largest ids of the first two rows are 1 and 1; of all rows 4 and 3.
    ds, _ = clean_dataset(X[:2], click[:2], conversion[:2])
    assert ds.field_dims == (2, 2)
    ds, _ = clean_dataset(X, click, conversion)
    assert ds.field_dims == (5, 4)


@pytest.mark.parametrize("change, error, match", [
    (dict(X=np.array([[0, 0], [1, 9], [2, 2], [3, 3], [4, 0], [0, 1]])), ValueError,
     r"out of range .*row 1, field 1: id 9"),
    (dict(click=np.array([1, 1, 0, 2, 1, 0])), ValueError, "click must hold only 0 and 1"),
    (dict(conversion=np.array([1, 0, 1])), ValueError, "conversion has length 3"),
    (dict(dense=np.full((6, 2), np.nan)), ValueError, "NaN or inf"),
    (dict(X=np.zeros((6, 2))), TypeError, "integer ids"),
])
def test_clean_dataset_raises_for_everything_that_is_not_a_dropped_row(change, error, match):
    X, click, conversion, dense = small_log()
    parts = dict(X=X, click=click, conversion=conversion, dense=dense)
    parts.update(change)
    with pytest.raises(error, match=match):
        clean_dataset(parts["X"], parts["click"], parts["conversion"], parts["dense"],
                      field_dims=FIELD_DIMS)


def test_clean_dataset_refuses_a_log_with_nothing_valid():
    with pytest.raises(ValueError, match="all 2 rows have click = 0 and conversion = 1"):
        clean_dataset(np.zeros((2, 1), dtype=int), [0, 0], [1, 1], field_dims=(1,))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40))
def test_clean_dataset_keeps_exactly_the_valid_rows_in_order(labels):
    click = np.array([c for c, _ in labels])
    conversion = np.array([v for _, v in labels])
    n = len(labels)
    X = np.arange(n).reshape(n, 1)  # the id is the row number, so we can see which rows survive
    invalid = (click == 0) & (conversion == 1)
    if invalid.all():
        with pytest.raises(ValueError, match="nothing is left"):
            clean_dataset(X, click, conversion, field_dims=(n,))
        return
    ds, report = clean_dataset(X, click, conversion, field_dims=(n,))
    assert report.n_invalid == invalid.sum() and report.n_out == n - invalid.sum()
    assert report.dropped_rows.tolist() == np.flatnonzero(invalid).tolist()
    assert ds.X[:, 0].tolist() == np.flatnonzero(~invalid).tolist()
    assert not np.any((ds.click == 0) & (ds.conversion == 1))


# ----------------------------------------------------------------- describe

def test_describe_counts_and_rates():
    ds = valid_dataset()  # clicks 1, 1, 0, 1; conversions 1, 0, 0, 0
    d = describe(ds)
    assert (d["n_impressions"], d["n_clicks"], d["n_conversions"]) == (4, 3, 1)
    assert d["ctr"] == pytest.approx(3 / 4)
    assert d["cvr"] == pytest.approx(1 / 3)
    assert d["ctcvr"] == pytest.approx(1 / 4)
    assert d["ids_seen"] == {"field_0": 4, "field_1": 3}
    assert "mean_true_cvr_unclicked" not in d


def test_describe_with_no_clicks_and_with_ground_truth():
    ds = Dataset(X=np.zeros((2, 1), dtype=int), click=[0, 0], conversion=[0, 0],
                 field_dims=(1,), true_ctr=np.array([0.1, 0.3]),
                 true_cvr=np.array([0.2, 0.4]), conversion_if_clicked=np.array([0, 1]))
    d = describe(ds)
    assert np.isnan(d["cvr"]) and d["ctr"] == 0.0
    assert d["mean_true_ctr"] == pytest.approx(0.2)
    assert np.isnan(d["mean_true_cvr_clicked"])
    assert d["mean_true_cvr_unclicked"] == pytest.approx(0.3)
    assert d["mean_true_cvr_entire"] == pytest.approx(0.3)
