"""Issue 18's probes on the core: each bad input gets a sentence, no quiet NaN,
and the gradient checker refuses what it cannot check instead of saying yes."""

import numpy as np
import pytest

import esmm_np
from esmm_np import gradcheck as G
from esmm_np.escm2 import ESCM2


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, 5, n), rng.integers(0, 4, n)], axis=1)
    click = rng.integers(0, 2, n)
    conversion = click * rng.integers(0, 2, n)
    return X, click, conversion


# ------------------------------------------------------------ no quiet NaN

@pytest.mark.parametrize("make", [
    lambda: esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), n_dense=2, dtype=np.float32),
    lambda: esmm_np.TowerModel([5, 4], embed_dim=2, tower_units=(4,), n_dense=2,
                               dtype=np.float32)])
@pytest.mark.parametrize("value", [3e38, -3e38, 3.4e38, 1e30])
def test_predict_never_returns_nan_for_finite_float32_input(make, value):
    """Dense features near float32's largest value overflow in the first affine layer
    (inf, then inf * 0 = NaN in the ReLU): predict either raises, naming the overflow,
    or returns probabilities in [0, 1]; never a NaN."""
    model = make()
    X, _, _ = _data(8)
    dense = np.full((8, 2), value, dtype=np.float32)            # finite
    dense[::2, 1] = -value
    try:
        with np.errstate(all="ignore"):
            out = model.predict(X, dense=dense)
    except FloatingPointError as err:
        assert "overflowed" in str(err)
    else:
        assert all(np.all((p >= 0) & (p <= 1)) for p in out.values())   # NaN fails this


def test_predict_raises_where_it_used_to_return_nan():
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), n_dense=2, dtype=np.float32)
    X, _, _ = _data(8)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="overflowed"):
        model.predict(X, dense=np.full((8, 2), 3e38, dtype=np.float32))
    out = model.predict(X, dense=np.ones((8, 2), dtype=np.float32))      # ordinary input is fine
    assert all(np.all((p >= 0) & (p <= 1)) for p in out.values())


def test_predict_overflow_names_the_row():
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), n_dense=2, dtype=np.float32)
    X, _, _ = _data(8)
    dense = np.ones((8, 2), dtype=np.float32)
    dense[5] = (3e38, 3e38)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="row 5"):
        model.predict(X, dense=dense, batch_size=3)


# ----------------------------------------------------- a sentence for bad input

@pytest.mark.parametrize("build", [
    lambda: esmm_np.ESMM([5, 4], batch_norm="no"),
    lambda: esmm_np.ESMM([5, 4], share_embedding="False"),
    lambda: esmm_np.TowerModel([5, 4], batch_norm="yes"),
    lambda: ESCM2([5, 4], propensity_grad="true"),
    lambda: esmm_np.Adam(lazy="no"),
    lambda: esmm_np.SGD(lazy="no"),
])
def test_options_given_as_strings_are_refused(build):
    with pytest.raises(TypeError, match="must be True or False"):
        build()


def test_string_truth_values_are_refused_at_call_time(tmp_path):
    X, c, v = _data()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,))
    with pytest.raises(TypeError, match="train must be True or False"):
        model.loss(X, c, v, train="no")
    with pytest.raises(TypeError, match="verbose must be True or False"):
        esmm_np.fit(model, X, c, v, verbose="no")
    path = model.save(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="with_optimizer must be True or False"):
        esmm_np.load_model(path, with_optimizer="no")
    escm2 = ESCM2([5, 4], embed_dim=2, tower_units=(4,))
    with pytest.raises(TypeError, match="train must be True or False"):
        escm2.propensity(X, train="no")
    with pytest.raises(TypeError, match="train must be True or False"):
        escm2.detached_values(X, c, v, train="no")


@pytest.mark.parametrize("weights, error, words", [
    (None, TypeError, "loss_weights must be a pair"),
    (1.0, TypeError, "loss_weights must be a pair"),
    ({"ctr": 1.0}, TypeError, "loss_weights must be a pair"),
    ((1.0,), ValueError, "two non-negative numbers"),
    ("11", ValueError, "two non-negative numbers"),
])
def test_loss_weights_that_are_not_a_pair_get_a_sentence(weights, error, words):
    with pytest.raises((TypeError, ValueError), match=words) as info:
        esmm_np.ESMM([5, 4], loss_weights=weights)
    assert info.type in (error, TypeError, ValueError)


def test_ragged_lists_get_a_sentence():
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), n_dense=1)
    ragged = [[0, 1], [2]]
    with pytest.raises(ValueError, match="X must be a rectangular array"):
        model.loss(ragged, [0, 1], [0, 0], dense=[[0.0], [1.0]])
    with pytest.raises(ValueError, match="X must be a rectangular array"):
        model.predict(ragged, dense=[[0.0], [1.0]])
    with pytest.raises(ValueError, match="X must be a rectangular array"):
        esmm_np.fit(model, ragged, [0, 1], [0, 0], dense=[[0.0], [1.0]], verbose=False)
    with pytest.raises(ValueError, match="dense must be a rectangular array"):
        model.loss([[0, 1], [2, 3]], [0, 1], [0, 0], dense=[[0.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="click must be a rectangular array"):
        model.loss([[0, 1], [2, 3]], [[0], [1, 1]], [0, 0], dense=[[0.0], [1.0]])


# ------------------------------------------------- checkers that can say no

def test_numerical_gradient_refuses_a_view_it_cannot_nudge():
    """A transposed view: reshape(-1) copies, so the old checker nudged the copy and
    returned zeros (a silent 'the gradient is 0')."""
    x = np.arange(6.0).reshape(2, 3).T
    with pytest.raises(ValueError, match="view"):
        G.numerical_gradient(lambda: float(np.sum(x ** 2)), x)
    y = np.ascontiguousarray(x)                                  # what to pass instead
    g = G.numerical_gradient(lambda: float(np.sum(y ** 2)), y)
    np.testing.assert_allclose(g, 2 * y, rtol=1e-8)


def test_numerical_gradient_refuses_integer_arrays():
    x = np.arange(4)
    with pytest.raises(TypeError, match="floats"):
        G.numerical_gradient(lambda: float(np.sum(x ** 2)), x)
    with pytest.raises(TypeError, match="floats"):
        G.numerical_gradient(lambda: 0.0, [1.0, 2.0])


@pytest.mark.parametrize("index", [[0, 4], [-1], np.array([7])])
def test_numerical_gradient_refuses_an_index_out_of_range(index):
    x = np.zeros(4)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        G.numerical_gradient(lambda: float(np.sum(x)), x, index=index)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        G.checked_mask(x.shape, index)


def test_numerical_gradient_takes_the_step_by_either_name():
    x = np.array([0.3, -1.2])
    f = lambda: float(np.sum(np.sin(x)))                      # noqa: E731
    a = G.numerical_gradient(f, x, step=1e-6)
    b = G.numerical_gradient(f, x, h=1e-6)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, np.cos(x), rtol=1e-8)


def test_compare_refuses_wrong_shapes_complex_and_non_arrays():
    n = np.zeros(3)
    for analytic in (np.zeros((1, 3)), np.zeros(()), np.zeros(4)):
        with pytest.raises(ValueError, match="shape"):
            G.compare("w", analytic, n, G.MODEL_TOL)
    with pytest.raises(TypeError, match="real"):
        G.compare("w", np.zeros(3, dtype=complex), n, G.MODEL_TOL)
    with pytest.raises(TypeError, match="array of real numbers"):
        G.compare("w", None, n, G.MODEL_TOL)
    with pytest.raises(ValueError, match="boolean mask of shape"):
        G.compare("w", np.zeros(3), n, G.MODEL_TOL, checked=np.ones((1, 3), bool))


def test_check_model_of_none_gets_a_sentence():
    X, c, v = _data()
    with pytest.raises(TypeError, match="check_model needs a model"):
        G.check_model(None, X, c, v)


def test_the_tolerances_live_in_one_place():
    assert (G.MODEL_TOL, G.LAYER_TOL, G.FD_STEP) == (1e-6, 1e-9, 1e-5)
    import inspect
    assert inspect.signature(G.check_model).parameters["tol"].default == G.MODEL_TOL
    assert inspect.signature(G.check_layer).parameters["tol"].default == G.LAYER_TOL


def test_check_model_and_check_layer_take_the_step_by_either_name():
    from esmm_np import layers as L
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    X, c, v = _data(12)
    a = G.check_model(model, X, c, v, step=1e-5)
    b = G.check_model(model, X, c, v, h=1e-5)
    assert [r["rel_error"] for r in a] == [r["rel_error"] for r in b] and all(r["ok"] for r in a)
    x = np.random.default_rng(0).standard_normal((4, 3))
    rows_a = G.check_layer(L.tanh_forward, L.tanh_backward, (x,), step=1e-5)
    rows_b = G.check_layer(L.tanh_forward, L.tanh_backward, (x,), h=1e-5)
    assert rows_a[0]["rel_error"] == rows_b[0]["rel_error"] and rows_a[0]["ok"]
    with pytest.raises(ValueError, match="finite-difference step h"):
        G.check_layer(L.tanh_forward, L.tanh_backward, (x,), step=0.0)
