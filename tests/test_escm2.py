"""ESCM² (IPS and DR): each new gradient piece, the whole model with every option, and properties.

Tolerances. A single piece (the propensity clip, the IPS loss, the DR loss)
is a smooth function of a few inputs: its hand-written gradient matches a
centred difference (h = 1e-6, float64) to 1e-9 relative error or better,
the per-layer bar of the project. Whole models use 1e-6, as tests/test_model.py
explains for ESMM (several layers, ReLU/PReLU kinks).
"""

import numpy as np
import pytest

import esmm_np
from esmm_np import escm2 as E
from esmm_np import gradcheck as G
from batches import draw_batch

PIECE_TOL = 1e-9
MODEL_TOL = G.MODEL_TOL          # 1e-6, defined once in esmm_np/gradcheck.py
assert MODEL_TOL == 1e-6
FIELD_DIMS = [7, 5, 3]


def _rel(a, n):
    return G.relative_error(a, n)


def _rows(rng, n=12):
    """Logits and labels for the loss pieces: both click classes, both conversion classes."""
    a = rng.normal(-1.0, 1.5, n)
    b = rng.normal(-0.5, 1.5, n)
    g = rng.normal(0.0, 1.0, n)
    click = rng.integers(0, 2, n)
    click[:3] = (0, 1, 1)
    conversion = click * rng.integers(0, 2, n)
    conversion[1:3] = (1, 0)
    return a, b, g, click, conversion


# ------------------------------------------------------------------ pieces

def test_propensity_clip_gradient_both_sides_of_the_floor(rng):
    a = np.array([-4.0, -3.0, -1.0, 0.5, 2.0])                 # sigmoid: .018 .047 .27 .62 .88
    floor = 0.1                                                # first two rows are clipped
    dq = rng.standard_normal(5)
    q, cache = E.propensity_forward(a, floor)
    assert np.array_equal(q[:2], [floor, floor]) and np.all(q[2:] > floor)
    da = E.propensity_backward(dq, cache)
    num = G.numerical_gradient(lambda: float(dq @ E.propensity_forward(a, floor)[0]), a, h=1e-6)
    assert _rel(da, num) <= PIECE_TOL
    assert np.array_equal(da[:2], [0.0, 0.0])                  # the clip passes no gradient


def test_ips_loss_gradients(rng):
    _, b, _, click, conversion = _rows(rng)
    q = rng.uniform(0.05, 0.9, b.shape[0])
    loss, db, dq = E.ips_cvr_loss(b, q, click, conversion)
    num_b = G.numerical_gradient(lambda: E.ips_cvr_loss(b, q, click, conversion)[0], b, h=1e-6)
    num_q = G.numerical_gradient(lambda: E.ips_cvr_loss(b, q, click, conversion)[0], q, h=1e-6)
    assert _rel(db, num_b) <= PIECE_TOL and _rel(dq, num_q) <= PIECE_TOL
    assert np.all(db[click == 0] == 0) and np.all(dq[click == 0] == 0)


def test_dr_loss_gradients_summed_objective(rng):
    _, b, g, click, conversion = _rows(rng)
    q = rng.uniform(0.05, 0.9, b.shape[0])

    def f():
        return E.dr_cvr_loss(b, g, q, click, conversion, separate=False)[0]

    _, db, dg, dq = E.dr_cvr_loss(b, g, q, click, conversion, separate=False)
    for name, analytic, x in (("db", db, b), ("dg", dg, g), ("dq", dq, q)):
        assert _rel(analytic, G.numerical_gradient(f, x, h=1e-6)) <= PIECE_TOL, name


def test_dr_loss_gradients_separate_parts(rng):
    """Separate: the gradient of the loss with r held in the imputation loss and r̂ in the DR estimate."""
    _, b, g, click, conversion = _rows(rng)
    q = rng.uniform(0.05, 0.9, b.shape[0])
    e0, e_hat0 = E.cvr_error(b, conversion)[0], E.softplus(g)

    def f():
        return E.dr_cvr_loss(b, g, q, click, conversion, held_err=e0, held_err_hat=e_hat0)[0]

    loss, db, dg, dq = E.dr_cvr_loss(b, g, q, click, conversion)
    assert loss == pytest.approx(E.dr_cvr_loss(b, g, q, click, conversion, separate=False)[0])
    for name, analytic, x in (("db", db, b), ("dg", dg, g), ("dq", dq, q)):
        assert _rel(analytic, G.numerical_gradient(f, x, h=1e-6)) <= PIECE_TOL, name
    # the DR estimate's gradient on the CVR logit is IPS's: the imputed error does not depend on b
    assert np.allclose(db, E.ips_cvr_loss(b, q, click, conversion)[1], rtol=1e-12, atol=0)


def test_a_wrong_piece_is_caught(rng):
    """The piece check can fail: drop the imputation loss's share of dL/de and it does."""
    _, b, g, click, conversion = _rows(rng)
    q = rng.uniform(0.05, 0.9, b.shape[0])
    _, db, _, _ = E.dr_cvr_loss(b, g, q, click, conversion, separate=False)
    e, de_db = E.cvr_error(b, conversion)
    wrong_db = (click / q) * de_db / b.shape[0]                # forgets the 2Δ term (derivation section 10)
    num = G.numerical_gradient(
        lambda: E.dr_cvr_loss(b, g, q, click, conversion, separate=False)[0], b, h=1e-6)
    assert _rel(db, num) <= PIECE_TOL
    assert _rel(wrong_db, num) > 1e-3


def test_ips_and_dr_losses_are_unbiased_with_the_true_propensity():
    """With q the true click probability, E[IPS] and E[DR] equal the mean CVR loss of every row.

    That is the reason for the estimators: the clicked rows, reweighted, stand
    in for the loss every impression would have had if clicked. Compared over
    400 independent click draws, within 4 standard errors of their mean.
    """
    rng = np.random.default_rng(0)
    n, draws = 2000, 400
    p = rng.uniform(0.05, 0.6, n)                               # true propensities
    b = rng.normal(-1, 1, n)
    g = rng.normal(0, 1, n)                                     # any imputation
    potential = (rng.random(n) < 0.3).astype(int)               # conversion if clicked
    target = E.cvr_error(b, potential)[0].mean()
    ips, dr = [], []
    for _ in range(draws):
        click = (rng.random(n) < p).astype(int)
        ips.append(E.ips_cvr_loss(b, p, click, click * potential)[0])
        # the code's DR loss minus its imputation-loss part: the estimate of the CVR loss
        e_hat = E.softplus(g)
        e = E.cvr_error(b, potential)[0]
        imputation_loss = np.mean(click / p * (e - e_hat) ** 2)
        dr.append(E.dr_cvr_loss(b, g, p, click, click * potential)[0] - imputation_loss)
    for name, est in (("ips", np.array(ips)), ("dr", np.array(dr))):
        se = est.std(ddof=1) / np.sqrt(draws)
        assert abs(est.mean() - target) < 4 * se, (name, est.mean(), target, se)


# ------------------------------------------------------------- whole model

def _batch(rng, n=20, n_dense=0):
    return draw_batch(rng, FIELD_DIMS, n, n_dense)


CONFIGS = {
    "defaults": dict(tower_units=(6, 4)),
    "different tower sizes, dense": dict(tower_units=((6, 4), (5,)), n_dense=2),
    "dropout and batch norm": dict(tower_units=(6, 4), dropout=0.3, batch_norm=True),
    "L2, prelu": dict(tower_units=(5,), activation="prelu", l2_reg_embedding=0.05,
                      l2_reg_dnn=0.02),
    "tanh, naive CTCVR loss, weights": dict(tower_units=(5,), activation="tanh",
                                            ctcvr_loss="naive", loss_weights=(0.5, 2.0),
                                            counterfactual_weight=0.3),
    "sigmoid, separate embeddings": dict(tower_units=(5,), activation="sigmoid",
                                         share_embedding=False),
    "high floor (most rows clipped)": dict(tower_units=(5,), propensity_floor=0.6),
    "no floor": dict(tower_units=(5,), propensity_floor=0.0),
}


KINDS = {"ips": dict(variant="ips"),
         "dr separate": dict(variant="dr", dr_gradient="separate"),
         "dr joint": dict(variant="dr", dr_gradient="joint")}


# Every option with the default detached propensity; the live propensity with
# the options that touch it (dropout and batch norm change the CTR logit, the
# floors decide which rows pass gradient through the clip).
CASES = [(name, False) for name in CONFIGS] + [
    (name, True) for name in ("dropout and batch norm", "high floor (most rows clipped)",
                              "no floor")]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name, propensity_grad", CASES)
def test_escm2_gradients(name, propensity_grad, kind):
    rng = np.random.default_rng(11)
    cfg = CONFIGS[name]
    model = E.ESCM2(FIELD_DIMS, embed_dim=3, seed=1, propensity_grad=propensity_grad,
                    **KINDS[kind], **cfg)
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)
    X, click, conversion, dense = _batch(rng, n_dense=cfg.get("n_dense", 0))
    rows = E.check_gradients(model, X, click, conversion, dense=dense, tol=MODEL_TOL, seed=3)
    assert {r["tensor"] for r in rows} == set(model.params)
    bad = [(r["tensor"], r["rel_error"]) for r in rows if not r["ok"]]
    assert not bad, f"tensors over {MODEL_TOL}: {bad}"


@pytest.mark.parametrize("propensity_grad", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
def test_everything_on_example_passes(kind, propensity_grad):
    model, (X, click, conversion, dense) = E.everything_on_example(
        KINDS[kind]["variant"], propensity_grad=propensity_grad,
        dr_gradient=KINDS[kind].get("dr_gradient", "separate"))
    q = model.propensity(X, dense, train=True, seed=0)
    clicked = click == 1
    # both sides of the clip carry clicked rows, so both paths are exercised
    assert (q[clicked] == model.propensity_floor).any() and (q[clicked] > model.propensity_floor).any()
    rows = E.check_gradients(model, X, click, conversion, dense=dense, tol=MODEL_TOL)
    assert all(r["ok"] for r in rows), G.format_table(rows)


def test_detached_propensity_is_really_detached():
    """Checked against the loss with a live propensity, a detached model's CTR gradient is wrong.

    So the default (propensity_grad=False) changes the gradient, and the
    held-propensity check is what tells the two apart.
    """
    model, (X, click, conversion, dense) = E.everything_on_example("ips")
    rows = G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL)
    failing = {r["tensor"] for r in rows if not r["ok"]}
    assert any(t.startswith("ctr.") for t in failing)
    assert not any(t.startswith("cvr.") for t in failing)


def test_dr_separate_is_really_separate():
    """Checked as one summed objective, the separate DR gradient is wrong on the CVR and imputation towers."""
    model, (X, click, conversion, dense) = E.everything_on_example("dr", propensity_grad=True)
    rows = G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL)
    failing = {r["tensor"] for r in rows if not r["ok"]}
    assert any(t.startswith("cvr.") for t in failing) and any(t.startswith("imp.") for t in failing)


def test_a_missing_propensity_backward_is_caught(monkeypatch):
    model, (X, click, conversion, dense) = E.everything_on_example("dr", propensity_grad=True,
                                                                   dr_gradient="joint")
    monkeypatch.setattr(E, "propensity_backward", lambda dq, cache: np.zeros_like(dq))
    rows = E.check_gradients(model, X, click, conversion, dense=dense, tol=MODEL_TOL)
    assert not all(r["ok"] for r in rows)


def test_zero_counterfactual_weight_is_esmm(rng):
    X, click, conversion, _ = _batch(rng)
    esmm = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=4)
    ips = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=4, counterfactual_weight=0.0)
    assert set(ips.params) == set(esmm.params)
    l0, g0 = esmm.loss(X, click, conversion)
    l1, g1 = ips.loss(X, click, conversion)
    assert l0 == l1 and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_dr_adds_an_imputation_tower_and_keeps_the_surface(rng):
    model = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), variant="dr",
                    imputation_units=(4, 2), share_embedding=False, seed=0)
    assert {"imp.W0", "imp.W1", "imp.W_out", "imp.embedding"} <= set(model.params)
    X, click, conversion, _ = _batch(rng)
    pred = model.predict(X)
    assert set(pred) == {"p_ctr", "p_cvr", "p_ctcvr"}
    assert np.allclose(pred["p_ctcvr"], pred["p_ctr"] * pred["p_cvr"])
    loss, grads = model.loss(X, click, conversion)
    assert np.isfinite(loss) and set(grads) == set(model.params)


def test_fit_trains_both_variants_in_float32():
    data = esmm_np.simulate(6000, seed=1, n_users=200, n_items=150)
    for variant in E.VARIANTS:
        model = E.ESCM2(data.field_dims, embed_dim=4, tower_units=(8,), variant=variant,
                        dtype=np.float32, seed=0)
        hist = esmm_np.fit(model, data.X, data.click, data.conversion, epochs=2,
                           batch_size=256, optimizer=esmm_np.Adam(lr=3e-3), verbose=False)
        assert np.all(np.isfinite(hist["batch_loss"]))
        assert hist["loss"][1] < hist["loss"][0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="snips"), "variant"),
    (dict(propensity_floor=1.0), "propensity_floor"),
    (dict(propensity_floor=-0.1), "propensity_floor"),
    (dict(counterfactual_weight=-1), "counterfactual_weight"),
    (dict(imputation_units=(4,)), "imputation_units"),
    (dict(variant="dr", dr_gradient="both"), "dr_gradient"),
])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.ESCM2(FIELD_DIMS, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(propensity_grad="no"), TypeError, "propensity_grad"),      # a truthy string is not True
    (dict(propensity_grad=1), TypeError, "propensity_grad"),
    (dict(propensity_floor=float("nan")), ValueError, "propensity_floor"),   # NaN fails no `<`
    (dict(counterfactual_weight=float("inf")), ValueError, "counterfactual_weight"),
    (dict(counterfactual_weight="1"), TypeError, "counterfactual_weight"),
    (dict(validation_loss=None), ValueError, "validation_loss"),
])
def test_options_are_checked_by_type_and_finiteness(kwargs, error, match):
    with pytest.raises(error, match=match):
        E.ESCM2(FIELD_DIMS, **kwargs)


@pytest.mark.parametrize("held, match", [
    ({"propensity": "zeros"}, "propensity"),
    ({"err": "short"}, "shape"),
    ({"weights": "zeros"}, "unknown"),
])
def test_bad_held_values_are_refused(rng, held, match):
    model = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), variant="dr")
    X, click, conversion, _ = _batch(rng)
    arrays = {"zeros": np.zeros(len(X)), "short": np.ones(len(X) - 1)}
    with pytest.raises(ValueError, match=match):
        model.loss(X, click, conversion, held={k: arrays[v] for k, v in held.items()})


@pytest.mark.parametrize("model", ["escm2-ips", "escm2-dr"])
def test_gradcheck_cli_covers_escm2(model, capsys):
    from esmm_np.cli import main

    assert main(["gradcheck", "--model", model]) == 0
    assert "tensors ok" in capsys.readouterr().out


def test_ips_mean_hand_computed():
    values = np.array([1.0, 0.0, 1.0, 1.0])
    click = np.array([1, 1, 0, 1])
    p = np.array([0.5, 0.25, 0.1, 0.05])
    r = E.ips_mean(values, click, p, floor=0.1)
    terms = np.array([2.0, 0.0, 0.0, 10.0])                    # 1/0.5, 0/0.25, unclicked, 1/0.1
    w = np.array([2.0, 4.0, 10.0])
    assert r["estimate"] == pytest.approx(terms.mean())
    assert r["se"] == pytest.approx(terms.std(ddof=1) / 2)
    assert r["max_weight"] == 10.0 and r["clipped"] == pytest.approx(1 / 3)
    assert r["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    with pytest.raises(ValueError, match="floor"):
        E.ips_mean(values, click, p, floor=1.0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_and_load_round_trip(kind, tmp_path, rng):
    model = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=((5,), (4,)), batch_norm=True,
                    propensity_floor=0.02, counterfactual_weight=0.5, seed=2, **KINDS[kind])
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)
    path = model.save(tmp_path / "m.npz")
    loaded = esmm_np.load_model(path)
    assert type(loaded) is E.ESCM2 and loaded.get_config() == model.get_config()
    X, click, conversion, _ = _batch(rng)
    for k, v in model.predict(X).items():
        assert np.array_equal(v, loaded.predict(X)[k])
    assert model.loss(X, click, conversion, seed=1)[0] == loaded.loss(X, click, conversion, seed=1)[0]


def test_validation_loss_observed_is_esmms(rng):
    X, click, conversion, _ = _batch(rng)
    esmm = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=4)
    for kind in KINDS.values():
        model = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=4, **kind)
        full = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=4,
                       validation_loss="full", **kind)
        assert model.eval_loss(X, click, conversion) == esmm.eval_loss(X, click, conversion)
        assert full.eval_loss(X, click, conversion) > model.eval_loss(X, click, conversion)
        # and the training loss is untouched by the option
        assert model.loss(X, click, conversion, seed=0)[0] == full.loss(X, click, conversion, seed=0)[0]


def test_runner_methods_train_under_the_shared_rule():
    from esmm_np import experiments as X
    from esmm_np.experiments import baselines as B
    data = esmm_np.simulate(20_000, seed=3, n_users=300, n_items=200)
    arch = dict(embed_dim=4, tower_units=(8,), dtype=np.float32)
    train = X.fair_effort(eval_every=20, patience=2, min_steps=40, max_steps=400,
                          batch_size=256, lr=3e-3)
    out = B.train_methods(data, ("ESCM2-IPS", "ESCM2-DR"), arch=arch, train=train, seed=0)
    for name, variant in (("ESCM2-IPS", "ips"), ("ESCM2-DR", "dr")):
        m = out[name]
        assert m.model.variant == variant and m.choice is None
        (rec,) = m.networks.values()
        assert rec["stopped"] in ("patience", "cap") and 0 < rec["kept"] <= rec["steps"]
        assert set(m.predict(data.X)) == {"p_ctr", "p_cvr", "p_ctcvr"}
    ctx = B.make_context(data, arch=arch, train=train, seed=0,
                         options={"escm2": {"propensity_floor": 0.05, "dr_gradient": "joint"}})
    m = B.train_escm2_dr(ctx).model
    assert (m.propensity_floor, m.dr_gradient) == (0.05, "joint")


@pytest.mark.parametrize("kind, share", [("ips", True), ("dr separate", False),
                                         ("dr joint", True)])
def test_escm2_with_bags_passes_the_whole_model_check(kind, share):
    """Multi-valued fields (bags of ids) reach every tower, the imputation tower included."""
    rng = np.random.default_rng(5)
    bag_dims = {"210": 6, "109_14": 4}
    n = 16
    X, click, conversion, _ = _batch(rng, n=n)
    bags = {}
    for f, dim in bag_dims.items():
        lengths = rng.integers(0, 4, size=n)
        lengths[0] = 0                                   # an empty bag
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        bags[f] = (offsets, rng.integers(0, dim, size=offsets[-1]),
                   rng.uniform(0.2, 3.0, size=offsets[-1]))
    model = E.ESCM2(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=bag_dims,
                    bag_pooling="mean", share_embedding=share, seed=0, **KINDS[kind])
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)
    rows = E.check_gradients(model, X, click, conversion, bags=bags, tol=MODEL_TOL)
    assert all(r["ok"] for r in rows), G.format_table(rows)
    assert set(model.predict(X, bags=bags)) == {"p_ctr", "p_cvr", "p_ctcvr"}


def test_experiment_cli_takes_methods_and_a_confounder(tmp_path, capsys):
    from esmm_np.cli import main

    assert main(["experiment", "--quick", "--no-sweep", "--workers", "1", "--n", "20000",
                 "--methods", "ESMM", "ESCM2-IPS", "ESCM2-DR", "--confounder", "1.5",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| ESCM2-IPS |" in out and "| ESCM2-DR |" in out and "| BASE |" not in out
    assert "pCVR bias vs potential outcome, unclicked" in out
    with pytest.raises(SystemExit):
        main(["experiment", "--methods", "MAGIC"])
