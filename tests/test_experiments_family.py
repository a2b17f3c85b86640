"""The multi-task family as methods of the experiment runner: SB, MMOE, PLE (and their
-CLICKED variants) and AITM, trained under the same effort rule, scored like ESMM,
with intervals against ESMM; the CTR side and the gates."""

import numpy as np
import pytest

import esmm_np
import esmm_np.experiments as E
from esmm_np import cli
from esmm_np.experiments import baselines as B
from esmm_np.experiments import family as F
from esmm_np.experiments import methods
from esmm_np.experiments.config import fair_effort


def test_the_family_joins_the_methods_without_touching_the_papers():
    assert set(F.TRAINERS) == set(F.FAMILY_METHODS)
    assert not set(F.TRAINERS) & set(B.TRAINERS)
    assert methods.TRAINERS == {**B.TRAINERS, **F.TRAINERS}
    assert set(F.FAMILY_METHODS) <= set(cli._method_names())   # experiment --methods accepts them


def test_architectures_have_esmms_widths():
    arch = dict(embed_dim=8, tower_units=(64, 32), dtype="float32")
    cls, o = F.family_options("SB-CLICKED", arch)
    assert cls is esmm_np.SharedBottom and o["bottom_units"] == (64,) and o["tower_units"] == (32,)
    assert o["space"] == "clicked" and o["embed_dim"] == 8
    cls, o = F.family_options("MMOE", arch)
    assert cls is esmm_np.MMoE and o["expert_units"] == (64,) and o["space"] == "entire"
    cls, o = F.family_options("PLE", arch)
    assert cls is esmm_np.PLE and o["n_levels"] == 1 and o["tower_units"] == (32,)
    cls, o = F.family_options("AITM", arch)
    assert cls is esmm_np.AITM and o["tower_units"] == (64, 32) and "space" not in o
    with pytest.raises(ValueError, match="unknown family method"):
        F.family_options("MOE", arch)


def test_runner_trains_scores_and_compares_the_family_with_esmm():
    cfg = E.quick_config()
    cfg.n_impressions, cfg.workers = 40_000, 1
    cfg.methods = ("ESMM", "SB-CLICKED", "MMOE", "PLE-CLICKED", "AITM")
    cfg.train = fair_effort(eval_every=50, patience=2, min_steps=100, max_steps=600,
                            batch_size=256, lr=3e-3)
    result, _ = E.run_all(cfg, progress=None, sweep=False)
    assert set(result["summary"]) == set(cfg.methods)
    for name in cfg.methods:
        s = result["summary"][name]
        for m in ("ctr_auc", "cvr_auc_clicked", "cvr_soft_auc_entire", "ctcvr_auc"):
            assert 0 <= s[m][0] <= 1, (name, m)
    # AITM's pCVR is a ratio: scored as DIVISION's, with its share above 1 reported.
    assert "pcvr_above_1" in result["runs"]["AITM"][0]
    for name in cfg.methods[1:]:              # paired intervals against ESMM
        ci = result["intervals"]["cvr_soft_auc_entire"][name]
        assert ci["diff_low"] <= ci["diff"] <= ci["diff_high"]
    assert E.format_table(result).count("\n") == 1 + len(cfg.methods)


def test_ctr_side_scores_and_intervals_see_a_better_ctr_model():
    test = esmm_np.simulate(20_000, seed=7)
    rng = np.random.default_rng(0)
    noisy = np.clip(test.true_ctr + rng.normal(0, 0.05, len(test)), 1e-4, 1)
    exact = F.ctr_scores({"p_ctr": test.true_ctr}, test)
    worse = F.ctr_scores({"p_ctr": noisy}, test)
    assert exact["ctr_soft_auc"] > worse["ctr_soft_auc"] and exact["ctr_auc"] > worse["ctr_auc"]
    assert np.isnan(F.ctr_scores({"p_cvr": noisy}, test)["ctr_auc"])
    iv = F.ctr_intervals({"ESMM": [{"p_ctr": noisy}], "TRUTH": [{"p_ctr": test.true_ctr}]},
                         test, n_boot=50)
    assert iv["ctr_soft_auc"]["TRUTH"]["diff_low"] > 0          # the interval excludes zero
    assert iv["ctr_auc"]["ESMM"]["diff"] == 0
    with pytest.raises(ValueError, match="reference"):
        F.ctr_intervals({"SB": [{"p_cvr": noisy}]}, test)


def test_gate_diagnostics_of_a_trained_mmoe():
    data = esmm_np.simulate(20_000, seed=3, n_users=300, n_items=200)
    ctx = B.make_context(data, arch=dict(embed_dim=4, tower_units=(8,), dtype=np.float32),
                         train=dict(epochs=1, batch_size=256, lr=3e-3))
    method = F.TRAINERS["MMOE"](ctx)
    gates = F.gate_diagnostics(method, ctx.val)
    assert set(gates) == {"gate_ctr", "gate_cvr"}
    for g in gates.values():
        assert g["mean_weight"].shape == (4,) and 0 <= g["entropy"] <= g["max_entropy"]
    with pytest.raises(TypeError, match="has no gates"):
        F.gate_diagnostics(F.TRAINERS["SB"](ctx), ctx.val)


def test_family_networks_record_the_adjacent_validation_noise_like_esmms():
    from esmm_np.experiments.report import noise_values
    from esmm_np.experiments.stopping import make_probe
    data = esmm_np.simulate(20_000, seed=3, n_users=300, n_items=200)
    test = esmm_np.simulate(5_000, seed=4, n_users=300, n_items=200)
    ctx = B.make_context(data, arch=dict(embed_dim=4, tower_units=(8,), dtype=np.float32),
                         train=fair_effort(eval_every=20, patience=2, min_steps=40,
                                           max_steps=200, batch_size=256, lr=3e-3))
    ctx.probes = {"two-tower": make_probe(test, False, n_rows=2_000)}
    networks = {}
    for name in ("SB", "MMOE-CLICKED", "AITM"):
        (record,) = F.TRAINERS[name](ctx).networks.values()
        assert len(record["probe"]) == len(record["val_steps"]) >= 2, name
        assert 0 <= record["adjacent_noise"] <= 1, name
        networks[name] = [{f"{name} net": record}]
    assert set(noise_values(networks)) == {"SB", "MMOE-CLICKED", "AITM"}   # the noise line lists them
