"""Issue 9's probes: NaN cannot hide, options are checked, errors come before work.

Each test is one probe that a hostile user tried; before the fix each one
passed silently, trained a broken model or failed deep inside NumPy.
"""

import numpy as np
import pytest

import esmm_np
from esmm_np import gradcheck as G
from esmm_np.layers import SparseRows


def _data(n=64, seed=0, dims=(5, 4)):
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, n) for d in dims], axis=1)
    click = (rng.random(n) < 0.5).astype(np.int8)
    conversion = click * (rng.random(n) < 0.5).astype(np.int8)
    return X, click, conversion


def _snapshot(model, optimizer=None):
    """Copies of everything training may change."""
    snap = {"params": {k: w.copy() for k, w in model.params.items()},
            "state": {k: a.copy() for k, a in model.state.items()}}
    if optimizer is not None:
        snap["optim"] = {k: a.copy() for k, a in optimizer.state_arrays().items()}
        snap["t"] = getattr(optimizer, "t", None)
    return snap


def _same(a, b):
    assert a.keys() == b.keys()
    for part in a:
        if isinstance(a[part], dict):
            assert a[part].keys() == b[part].keys(), part
            for k in a[part]:
                assert np.array_equal(a[part][k], b[part][k], equal_nan=True), (part, k)
        else:
            assert a[part] == b[part], part


# ------------------------------------------------------------ gradient checks

def test_compare_fails_nan_analytic_gradient():
    row = G.compare("w", np.full(3, np.nan), np.full(3, 1e6), 1e-6)
    assert not row["ok"] and row["non_finite"] == 3
    row = G.compare("w", np.full(3, 1e6), np.full(3, np.nan), 1e-6)
    assert not row["ok"] and row["non_finite"] == 3


def test_compare_fails_inf_even_when_the_rest_agrees():
    a = np.array([1.0, 2.0, np.inf])
    assert not G.compare("w", a, np.array([1.0, 2.0, 3.0]), 1e-6)["ok"]
    assert np.isnan(G.relative_error(a, np.array([1.0, 2.0, 3.0])))


def test_not_checked_entries_are_a_mask_not_nan():
    x = np.arange(6.0)
    index = np.array([1, 4])
    num = G.numerical_gradient(lambda: float(np.sum(x ** 2)), x, index=index)
    assert np.all(np.isfinite(num))           # unchecked entries are 0, not NaN
    mask = G.checked_mask(x.shape, index)
    assert mask.tolist() == [False, True, False, False, True, False]
    row = G.compare("x", 2 * x, num, 1e-8, checked=mask)
    assert row["ok"] and row["n_checked"] == 2
    bad = 2 * x
    bad[4] = np.nan                            # a NaN in a checked entry still fails
    assert not G.compare("x", bad, num, 1e-8, checked=mask)["ok"]


def test_check_model_flags_a_model_whose_loss_is_nan():
    model, (X, c, v, d) = G.everything_on_example()
    model.loss_weights = (1.0, float("nan"))   # bypassing the constructor's check on purpose
    rows = G.check_model(model, X, c, v, dense=d)
    assert not any(r["ok"] for r in rows)
    assert "NaN/inf" in G.format_table(rows)


@pytest.mark.parametrize("h", [0.0, -1e-5, float("nan"), float("inf")])
def test_check_model_refuses_bad_step(h):
    model, (X, c, v, d) = G.everything_on_example()
    with pytest.raises(ValueError, match="finite-difference step h"):
        G.check_model(model, X, c, v, dense=d, h=h)


def test_example_needs_two_rows():
    with pytest.raises(ValueError, match="n >= 2"):
        G.everything_on_example(n=1)


def test_loss_weights_nan_refused():
    with pytest.raises(ValueError, match=r"loss_weights\[1\] must be finite"):
        esmm_np.ESMM([5, 4], loss_weights=(1, float("nan")))


# ------------------------------------------------------------ options checked

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(embed_dim=2.7), TypeError, "embed_dim must be an integer"),
    (dict(field_dims=[3.7, 2]), TypeError, "field_dims must be a sequence of integers"),
    (dict(batch_norm="no"), TypeError, "batch_norm must be True or False"),
    (dict(dropout="0.5"), TypeError, "dropout must be a number"),
    (dict(dropout=float("nan")), ValueError, "dropout must be finite"),
    (dict(l2_reg_dnn=float("inf")), ValueError, "l2_reg_dnn must be finite"),
    (dict(l2_reg_embedding=float("nan")), ValueError, "l2_reg_embedding must be finite"),
    (dict(bn_momentum=5), ValueError, r"bn_momentum must be in \[0, 1\)"),
    (dict(tower_units=(4.5,)), ValueError, "tower_units must be a tuple of ints"),
    (dict(tower_units=(4, 0)), ValueError, "tower_units entry must be >= 1"),
    (dict(n_dense=True), TypeError, "n_dense must be an integer"),
    (dict(share_embedding=1), TypeError, "share_embedding must be True or False"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
])
def test_constructor_options_checked(kwargs, error, match):
    kwargs = {"field_dims": [5, 4], **kwargs}
    with pytest.raises(error, match=match):
        esmm_np.ESMM(**kwargs)
    if "share_embedding" not in kwargs:
        with pytest.raises(error, match=match):
            esmm_np.TowerModel(**kwargs)


@pytest.mark.parametrize("make, match", [
    (lambda: esmm_np.Adam(lr=float("nan")), "lr must be finite"),
    (lambda: esmm_np.Adam(eps=float("nan")), "eps must be finite"),
    (lambda: esmm_np.Adam(beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (lambda: esmm_np.SGD(lr=float("inf")), "lr must be finite"),
    (lambda: esmm_np.SGD(momentum=float("nan")), "momentum must be finite"),
    (lambda: esmm_np.SGD(lr=0), "lr must be > 0"),
])
def test_optimizer_options_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_lazy_must_be_a_bool():
    with pytest.raises(TypeError, match="lazy must be True or False"):
        esmm_np.Adam(lazy="no")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(epochs=-1), ValueError, "epochs must be >= 1"),
    (dict(verbose="yes"), TypeError, "verbose must be True or False"),
    (dict(invalid="ignore"), ValueError, "invalid must be one of"),
    (dict(optimizer="adam"), TypeError, "optimizer must be an esmm_np SGD or Adam"),
    (dict(callback=3), TypeError, "callback must be callable"),
])
def test_fit_options_checked_before_anything_moves(kwargs, error, match):
    X, c, v = _data()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), batch_norm=True, seed=0)
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        esmm_np.fit(model, X, c, v, **{"verbose": False, **kwargs})
    _same(before, _snapshot(model))


def test_eval_loss_and_predict_check_batch_size():
    X, c, v = _data()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.eval_loss(X, c, v, batch_size=-1)       # returned 0.0 before
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(X, batch_size=0)
    tower = esmm_np.TowerModel([5, 4], embed_dim=2, tower_units=(3,))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tower.predict(X, batch_size=0)


# ------------------------------------------------------------ inputs

def test_float32_dense_checked_after_the_cast():
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), n_dense=1, dtype=np.float32)
    X, c, v = _data(n=4)
    dense = np.array([[0.0], [1e39], [1.0], [2.0]])     # finite in float64, inf in float32
    with pytest.raises(ValueError, match="too large for float32.*\\(1, 0\\)"):
        model.predict(X, dense=dense)


def test_uint64_ids_work_like_int64():
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,))
    X, c, v = _data(n=8)
    a = model.predict(X)
    b = model.predict(X.astype(np.uint64))              # crashed with a casting TypeError
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="out of range"):
        model.predict(np.array([[5, 0]], dtype=np.uint64))


# ------------------------------------------------------------ training

@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # NumPy notices the NaN too
def test_fit_raises_on_nan_and_keeps_the_state_of_before():
    X, c, v = _data()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), batch_norm=True, seed=0)
    opt = esmm_np.Adam(lr=1e-2)
    esmm_np.fit(model, X, c, v, optimizer=opt, batch_size=16, verbose=False)
    before = _snapshot(model, opt)
    model.params["ctr.W_out"][0, 0] = np.nan              # the next step's loss is NaN
    before["params"]["ctr.W_out"][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1 of 4: the loss is nan"):
        esmm_np.fit(model, X, c, v, optimizer=opt, batch_size=16, verbose=False)
    _same(before, _snapshot(model, opt))                  # BN statistics and Adam untouched


def test_fit_raises_on_inf_gradient_naming_the_tensor(monkeypatch):
    X, c, v = _data()
    model = esmm_np.TowerModel([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    opt = esmm_np.SGD(lr=0.1, momentum=0.5)
    real = model._loss_grads
    calls = []

    def poisoned(*args, **kwargs):
        loss, grads, caches = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:                               # the third step goes wrong
            grads["net.b0"] = np.full_like(grads["net.b0"], np.inf)
        return loss, grads, caches

    monkeypatch.setattr(model, "_loss_grads", poisoned)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 3 of 4:.*'net.b0'"):
        esmm_np.fit(model, X, c, optimizer=opt, batch_size=16, verbose=False)
    # Replaying two good steps from scratch gives exactly the parameters fit left behind.
    replay = esmm_np.TowerModel([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    ropt = esmm_np.SGD(lr=0.1, momentum=0.5)
    rng = np.random.default_rng(0)
    order = rng.permutation(64)
    for s in (0, 16):
        idx = order[s:s + 16]
        _, g = replay.train_loss(X[idx] + replay.offsets, None, (c[idx],), rng)
        ropt.step(replay.params, g)
    for k in replay.params:
        assert np.array_equal(replay.params[k], model.params[k]), k
        assert np.array_equal(ropt.velocity[k], opt.velocity[k]), k


def test_adam_nan_lr_no_longer_trains_to_nan():
    X, c, v = _data()
    with pytest.raises(ValueError, match="lr must be finite"):
        esmm_np.fit(esmm_np.ESMM([5, 4]), X, c, v, optimizer=esmm_np.Adam(lr=float("nan")))


def test_optimizer_refuses_a_second_model_before_touching_it():
    X, c, v = _data()
    first = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    opt = esmm_np.Adam()
    esmm_np.fit(first, X, c, v, optimizer=opt, verbose=False)
    second = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), batch_norm=True, seed=1)
    before = _snapshot(second, opt)
    with pytest.raises(ValueError, match="already serves a model with other parameters"):
        esmm_np.fit(second, X, c, v, optimizer=opt, verbose=False)
    _same(before, _snapshot(second, opt))


def test_lazy_adam_refuses_a_smaller_table():
    opt = esmm_np.Adam(lazy=True)
    big = {"E": np.zeros((6, 2))}
    opt.step(big, {"E": SparseRows(np.array([0, 5]), np.ones((2, 2)), 6)})
    small = {"E": np.zeros((3, 2))}
    with pytest.raises(ValueError, match="already serves"):
        opt.step(small, {"E": SparseRows(np.array([0]), np.ones((1, 2)), 3)})
    assert np.all(small["E"] == 0) and opt.t == 1


def test_batch_norm_refuses_one_row_batches():
    X, c, v = _data(n=8)
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), batch_norm=True, seed=0)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="batch norm needs training batches of at least 2 rows"):
        esmm_np.fit(model, X, c, v, batch_size=1, verbose=False)
    _same(before, _snapshot(model))
    with pytest.raises(ValueError, match="batch norm needs at least 2 rows"):
        model.loss(X[:1], c[:1], v[:1])


def test_batch_norm_lone_last_row_joins_the_previous_batch():
    X, c, v = _data(n=9)
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), batch_norm=True, seed=0)
    history = esmm_np.fit(model, X, c, v, batch_size=4, verbose=False)
    assert len(history["batch_loss"]) == 2                # 4 + 5 rows, not 4 + 4 + 1
    assert all(np.all(a > 1e-3) for k, a in model.state.items() if "bn_var" in k)


def test_loss_calls_do_not_change_what_fit_trains():
    X, c, v = _data()
    results = []
    for call_loss_first in (False, True):
        model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), dropout=0.3, seed=0)
        if call_loss_first:
            model.loss(X, c, v)                           # draws dropout masks from model.rng
        esmm_np.fit(model, X, c, v, batch_size=16, verbose=False, seed=3)
        results.append(model.params)
    for k in results[0]:
        assert np.array_equal(results[0][k], results[1][k]), k


# ------------------------------------------------------------ metrics and data

def test_auc_ranks_large_integers_exactly():
    # 2**53 and 2**53 + 1 are one float64: as floats the pair is a tie (AUC 0.5).
    score = np.array([2 ** 53, 2 ** 53 + 1], dtype=np.int64)
    assert esmm_np.metrics.auc([0, 1], score) == 1.0


def test_calibration_nan_bins_clear_error():
    with pytest.raises(TypeError, match="n_bins must be an integer"):
        esmm_np.metrics.calibration([0, 1], [0.2, 0.7], n_bins=float("nan"))


def test_dataset_cannot_be_edited_into_an_invalid_state():
    X, c, v = _data(n=6)
    ds = esmm_np.Dataset(X, c, v, field_dims=(5, 4))
    with pytest.raises(ValueError, match="read-only"):
        ds.click[0] = 5
    with pytest.raises(ValueError, match="read-only"):
        ds.X[0, 0] = 99
    with pytest.raises(AttributeError, match="cannot be reassigned"):
        ds.conversion = np.ones(6, dtype=np.int8)
    X[0, 0] = 1                                            # the caller's array stays writable


def test_a_rejected_fit_does_not_claim_the_optimizer():
    X, c, v = _data()
    opt = esmm_np.Adam()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    with pytest.raises(ValueError, match="out of range"):
        esmm_np.fit(model, X + 10, c, v, optimizer=opt, verbose=False)
    assert opt.shapes is None and opt.t == 0
    with pytest.raises(ValueError, match="conversion must hold only 0 and 1"):
        esmm_np.fit(model, X, c, v, optimizer=opt, verbose=False,
                    validation=(X, c, v + 2))
    assert opt.shapes is None and opt.t == 0
    other = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(4,), seed=0)
    esmm_np.fit(other, X, c, v, optimizer=opt, verbose=False)   # still free for a model


def test_compare_refuses_complex_gradients_instead_of_dropping_the_imaginary_part():
    with pytest.raises(TypeError, match="real"):
        G.compare("w", np.zeros(3) + 1j, np.zeros(3), 1e-6)


@pytest.mark.parametrize("cls", ["TowerModel", "ESMM"])
def test_batch_statistics_that_overflow_stop_training_and_keep_the_running_ones(cls):
    # 1e200 is a finite dense value, but its square (the batch variance) is inf:
    # the normalised output and the loss stay finite, the running variance would not.
    model = getattr(esmm_np, cls)([4], embed_dim=2, tower_units=(3,), batch_norm=True, n_dense=1)
    X = np.zeros((8, 1), dtype=int)
    y = (np.array([0, 1] * 4),) * (2 if cls == "ESMM" else 1)
    dense = np.ones((8, 1))
    dense[3] = 1e200
    state = {k: a.copy() for k, a in model.state.items()}
    params = {k: a.copy() for k, a in model.params.items()}
    with pytest.raises(FloatingPointError, match="bn_var"):
        esmm_np.fit(model, X, *y, dense=dense, batch_size=8, verbose=False)
    assert all(np.array_equal(state[k], model.state[k]) for k in state)
    assert all(np.array_equal(params[k], model.params[k]) for k in params)


@pytest.mark.parametrize("validation", ["dataset", "array", ()])
def test_a_validation_that_is_not_a_tuple_is_named(validation):
    X, c, v = _data()
    model = esmm_np.ESMM([5, 4], embed_dim=2, tower_units=(3,), seed=0)
    validation = {"dataset": esmm_np.Dataset(X, c, v, (5, 4)), "array": X}.get(validation, validation)
    with pytest.raises(TypeError, match="validation must be a tuple"):
        esmm_np.fit(model, X, c, v, validation=validation, verbose=False)
