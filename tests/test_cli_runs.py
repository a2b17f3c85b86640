"""Every command and documented invocation runs to the end at a small size with its defaults,
and a size that cannot train is refused before the first training starts."""

import json
import os
import subprocess
import sys

import pytest

import esmm_np.experiments as E
from esmm_np import cli
from esmm_np.experiments import runner

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _no_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the sizes were checked")
    monkeypatch.setattr(runner, "run_tasks", boom)


def test_demo_at_its_smallest_accepted_size_completes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--n", str(cli.MIN_IMPRESSIONS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ESMM |" in printed and "| ESCM2-DR |" in printed
    assert "nan" not in printed.replace("Explanation", "")
    assert "95% intervals across 4 worlds" in printed       # the demo's intervals are over worlds
    assert "(share fixed at 0.3 in this run)" in printed     # its glossary says what it fixed
    assert "(k fixed at 5 in this run)" in printed
    names = set(os.listdir(out))
    assert {"table.md", "results.json"} <= names
    with open(out / "results.json", encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["interval_construction"] == E.scoring.ACROSS_WORLDS
    assert len(saved["per_world"]) == 4
    assert all(len(e["per_world"]) == 4 for e in saved["across_worlds"]["cvr_auc_entire"].values())
    pytest.importorskip("matplotlib")
    assert "figure.png" in names


def test_the_glossary_names_a_knob_the_run_fixes_and_keeps_the_one_it_chooses():
    searched = E.glossary_table(("AMAN", "OVERSAMPLING"), E.ExperimentConfig())
    assert searched == E.glossary_table(("AMAN", "OVERSAMPLING"))
    assert "chosen on the clicked validation rows" in searched and "k chosen on validation" in searched
    fixed = E.glossary_table(("AMAN", "OVERSAMPLING"), E.demo_config())
    assert "chosen" not in fixed
    assert "share fixed at 0.3" in fixed and "k fixed at 5" in fixed


def test_demo_below_the_smallest_size_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--n", str(cli.MIN_IMPRESSIONS - 1)])
    assert e.value.code == 2
    assert f"must be >= {cli.MIN_IMPRESSIONS}" in capsys.readouterr().err


def test_a_world_too_small_to_train_on_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """The paper preset's conversions are rare: 5,000 impressions leave too few to learn from."""
    _no_training(monkeypatch)
    code = cli.main(["experiment", "--preset", "paper", "--n", "5000", "--quick",
                     "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "too small to train on" in err and "conversion(s)" in err
    assert not os.path.exists(tmp_path / "o" / "results.json")


def test_experiment_on_data_with_the_sweep_as_documented(tmp_path, capsys):
    """docs/data.md: `esmm-np experiment --data OUT_DIR --seeds 0 1 2`, the sweep on.

    Real logs have no ground truth: the figure and the sweep use the clicked
    CVR AUC, every value that cannot exist prints as n/a (never nan), and a
    sweep share too small to split is dropped before training, with a note.
    """
    raw, cache, res = tmp_path / "raw", tmp_path / "cache", tmp_path / "res"
    assert cli.main(["aliccp", "simulate", str(raw), "--train", "4000", "--test", "1000"]) == 0
    assert cli.main(["aliccp", "convert", str(raw), str(cache), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["experiment", "--data", str(cache), "--seeds", "0", "1", "2",
                     "--out", str(res)]) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed and "n/a" in printed
    assert "Sparsity sweep" in printed and "ESMM − BASE, CVR AUC clicked" in printed
    saved = json.loads((res / "results.json").read_text())
    assert saved["sweep"] and all("cvr_auc_clicked" in c["intervals"]
                                  for c in saved["sweep"].values())
    pytest.importorskip("matplotlib")
    assert (res / "figure.png").stat().st_size > 0


def test_data_and_worlds_do_not_mix(tmp_path):
    with pytest.raises(SystemExit, match="--worlds"):
        cli.main(["experiment", "--data", str(tmp_path), "--worlds", "3"])


def test_a_closed_pipe_ends_quietly():
    """`esmm-np gradcheck | head`: the reader goes away; no traceback, no 'Exception ignored'."""
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "esmm_np.cli", "gradcheck", "--n", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                       # like `head` exiting before the output comes
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 1


def test_gradcheck_with_its_defaults():
    assert cli.main(["gradcheck"]) == 0
