"""Files are written safely and checked before work; the command line's small gaps."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import esmm_np
from esmm_np import cli
import esmm_np.experiments as E
from esmm_np.experiments import runner   # the module the CLI calls: tests patch it
from esmm_np.data.files import check_output_dir, dumps_strict, write_file, write_json

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# ------------------------------------------------------------ write_file

def test_write_file_replaces_content_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "a.md"
    target.write_text("old")
    write_file(target, "new ± text")
    assert target.read_bytes() == "new ± text".encode("utf-8")
    assert os.listdir(tmp_path) == ["a.md"]


def test_write_file_keeps_a_users_tmp_file(tmp_path):
    (tmp_path / "a.md.tmp").write_text("the user's notes")
    write_file(tmp_path / "a.md", "x")
    assert (tmp_path / "a.md.tmp").read_text() == "the user's notes"


def test_write_file_follows_a_symlink(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    write_file(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_write_file_keeps_the_mode(tmp_path):
    target = tmp_path / "ro.md"
    target.write_text("old")
    os.chmod(target, 0o444)
    write_file(target, "new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o444 and target.read_text() == "new"
    fresh = tmp_path / "fresh.md"
    write_file(fresh, "x")                            # a new file: 0o666 minus the umask
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~umask


def test_write_file_failure_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def fails(f):
        f.write(b"half")
        raise RuntimeError("plot failed")

    with pytest.raises(RuntimeError, match="plot failed"):
        write_file(target, fails)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.png"]


def test_text_is_utf8_under_a_c_locale(tmp_path):
    """Under LC_ALL=C without UTF-8 mode, open(path, 'w') cannot encode '±'."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"prose ±\n{E.DOC_START}\nold\n{E.DOC_END}\nmore ±\n", encoding="utf-8")
    # The tables themselves are stubbed: this test is about reading and writing the file.
    code = ("import sys; from esmm_np.experiments import report as E; "
            "E.format_table = lambda *a, **k: 'table \\u00b1'; E.division_note = lambda *a: ''; "
            "r = {'world': dict(n_train=1, n_test=1, ctr=.1, cvr=.1, true_cvr_clicked=.1, "
            "true_cvr_unclicked=.1), 'config': {'seeds': [0]}, 'runs': {}, 'summary': {}}; "
            "E.write_docs(r, None, sys.argv[1], 'cmd')")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONIOENCODING="ascii")
    proc = subprocess.run([sys.executable, "-c", code, str(doc)], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("prose ±") and text.endswith("more ±\n") and "table ±" in text
    assert "old" not in text


# ------------------------------------------------------------ strict JSON

def test_json_has_no_nan_tokens_and_says_why():
    text = dumps_strict({"runs": {"BASE": [{"auc": float("nan"), "bias": np.float32(0.5)}]},
                         "top": np.inf, "n": np.int64(3), "t": (1, 2)})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"token {c}"))
    assert data["runs"]["BASE"][0]["auc"] is None and data["top"] is None
    assert data["_null_reasons"] == {"runs.BASE.0.auc": "NaN", "top": "inf"}
    assert data["n"] == 3 and data["t"] == [1, 2] and data["runs"]["BASE"][0]["bias"] == 0.5


def test_write_json_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="cannot write object at x"):
        write_json(tmp_path / "r.json", {"x": object()})
    assert os.listdir(tmp_path) == []


def _tiny_result():
    """A result whose AUCs are NaN, as --n 200 gives (one class in the test set)."""
    nan = float("nan")
    scores = {k: nan for k in E.COLUMNS}
    runs = {"BASE": [dict(scores)], "ESMM": [dict(scores)]}
    return {"config": {"seeds": [0]}, "runs": runs, "summary": E.summarise(runs),
            "world": dict(n_train=150, n_test=50, ctr=0.1, cvr=0.0, true_cvr_clicked=0.01,
                          true_cvr_unclicked=0.01)}


def test_save_writes_valid_json_and_a_figure_when_metrics_are_nan(tmp_path):
    pytest.importorskip("matplotlib")
    paths = E.save(_tiny_result(), None, tmp_path / "out", figure=True)
    assert sorted(os.path.basename(p) for p in paths) == ["figure.png", "results.json",
                                                          "table.md"]
    data = json.loads((tmp_path / "out" / "results.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"token {c}"))
    assert data["runs"]["BASE"][0]["cvr_auc_entire"] is None
    assert data["_null_reasons"]["runs.BASE.0.cvr_auc_entire"] == "NaN"
    assert sorted(os.listdir(tmp_path / "out")) == ["figure.png", "results.json", "table.md"]


# ------------------------------------------------------------ checks before work

def _no_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the outputs were checked")
    monkeypatch.setattr(runner, "run_experiment", boom)
    monkeypatch.setattr(runner, "make_world", boom)


def test_output_folder_that_is_a_file_fails_before_training(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    (tmp_path / "f").write_text("x")
    for argv in (["demo", "--out", str(tmp_path / "f")],
                 ["experiment", "--quick", "--out", str(tmp_path / "f" / "sub")]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.skipif(ROOT, reason="root may write anywhere")
def test_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        with pytest.raises(SystemExit):
            cli.main(["demo", "--out", str(locked / "out")])
    finally:
        os.chmod(locked, 0o700)
    assert "not writable" in capsys.readouterr().err


def test_unwritable_folder_seen_through_os_access(tmp_path, monkeypatch, capsys):
    """The same check as above, run even as root: os.access says the folder is read-only."""
    _no_training(monkeypatch)
    locked = str(tmp_path / "locked")
    os.mkdir(locked)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == locked else real(p, mode))
    with pytest.raises(SystemExit):
        cli.main(["demo", "--out", os.path.join(locked, "out")])
    assert f"cannot create output folder {locked}/out: {locked} is not writable" in \
        capsys.readouterr().err


def test_check_output_dir_accepts_new_nested_folders(tmp_path):
    check_output_dir(tmp_path / "a" / "b")              # creatable: no error
    assert not (tmp_path / "a").exists()                # and nothing created by the check


@pytest.mark.parametrize("content, match", [(None, "does not exist"),
                                            ("no markers here\n", "no <!-- experiment:start")])
def test_docs_file_checked_before_training(tmp_path, monkeypatch, capsys, content, match):
    _no_training(monkeypatch)
    doc = tmp_path / "doc.md"
    if content is not None:
        doc.write_text(content)
    with pytest.raises(SystemExit):
        cli.main(["experiment", "--quick", "--out", str(tmp_path / "out"), "--docs", str(doc)])
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ command line

def test_version_and_plain_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"esmm-np {esmm_np.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "``" not in capsys.readouterr().out


@pytest.mark.parametrize("command, shown", [
    ("gradcheck", ["(default: 16)", "(default: 1e-05)", "(default: 1e-06)"]),
    ("demo", ["(default: esmm_demo)", "(default: 0)", "(default: 300000)", "(default: 4)"]),
    ("experiment", ["(default: results)"]),
])
def test_defaults_are_shown(capsys, command, shown):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in shown:
        assert text in out


@pytest.mark.parametrize("argv, match", [
    (["gradcheck", "--n", "1"], "--n: must be >= 2"),
    (["gradcheck", "--h", "0"], "--h: must be a finite number > 0"),
    (["gradcheck", "--h", "nan"], "--h: must be a finite number > 0"),
    (["gradcheck", "--tol", "inf"], "--tol: must be a finite number >= 0"),
    (["demo", "--n", "10"], f"--n: must be >= {cli.MIN_IMPRESSIONS}"),   # issue 18: was 100
])
def test_bad_numbers_are_refused(capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_gradcheck_exits_nonzero_on_a_nan_gradient(monkeypatch, capsys):
    from esmm_np import gradcheck as G
    real = G.everything_on_example

    def broken(n=16, seed=0):
        model, batch = real(n=n, seed=seed)
        model.loss_weights = (1.0, float("nan"))
        return model, batch

    monkeypatch.setattr(G, "everything_on_example", broken)
    assert cli.main(["gradcheck", "--n", "4"]) == 1
    assert "NaN/inf" in capsys.readouterr().out
    monkeypatch.setattr(G, "everything_on_example", real)
    assert cli.main(["gradcheck", "--n", "4"]) == 0


def test_demo_passes_seed_and_n(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise KeyboardInterrupt   # stop before any work; we only look at the configuration

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["demo", "--seed", "3", "--n", "5000", "--out", str(tmp_path / "o")])
    assert seen["cfg"].seeds == (3,) and seen["cfg"].n_impressions == 5000
    assert seen["cfg"].world_seeds == (0, 1, 2, 3)         # the documented default's worlds
    with pytest.raises(KeyboardInterrupt):
        cli.main(["demo", "--worlds", "2", "--out", str(tmp_path / "o")])
    assert seen["cfg"].world_seeds == (0, 1)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["demo", "--world-seeds", "5", "7", "--out", str(tmp_path / "o")])
    assert seen["cfg"].world_seeds == (5, 7)


def test_license_file_is_mit():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("MIT License") and "2026 esmm_np contributors" in text
