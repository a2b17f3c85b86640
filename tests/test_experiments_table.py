"""The runner's table with the multi-task family: the CTR side (CTR AUC, soft CTR AUC) in the
table, the difference table and results.json with across-world intervals against ESMM; the
gates of MMOE and PLE in results.json and the printout; the family's docs sections."""

import json

import numpy as np
import pytest

import esmm_np
import esmm_np.experiments as E
from esmm_np import cli
from esmm_np.experiments import family as F
from esmm_np.experiments import report as R
from esmm_np.experiments import runner
from esmm_np.experiments.config import fair_effort
from esmm_np.experiments.scoring import TABLE_INTERVALS, score

METHODS = ("ESMM", "MMOE", "PLE-CLICKED", "SB", "CTR-ONLY")


def _small(world_seeds=(0, 1), methods=METHODS):
    cfg = E.quick_config()
    cfg.n_impressions, cfg.workers, cfg.seeds = 30_000, 1, (0,)
    cfg.world_seeds, cfg.methods, cfg.n_boot = world_seeds, methods, 20
    cfg.train = fair_effort(eval_every=50, patience=2, min_steps=100, max_steps=300,
                            batch_size=256, lr=3e-3)
    return cfg


@pytest.fixture(scope="module")
def two_worlds():
    return E.run_all(_small(), progress=None, sweep=False)[0]


def test_score_has_the_ctr_side_and_nan_without_a_pctr():
    test = esmm_np.simulate(20_000, seed=5)
    rng = np.random.default_rng(1)
    noisy = np.clip(test.true_ctr + rng.normal(0, 0.05, len(test)), 1e-4, 1)
    cvr = np.full(len(test), 0.1)
    s = score({"p_ctr": test.true_ctr, "p_cvr": cvr, "p_ctcvr": cvr * test.true_ctr}, test)
    worse = score({"p_ctr": noisy, "p_cvr": cvr, "p_ctcvr": cvr * noisy}, test)
    assert s["ctr_soft_auc"] == esmm_np.metrics.soft_auc(test.true_ctr, test.true_ctr)
    assert s["ctr_auc"] == esmm_np.metrics.auc(test.click, test.true_ctr)
    assert worse["ctr_soft_auc"] < s["ctr_soft_auc"] and worse["ctr_auc"] < s["ctr_auc"]
    none = score({"p_cvr": cvr}, test)
    assert np.isnan(none["ctr_auc"]) and np.isnan(none["ctr_soft_auc"])


def test_ctr_columns_and_across_world_intervals(two_worlds):
    r = two_worlds
    for metric in ("ctr_auc", "ctr_soft_auc"):
        assert metric in TABLE_INTERVALS
        per = r["across_worlds"][metric]
        assert set(per) == set(METHODS) - {"ESMM"}               # every method has a pCTR
        for name, e in per.items():
            assert e["n_worlds"] == 2 and e["diff_low"] <= e["diff"] <= e["diff_high"]
            for i, ws in enumerate(r["worlds"]):                 # paired: per-world means
                runs = r["per_world"][str(ws)]["runs"]
                d = np.mean([s[metric] for s in runs[name]]) - np.mean(
                    [s[metric] for s in runs["ESMM"]])
                assert e["per_world"][i] == pytest.approx(d)
                assert r["per_world"][str(ws)]["differences"][metric][name] == pytest.approx(d)
    table = E.format_table(r)
    head = table.splitlines()[0]
    assert "| CTR AUC |" in head and "| soft CTR AUC |" in head
    row = next(line for line in table.splitlines() if line.startswith("| MMOE |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    col = head.split("|")[1:-1]
    i = [c.strip() for c in col].index("soft CTR AUC")
    mean = 100 * r["summary"]["MMOE"]["ctr_soft_auc"][0]
    assert cells[i].startswith(f"{mean:.2f}")
    ctr_only = [c.strip() for c in next(line for line in table.splitlines()
                                        if line.startswith("| CTR-ONLY |")).split("|")[1:-1]]
    assert ctr_only[[c.strip() for c in col].index("soft CVR AUC, entire space")] == "n/a"
    diffs = E.interval_table(r)
    assert diffs.splitlines()[0].endswith("| CTR AUC | soft CTR AUC |")
    mmoe = next(line for line in diffs.splitlines() if line.startswith("| MMOE |"))
    assert mmoe.split("|")[-2].strip() == E.format_interval(r["across_worlds"]["ctr_soft_auc"]
                                                            ["MMOE"])
    saved = json.loads(E.results_json(r))
    assert set(saved["across_worlds"]) >= {"ctr_auc", "ctr_soft_auc", "cvr_soft_auc_entire"}
    assert saved["intervals"]["ctr_soft_auc"]["SB"]["per_world"] == pytest.approx(
        r["across_worlds"]["ctr_soft_auc"]["SB"]["per_world"])


def test_gate_diagnostics_per_world_and_seed_in_results_json(two_worlds):
    r = two_worlds
    saved = json.loads(E.results_json(r))
    assert set(saved["gates"]) == {"MMOE", "PLE-CLICKED"}        # SB, ESMM: no gates
    for m, runs in saved["gates"].items():
        assert [(x["world"], x["seed"]) for x in runs] == [(0, 0), (1, 0)]
        for x in runs:
            assert set(x["gates"]) == ({"gate_ctr", "gate_cvr"} if m == "MMOE"
                                       else {"l0.gate_ctr", "l0.gate_cvr"})
            for g in x["gates"].values():
                assert len(g["mean_weight"]) == len(g["experts"])
                assert sum(g["mean_weight"]) == pytest.approx(1.0, abs=1e-5)   # float32 gates
                assert g["max_entropy"] == pytest.approx(np.log(len(g["experts"])))
                assert 0 <= g["entropy_ratio"] <= 1
                assert g["entropy_ratio"] == pytest.approx(g["entropy"] / g["max_entropy"])
        for ws in ("0", "1"):
            assert saved["per_world"][ws]["gates"][m][0] == runs[int(ws)]["gates"]
    table = R.gate_table(r)
    assert len(table.splitlines()) == 2 + 4                    # two methods, two gates each
    records = [g for runs in r["gates"].values() for x in runs for g in x["gates"].values()]
    ratios = [g["entropy_ratio"] for g in records]
    note = R.gate_note(r)
    if any(v < F.POLARISED or max(g["mean_weight"]) > F.DOMINANT
           for v, g in zip(ratios, records)):
        assert note.startswith("Some gates polarise")
    else:
        assert note.startswith("The gates do not polarise") and f"{min(ratios):.2f}" in note
    text = E.report_text(r)
    assert table in text and note in text


def test_gate_note_names_the_polarised_gates():
    def rec(ratio):
        return {"experts": ["a", "b"], "mean_weight": [0.5, 0.5], "entropy": ratio * np.log(2),
                "max_entropy": float(np.log(2)), "entropy_ratio": ratio}
    r = {"gates": {"MMOE": [{"world": 3, "seed": 1,
                             "gates": {"gate_ctr": rec(0.05), "gate_cvr": rec(0.9)}}]}}
    note = R.gate_note(r)
    assert note.startswith("Some gates polarise") and "1 of the 2" in note
    assert "MMOE gate_ctr (world 3, seed 1)" in note and "gate_cvr" not in note


def test_one_rule_says_whether_a_gate_polarised():
    def rec(ratio, weights):
        return {"entropy_ratio": ratio, "mean_weight": weights}
    assert F.polarised(rec(0.3, [0.5, 0.5]))                  # low entropy
    assert F.polarised(rec(0.9, [0.85, 0.15]))                # one expert dominant
    assert not F.polarised(rec(0.9, [0.6, 0.4]))
    from esmm_np.experiments import relatedness
    assert (relatedness.POLARISED, relatedness.DOMINANT) == (F.POLARISED, F.DOMINANT)
    assert R.gate_note({"gates": {}}) == ""


def test_one_world_gets_bootstrap_intervals_of_the_ctr_side():
    r = E.run_all(_small(world_seeds=(), methods=("ESMM", "MMOE")), progress=None,
                  sweep=False)[0]
    e = r["intervals"]["ctr_soft_auc"]["MMOE"]
    assert r["interval_construction"] == E.ONE_WORLD
    assert e["diff_low"] <= e["diff"] <= e["diff_high"]
    assert e["diff"] == pytest.approx(r["summary"]["MMOE"]["ctr_soft_auc"][0]
                                      - r["summary"]["ESMM"]["ctr_soft_auc"][0], abs=1e-6)
    assert list(r["gates"]) == ["MMOE"]


def test_doc_section_picks_the_family_section_for_esmm_and_the_family():
    assert R.doc_section("default", ("ESMM", "MMOE", "SB")) == "family"
    assert R.doc_section("paper", ("ESMM",) + F.FAMILY_METHODS) == "family:paper"
    assert R.doc_section("default", None) is None                # all methods: the table's
    assert R.doc_section("paper", ("ESMM", "BASE")) == "paper"
    assert R.doc_section("default", ("ESMM", "MMOE", "BASE")) is None   # not only the family
    assert R.doc_section("default", ("MMOE", "PLE")) is None     # no ESMM to compare with
    assert R.doc_markers("family:paper") == ("<!-- experiment:family:paper:start -->",
                                             "<!-- experiment:family:paper:end -->")


DOC = """# t

<!-- experiment:start -->
old default
<!-- experiment:end -->

prose of the family

<!-- experiment:family:start -->
old family
<!-- experiment:family:end -->

<!-- experiment:paper:start -->
old paper
<!-- experiment:paper:end -->

<!-- experiment:family:paper:start -->
old family paper
<!-- experiment:family:paper:end -->
"""


def test_the_cli_writes_the_family_section_and_leaves_the_others(two_worlds, tmp_path,
                                                                 monkeypatch, capsys):
    doc = tmp_path / "experiments.md"
    doc.write_text(DOC)
    monkeypatch.setattr(runner, "run_all", lambda cfg, sweep=True, data=None: (two_worlds, None))
    argv = ["experiment", "--methods", *METHODS[:-1], "--no-sweep", "--docs", str(doc),
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    text = doc.read_text()
    for old in ("old default", "old paper", "old family paper", "prose of the family"):
        assert old in text
    assert "old family\n" not in text
    section = text.split("<!-- experiment:family:start -->")[1].split(
        "<!-- experiment:family:end -->")[0]
    assert "esmm-np experiment --methods ESMM MMOE PLE-CLICKED SB --no-sweep" in section
    assert E.interval_table(two_worlds) in section and R.gate_table(two_worlds) in section
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "gates" in saved and "ctr_soft_auc" in saved["across_worlds"]


def test_a_doc_without_the_family_markers_is_refused_before_training(two_worlds, tmp_path,
                                                                    monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the docs were checked")
    monkeypatch.setattr(runner, "run_tasks", boom)
    doc = tmp_path / "experiments.md"
    doc.write_text(DOC.replace("experiment:family:paper:", "experiment:other:"))
    with pytest.raises(SystemExit) as e:
        cli.main(["experiment", "--preset", "paper", "--methods", "ESMM", "AITM",
                  "--docs", str(doc)])
    assert e.value.code == 2
    assert "<!-- experiment:family:paper:start -->" in capsys.readouterr().err
    with pytest.raises(ValueError, match="experiment:family:paper:start"):
        E.write_docs(two_worlds, None, str(doc), "cmd", section="family:paper")
