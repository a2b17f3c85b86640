"""The exercises' layout (issue 16): a public face, teach/ behind it, one way round.

``esmm_np.exercises`` is what learners and notebooks import; the cases, the
mistakes, the grading, the guard and the PyTorch bridge live in
``esmm_np/teach/``. Nothing in teach/ imports the face (so no circle, not
even through a function-local import), no module here calls another
module's private names, none is over 700 lines, and the old import paths
keep working.
"""

import ast
import os

import esmm_np
import esmm_np.exercises as ex

PKG = os.path.dirname(esmm_np.__file__)
TEACH = sorted(f[:-3] for f in os.listdir(os.path.join(PKG, "teach")) if f.endswith(".py"))
FILES = {f"teach.{m}": os.path.join(PKG, "teach", m + ".py") for m in TEACH}
FILES.update({m: os.path.join(PKG, m + ".py") for m in ("exercises", "metrics", "torch_bridge")})


def _tree(path):
    with open(path, encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _imported(tree):
    """Every module name an import statement anywhere in the file names (relative as written)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")     # "..", ".model", "numpy"
            sep = "" if base.endswith(".") else "."
            names |= {base} | {base + sep + a.name for a in node.names}
    return names


def test_teach_never_imports_the_public_face():
    for mod in TEACH:
        names = _imported(_tree(FILES[f"teach.{mod}"]))
        bad = {n for n in names if n.endswith("exercises") or n == "..exercises"}
        assert not bad, (mod, bad)


def test_no_private_names_of_other_modules():
    # `module._name` where module is one of the package's modules imported here
    for key, path in FILES.items():
        tree = _tree(path)
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                aliases |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                raise AssertionError(f"{key}: {node.value.id}.{node.attr}")


def test_no_module_over_700_lines():
    sizes = {key: sum(1 for _ in open(path, encoding="utf-8")) for key, path in FILES.items()}
    assert max(sizes.values()) <= 700, sizes


def test_the_public_names_still_import():
    from esmm_np import torch_bridge
    from esmm_np.teach import torch_bridge as moved
    assert torch_bridge.compare is moved.compare and torch_bridge.ZERO_ATOL == moved.ZERO_ATOL
    for name in ("NAMES", "SIGNATURES", "check", "reference", "run_case", "train", "fill_blanks",
                 "format_results", "esmm_loss", "MODEL_TOL", "OURS_TOL", "Case", "TIME_LIMIT"):
        assert hasattr(ex, name), name
    assert set(ex.NAMES) == set(ex.SIGNATURES)
