"""Bad input gets a clear error naming the problem, from every public entry point."""

import numpy as np
import pytest

import esmm_np

FIELD_DIMS = [5, 4]


@pytest.fixture
def model():
    return esmm_np.ESMM(FIELD_DIMS, embed_dim=2, tower_units=(3,), n_dense=1, seed=0)


def _good(n=6):
    X = np.array([[0, 1], [4, 3], [2, 0], [1, 1], [3, 2], [0, 0]])[:n]
    click = np.array([1, 0, 1, 0, 1, 0])[:n]
    conversion = np.array([1, 0, 0, 0, 1, 0])[:n]
    dense = np.linspace(-1, 1, n)[:, None]
    return X, click, conversion, dense


def _entries(model):
    """Every public entry point, as a function of (X, click, conversion, dense)."""
    return {
        "loss": lambda X, c, v, d: model.loss(X, c, v, dense=d),
        "fit": lambda X, c, v, d: esmm_np.fit(model, X, c, v, dense=d, verbose=False),
        "predict": lambda X, c, v, d: model.predict(X, dense=d),
    }


CASES = [
    # (what is wrong, change to the good input, error type, message pattern, entries)
    ("X not 2-d", lambda X, c, v, d: (X[:, 0], c, v, d), ValueError, r"shape \(n, n_fields\)", "all"),
    ("X 0-d", lambda X, c, v, d: (X[0, 0], c, v, d), ValueError, r"shape \(n, n_fields\)", "all"),
    ("X wrong columns", lambda X, c, v, d: (np.hstack([X, X]), c, v, d), ValueError,
     "4 columns but the model has 2 fields", "all"),
    ("X float", lambda X, c, v, d: (X.astype(float), c, v, d), TypeError, "integer ids", "all"),
    ("id negative", lambda X, c, v, d: (np.where(np.arange(6)[:, None] == 2, -1, X), c, v, d),
     ValueError, r"negative: row 2, field 0: id -1", "all"),
    ("id too large", lambda X, c, v, d: (np.where([[False, False]] * 3 + [[False, True]] + [[False, False]] * 2, 4, X), c, v, d),
     ValueError, r"out of range.*row 3, field 1: id 4 \(field_dims\[1\]=4\)", "all"),
    ("NaN dense", lambda X, c, v, d: (X, c, v, np.where(np.arange(6)[:, None] == 4, np.nan, d)),
     ValueError, r"dense has 1 NaN or inf.*\(4, 0\)", "all"),
    ("inf dense", lambda X, c, v, d: (X, c, v, np.where(np.arange(6)[:, None] == 1, np.inf, d)),
     ValueError, "NaN or inf", "all"),
    ("dense missing", lambda X, c, v, d: (X, c, v, None), ValueError, "n_dense=1", "all"),
    ("dense wrong shape", lambda X, c, v, d: (X, c, v, np.hstack([d, d])), ValueError,
     r"dense must have shape", "all"),
    ("click not 0/1", lambda X, c, v, d: (X, np.where(np.arange(6) == 0, 2, c), v, d), ValueError,
     r"click must hold only 0 and 1.*row 0 = 2", "train"),
    ("conversion NaN", lambda X, c, v, d: (X, c, np.where(np.arange(6) == 2, np.nan, v), d),
     ValueError, r"conversion must hold only 0 and 1.*row 2", "train"),
    ("lengths differ", lambda X, c, v, d: (X, c[:5], v, d), ValueError,
     "click has length 5 but X has 6 rows", "train"),
    ("conversion without click", lambda X, c, v, d: (X, c, np.where(np.arange(6) == 3, 1, v), d),
     ValueError, r"1 row\(s\) have click = 0 and conversion = 1.*rows 3", "train"),
    ("labels strings", lambda X, c, v, d: (X, c.astype(str), v, d), TypeError, "click must be 0/1", "train"),
]


@pytest.mark.parametrize("what, change, err, pattern, where", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(model, what, change, err, pattern, where):
    args = change(*_good())
    for name, call in _entries(model).items():
        if where == "train" and name == "predict":
            continue
        before = {k: v.copy() for k, v in model.params.items()}
        with pytest.raises(err, match=pattern):
            call(*args)
        # Nothing is written half-way: a refused call leaves the model untouched.
        assert all(np.array_equal(before[k], model.params[k]) for k in before), name


def test_good_input_passes(model):
    X, c, v, d = _good()
    model.loss(X, c, v, dense=d)
    model.predict(X, dense=d)
    # Booleans and float 0.0/1.0 are accepted as labels.
    model.loss(X, c.astype(bool), v.astype(float), dense=d)


def test_tower_model_labels():
    m = esmm_np.TowerModel(FIELD_DIMS, embed_dim=2, tower_units=(3,))
    X = _good()[0]
    with pytest.raises(ValueError, match="y must hold only 0 and 1"):
        m.loss(X, np.full(6, 3))
    with pytest.raises(TypeError, match="one label array"):
        esmm_np.fit(m, X, np.zeros(6), np.zeros(6), verbose=False)


def test_field_dims_checked():
    with pytest.raises(ValueError, match="positive"):
        esmm_np.ESMM([5, 0])
    with pytest.raises(ValueError, match="empty"):
        esmm_np.ESMM([])
    with pytest.raises(TypeError, match="field_dims"):
        esmm_np.ESMM(["a", 3])
