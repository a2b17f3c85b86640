"""exercises.check says no to the wrong answers issue 18 found it accepting.

Each wrong answer below passed ``exercises.check`` before (commit 0c0bdc3);
each must now fail with a hint that names its mistake. They are written as
a learner would write them, not taken from the checker's list of mistakes.
Beside them, correct answers written differently from ours still pass: the
stricter comparison (entry by entry in the extreme cases) does not reject
a right formula that rounds differently.
"""

import threading
import time

import numpy as np
import pytest

import esmm_np.exercises as ex
from esmm_np import layers as L
from esmm_np import losses
from esmm_np import reference as R
from esmm_np.teach import grading, guard


def _check(name, fn, capsys, **kw):
    ok = ex.check(name, fn, **kw)
    out = capsys.readouterr().out
    hints = [line.strip() for line in out.splitlines() if line.strip().startswith("hint:")]
    return ok, out, hints


def _fails_with(name, fn, capsys, *words, **kw):
    ok, out, hints = _check(name, fn, capsys, **kw)
    assert not ok and "FAIL" in out, out
    for word in words:
        assert any(word in h for h in hints), (word, hints)
    return out, hints


# ------------------------------------------------------ tiny entries matter

@pytest.mark.parametrize("limit", [25, 30])
def test_sigmoid_clipped_fails(limit, capsys):
    # sigmoid(-40) = 4.2e-18; the clip gives sigmoid(-limit) = 1e-11 or 1e-13, which one
    # norm over the array (entries near 1 beside it) did not see
    _, hints = _fails_with("sigmoid", lambda x: 1 / (1 + np.exp(-np.clip(x, -limit, limit))),
                           capsys, f"clipped to +-{limit}")
    assert not any("dtype" in h for h in hints)


def test_sigmoid_clipped_elsewhere_names_the_entry(capsys):
    _fails_with("sigmoid", lambda x: L.sigmoid(np.clip(x, -35, 35)), capsys,
                "s is off (entry", "not sigmoid(-25)")


def test_sigmoid_from_tanh_fails(capsys):
    # equal on paper; 1 + tanh(x/2) cancels to 0 below x = -37, so log(sigmoid(-40)) = -inf
    _fails_with("sigmoid", lambda x: 0.5 * (1 + np.tanh(x / 2)), capsys, "tanh(x / 2)", "-inf")


def _ctcvr_via_expm1(a, b, z):
    """log(1 - p) as log(-expm1(log p)): right until p rounds to 1."""
    zf = z.astype(a.dtype)
    n = a.shape[0]
    log_p = -losses.softplus(-a) - losses.softplus(-b)
    log_1mp = np.log(-np.expm1(log_p))
    loss = -np.mean(zf * log_p + (1 - zf) * log_1mp)
    ratio = np.exp(log_p - log_1mp)                        # p / (1 - p)
    da = ((1 - zf) * L.sigmoid(-a) * ratio - zf * L.sigmoid(-a)) / n
    db = ((1 - zf) * L.sigmoid(-b) * ratio - zf * L.sigmoid(-b)) / n
    return float(loss), da.astype(a.dtype), db.astype(a.dtype)


def test_ctcvr_loss_via_expm1_fails_where_p_rounds_to_1(capsys):
    with np.errstate(all="ignore"):
        loss, da, db = _ctcvr_via_expm1(np.array([800.0]), np.array([800.0]), np.array([0]))
    assert loss == np.inf and np.isnan(da[0]) and np.isnan(db[0])   # the (inf, nan, nan)
    out, hints = _fails_with("ctcvr_bce_logspace", _ctcvr_via_expm1, capsys,
                             "rounds to 1", "-expm1(log p)")
    assert "float64 " in out.split("extreme")[0]           # moderate logits: it passes there


# ------------------------------------------------------- whole-model answers

def test_esmm_loss_that_calls_model_loss_fails(capsys):
    _fails_with("esmm_loss", lambda model, X, click, conversion: model.loss(X, click, conversion),
                capsys, "calls model.loss")


def test_esmm_loss_that_calls_the_class_or_a_fresh_model_fails(capsys):
    from esmm_np import ESMM

    def via_class(model, X, click, conversion):
        return type(model).loss(model, X, click, conversion)

    def via_fresh(model, X, click, conversion):
        other = ESMM(model.field_dims, model.embed_dim, model.tower_units,
                     loss_weights=model.loss_weights, dtype=model.dtype)
        other.params = model.params
        return other.loss(X, click, conversion)
    _fails_with("esmm_loss", via_class, capsys, "calls model.loss")
    _fails_with("esmm_loss", via_fresh, capsys, "calls model.loss")
    assert ESMM.loss.__name__ == "loss"                   # the recorder is gone again


def test_esmm_loss_that_changes_the_loss_weights_fails(capsys):
    def wrong(model, X, click, conversion):
        model.loss_weights = (1.0, 1.0)        # "the weights confuse me": left changed
        return R.loss(model.params, X + model.offsets, click, conversion, model.loss_weights)
    _fails_with("esmm_loss", wrong, capsys, "changed model.loss_weights")


def test_esmm_loss_that_changes_the_weights_after_computing_fails(capsys):
    def wrong(model, X, click, conversion):
        out = R.loss(model.params, X + model.offsets, click, conversion, model.loss_weights)
        model.loss_weights = (0.0, 0.0)
        return out
    _fails_with("esmm_loss", wrong, capsys, "changed model.loss_weights", "must not change")


def test_esmm_loss_that_adds_a_parameter_fails(capsys):
    def wrong(model, X, click, conversion):
        out = R.loss(model.params, X + model.offsets, click, conversion, model.loss_weights)
        model.params["ctr.scale"] = np.ones(1)   # a parameter of its own, no gradient returned
        return out
    _fails_with("esmm_loss", wrong, capsys, "added a parameter", "ctr.scale")


def _esmm_without_offsets(model, X, click, conversion):
    """A learner's whole ESMM, right in every step but one: the rows are X, not X + offsets."""
    rows = X                                     # should be X + model.offsets
    E = model.params["embedding"]
    n, F = rows.shape
    e = E[rows].reshape(n, -1)
    logits, hs = {}, {}
    for t in ("ctr", "cvr"):
        h, hs[t] = e, [e]
        i = 0
        while f"{t}.W{i}" in model.params:
            h = np.maximum(h @ model.params[f"{t}.W{i}"] + model.params[f"{t}.b{i}"], 0)
            hs[t].append(h)
            i += 1
        logits[t] = (h @ model.params[f"{t}.W_out"] + model.params[f"{t}.b_out"])[:, 0]
    w1, w2 = model.loss_weights
    l1, d1 = losses.bce_with_logits(logits["ctr"], click)
    l2, da, db = losses.ctcvr_bce_logspace(logits["ctr"], logits["cvr"], click * conversion)
    grads, de = {}, np.zeros_like(e)
    for t, d in (("ctr", w1 * d1 + w2 * da), ("cvr", w2 * db)):
        dh = d[:, None]
        grads[f"{t}.W_out"], grads[f"{t}.b_out"] = hs[t][-1].T @ dh, dh.sum(0)
        dh = dh @ model.params[f"{t}.W_out"].T
        for i in reversed(range(len(hs[t]) - 1)):
            dh = dh * (hs[t][i + 1] > 0)
            grads[f"{t}.W{i}"], grads[f"{t}.b{i}"] = hs[t][i].T @ dh, dh.sum(0)
            dh = dh @ model.params[f"{t}.W{i}"].T
        de = de + dh
    dE = np.zeros_like(E)
    np.add.at(dE, rows, de.reshape(n, F, -1))
    grads["embedding"] = dE
    return w1 * l1 + w2 * l2, grads


def test_esmm_loss_that_forgets_the_offsets_names_them(capsys):
    _, hints = _fails_with("esmm_loss", _esmm_without_offsets, capsys, "model.offsets")
    assert not any("loss_weights" in h or "dtype" in h for h in hints), hints


def test_an_answer_that_patches_the_checker_fails_and_is_undone(capsys):
    real_rel, real_isfinite = grading._rel, np.isfinite

    def sneaky(model, X, click, conversion):
        grading._rel = lambda a, b: 0.0        # every comparison would say "equal"
        grading._error = lambda *args: 0.0
        np.isfinite = lambda x: np.ones(np.shape(x), bool)
        grads = {k: np.full_like(w, np.nan) for k, w in model.params.items()}
        return 0.0, grads
    _fails_with("esmm_loss", sneaky, capsys, "must not patch the checker",
                "esmm_np.teach.grading._error")
    assert grading._rel is real_rel and np.isfinite is real_isfinite
    assert ex.check("esmm_loss", ex.reference("esmm_loss"), verbose=False)   # still works


def test_an_answer_that_patches_the_model_class_fails_and_is_undone(capsys):
    from esmm_np.model import ESMM
    real = ESMM.loss

    def sneaky(model, X, click, conversion):
        ESMM.loss = lambda self, *a, **k: (0.0, {})
        return R.loss(model.params, X + model.offsets, click, conversion, model.loss_weights)
    _fails_with("esmm_loss", sneaky, capsys, "esmm_np.model.ESMM.loss")
    assert ESMM.loss is real


# --------------------------------------------------------------- time limits

def test_a_function_stuck_in_a_loop_is_stopped(capsys):
    def stuck(x):
        while True:
            pass
    start = time.perf_counter()
    out, hints = _fails_with("sigmoid", stuck, capsys, "did not return within 0.3 s",
                             time_limit=0.3)
    assert time.perf_counter() - start < 20          # one wait, then the other cases are skipped
    assert "not run: an earlier case did not return" in out


def test_a_loop_that_swallows_the_alarm_is_still_stopped(capsys):
    def stubborn(x):
        for _ in range(3):                   # catches the alarm three times, then returns
            try:
                while True:
                    pass
            except BaseException:
                continue
        return L.sigmoid(x)
    _fails_with("sigmoid", stubborn, capsys, "did not return", time_limit=0.3)


def test_time_limit_outside_the_main_thread(capsys):
    release = threading.Event()

    def stuck(x):
        release.wait(30)                     # returns once the test is done: no stray thread
        return L.sigmoid(x)
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        ok=ex.check("sigmoid", stuck, time_limit=0.3, verbose=False)))
    worker.start()
    worker.join(60)
    release.set()
    assert result == {"ok": False}


def test_the_thread_fallback_grades_like_the_alarm(capsys):
    """Outside the main thread (no SIGALRM) a right answer passes and an overflow still fails."""
    result = {}

    def run():
        result["right"] = ex.check("sigmoid", L.sigmoid, verbose=False)
        result["overflow"] = ex.check("sigmoid", lambda x: 1 / (1 + np.exp(-x)), verbose=False)
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(120)
    assert result == {"right": True, "overflow": False}


def test_guard_returns_and_raises_like_the_function():
    assert guard.call_with_time_limit(lambda a, b: a + b, (1, 2), 5) == 3
    with pytest.raises(ZeroDivisionError):
        guard.call_with_time_limit(lambda: 1 / 0, (), 5)
    with pytest.raises(guard.TimedOut, match="did not return within 0.2 s"):
        guard.call_with_time_limit(time.sleep, (5,), 0.2)


@pytest.mark.parametrize("bad", [0, -1, "10", True, float("nan")])
def test_time_limit_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="time_limit must be a positive number"):
        ex.check("sigmoid", L.sigmoid, time_limit=bad)


def test_check_refuses_a_non_function():
    with pytest.raises(TypeError, match="needs your function"):
        ex.check("sigmoid", None)


# ------------------------------------------- right answers, written otherwise

def _sigmoid_by_masks(x):
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


def _ctcvr_all_lse(a, b, z):
    """Right everywhere, but log(1 - p) always through the lse form (ours switches at p = 1/2)."""
    sp = lambda x: np.logaddexp(0, x).astype(x.dtype)  # noqa: E731
    zf, n = z.astype(a.dtype), a.dtype.type(a.shape[0])
    log_p = -sp(-a) - sp(-b)
    lse = np.logaddexp(np.logaddexp(-a, -b), -a - b)
    loss = -np.mean(zf * log_p + (1 - zf) * (lse + log_p))
    da = (1 - zf) * np.exp(-sp(a) - lse) - zf * np.exp(-sp(a))
    db = (1 - zf) * np.exp(-sp(b) - lse) - zf * np.exp(-sp(b))
    return float(loss), da / n, db / n


@pytest.mark.parametrize("name, fn", [
    ("sigmoid", _sigmoid_by_masks),
    ("sigmoid", lambda x: R.sigmoid(x).astype(x.dtype)),
    ("ctcvr_bce_logspace", _ctcvr_all_lse),
    ("esmm_loss", lambda model, X, click, conversion: R.loss(
        model.params, X + model.offsets, click, conversion, model.loss_weights)),
], ids=["sigmoid by masks", "sigmoid via softplus", "ctcvr lse form", "esmm via reference"])
def test_right_answers_written_differently_pass(name, fn):
    assert ex.check(name, fn, verbose=False)


# ------------------------------------------------------------ exercises.train

def _tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, n) for d in (5, 4, 3)], axis=1)
    click = rng.integers(0, 2, n)
    return X, click, click * rng.integers(0, 2, n)


def _model():
    from esmm_np import ESMM
    return ESMM((5, 4, 3), embed_dim=2, tower_units=(4,), seed=0)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_train_refuses_nan_and_keeps_the_parameters(where):
    X, click, conversion = _tiny_data()
    model = _model()
    calls = []

    def loss_fn(model, X, click, conversion):
        loss, grads = ex.esmm_loss(model, X, click, conversion)
        calls.append(1)
        if len(calls) == 2:                      # the second minibatch goes wrong
            if where == "loss":
                loss = float("nan")
            else:
                grads["cvr.W0"] = grads["cvr.W0"].copy()
                grads["cvr.W0"][0, 0] = np.nan
        return loss, grads
    after_one = {}

    class Spy:
        def __init__(self):
            from esmm_np import Adam
            self.adam = Adam()

        def step(self, params, grads):
            self.adam.step(params, grads)
            after_one.update({k: w.copy() for k, w in params.items()})

    pattern = "loss nan" if where == "loss" else "gradient of 'cvr.W0' has 1 NaN"
    with pytest.raises(FloatingPointError, match=pattern) as err:
        ex.train(loss_fn, model, X, click, conversion, batch_size=32, optimizer=Spy())
    assert "minibatch 2" in str(err.value) and "before the optimiser step" in str(err.value)
    assert all(np.array_equal(model.params[k], after_one[k]) for k in model.params)
    assert all(np.all(np.isfinite(w)) for w in model.params.values())


def test_train_refuses_a_gradient_of_the_wrong_shape():
    X, click, conversion = _tiny_data()

    def loss_fn(model, X, click, conversion):
        loss, grads = ex.esmm_loss(model, X, click, conversion)
        grads["ctr.b0"] = grads["ctr.b0"][None, :]          # (1, 4) broadcasts into (4,)
        return loss, grads
    with pytest.raises(ValueError, match=r"'ctr.b0' has shape \(1, 4\), the parameter \(4,\)"):
        ex.train(loss_fn, _model(), X, click, conversion, batch_size=32)


def test_train_with_our_answer_matches_fit():
    from esmm_np import Adam, fit
    X, click, conversion = _tiny_data(256, seed=1)
    mine, ours = _model(), _model()
    ex.train(ex.esmm_loss, mine, X, click, conversion, batch_size=64, optimizer=Adam(), seed=0)
    fit(ours, X, click, conversion, epochs=1, batch_size=64, optimizer=Adam(), seed=0,
        verbose=False)
    for k in ours.params:        # reference.loss agrees with model.loss to ~1e-15 per step
        assert np.allclose(mine.params[k], ours.params[k], rtol=0, atol=1e-10), k


def test_our_esmm_answer_refuses_a_model_that_is_not_plain():
    from esmm_np import ESMM
    X, click, conversion = _tiny_data()
    model = ESMM((5, 4, 3), embed_dim=2, tower_units=(4,), batch_norm=True)
    with pytest.raises(ValueError, match="the plain ESMM"):
        ex.esmm_loss(model, X, click, conversion)
