"""The exercise notebooks: committed blank, and they run end to end once filled in.

Filled: ``esmm_np.exercises.fill_blanks`` puts our reference functions into
the blanks (cells whose metadata names an exercise); every check cell must
then report a pass, and E2's training cell must train the "learner's" ESMM
to the same predictions as ``esmm_np.fit``. E3 (experts, gates, AITM's
attention) runs the same two ways. Blank: the notebook still runs
top to bottom (Run All never stops), reporting each exercise as not written.
"""

import glob
import os

import nbformat
import pytest

import esmm_np.exercises as ex

nbclient = pytest.importorskip("nbclient")

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = sorted(glob.glob(os.path.join(HERE, "..", "notebooks", "exercises", "*.ipynb")))
IDS = [os.path.basename(p) for p in NOTEBOOKS]


def _run(nb, tmp_path, monkeypatch):
    monkeypatch.setenv("ESMM_NP_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def test_every_exercise_has_a_blank():
    names = []
    for path in NOTEBOOKS:
        names += [c.metadata.get("exercise") for c in nbformat.read(path, as_version=4).cells
                  if c.metadata.get("exercise")]
    assert sorted(names) == sorted(ex.NAMES)


def test_e3_holds_the_experts_exercises():
    # E3 is run blank and filled by the tests below; its blanks are the experts exercises
    assert "E3_experts.ipynb" in IDS
    nb = nbformat.read(NOTEBOOKS[IDS.index("E3_experts.ipynb")], as_version=4)
    assert [c.metadata.get("exercise") for c in nb.cells if c.metadata.get("exercise")] == [
        "softmax_forward", "softmax_backward", "mixture_backward", "attention_backward"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_solutions_or_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "commit exercise notebooks blank"
        if c.metadata.get("exercise"):
            body = c.source.split("# your code here", 1)
            assert len(body) == 2 and body[1].strip() == "raise NotImplementedError", c.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_with_the_reference_functions_filled_in(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    filled = ex.fill_blanks(nb)
    assert filled
    # The notebook's own dict of check results: every exercise checked and passed.
    nb.cells.append(nbformat.v4.new_code_cell(
        f"assert sorted(ok) == {sorted(filled)!r} and all(ok.values()), ok"))
    if "esmm_loss" in filled:   # the learner's ESMM trains to our predictions
        nb.cells.append(nbformat.v4.new_code_cell("assert diff < 1e-9, diff"))
    text = _run(nb, tmp_path, monkeypatch)
    assert text.count(": PASS.") == len(filled)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_blank_without_stopping(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("assert not any(ok.values()), ok"))
    text = _run(nb, tmp_path, monkeypatch)
    assert "not written yet" in text
