"""fit(average=k): validation scores, and early stopping keeps, the mean of the last k validations' weights."""

import numpy as np
import pytest

import esmm_np
from esmm_np.train import RecentAverage

from batches import toy_impressions as _toy


def _run(average, patience=None):
    """Train a small ESMM; return (model, history, the parameters each validation scored)."""
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)
    model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0, dtype=np.float64)
    seen = []

    def stop_on(m, X_val, click, conversion):
        seen.append({k: w.copy() for k, w in m.params.items()})
        return m.eval_loss(X_val, click, conversion)

    h = esmm_np.fit(model, X, c, v, batch_size=16, verbose=False, eval_every=5, max_steps=60,
                    optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv), stop_on=stop_on,
                    patience=patience, average=average)
    return model, h, seen


def test_average_one_is_the_live_weights_bit_for_bit():
    m1, h1, _ = _run(1)
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)
    plain = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0, dtype=np.float64)
    hp = esmm_np.fit(plain, X, c, v, batch_size=16, verbose=False, eval_every=5, max_steps=60,
                     optimizer=esmm_np.Adam(lr=0.05), validation=(Xv, cv, vv),
                     stop_on=lambda m, *a: m.eval_loss(*a))          # no average= at all
    assert hp["val_loss"] == h1["val_loss"] and hp["kept"] == h1["kept"]
    for k in plain.params:
        assert np.array_equal(plain.params[k], m1.params[k])


class _Halt(Exception):
    """Raised by a stop_on to halt fit at a chosen validation."""


def test_a_non_finite_averaged_value_stops_fit_and_keeps_the_live_weights():
    X, c, v = _toy(400, 1)
    Xv, cv, vv = _toy(300, 2)

    def run(average, third):
        """A model trained until its third validation, where stop_on returns ``third()``."""
        model = esmm_np.ESMM([6, 4], embed_dim=4, tower_units=(8,), seed=0, dtype=np.float64)
        calls = []

        def stop_on(m, *a):
            calls.append(1)
            return third() if len(calls) == 3 else m.eval_loss(*a)

        with pytest.raises((FloatingPointError, _Halt)) as err:
            esmm_np.fit(model, X, c, v, batch_size=16, verbose=False, eval_every=5,
                        max_steps=60, optimizer=esmm_np.Adam(lr=0.05),
                        validation=(Xv, cv, vv), stop_on=stop_on, average=average)
        return model, err

    def halt():
        raise _Halt

    averaged, err = run(3, lambda: float("nan"))
    assert err.type is FloatingPointError and "validation value is nan" in str(err.value)
    live, _ = run(1, halt)          # the same training path, halted at the same validation
    for k in averaged.params:       # the live weights of that step, not the average it scored
        np.testing.assert_array_equal(averaged.params[k], live.params[k])


def test_each_validation_scores_the_mean_of_the_last_k_live_weights():
    _, h_live, live = _run(1)
    model, h_avg, seen = _run(3)
    # averaging never touches the training path: the same steps, the same batch losses
    assert h_live["batch_loss"] == h_avg["batch_loss"]
    assert len(seen) == len(live) > 3
    for i, scored in enumerate(seen):
        window = live[max(0, i - 2):i + 1]
        for k, w in scored.items():
            expect = sum(snap[k] for snap in window) / len(window)
            np.testing.assert_allclose(w, expect, rtol=1e-12, atol=1e-15)
    # the model ends with the averaged weights of the lowest validation value
    best = int(np.argmin(h_avg["val_loss"]))
    assert h_avg["kept"] == h_avg["val_steps"][best]
    for k, w in model.params.items():
        np.testing.assert_array_equal(w, seen[best][k])


def test_recent_average_forgets_older_snapshots():
    avg = RecentAverage(2)
    model = esmm_np.ESMM([3], embed_dim=2, tower_units=(2,), seed=0, dtype=np.float64)
    for value in (1.0, 2.0, 4.0):
        model.params["ctr.b_out"][...] = value
        avg.push(model.params)
    live = avg.swap_in(model)
    assert model.params["ctr.b_out"][0] == 3.0 and live["ctr.b_out"][0] == 4.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_average_is_checked(bad):
    with pytest.raises((ValueError, TypeError), match="average"):
        _run(bad)


def test_the_averaging_measurement_formats_what_it_measured():
    from esmm_np.experiments.averaging import format_measure
    entry = {"diff": -0.012, "diff_low": -0.02, "diff_high": -0.004}
    out = {1: {"noise": {"ESMM": [0.5, 1.5], "BASE": [1.0]},
               "kept": {"ESMM": [400, 800], "BASE": [600]},
               "diff": {"BASE": entry}, "seconds": 90.0},
           4: {"noise": {"ESMM": [0.2, 0.4]}, "kept": {"ESMM": [1000, 1200]}, "diff": {},
               "seconds": 120.0}}
    text = format_measure(out)
    assert "| 1 | ESMM | 1.00 (1.50) | 600 |  |" in text
    # excludes zero, but 1.20 is under twice the pair's noise (2 x 1.00): not starred
    assert "| 1 | BASE | 1.00 (1.00) | 600 | -1.20 [-2.00, -0.40] ° |" in text
    out[1]["noise"]["BASE"] = [0.5]                   # floor 2 x max(0.5, 1.0) = 2.0 still
    assert "-1.20 [-2.00, -0.40] ° |" in format_measure(out)
    out[1]["noise"] = {"ESMM": [0.4], "BASE": [0.5]}  # floor 1.0: now it is a difference
    assert "-1.20 [-2.00, -0.40] * |" in format_measure(out)
    assert "| 4 | ESMM | 0.30 (0.40) | 1100 |  |" in text
    assert "k = 1: 1.5 min, k = 4: 2.0 min" in text
