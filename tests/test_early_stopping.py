"""fit's early stopping: the EarlyStopping object, stop_on and min_val_positives."""

import numpy as np
import pytest

import esmm_np
from esmm_np.train import EarlyStopping

from batches import toy_impressions as _toy


def _fit(**kw):
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)
    model = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    kw.setdefault("validation", (Xv, cv, vv))
    h = esmm_np.fit(model, X, c, v, batch_size=16, verbose=False,
                    optimizer=esmm_np.Adam(lr=0.05), **kw)
    return model, h, (Xv, cv, vv)


def test_early_stopping_keeps_the_first_lowest_and_counts_patience():
    model = esmm_np.ESMM([3], embed_dim=2, tower_units=(2,), seed=0)
    stopper = EarlyStopping(patience=2, min_steps=0)
    assert not stopper.update(model, 0.5, step=10, epoch=0)
    model.params["ctr.b_out"][0] = 7.0                 # later changes are not in the copy
    assert not stopper.update(model, 0.5, step=20, epoch=0)     # a tie does not improve
    assert stopper.best.step == 10 and stopper.best.params["ctr.b_out"][0] == 0.0
    assert stopper.update(model, 0.6, step=30, epoch=1)         # two without improvement
    stopper.restore(model)
    assert model.params["ctr.b_out"][0] == 0.0
    assert stopper.values == [0.5, 0.5, 0.6] and stopper.steps == [10, 20, 30]


def test_min_steps_holds_off_patience_in_the_object():
    model = esmm_np.ESMM([3], embed_dim=2, tower_units=(2,), seed=0)
    stopper = EarlyStopping(patience=1, min_steps=100)
    stopper.update(model, 1.0, 10, 0)
    assert not stopper.update(model, 2.0, 50, 0)                # patience out, but step < 100
    assert stopper.update(model, 2.0, 100, 0)


def test_stop_on_loss_is_the_default_bit_for_bit():
    m1, h1, _ = _fit(epochs=6)
    m2, h2, _ = _fit(epochs=6, stop_on="loss")
    assert h1["val_loss"] == h2["val_loss"] and h1["kept"] == h2["kept"]
    for k in m1.params:
        assert np.array_equal(m1.params[k], m2.params[k]), k


def test_stop_on_a_callable_picks_its_own_point():
    calls = []

    def ctr_loss_only(model, X_val, click, conversion):
        calls.append(1)
        p = model.predict(X_val)["p_ctr"]
        return float(-np.mean(click * np.log(p) + (1 - click) * np.log(1 - p)))

    model, h, (Xv, cv, vv) = _fit(epochs=8, stop_on=ctr_loss_only)
    assert len(calls) == len(h["val_loss"]) == 8
    best = int(np.argmin(h["val_loss"]))
    assert h["kept"] == h["val_steps"][best]
    assert ctr_loss_only(model, Xv, cv, vv) == pytest.approx(h["val_loss"][best], rel=1e-12)


def test_stop_on_gets_dense_and_bags_only_when_given():
    seen = {}

    def crit(model, X_val, click, conversion, **kw):
        seen.update(kw)
        return 0.0

    _fit(epochs=1, stop_on=crit)
    assert seen == {}


def test_stop_on_is_checked():
    with pytest.raises(TypeError, match="stop_on must be \"loss\" or a callable"):
        _fit(stop_on="auc")
    with pytest.raises(ValueError, match="give validation="):
        _fit(stop_on=lambda *a: 0.0, validation=None)
    with pytest.raises(TypeError, match="stop_on must return a number"):
        _fit(stop_on=lambda *a: "low")


def test_too_few_validation_positives_trains_to_the_budget():
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)
    n_conv = int(vv.sum())
    model, h, _ = _fit(epochs=3, patience=1, min_val_positives=n_conv + 1)
    assert h["stopped"] == "budget" and h["val_positives"] == n_conv
    assert h["steps"] == h["kept"] == 3 * 25 and "val_loss" not in h
    # Exactly the run without validation.
    plain = esmm_np.ESMM([6, 4], embed_dim=8, tower_units=(32,), seed=0)
    h0 = esmm_np.fit(plain, X, c, v, batch_size=16, verbose=False, epochs=3,
                     optimizer=esmm_np.Adam(lr=0.05))
    assert h0["batch_loss"] == h["batch_loss"]
    # Enough positives: validation as usual.
    _, h2, _ = _fit(epochs=3, min_val_positives=n_conv)
    assert h2["stopped"] in ("cap", "patience") and len(h2["val_loss"]) == 3


def test_min_val_positives_is_checked():
    with pytest.raises(TypeError, match="min_val_positives must be an integer"):
        _fit(min_val_positives=2.5)
    with pytest.raises(ValueError, match="min_val_positives must be >= 0"):
        _fit(min_val_positives=-1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_validation_value_stops_fit(bad):
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 25: the validation value is"):
        _fit(epochs=3, stop_on=lambda *a: bad)


def test_a_nan_validation_loss_stops_fit():
    """The default criterion: a model whose inference output is NaN (a NaN running
    variance never enters a training step) stops fit at the first validation."""
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), batch_norm=True, seed=0)
    model.state["ctr.bn_var0"][0] = np.nan
    with pytest.raises(FloatingPointError, match=r"validation value is nan"):
        esmm_np.fit(model, X, c, v, batch_size=16, verbose=False, validation=(Xv, cv, vv),
                    epochs=2)
