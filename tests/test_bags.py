"""The bag-of-ids pooling layer: gradient checks, plain vs fast form, empty bags.

Tolerance: 1e-9 relative error, as for every layer (tests/test_layers.py
explains the number). The layer is linear in the table, so a correct
backward pass lands near rounding noise; a missing weight or a missing
1 / n_i gives an error of order 1.
"""

import numpy as np
import pytest

from esmm_np import layers as L
from esmm_np import gradcheck
from esmm_np.gradcheck import numerical_gradient, relative_error

LAYER_TOL = gradcheck.LAYER_TOL  # 1e-9, defined once in esmm_np/gradcheck.py
assert LAYER_TOL == 1e-9


def _bags(rng, V=7, k=3):
    """Six rows: empty bags first, in the middle and last; repeated ids in and across bags."""
    lengths = np.array([0, 3, 1, 0, 4, 0])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.array([2, 5, 2, 6, 0, 2, 2, 4])        # id 2 three times in one bag, once in another
    weights = rng.uniform(0.5, 2.0, size=ids.shape[0])
    table = rng.standard_normal((V, k))
    return table, offsets, ids, weights


@pytest.mark.parametrize("mode", L.BAG_MODES)
@pytest.mark.parametrize("weighted", [True, False], ids=["weights", "no weights"])
def test_bag_gradient_matches_finite_differences(mode, weighted, rng):
    table, offsets, ids, weights = _bags(rng)
    w = weights if weighted else None
    out, cache = L.bag_forward(table, offsets, ids, w, mode)
    dout = rng.standard_normal(out.shape)
    analytic = L.sparse_to_dense(L.bag_backward(dout, cache))
    numeric = numerical_gradient(
        lambda: float(np.sum(L.bag_forward(table, offsets, ids, w, mode)[0] * dout)), table)
    err = relative_error(analytic, numeric)
    assert err < LAYER_TOL, f"dtable ({mode}): relative error {err:.2e}"
    # The reference backward agrees with the same finite differences.
    assert relative_error(L.bag_backward_reference(dout, cache), numeric) < LAYER_TOL


def test_the_check_notices_a_wrong_backward(rng):
    """Dropping the weights from the backward pass is caught far above the tolerance."""
    table, offsets, ids, weights = _bags(rng)
    out, cache = L.bag_forward(table, offsets, ids, weights)
    dout = rng.standard_normal(out.shape)
    offs, ids_c, c, V = cache
    wrong = L.sparse_to_dense(L.bag_backward(dout, (offs, ids_c, np.ones_like(c), V)))
    numeric = numerical_gradient(
        lambda: float(np.sum(L.bag_forward(table, offsets, ids, weights)[0] * dout)), table)
    assert relative_error(wrong, numeric) > 1e-2


@pytest.mark.parametrize("mode", L.BAG_MODES)
def test_fast_form_equals_plain_form(mode, rng):
    V, k, n = 50, 4, 200
    lengths = rng.integers(0, 6, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, V, size=offsets[-1])
    weights = rng.uniform(-1, 3, size=offsets[-1])
    table = rng.standard_normal((V, k))
    fast, cache = L.bag_forward(table, offsets, ids, weights, mode)
    plain, _ = L.bag_forward_reference(table, offsets, ids, weights, mode)
    # Same terms, possibly summed in a different order: a few ulps apart at most.
    np.testing.assert_allclose(fast, plain, rtol=1e-12, atol=1e-12)
    de = rng.standard_normal((n, k))
    np.testing.assert_allclose(L.sparse_to_dense(L.bag_backward(de, cache)),
                               L.bag_backward_reference(de, cache), rtol=1e-12, atol=1e-12)


def test_empty_bags_give_zero_vectors_and_no_gradient(rng):
    table = rng.standard_normal((5, 3))
    offsets = np.array([0, 0, 2, 2])
    ids = np.array([1, 3])
    for mode in L.BAG_MODES:
        e, cache = L.bag_forward(table, offsets, ids, None, mode)
        assert np.array_equal(e[0], np.zeros(3)) and np.array_equal(e[2], np.zeros(3))
        scale = 1.0 if mode == "sum" else 0.5
        np.testing.assert_allclose(e[1], scale * (table[1] + table[3]), rtol=1e-15)
        g = L.bag_backward(np.ones((3, 3)), cache)
        assert list(g.rows) == [1, 3]          # untouched rows are not stored
    # Every bag empty: all zeros, an empty gradient.
    e, cache = L.bag_forward(table, np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert not e.any() and L.bag_backward(np.ones((3, 3)), cache).rows.size == 0


def test_a_bag_of_one_id_with_weight_one_is_the_lookup(rng):
    """With one id per row and weight 1 the pooling layer is the single-id embedding."""
    table = rng.standard_normal((9, 4))
    ids = rng.integers(0, 9, size=12)
    offsets = np.arange(13)
    e_bag, c_bag = L.bag_forward(table, offsets, ids)
    e_one, c_one = L.embedding_forward(table, ids[:, None])
    assert np.array_equal(e_bag, e_one)
    de = rng.standard_normal((12, 4))
    g_bag, g_one = L.bag_backward(de, c_bag), L.embedding_backward(de, c_one)
    assert np.array_equal(g_bag.rows, g_one.rows) and np.array_equal(g_bag.values, g_one.values)


def test_add_sparse_rows_sums_overlapping_rows(rng):
    a = L.SparseRows(np.array([1, 4]), rng.standard_normal((2, 3)), 6)
    b = L.SparseRows(np.array([0, 4, 5]), rng.standard_normal((3, 3)), 6)
    np.testing.assert_array_equal(L.sparse_to_dense(L.add_sparse_rows(a, b)),
                                  L.sparse_to_dense(a) + L.sparse_to_dense(b))
