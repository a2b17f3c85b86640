"""The regime map over worlds: per-world differences, the t interval over them, the star rule.

The interval construction itself (Student t over worlds) has its coverage
checked in tests/test_worlds.py; here: that the map uses it as documented.
"""

import numpy as np
import pytest

import esmm_np.experiments as E
from esmm_np.experiments import regime
from esmm_np.experiments.report import resolved
from esmm_np.experiments.scoring import world_interval


@pytest.fixture(scope="module")
def rmap():
    cfg = E.regime_config()
    q = E.quick_config()
    cfg.n_impressions, cfg.world_seeds, cfg.workers = 30_000, (0, 1, 2), 1
    cfg.arch, cfg.train = q.arch, q.train
    return E.regime_map(cfg, rhos=(0.3, 0.9), cvrs=(0.1,), progress=None)


def test_each_cell_is_several_worlds_with_their_paired_differences(rmap):
    assert [(c["rho"], c["cvr"]) for c in rmap["cells"]] == [(0.3, 0.1), (0.9, 0.1)]
    for c in rmap["cells"]:
        assert c["world_seeds"] == [0, 1, 2]
        assert len(c["networks"]["ESMM"]) == len(c["networks"]["BASE"]) == 3
        for metric in regime.METRICS:
            e = c["esmm_minus_base"][metric]
            assert len(e["per_world"]) == e["n_worlds"] == 3
            again = world_interval(e["per_world"])
            assert e["diff"] == pytest.approx(np.mean(e["per_world"]))
            assert (e["low"], e["high"]) == pytest.approx((again["diff_low"], again["diff_high"]))
            assert e["low"] < e["diff"] < e["high"]


def test_worlds_differ_so_the_interval_is_not_one_worlds(rmap):
    per = [c["esmm_minus_base"]["cvr_soft_auc_entire"]["per_world"] for c in rmap["cells"]]
    assert all(len(set(np.round(p, 12))) == 3 for p in per)


def test_marks_follow_the_star_rule(rmap):
    table = E.regime_table(rmap)
    rows = [r for r in table.splitlines()[2:]]
    assert len(rows) == 2
    for c, row in zip(rmap["cells"], rows):
        for metric in regime.METRICS:
            e = c["esmm_minus_base"][metric]
            entry = {"diff": e["diff"], "diff_low": e["low"], "diff_high": e["high"]}
            assert e["starred"] == resolved(entry, e["floor"])
            text = E.regime_table({"cells": [c]}).splitlines()[2]
            assert text == row
        cells = row.split(" | ")
        for metric, cell in zip(regime.METRICS, cells[3:5]):
            e = c["esmm_minus_base"][metric]
            assert cell.endswith("*") == e["starred"]
        assert cells[-1].rstrip(" |").endswith(f"of {len(c['networks']['ESMM']) * 2}")


def test_a_starred_cell_needs_the_floor():
    e = {"diff": 0.01, "low": 0.002, "high": 0.018, "per_world": [0.01] * 3, "n_worlds": 3}
    entry = {"diff": e["diff"], "diff_low": e["low"], "diff_high": e["high"]}
    assert resolved(entry, 0.005) and not resolved(entry, 0.02)


def test_one_world_per_cell_gives_no_interval_and_no_star():
    cfg = E.regime_config()
    q = E.quick_config()
    cfg.n_impressions, cfg.world_seeds, cfg.world_seed, cfg.workers = 30_000, (), 5, 1
    cfg.arch, cfg.train = q.arch, q.train
    m = E.regime_map(cfg, rhos=(0.9,), cvrs=(0.1,), progress=None)
    e = m["cells"][0]["esmm_minus_base"]["cvr_soft_auc_entire"]
    assert m["cells"][0]["world_seeds"] == [5]
    assert np.isnan(e["low"]) and np.isnan(e["high"]) and not e["starred"]
    assert "[n/a]" in E.regime_table(m)


def test_docs_writer_needs_its_markers(rmap, tmp_path):
    p = tmp_path / "x.md"
    p.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no .* section"):
        E.write_regime_docs(rmap, str(p), "esmm-np regime-map")
    assert p.read_text() == "no markers here\n"
    start, end = E.report.doc_markers("regime")
    p.write_text(f"head\n{start}\nold\n{end}\ntail\n")
    E.write_regime_docs(rmap, str(p), "esmm-np regime-map", figure="f.png")
    text = p.read_text()
    assert text.startswith("head\n") and text.endswith("tail\n") and "old" not in text
    assert "Student t interval over worlds" in text and "world seeds 0, 1, 2" in text
    assert E.regime_table(rmap) in text and "![ESMM minus BASE across worlds](f.png)" in text
