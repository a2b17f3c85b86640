"""esmm_np.experiments.criteria: every criterion read off one training path per world."""

import numpy as np
import pytest

from esmm_np.experiments import criteria as C
from esmm_np.experiments.report import doc_markers


@pytest.fixture(scope="module")
def result():
    return C.measure(("default",), ("ESMM",), worlds=(0, 1, 2), workers=1, quick=True,
                     progress=None)


def test_each_world_records_every_criterion_at_every_validation(result):
    res = result["presets"]["default"]["methods"]["ESMM"]
    assert [w["world"] for w in res["worlds"]] == [0, 1, 2]
    for w in res["worlds"]:
        path = w["path"]
        n = len(path["step"])
        assert n > 3 and path["step"] == sorted(path["step"])
        assert set(path["criteria"]) == set(C.CANDIDATES)
        assert all(len(v) == n for v in path["criteria"].values())
        assert all(len(v) == n for v in path["test"].values())
        # the path's stopping value is L_ctcvr, the criterion the experiments use
        assert path["val_loss"] == pytest.approx(path["criteria"]["ctcvr"])


def test_each_criterion_keeps_its_argmin_and_the_oracle_the_best_test_point(result):
    for w in result["presets"]["default"]["methods"]["ESMM"]["worlds"]:
        path, kept = w["path"], w["kept"]
        for c in C.CANDIDATES:
            i = kept[c]["index"]
            assert path["criteria"][c][i] == min(path["criteria"][c])
            assert kept[c]["step"] == path["step"][i]
            assert kept[c]["soft_entire"] == path["test"]["soft_entire"][i]
        j = kept["oracle"]["index"]
        assert path["test"]["soft_entire"][j] == max(path["test"]["soft_entire"])
        for c in C.CANDIDATES:          # no criterion beats the oracle on the test rows
            assert kept[c]["soft_entire"] <= kept["oracle"]["soft_entire"]


def test_differences_are_per_world_and_their_mean(result):
    res = result["presets"]["default"]["methods"]["ESMM"]
    for metric in C.METRICS:
        for c, e in res["diffs"][metric].items():
            assert c != C.REFERENCE
            want = [w["kept"][c][metric] - w["kept"][C.REFERENCE][metric] for w in res["worlds"]]
            assert e["per_world"] == pytest.approx(want)
            assert e["diff"] == pytest.approx(np.mean(want))
            assert e["floor"] >= 0


def test_kept_points_on_a_made_up_path():
    path = {"step": [100, 200, 300, 400],
            "criteria": {"ctcvr": [3.0, 2.0, 2.5, 2.6], "total": [5.0, 4.0, 3.0, 3.5],
                         "cvr_clicked": [1.0, 1.1, 1.2, 1.3]},
            "test": {"soft_entire": [0.60, 0.70, 0.65, 0.62],
                     "soft_clicked": [0.55, 0.58, 0.57, 0.50]}}
    kept = C.kept_points(path)
    assert [kept[c]["step"] for c in ("ctcvr", "total", "cvr_clicked", "oracle")] == \
        [200, 300, 100, 200]
    assert kept["total"]["soft_clicked"] == 0.57


def test_docs_writer_needs_its_markers_and_writes_nothing_half_way(result, tmp_path):
    p = tmp_path / "doc.md"
    p.write_text("no block\n")
    with pytest.raises(ValueError, match="no .* block"):
        C.write_docs(result, str(p), "esmm-np criteria --quick")
    assert p.read_text() == "no block\n"
    start, end = doc_markers("criteria")
    p.write_text(f"a\n{start}\nstale text\n{end}\nb\n")
    C.write_docs(result, str(p), "esmm-np criteria --quick")
    text = p.read_text()
    assert text.startswith("a\n") and text.endswith("\nb\n") and "stale text" not in text
    assert C.criteria_table(result) in text


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="NOPE"):
        C.measure(("default",), ("NOPE",), quick=True, progress=None)
