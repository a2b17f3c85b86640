"""notebooks/execute.py: arguments, output folder, and nothing written after a failed run."""

import importlib.util
import os

import nbformat
import pytest

pytest.importorskip("nbclient")

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "execute_script", os.path.join(HERE, "..", "notebooks", "execute.py"))
execute_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_script)


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        execute_script.main(["--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out
    for argv, message in ((["--solutions", "x.ipynb"], "--solutions needs --out"),
                          (["missing.ipynb"], "no such notebook"),
                          (["--timeout", "0"], "--timeout must be positive")):
        with pytest.raises(SystemExit) as e:
            execute_script.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_out_folder_and_thread_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    src = tmp_path / "a.ipynb"
    _notebook(src, "import os; print(os.environ['OPENBLAS_NUM_THREADS'])")
    assert execute_script.main([str(src), "--out", str(tmp_path / "out")]) == 0
    out = nbformat.read(str(tmp_path / "out" / "a.ipynb"), as_version=4)
    assert out.cells[0].outputs[0]["text"].strip() == "1"
    assert not nbformat.read(str(src), as_version=4).cells[0].outputs   # the source is untouched


def test_a_failing_notebook_is_not_written(tmp_path):
    src = tmp_path / "b.ipynb"
    _notebook(src, "x = 1", "raise RuntimeError('boom')")
    before = src.read_bytes()
    with pytest.raises(Exception, match="boom"):
        execute_script.main([str(src)])
    assert src.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["b.ipynb"]   # no temporary file left behind
