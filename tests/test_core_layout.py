"""The core reads one way: no import circle through the core modules (function-local
imports included), no registry written at import time, and the names layers.py
exposed before embedding.py split off still import from esmm_np.layers."""

import ast
import os

import esmm_np
from esmm_np import layers, persist

PKG = os.path.dirname(os.path.abspath(esmm_np.__file__))
CORE = ["layers", "embedding", "losses", "reference", "tower", "model", "escm2", "optim",
        "train", "persist", "validate", "gradcheck", "version"]


def _imports(name):
    """The esmm_np modules ``name`` imports anywhere in its file (top level or in a function)."""
    tree = ast.parse(open(os.path.join(PKG, name + ".py"), encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return found


def test_no_import_circle_among_the_core_modules():
    graph = {m: _imports(m) & set(CORE) for m in CORE}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,)))
                   for n in graph[start])

    circles = [m for m in CORE if reaches(m, m)]
    assert not circles, {m: graph[m] for m in circles}


def test_the_model_does_not_import_persist_and_escm2_registers_nothing():
    assert "persist" not in _imports("model")
    assert "persist" not in _imports("escm2")
    src = open(os.path.join(PKG, "escm2.py"), encoding="utf-8").read()
    assert "MODEL_CLASSES" not in src
    assert set(persist.MODEL_CLASSES) == {"ESMM", "TowerModel", "ESCM2"}
    assert sorted(persist.MODEL_CLASSES) == sorted(esmm_np.model.FILE_CLASSES)


def test_core_files_have_no_function_local_imports_of_the_package():
    """Only the ESCM2 trainers' import of the experiment baselines is left (they move
    to esmm_np/experiments/ with issue 17)."""
    local = []
    for name in CORE:
        tree = ast.parse(open(os.path.join(PKG, name + ".py"), encoding="utf-8").read())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level >= 1:
                        local.append((name, fn.name, node.module))
    assert all(x == ("escm2", "_train", "experiments.baselines") for x in local), local


def test_layers_keeps_every_name_it_exposed():
    names = ["ACTIVATIONS", "BAG_MODES", "SparseRows", "add_sparse_rows", "affine_backward",
             "affine_forward", "bag_backward", "bag_backward_reference", "bag_coefficients",
             "bag_forward", "bag_forward_reference", "batchnorm_backward", "batchnorm_forward",
             "concat_backward", "concat_forward", "ctcvr_backward", "ctcvr_forward",
             "dropout_backward", "dropout_forward", "embedding_backward", "embedding_forward",
             "prelu_backward", "prelu_forward", "relu_backward", "relu_forward",
             "scatter_add_rows", "sigmoid", "sigmoid_backward", "sigmoid_forward",
             "sparse_to_dense", "tanh_backward", "tanh_forward"]
    missing = [n for n in names if not hasattr(layers, n)]
    assert not missing, missing
    assert layers.SparseRows is esmm_np.embedding.SparseRows


def test_no_core_module_is_over_700_lines():
    sizes = {m: sum(1 for _ in open(os.path.join(PKG, m + ".py"), encoding="utf-8"))
             for m in CORE}
    assert max(sizes.values()) <= 700, sizes
