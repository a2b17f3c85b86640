"""Shared-Bottom, MMoE, PLE and AITM: whole-model gradient checks, what each loss is,
the gates, saving, and every option refused with a sentence.

Tolerance: gradcheck.MODEL_TOL (1e-6 relative error per tensor), the whole-model bar of
every other model (gradcheck.py explains the number). A correct backward lands near 1e-9
here; a wrong one at 1e-3 or worse.
"""

import numpy as np
import pytest

import esmm_np
from esmm_np import aitm, cli, familycheck, gated, multitask
from esmm_np import gradcheck as G
from esmm_np.losses import bce_with_logits

MODEL_TOL = G.MODEL_TOL
FAMILY = ("sb", "mmoe", "ple", "aitm")
SPACED = [(m, s) for m in ("sb", "mmoe", "ple") for s in multitask.SPACES] + [("aitm", "entire")]
BAG_DIMS = {"tags": 6}


def _bad(rows):
    return [r["tensor"] for r in rows if not r["ok"]]


def _bags(rng, n, dim=6, max_len=3):
    lengths = rng.integers(0, max_len + 1, size=n)
    lengths[0] = 0                                   # an empty bag in the batch
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return {"tags": (offsets, rng.integers(0, dim, size=offsets[-1]),
                     rng.uniform(0.2, 3.0, size=offsets[-1]))}


# ------------------------------------------------------- gradient checks

@pytest.mark.parametrize("name, space", SPACED)
def test_every_option_on_passes_the_whole_model_check(name, space):
    model, (X, click, conversion, dense) = familycheck.everything_on_example(name, space)
    rows = G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL)
    assert not _bad(rows), G.format_table(rows)
    # Not vacuous: the tensors carry real gradient, and dropout and batch norm ran.
    assert sum(not r["zero_gradient"] for r in rows) > len(rows) // 2
    assert model.batch_norm and model.dropout > 0


@pytest.mark.parametrize("name, space", [("sb", "clicked"), ("mmoe", "entire"),
                                         ("ple", "clicked"), ("aitm", "entire")])
def test_bags_and_dense_with_plain_relu_pass_the_whole_model_check(name, space):
    rng = np.random.default_rng(11)
    model, (X, click, conversion, dense) = familycheck.everything_on_example(
        name, space, seed=2, activation="relu", dropout=0.0, batch_norm=False,
        bag_dims=BAG_DIMS, bag_pooling="mean")
    bags = _bags(rng, X.shape[0])
    rows = G.check_model(model, X, click, conversion, dense=dense, bags=bags, tol=MODEL_TOL)
    assert not _bad(rows), G.format_table(rows)
    _, grads = model.loss(X, click, conversion, dense=dense, bags=bags)
    assert np.abs(grads["embedding"][sum(model.field_dims):]).max() > 1e-4   # the bag's rows


def test_the_check_notices_a_mixture_backward_that_forgets_the_gate(monkeypatch):
    for name in ("mixture_backward", "mixture_backward_matmul"):   # plain and fast forms
        def wrong(dm, cache, original=getattr(gated, name)):
            do, dpsi = original(dm, cache)
            return do, np.zeros_like(dpsi)

        monkeypatch.setattr(gated, name, wrong)
    # MMoE's and PLE's levels share this code path; MMoE is the quicker check.
    model, (X, click, conversion, dense) = familycheck.everything_on_example("mmoe")
    bad = _bad(G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL))
    gates = [k for k in model.params if "gate_" in k]
    assert set(gates) <= set(bad), bad            # every gate's gradient is missing
    assert not [k for k in bad if k.startswith(("ctr.", "cvr."))]   # the towers' are right


def test_the_check_notices_a_shared_bottom_that_hears_one_tower(monkeypatch):
    def one_tower(self, dx, cache, grads):
        return multitask.stack_backward(dx["ctr"], cache, "bottom",
                                        self.tower_config(self.bottom_units), grads)

    monkeypatch.setattr(multitask.SharedBottom, "_body_backward", one_tower)
    model, (X, click, conversion, dense) = familycheck.everything_on_example("sb")
    bad = _bad(G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL))
    assert "bottom.W0" in bad and "embedding" in bad and "cvr.W_out" not in bad


def test_the_check_notices_a_calibrator_summed_instead_of_averaged(monkeypatch):
    def summed(dloss, cache):
        (gap,) = cache
        dgap = (gap > 0).astype(gap.dtype) * dloss    # forgot the 1 / n of the mean
        return dgap, -dgap

    monkeypatch.setattr(aitm, "calibrator_backward", summed)
    model, (X, click, conversion, dense) = familycheck.everything_on_example("aitm")
    bad = _bad(G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL))
    assert "ctr.W_out" in bad and "ctcvr.W_out" in bad


def test_the_check_notices_an_attention_backward_without_the_query_path(monkeypatch):
    original = aitm.attention_backward

    def wrong(dtau, cache):
        dcand, dW_v, dW_k, dW_q = original(dtau, cache)
        return dcand, dW_v, dW_k, np.zeros_like(dW_q)

    monkeypatch.setattr(aitm, "attention_backward", wrong)
    model, (X, click, conversion, dense) = familycheck.everything_on_example("aitm")
    assert _bad(G.check_model(model, X, click, conversion, dense=dense, tol=MODEL_TOL)) == \
        ["transfer.W_q"]


@pytest.mark.parametrize("name", ("sb", "aitm"))
def test_cli_gradcheck_passes_and_prints_a_table_per_space(name, capsys):
    assert cli.main(["gradcheck", "--model", name]) == 0
    out = capsys.readouterr().out
    assert "NO" not in out and out.count("tensors ok") == (1 if name == "aitm" else 2)


@pytest.mark.parametrize("name", ("mmoe", "ple"))
def test_cli_gradcheck_runs_the_family_check_of_the_model_named(name, monkeypatch):
    """The tables themselves are the every-option checks above (same examples, same checker)."""
    seen = []
    monkeypatch.setattr(familycheck, "run", lambda *a, **kw: seen.append((a, kw)) or 0)
    assert cli.main(["gradcheck", "--model", name, "--tol", "1e-6"]) == 0
    assert seen == [((name,), dict(n=16, seed=0, h=1e-5, tol=1e-6))]


# ------------------------------------------------------------ the losses

def _plain(cls, **kw):
    """A float64 model without dropout or batch norm: train and inference forwards agree."""
    return cls((7, 5, 3), embed_dim=3, seed=1, **kw)


def _batch(seed=0, n=40):
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, n) for d in (7, 5, 3)], axis=1)
    click = rng.integers(0, 2, n)
    click[:2] = (0, 1)
    conversion = click * rng.integers(0, 2, n)
    conversion[1] = 1
    return X, click, conversion


def _bce(y, p):
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


@pytest.mark.parametrize("cls, kw", [(esmm_np.SharedBottom, {}), (esmm_np.MMoE, {}),
                                     (esmm_np.PLE, dict(n_levels=2))])
def test_entire_space_is_esmms_two_losses_on_the_predictions(cls, kw):
    X, click, conversion = _batch()
    model = _plain(cls, loss_weights=(0.6, 1.3), **kw)
    p = model.predict(X)
    np.testing.assert_array_equal(p["p_ctcvr"], p["p_ctr"] * p["p_cvr"])
    want = 0.6 * _bce(click, p["p_ctr"]) + 1.3 * _bce(click * conversion, p["p_ctcvr"])
    assert model.loss(X, click, conversion)[0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("cls, kw", [(esmm_np.SharedBottom, {}), (esmm_np.MMoE, {}),
                                     (esmm_np.PLE, dict(n_levels=2))])
def test_clicked_space_averages_the_cvr_loss_over_the_clicked_rows_only(cls, kw):
    X, click, conversion = _batch()
    model = _plain(cls, space="clicked", loss_weights=(0.6, 1.3), **kw)
    p = model.predict(X)
    c = click == 1
    want = 0.6 * _bce(click, p["p_ctr"]) + 1.3 * _bce(conversion[c], p["p_cvr"][c])
    assert model.loss(X, click, conversion)[0] == pytest.approx(want, rel=1e-12)
    # Rows without a click give the CVR tower no loss and no gradient.
    cvr_only = _plain(cls, space="clicked", loss_weights=(0.0, 1.0), **kw)
    loss, grads = cvr_only.loss(X[~c], click[~c], conversion[~c])
    assert loss == 0.0 and all(np.all(g == 0) for g in grads.values())


def test_aitm_loss_is_two_cross_entropies_and_the_mean_calibrator():
    X, click, conversion = _batch()
    model = _plain(esmm_np.AITM, tower_units=(6, 4), calibrator_weight=0.7, loss_weights=(0.9, 1.1))
    p = model.predict(X)
    cal = np.mean(np.maximum(p["p_ctcvr"] - p["p_ctr"], 0))
    assert cal > 0                                  # the calibrator is live in this batch
    want = 0.9 * _bce(click, p["p_ctr"]) + 1.1 * _bce(click * conversion, p["p_ctcvr"]) + 0.7 * cal
    assert model.loss(X, click, conversion)[0] == pytest.approx(want, rel=1e-12)
    # averaged, not summed: the same rows twice give the same loss
    twice = model.loss(np.tile(X, (2, 1)), np.tile(click, 2), np.tile(conversion, 2))[0]
    assert twice == pytest.approx(want, rel=1e-12)


def test_aitm_pcvr_is_the_clipped_ratio_as_division():
    X, _, _ = _batch(n=200)
    p = _plain(esmm_np.AITM, tower_units=(4,)).predict(X)
    np.testing.assert_allclose(p["p_cvr_raw"], p["p_ctcvr"] / p["p_ctr"], rtol=1e-12)
    np.testing.assert_array_equal(p["p_cvr"], np.clip(p["p_cvr_raw"], 0, 1))
    assert np.all((p["p_cvr"] >= 0) & (p["p_cvr"] <= 1))


def test_ple_with_one_level_and_no_task_experts_is_mmoe():
    X, _, _ = _batch()
    mmoe = _plain(esmm_np.MMoE, n_experts=3, expert_units=(5,), tower_units=(4,))
    ple = _plain(esmm_np.PLE, n_levels=1, n_shared_experts=3, n_task_experts=0,
                 expert_units=(5,), tower_units=(4,))
    rename = {"expert": "l0.shared", "gate_": "l0.gate_"}
    for k, w in mmoe.params.items():
        key = k
        for a, b in rename.items():
            if k.startswith(a):
                key = b + k[len(a):]
        ple.params[key][...] = w
    a, b = mmoe.predict(X), ple.predict(X)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-13, atol=0)


# -------------------------------------------------------------- the gates

def test_gates_report_distributions_and_see_a_polarised_gate():
    X, _, _ = _batch(n=100)
    model = _plain(esmm_np.MMoE, n_experts=4, expert_units=(3,))
    g = model.gates(X, batch_size=33)                # chunked like predict
    assert set(g) == {"gate_ctr", "gate_cvr"}
    for d in g.values():
        assert d["mean_weight"].sum() == pytest.approx(1.0, abs=1e-12)
        assert 0 < d["entropy"] <= d["max_entropy"] == pytest.approx(np.log(4))
    model.params["gate_cvr.b"][2] = 60.0             # one expert takes every row
    g = model.gates(X)["gate_cvr"]
    assert g["mean_weight"][2] > 1 - 1e-12 and g["entropy"] < 1e-10
    ple = _plain(esmm_np.PLE, n_levels=2).gates(X)
    assert set(ple) == {"l0.gate_ctr", "l0.gate_cvr", "l0.gate_shared", "l1.gate_ctr",
                        "l1.gate_cvr"}
    assert ple["l0.gate_shared"]["experts"] == ("l0.ctr0", "l0.cvr0", "l0.shared0", "l0.shared1")


def test_aitm_transfer_weights_sum_to_one():
    X, _, _ = _batch()
    w = _plain(esmm_np.AITM, tower_units=(4,)).transfer_weights(X)
    assert set(w) == {"info", "own"} and w["info"] + w["own"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------- fit, save and load

@pytest.mark.parametrize("cls, kw", [
    (esmm_np.SharedBottom, dict(space="clicked")), (esmm_np.MMoE, {}),
    (esmm_np.PLE, dict(n_levels=2, space="clicked")), (esmm_np.AITM, {})])
def test_fit_then_save_and_load_predicts_bit_for_bit(tmp_path, cls, kw):
    rng = np.random.default_rng(5)
    X, click, conversion = _batch(n=96)
    dense = rng.standard_normal((96, 2))
    bags = _bags(rng, 96)
    model = cls((7, 5, 3), embed_dim=3, n_dense=2, batch_norm=True, dropout=0.1,
                bag_dims=BAG_DIMS, dtype=np.float32, **kw)
    esmm_np.fit(model, X, click, conversion, dense=dense, bags=bags, batch_size=32,
                verbose=False)
    assert any(np.any(v != 0) for k, v in model.state.items() if "bn_mean" in k)
    model.save(tmp_path / "m.npz")
    loaded = esmm_np.load_model(tmp_path / "m.npz")
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    a, b = model.predict(X, dense, bags=bags), loaded.predict(X, dense, bags=bags)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_four_names_are_exported():
    for name in ("SharedBottom", "MMoE", "PLE", "AITM"):
        assert getattr(esmm_np, name) is not None and name in esmm_np.__all__


# ------------------------------------------------------- refused options

@pytest.mark.parametrize("cls, kw, words", [
    (esmm_np.SharedBottom, dict(space="all"), "space"),
    (esmm_np.SharedBottom, dict(bottom_units=()), "bottom_units must be a non-empty"),
    (esmm_np.SharedBottom, dict(bottom_units="64"), "bottom_units must be a non-empty"),
    (esmm_np.SharedBottom, dict(bottom_units=(8, 0)), "bottom_units entry"),
    (esmm_np.SharedBottom, dict(share_embedding=False), "one embedding table"),
    (esmm_np.MMoE, dict(n_experts=0), "n_experts"),
    (esmm_np.MMoE, dict(n_experts=2.5), "n_experts"),
    (esmm_np.MMoE, dict(expert_units=()), "expert_units must be a non-empty"),
    (esmm_np.MMoE, dict(tower_units="16"), "tower_units"),
    (esmm_np.PLE, dict(n_levels=0), "n_levels"),
    (esmm_np.PLE, dict(n_shared_experts=0), "n_shared_experts"),
    (esmm_np.PLE, dict(n_task_experts=-1), "n_task_experts"),
    (esmm_np.PLE, dict(dropout=1.0), "dropout"),
    (esmm_np.AITM, dict(calibrator_weight=-0.1), "calibrator_weight"),
    (esmm_np.AITM, dict(tower_units=()), "at least one hidden layer"),
    (esmm_np.AITM, dict(ctcvr_loss="naive"), "AITM takes no ctcvr_loss"),
    (esmm_np.AITM, dict(space="clicked"), "AITM takes no space"),
])
def test_a_bad_option_is_refused_with_a_sentence_naming_it(cls, kw, words):
    with pytest.raises((TypeError, ValueError), match=words):
        cls((7, 5, 3), **kw)


@pytest.mark.parametrize("name", FAMILY)
def test_fixed_masks_are_refused_in_favour_of_a_seed(name):
    model, (X, click, conversion, dense) = familycheck.everything_on_example(name)
    with pytest.raises(ValueError, match="seed="):
        model.loss(X, click, conversion, dense=dense, masks={"ctr": None})


def test_aitm_predictions_go_straight_into_the_evaluation_protocol():
    """README's `evaluate_esmm(model.predict(X), test)` works for AITM too, whose predict
    also returns the unclipped ratio p_cvr_raw: the protocol scores the clipped p_cvr."""
    data = esmm_np.simulate(4000, seed=0)
    train, test = data.split(0.25, seed=0)
    model = esmm_np.AITM(train.field_dims, embed_dim=4, tower_units=(8,), seed=0)
    pred = model.predict(test.X)
    assert "p_cvr_raw" in pred
    scores = esmm_np.metrics.evaluate_esmm(pred, test)
    three = {k: pred[k] for k in ("p_ctr", "p_cvr", "p_ctcvr")}
    assert scores == esmm_np.metrics.evaluate_esmm(three, test)
