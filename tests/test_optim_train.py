"""Optimisers against hand-computed steps, and the training loop."""

import numpy as np
import pytest

import esmm_np
from esmm_np.layers import SparseRows

C = np.array([1.0, -2.0, 0.5])   # minimum of the quadratic f(w) = 0.5 * ||w - C||^2


def _quadratic_grad(w):
    return w - C


def test_sgd_steps_by_hand():
    w = {"w": np.zeros(3)}
    opt = esmm_np.SGD(lr=0.1)
    opt.step(w, {"w": _quadratic_grad(w["w"])})
    np.testing.assert_allclose(w["w"], 0.1 * C, rtol=1e-15)          # 0 - 0.1 * (0 - C)
    opt.step(w, {"w": _quadratic_grad(w["w"])})
    np.testing.assert_allclose(w["w"], 0.1 * C + 0.1 * 0.9 * C, rtol=1e-15)


def test_sgd_momentum_steps_by_hand():
    w = {"w": np.zeros(3)}
    opt = esmm_np.SGD(lr=0.1, momentum=0.5)
    opt.step(w, {"w": _quadratic_grad(w["w"])})      # v1 = -C, w1 = 0.1 C
    opt.step(w, {"w": _quadratic_grad(w["w"])})      # g2 = -0.9 C, v2 = -0.5 C - 0.9 C
    np.testing.assert_allclose(w["w"], 0.1 * C + 0.1 * 1.4 * C, rtol=1e-15)


def test_adam_steps_by_hand():
    """Two Adam steps, written out from the update rule with b1=0.9, b2=0.999, eps=1e-8."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    w = {"w": np.zeros(3)}
    opt = esmm_np.Adam(lr=lr)
    assert (opt.beta1, opt.beta2, opt.eps) == (b1, b2, eps)
    g1 = _quadratic_grad(w["w"])
    opt.step(w, {"w": g1})
    # Step 1: m_hat = g1, v_hat = g1^2, so the step is lr * g1 / (|g1| + eps).
    w1 = -lr * g1 / (np.abs(g1) + eps)
    np.testing.assert_allclose(w["w"], w1, rtol=1e-14)
    g2 = _quadratic_grad(w1)
    opt.step(w, {"w": g2})
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1 ** 2 + (1 - b2) * g2 ** 2
    w2 = w1 - lr * (m / (1 - b1 ** 2)) / (np.sqrt(v / (1 - b2 ** 2)) + eps)
    np.testing.assert_allclose(w["w"], w2, rtol=1e-13)


@pytest.mark.parametrize("opt", [esmm_np.SGD(lr=0.3), esmm_np.SGD(lr=0.1, momentum=0.8),
                                 esmm_np.Adam(lr=0.1)])
def test_optimisers_minimise_the_quadratic(opt):
    w = {"w": np.array([5.0, 5.0, -5.0])}
    for _ in range(500):
        opt.step(w, {"w": _quadratic_grad(w["w"])})
    np.testing.assert_allclose(w["w"], C, atol=1e-3)


@pytest.mark.parametrize("make", [lambda: esmm_np.Adam(lr=0.01),
                                  lambda: esmm_np.SGD(lr=0.1, momentum=0.9)])
def test_dense_semantics_for_sparse_rows(make):
    """lazy=False with a SparseRows gradient equals the update with the dense gradient."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6, 2))
    a, b = {"E": table.copy()}, {"E": table.copy()}
    opt_a, opt_b = make(), make()
    for rows in ([0, 3], [3, 5], [1]):
        values = rng.standard_normal((len(rows), 2))
        sparse = SparseRows(np.array(rows), values, 6)
        opt_a.step(a, {"E": sparse})
        opt_b.step(b, {"E": esmm_np.layers.sparse_to_dense(sparse)})
        np.testing.assert_allclose(a["E"], b["E"], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("make", [lambda: esmm_np.Adam(lr=0.01, lazy=True),
                                  lambda: esmm_np.SGD(lr=0.1, momentum=0.9, lazy=True)])
def test_lazy_touches_only_batch_rows(make):
    rng = np.random.default_rng(1)
    table = rng.standard_normal((6, 2))
    p = {"E": table.copy()}
    opt = make()
    opt.step(p, {"E": SparseRows(np.array([0, 3]), rng.standard_normal((2, 2)), 6)})
    before = p["E"].copy()
    opt.step(p, {"E": SparseRows(np.array([5]), rng.standard_normal((1, 2)), 6)})
    changed = np.any(p["E"] != before, axis=1)
    assert list(np.nonzero(changed)[0]) == [5]   # rows 0 and 3 keep still despite momentum


def _toy_data(n=600, seed=0):
    """A learnable world: click and conversion depend on field 0's id."""
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, 6, n), rng.integers(0, 4, n)], axis=1)
    click = (rng.random(n) < np.where(X[:, 0] < 3, 0.6, 0.1)).astype(np.int8)
    conversion = click * (rng.random(n) < np.where(X[:, 1] < 2, 0.7, 0.1)).astype(np.int8)
    return X, click, conversion


def test_fit_reduces_loss_and_is_reproducible(capsys):
    X, click, conversion = _toy_data()

    def run():
        model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), dropout=0.1,
                             batch_norm=True, seed=3)
        hist = esmm_np.fit(model, X, click, conversion, epochs=8, batch_size=64,
                           optimizer=esmm_np.Adam(lr=0.02), seed=5)
        return model, hist

    (m1, h1), (m2, h2) = run(), run()
    assert h1["loss"][-1] < 0.8 * h1["loss"][0]
    assert h1["loss"] == h2["loss"] and h1["batch_loss"] == h2["batch_loss"]
    assert all(np.array_equal(m1.params[k], m2.params[k]) for k in m1.params)
    assert all(np.array_equal(m1.state[k], m2.state[k]) for k in m1.state)
    out = capsys.readouterr().out
    assert "epoch 1/8" in out and "epoch 8/8" in out   # progress is reported per epoch
    assert len(h1["batch_loss"]) == 8 * int(np.ceil(600 / 64))


def test_fit_updates_batchnorm_running_stats():
    X, click, conversion = _toy_data()
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), batch_norm=True, seed=0)
    esmm_np.fit(model, X, click, conversion, epochs=1, batch_size=100, verbose=False)
    assert np.any(model.state["ctr.bn_mean0"] != 0) and np.any(model.state["cvr.bn_var0"] != 1)


def test_fit_different_shuffle_seed_differs():
    X, click, conversion = _toy_data()
    hs = []
    for seed in (0, 1):
        model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
        hs.append(esmm_np.fit(model, X, click, conversion, epochs=1, batch_size=64,
                              seed=seed, verbose=False)["batch_loss"])
    assert hs[0] != hs[1]


def test_fit_tower_model():
    X, click, _ = _toy_data()
    model = esmm_np.TowerModel([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    h = esmm_np.fit(model, X, click, epochs=5, batch_size=64, optimizer=esmm_np.Adam(lr=0.02),
                    verbose=False)
    assert h["loss"][-1] < h["loss"][0]
    p = model.predict(X)["p"]
    assert p[X[:, 0] < 3].mean() > p[X[:, 0] >= 3].mean() + 0.3   # learnt the 0.6 vs 0.1 split


def test_lazy_and_dense_adam_both_train():
    X, click, conversion = _toy_data()
    for lazy in (False, True):
        model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), l2_reg_embedding=1e-4, seed=0)
        h = esmm_np.fit(model, X, click, conversion, epochs=6, batch_size=64,
                        optimizer=esmm_np.Adam(lr=0.02, lazy=lazy), verbose=False)
        assert h["loss"][-1] < 0.8 * h["loss"][0]


def test_fit_drops_invalid_rows_when_asked(capsys):
    X, click, conversion = _toy_data()
    conversion = conversion.copy()
    bad = np.flatnonzero(click == 0)[:7]
    conversion[bad] = 1
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    with pytest.raises(ValueError, match="7 row"):
        esmm_np.fit(model, X, click, conversion, verbose=False)
    h = esmm_np.fit(model, X, click, conversion, invalid="drop", epochs=1, batch_size=64)
    assert h["clean_report"].n_invalid == 7 and list(h["clean_report"].dropped_rows) == list(bad)
    assert "dropped 7 of 600 rows" in capsys.readouterr().out
    assert len(h["batch_loss"]) == int(np.ceil(593 / 64))


def test_fit_early_stopping_restores_the_best_epoch():
    """With a validation set, the model ends at the epoch of lowest validation loss."""
    X, click, conversion = _toy_data(n=400, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, epochs=12, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv))
    best = int(np.argmin(h["val_loss"]))
    assert h["best_epoch"] == best + 1
    assert model.eval_loss(Xv, cv, vv) == pytest.approx(h["val_loss"][best], rel=1e-12)
    # The run overfits (validation loss rises after its minimum), so restoring matters.
    assert h["val_loss"][-1] > h["val_loss"][best]


def test_fit_patience_stops_early():
    X, click, conversion = _toy_data(n=400, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, epochs=50, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv), patience=2)
    assert len(h["loss"]) == h["best_epoch"] + 2 < 50


def test_eval_loss_is_the_inference_data_loss():
    X, click, conversion = _toy_data(n=200)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), dropout=0.5, batch_norm=True,
                         l2_reg_dnn=0.1, seed=0)
    full, _ = model.loss(X, click, conversion, train=False)
    l2 = 0.1 * sum(np.sum(w ** 2) for k, w in model.params.items() if ".W" in k)
    assert model.eval_loss(X, click, conversion, batch_size=37) == pytest.approx(full - l2, rel=1e-10)


# ------------------------------------------------- fair effort: steps, kept, stopped

def test_fit_records_steps_kept_and_stopped():
    """Without validation every step is kept and the run ends on its cap."""
    X, click, conversion = _toy_data(n=640)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, epochs=3, batch_size=64, verbose=False)
    assert h["steps"] == 30 == len(h["batch_loss"]) and h["kept"] == 30
    assert h["stopped"] == "cap"


def test_eval_every_validates_within_the_epoch_and_keeps_the_best_step():
    X, click, conversion = _toy_data(n=400, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv),
                    eval_every=10, max_steps=200)
    # 25 steps an epoch, validation every 10 steps: at 10, 20, ..., 200.
    assert h["val_steps"] == list(range(10, 201, 10)) and h["steps"] == 200
    best = int(np.argmin(h["val_loss"]))
    assert h["kept"] == h["val_steps"][best] and h["stopped"] == "cap"
    assert model.eval_loss(Xv, cv, vv) == pytest.approx(h["val_loss"][best], rel=1e-12)


def test_a_short_epoch_is_validated_every_epoch():
    """eval_every larger than an epoch validates once per epoch, not once per eval_every."""
    X, click, conversion = _toy_data(n=64, seed=1)
    Xv, cv, vv = _toy_data(n=100, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, batch_size=32, verbose=False,
                    validation=(Xv, cv, vv), eval_every=100, max_steps=12)
    assert h["val_steps"] == [2, 4, 6, 8, 10, 12]


def test_min_steps_raises_the_budget_and_holds_off_patience():
    X, click, conversion = _toy_data(n=400, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, epochs=1, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv), patience=1,
                    eval_every=5, min_steps=150)
    # One epoch is 25 steps; min_steps lifts the budget to 150 and patience waits for it.
    assert 150 <= h["steps"] <= 150 + 5 * 1 and h["stopped"] == "patience"
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, epochs=1, batch_size=16, verbose=False,
                    min_steps=60)
    assert h["steps"] == 60 and h["stopped"] == "cap"


def test_patience_counts_validations():
    X, click, conversion = _toy_data(n=400, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv), patience=3,
                    eval_every=5, max_steps=5000)
    best = int(np.argmin(h["val_loss"]))
    assert h["stopped"] == "patience" and len(h["val_loss"]) == best + 1 + 3
    assert h["steps"] == h["val_steps"][-1] < 5000


@pytest.mark.parametrize("kw", [dict(eval_every=0), dict(max_steps=1.5), dict(min_steps=-1)])
def test_bad_step_settings_raise(kw):
    """Refused before training, with the setting named (a float step count is a TypeError)."""
    X, click, conversion = _toy_data(n=64)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        esmm_np.fit(model, X, click, conversion, verbose=False, **kw)


def test_eval_every_also_validates_early_at_doubling_steps():
    """Below the interval, validation also happens at steps 25, 50, 100, ..."""
    X, click, conversion = _toy_data(n=3200, seed=1)
    Xv, cv, vv = _toy_data(n=300, seed=2)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0)
    h = esmm_np.fit(model, X, click, conversion, batch_size=16, verbose=False,
                    validation=(Xv, cv, vv), eval_every=150, max_steps=450)
    assert h["val_steps"] == [25, 50, 100, 150, 300, 450]
