"""gradcheck.check_layer: the sum(out * dout) trick, every input, and no way to pass by accident."""

import numpy as np
import pytest

from esmm_np import gradcheck as G
from esmm_np import layers as L


def _affine_inputs(rng, n=5):
    return rng.standard_normal((n, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)


def test_a_correct_layer_passes_every_input(rng):
    rows = G.check_layer(L.affine_forward, L.affine_backward, _affine_inputs(rng), names=("x", "W", "b"))
    assert [r["tensor"] for r in rows] == ["x", "W", "b"]
    assert all(r["ok"] and r["rel_error"] < G.LAYER_TOL and r["problem"] is None for r in rows)
    assert "3/3 tensors ok" in G.format_table(rows)


def test_one_wrong_gradient_fails_that_input_only(rng):
    def wrong(dout, cache):
        dx, dW, _ = L.affine_backward(dout, cache)
        return dx, dW, dout.mean(axis=0)
    rows = G.check_layer(L.affine_forward, wrong, _affine_inputs(rng), names=("x", "W", "b"))
    assert [r["ok"] for r in rows] == [True, True, False]
    assert rows[2]["rel_error"] > 0.1


def test_nan_fails(rng):
    def nan_in_dx(dout, cache):
        dx, dW, db = L.affine_backward(dout, cache)
        dx[0, 0] = np.nan
        return dx, dW, db
    rows = G.check_layer(L.affine_forward, nan_in_dx, _affine_inputs(rng))
    assert not rows[0]["ok"] and rows[0]["problem"] == "gradient has NaN or inf entries"
    assert "NaN/inf" in G.format_table(rows)


def test_a_broadcastable_shape_fails(rng):
    """db of shape (1, 3) would broadcast into b's (3,); it is still the wrong gradient."""
    def keepdims(dout, cache):
        dx, dW, _ = L.affine_backward(dout, cache)
        return dx, dW, dout.sum(axis=0, keepdims=True)
    rows = G.check_layer(L.affine_forward, keepdims, _affine_inputs(rng, n=1))
    assert not rows[2]["ok"] and "shape (1, 3)" in rows[2]["problem"]


def test_too_few_gradients_fail_every_row(rng):
    rows = G.check_layer(L.affine_forward, lambda dout, cache: L.affine_backward(dout, cache)[:2],
                         _affine_inputs(rng))
    assert not any(r["ok"] for r in rows)


def test_sparse_rows_and_integer_inputs(rng):
    """The embedding: ids are data (no gradient), the table's gradient may be SparseRows."""
    table, ids = rng.standard_normal((10, 3)), np.array([[0, 5], [0, 6], [2, 5]])
    rows = G.check_layer(L.embedding_forward, L.embedding_backward, (table, ids), names=("table",))
    assert len(rows) == 1 and rows[0]["ok"]


def test_needs_float64(rng):
    x, W, b = (a.astype(np.float32) for a in _affine_inputs(rng))
    with pytest.raises(ValueError, match="float64"):
        G.check_layer(L.affine_forward, L.affine_backward, (x, W, b))


def test_a_backward_that_overwrites_the_cache_cannot_change_what_is_checked(rng):
    # The affine cache holds the very arrays passed in. This backward zeroes
    # them and returns the gradients of a layer at x = 0, W = 0: if the finite
    # differences then ran on the zeroed inputs, it would pass.
    def wrong(dout, cache):
        x, W = cache
        x[...] = 0.0
        W[...] = 0.0
        return np.zeros_like(x), np.zeros_like(W), dout.sum(axis=0)
    rows = G.check_layer(L.affine_forward, wrong, _affine_inputs(rng), names=("x", "W", "b"))
    assert [r["ok"] for r in rows] == [False, False, True]


def test_a_right_backward_computed_in_place_in_dout_passes(rng):
    # Reusing the upstream gradient's memory is fine; the check must not then
    # difference a different objective (sum(out * the overwritten dout)).
    def in_place(dout, cache):
        dout *= cache * (1 - cache)          # the sigmoid's cache is s
        return dout
    x = rng.normal(0, 2, size=(4, 3))
    rows = G.check_layer(L.sigmoid_forward, in_place, (x,))
    assert rows[0]["ok"], rows
