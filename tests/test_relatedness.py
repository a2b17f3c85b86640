"""The relatedness sweep (issue 19): a quick run's structure, JSON, intervals and figure."""

import json
import os

import numpy as np
import pytest

from esmm_np import cli
from esmm_np.experiments import relatedness as R
from esmm_np.experiments.scoring import world_interval


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("relatedness")
    doc = out / "family.md"
    code = cli.main(["relatedness", "--quick", "--workers", "1", "--out", str(out / "res"),
                     "--family-doc", str(doc)])
    return code, out


def test_quick_run_writes_its_files(quick_run):
    code, out = quick_run
    assert code == 0
    for name in ("relatedness.md", "relatedness.json"):
        assert (out / "res" / name).stat().st_size > 0
    text = (out / "family.md").read_text(encoding="utf-8")
    assert "Student t over worlds" in text and "Gate diagnostics" in text
    assert "Adjacent-validation noise" in text
    pytest.importorskip("matplotlib")
    for png in (out / "res" / "gates.png", out / "family_gates.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![gate entropy over rho and CVR](family_gates.png)" in text


def test_quick_json_structure_and_intervals(quick_run):
    _, out = quick_run
    sweep = json.loads((out / "res" / "relatedness.json").read_text(encoding="utf-8"))
    assert sweep["rhos"] == [0.3, 0.95] and sweep["cvrs"] == [0.1]
    assert len(sweep["world_seeds"]) >= 2
    assert sweep["comparisons"] == ["SB − ESMM", "MMOE − ESMM", "PLE − ESMM", "MMOE − SB",
                                    "PLE − SB"]
    assert len(sweep["cells"]) == 2
    for cell in sweep["cells"]:
        for metric in R.METRICS:
            assert set(cell["scores"][metric]) == set(sweep["methods"])
            for comp in sweep["comparisons"]:
                e = cell["diffs"][metric][comp]
                assert e["low"] <= e["diff"] <= e["high"]
                assert len(e["per_world"]) == len(sweep["world_seeds"])
                assert e["diff"] == pytest.approx(np.mean(e["per_world"]))
                iv = world_interval(e["per_world"])           # the tables' t over worlds
                assert (e["low"], e["high"]) == pytest.approx((iv["diff_low"], iv["diff_high"]))
                assert R.starred(e) == ((e["low"] > 0 or e["high"] < 0)
                                        and abs(e["diff"]) >= e["floor"])
                a, b = comp.split(" − ")
                assert e["diff"] == pytest.approx(cell["scores"][metric][a]
                                                  - cell["scores"][metric][b], abs=1e-12)
        assert set(cell["gates"]) == {"MMOE", "PLE"}
        for gates in cell["gates"].values():
            for d in gates.values():
                assert sum(d["mean_weight"]) == pytest.approx(1.0, abs=1e-5)
                assert len(d["mean_weight"]) == len(d["experts"])
                assert d["max_entropy"] == pytest.approx(np.log(len(d["experts"])))
                assert 0.0 <= d["normalised_entropy"] <= 1.0 + 1e-9
                assert d["polarised"] == (d["normalised_entropy"] < R.POLARISED
                                          or max(d["mean_weight"]) > R.DOMINANT)


def test_two_level_interval_covers_the_worlds():
    rng = np.random.default_rng(0)
    per = [(0.01, 0.01 + 0.001 * rng.standard_normal(50)),
           (0.03, 0.03 + 0.001 * rng.standard_normal(50))]
    e = R.two_level_interval(per)
    assert e["diff"] == pytest.approx(0.02)
    assert e["low"] < 0.012 and e["high"] > 0.028     # the spread between the two worlds
    assert R.starred(e) and R.sign(e) == 1
    assert not R.starred({**e, "floor": 0.05}) and R.sign({**e, "floor": 0.05}) == 0


def test_the_sweep_refuses_one_world_and_unknown_methods():
    cfg = R.relatedness_config(quick=True)
    cfg.world_seeds = (0,)
    with pytest.raises(ValueError, match="at least 2 world seeds"):
        R.relatedness_sweep(cfg, (0.3,), (0.1,), progress=None)
    cfg = R.relatedness_config(quick=True)
    cfg.methods = ("ESMM", "NOPE")
    with pytest.raises(ValueError, match="unknown methods"):
        R.relatedness_sweep(cfg, (0.3,), (0.1,), progress=None)


def test_the_budget_note_counts_networks_whose_validation_could_not_choose():
    from esmm_np.experiments.stopping import MIN_VAL_POSITIVES
    ok = {"kept": 300, "steps": 600, "stopped": "patience"}
    fixed = {"kept": 400, "steps": 400, "stopped": "budget"}
    sweep = {"cells": [
        {"rho": 0.3, "cvr": 0.02, "networks": {"ESMM": [{"ESMM net": fixed}, {"ESMM net": ok}],
                                               "SB": [{"SB net": fixed}, {"SB net": fixed}]}},
        {"rho": 0.95, "cvr": 0.1, "networks": {"ESMM": [{"ESMM net": ok}, {"ESMM net": ok}],
                                               "SB": [{"SB net": ok}, {"SB net": ok}]}}]}
    note = R.budget_note(sweep)
    assert note.startswith(f"3 of 8 networks had fewer than {MIN_VAL_POSITIVES} positives")
    assert "(400 steps)" in note and "rho 0.3 / CVR 2%: 3" in note and "rho 0.95" not in note
    for c in sweep["cells"]:
        for runs in c["networks"].values():
            for r in runs:
                for rec in r.values():
                    rec["stopped"] = "patience"
    assert R.budget_note(sweep).startswith("Every one of the 8 networks")


def test_the_documented_sweep_does_not_let_a_tiny_validation_set_choose():
    from esmm_np.experiments.stopping import MIN_VAL_POSITIVES
    cfg = R.relatedness_config()
    assert cfg.train["min_val_positives"] == MIN_VAL_POSITIVES
    assert cfg.train["criterion"] == "measured"
