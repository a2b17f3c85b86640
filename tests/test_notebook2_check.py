"""Notebook 2's backward check can fail: break one derived gradient and it must say which.

The notebook derives every gradient of a tiny ESMM by hand (the cell tagged
``derived-backward``) and compares each with finite differences (the cells
tagged ``backward-check``). Here the notebook runs up to that check with one
derived line changed (the product rule's factors swapped for pCVR, a classic
mistake): the check must raise, naming p_cvr and what is computed from it,
and leave the CTR tower's own rows alone.
"""

import os

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

HERE = os.path.dirname(os.path.abspath(__file__))
NB2 = os.path.join(HERE, "..", "notebooks", "02_esmm_from_scratch.ipynb")
RIGHT = 'd["p_cvr"] = d["p_ctcvr"] * p_ctr '
BROKEN = 'd["p_cvr"] = d["p_ctcvr"] * p_cvr '


def _up_to_the_check(nb):
    tagged = [i for i, c in enumerate(nb.cells) if "backward-check" in c.metadata.get("tags", [])]
    return nb.cells[:tagged[-1] + 1]


def test_a_broken_derived_gradient_fails_the_check(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB2, as_version=4)
    (derived,) = [c for c in nb.cells if "derived-backward" in c.metadata.get("tags", [])]
    assert derived.source.count(RIGHT) == 1
    derived.source = derived.source.replace(RIGHT, BROKEN)
    nb.cells = _up_to_the_check(nb)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
        client.execute()
    message = str(err.value)
    assert "derived gradients that disagree with finite differences" in message
    wrong = message.rsplit("finite differences: ", 1)[1].split("]", 1)[0]
    for name in ("p_cvr", "logit_cvr", "cvr.u0", "cvr.W0", "e", "embedding"):
        assert f"'{name}'" in wrong, (name, wrong)
    for name in ("p_ctcvr", "p_ctr", "ctr.W_out", "ctr.b_out", "ctr.h2"):
        assert f"'{name}'" not in wrong, (name, wrong)
