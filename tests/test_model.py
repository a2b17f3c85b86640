"""Whole-model gradient checks and properties of ESMM and TowerModel.

Tolerance for whole models: relative error <= 1e-6 per parameter tensor.
Finite differences through several layers accumulate truncation error of
order h^2 times the curvature of the composed network, and a ReLU or PReLU
kink crossed by the +-h probe perturbs single entries; correct models here
land between 1e-11 and 1e-8, and a wrong term in any backward gives 1e-3
or worse. The tolerance is the CS231n rule of thumb for a whole network.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import esmm_np
from esmm_np import gradcheck as G
from batches import draw_batch

MODEL_TOL = G.MODEL_TOL          # 1e-6, defined once in esmm_np/gradcheck.py
assert MODEL_TOL == 1e-6         # the bar these tests were written to; never loosened
FIELD_DIMS = [7, 5, 3]


def _batch(rng, n=20, n_dense=0):
    return draw_batch(rng, FIELD_DIMS, n, n_dense)


def _perturb(model, rng, scale=0.1):
    """Move every parameter off its initial value: zero biases can hide a wrong backward."""
    for w in model.params.values():
        w += scale * rng.standard_normal(w.shape)


CONFIGS = {
    "one tuple for both towers": dict(tower_units=(6, 4)),
    "different tower sizes": dict(tower_units=((6, 4), (5,))),
    "dense features": dict(tower_units=(5,), n_dense=3),
    "dropout": dict(tower_units=(6, 4), dropout=0.3),
    "batch norm": dict(tower_units=(6, 4), batch_norm=True),
    "L2 on embeddings and towers": dict(tower_units=(5,), l2_reg_embedding=0.05, l2_reg_dnn=0.02),
    "relu": dict(tower_units=(6,), activation="relu"),
    "sigmoid": dict(tower_units=(6,), activation="sigmoid"),
    "tanh": dict(tower_units=(6,), activation="tanh"),
    "prelu": dict(tower_units=(6,), activation="prelu"),
    "loss weights": dict(tower_units=(5,), loss_weights=(0.3, 2.0)),
    "naive CTCVR loss": dict(tower_units=(5,), ctcvr_loss="naive"),
    "separate embeddings (ESMM-NS)": dict(tower_units=(5,), share_embedding=False),
    "everything": dict(tower_units=((6, 4), (5,)), activation="prelu", dropout=0.2,
                       batch_norm=True, l2_reg_embedding=0.01, l2_reg_dnn=0.01, n_dense=2,
                       loss_weights=(1.0, 0.7), share_embedding=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_esmm_gradients(name):
    rng = np.random.default_rng(7)
    cfg = CONFIGS[name]
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, seed=1, **cfg)
    _perturb(model, rng)
    X, click, conversion, dense = _batch(rng, n_dense=cfg.get("n_dense", 0))
    rows = G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL, seed=3)
    assert {r["tensor"] for r in rows} == set(model.params)
    bad = [(r["tensor"], r["rel_error"]) for r in rows if not r["ok"]]
    assert not bad, f"tensors over {MODEL_TOL}: {bad}"


@pytest.mark.parametrize("cfg", [dict(), dict(batch_norm=True, dropout=0.2, activation="prelu",
                                              l2_reg_embedding=0.01, l2_reg_dnn=0.01, n_dense=2)])
def test_tower_model_gradients(cfg):
    rng = np.random.default_rng(8)
    model = esmm_np.TowerModel(FIELD_DIMS, embed_dim=3, tower_units=(6, 4), seed=2, **cfg)
    _perturb(model, rng)
    X, y, _, dense = _batch(rng, n_dense=cfg.get("n_dense", 0))
    rows = G.check_model(model, X, y, dense=dense, tol=MODEL_TOL, seed=3)
    assert all(r["ok"] for r in rows), G.format_table(rows)


def test_checker_catches_a_wrong_backward(monkeypatch):
    """The gradient check can fail: break the ReLU backward and it must say so."""
    rng = np.random.default_rng(0)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(6,), seed=0)
    _perturb(model, rng)
    X, click, conversion, _ = _batch(rng)
    monkeypatch.setitem(esmm_np.model._ACT_BACKWARD, "relu", lambda dout, mask: dout)
    rows = G.check_model(model, X, click, conversion, tol=MODEL_TOL)
    assert not all(r["ok"] for r in rows)


def test_public_surface():
    model = esmm_np.ESMM(field_dims=[1000, 500, 40], embed_dim=8, tower_units=(64, 32), seed=0)
    assert model.params["embedding"].shape == (1540, 8)
    assert model.params["ctr.W0"].shape == (24, 64) and model.params["cvr.W1"].shape == (64, 32)
    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, d, 50) for d in (1000, 500, 40)], axis=1)
    out = model.predict(X)
    assert set(out) == {"p_ctr", "p_cvr", "p_ctcvr"}
    assert all(v.shape == (50,) for v in out.values())
    click = rng.integers(0, 2, 50)
    loss, grads = model.loss(X, click, click * rng.integers(0, 2, 50))
    assert isinstance(loss, float)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in model.params.items()}


def test_params_are_read_live():
    """Updating model.params in place changes the model's predictions."""
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(4,), seed=0)
    X = np.array([[1, 2, 0]])
    before = model.predict(X)["p_ctr"][0]
    model.params["ctr.b_out"] += 1.0
    assert model.predict(X)["p_ctr"][0] > before


def test_pcvr_gets_no_loss_of_its_own():
    """With the CTCVR weight at 0, nothing reaches the CVR tower."""
    rng = np.random.default_rng(0)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(4,), loss_weights=(1.0, 0.0))
    X, click, conversion, _ = _batch(rng)
    _, grads = model.loss(X, click, conversion)
    assert all(np.all(g == 0) for k, g in grads.items() if k.startswith("cvr."))
    assert np.any(grads["ctr.W0"] != 0)


def test_loss_value_is_the_sum_of_two_bces():
    rng = np.random.default_rng(1)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(4,), loss_weights=(0.5, 2.0),
                         l2_reg_dnn=0.1)
    X, click, conversion, _ = _batch(rng)
    p = model.predict(X)
    z = click * conversion

    def bce(y, q):
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    l2 = 0.1 * sum(np.sum(w ** 2) for k, w in model.params.items() if ".W" in k)
    expected = 0.5 * bce(click, p["p_ctr"]) + 2.0 * bce(z, p["p_ctcvr"]) + l2
    assert model.loss(X, click, conversion)[0] == pytest.approx(expected, rel=1e-12)


def test_predict_is_inference_mode():
    """predict uses no dropout and BN running statistics: it is deterministic and batch-independent."""
    rng = np.random.default_rng(2)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(6,), dropout=0.5, batch_norm=True)
    model.state["ctr.bn_mean0"][:] = rng.standard_normal(6)
    X, _, _, _ = _batch(rng, n=30)
    full = model.predict(X)["p_cvr"]
    np.testing.assert_array_equal(full, model.predict(X)["p_cvr"])
    np.testing.assert_allclose(full[:5], model.predict(X[:5])["p_cvr"], rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 30.0))
def test_ctcvr_bounded_by_both_factors(seed, scale):
    rng = np.random.default_rng(seed)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), seed=seed)
    _perturb(model, rng, scale=scale)
    X, _, _, _ = _batch(rng, n=25)
    p = model.predict(X)
    assert np.all(p["p_ctcvr"] <= np.minimum(p["p_ctr"], p["p_cvr"]))
    # Strictly positive while neither sigmoid underflows (logits above -700).
    assert np.all(p["p_ctcvr"] >= 0)
    if scale < 1:
        assert np.all(p["p_ctcvr"] > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40),
       share=st.booleans(), n_dense=st.integers(0, 2))
def test_gradient_shapes_and_unused_rows(seed, n, share, n_dense):
    rng = np.random.default_rng(seed)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=2, tower_units=(4,), n_dense=n_dense,
                         share_embedding=share, seed=seed)
    X, click, conversion, dense = _batch(rng, n=max(n, 2), n_dense=n_dense)
    _, grads = model.loss(X, click, conversion, dense=dense)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in model.params.items()}
    used = np.zeros(sum(FIELD_DIMS), dtype=bool)
    used[(X + model.offsets).ravel()] = True
    for name in model.tables:
        assert np.all(grads[name][~used] == 0), "rows no impression used must get zero gradient"


def test_unused_rows_get_only_l2_gradient():
    rng = np.random.default_rng(3)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=2, tower_units=(4,), l2_reg_embedding=0.1)
    X, click, conversion, _ = _batch(rng, n=4)
    _, grads = model.loss(X, click, conversion)
    unused = np.ones(sum(FIELD_DIMS), dtype=bool)
    unused[(X + model.offsets).ravel()] = False
    np.testing.assert_allclose(grads["embedding"][unused],
                               0.2 * model.params["embedding"][unused], rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e2, 1e3, 1e4]),
       share=st.booleans())
def test_finite_for_extreme_weights(seed, scale, share):
    """Huge output weights push logits to +-1e4 and beyond; loss and gradients stay finite."""
    rng = np.random.default_rng(seed)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(4,), share_embedding=share,
                         seed=seed)
    for t in ("ctr", "cvr"):
        model.params[f"{t}.W_out"] *= scale * rng.choice([-1, 1])
        model.params[f"{t}.b_out"] += scale * rng.choice([-1, 1])
    X, click, conversion, _ = _batch(rng)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = model.loss(X, click, conversion)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_identical_seeds_identical_results(seed):
    def run():
        rng = np.random.default_rng(seed)
        model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), dropout=0.3,
                             batch_norm=True, seed=seed)
        X, click, conversion, _ = _batch(rng)
        return model.loss(X, click, conversion)

    (l1, g1), (l2, g2) = run(), run()
    assert l1 == l2
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_float32_model_computes_in_float32():
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), dtype=np.float32,
                         batch_norm=True, activation="prelu", dropout=0.1)
    X, click, conversion, _ = _batch(np.random.default_rng(0))
    assert all(p.dtype == np.float32 for p in model.params.values())
    _, grads = model.loss(X, click, conversion)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(v.dtype == np.float32 for v in model.predict(X).values())
    with pytest.raises(ValueError, match="float64"):
        G.check_model(model, X, click, conversion)


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation="gelu"), "activation"),
    (dict(dropout=1.0), "dropout"),
    (dict(tower_units=((4,), (4,), (4,))), "tower_units"),
    (dict(dtype=np.int32), "dtype"),
    (dict(ctcvr_loss="other"), "ctcvr_loss"),
    (dict(loss_weights=(1.0,)), "loss_weights"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        esmm_np.ESMM(FIELD_DIMS, **kwargs)
