"""The fast paths compute what the plain versions compute.

Speed work changed three places (docs/performance.md): the embedding backward
(sort + first occurrence + ``np.add.at`` on the repeats), Adam (bias
corrections folded into the step, a big table's dense update done block by
block) and float32 end to end. Each test here pins one of them to a plain
reference. No timings are asserted: those live in benchmarks/.
"""

import sys

import numpy as np
import pytest

import esmm_np
from esmm_np import embedding
from esmm_np import layers as L
from esmm_np import optim
from esmm_np.layers import SparseRows


# ----------------------------------------------------------- embedding backward

def _loop_backward(de, ids, dtype):
    """Brute force: walk the batch in order, adding each occurrence to its row."""
    n, F = ids.shape
    k = de.shape[1] // F
    dtable = {}
    for i in range(n):
        for f in range(F):
            v = int(ids[i, f])
            g = de[i, f * k:(f + 1) * k]
            dtable[v] = dtable[v] + g if v in dtable else np.zeros(k, dtype) + g
    rows = np.array(sorted(dtable))
    return rows, np.array([dtable[v] for v in rows], dtype=dtype).reshape(len(rows), k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["random", "all_same", "all_distinct", "one_row", "int32_ids"])
def test_embedding_backward_equals_a_python_loop(case, dtype):
    """Same rows, and the same sums bit for bit: both add the repeats in batch order."""
    rng = np.random.default_rng(7)
    V, k = 50, 3
    ids = {"random": rng.integers(0, 12, size=(40, 3)),          # many repeats
           "all_same": np.full((30, 2), 9),                       # one row, 60 occurrences
           "all_distinct": rng.permutation(V)[:40].reshape(20, 2),
           "one_row": np.array([[4, 4, 4, 1]]),
           "int32_ids": rng.integers(0, 12, size=(40, 3)).astype(np.int32)}[case]
    table = rng.standard_normal((V, k)).astype(dtype)
    e, cache = L.embedding_forward(table, ids)
    de = rng.standard_normal(e.shape).astype(dtype)
    g = L.embedding_backward(de, cache)
    rows, values = _loop_backward(de, ids, dtype)
    assert g.n_rows == V and g.values.dtype == dtype
    np.testing.assert_array_equal(g.rows, rows)                  # unique and sorted
    np.testing.assert_array_equal(g.values, values)


def test_embedding_backward_equals_unique_plus_add_at():
    """The textbook version (np.unique + row-wise np.add.at) gives identical arrays."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 300, size=(512, 6)) + np.arange(6) * 300
    de = rng.standard_normal((512, 6 * 5)).astype(np.float32)
    g = L.embedding_backward(de, (ids, 1800))
    rows, slot = np.unique(ids.ravel(), return_inverse=True)
    values = np.zeros((len(rows), 5), dtype=np.float32)
    np.add.at(values, slot, de.reshape(-1, 5))
    np.testing.assert_array_equal(g.rows, rows)
    np.testing.assert_array_equal(g.values, values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_backward_equals_the_plain_add_at_form_in_the_package(dtype):
    """embedding.embedding_backward_reference and scatter_add_rows_reference (np.add.at on
    a zero table) are the plain forms: the sorted scatter-add gives them bit for bit."""
    rng = np.random.default_rng(4)
    V, k = 40, 3
    ids = rng.integers(0, 15, size=(64, 4))                      # many repeats
    table = rng.standard_normal((V, k)).astype(dtype)
    e, cache = embedding.embedding_forward(table, ids)
    de = rng.standard_normal(e.shape).astype(dtype)
    fast = L.sparse_to_dense(embedding.embedding_backward(de, cache))
    np.testing.assert_array_equal(fast, embedding.embedding_backward_reference(de, cache))
    flat, rows = ids.ravel(), de.reshape(-1, k)
    np.testing.assert_array_equal(L.sparse_to_dense(embedding.scatter_add_rows(flat, rows, V)),
                                  embedding.scatter_add_rows_reference(flat, rows, V))
    # The buffered one-liner is not the same thing: it keeps one write per repeated row.
    buffered = np.zeros((V, k), dtype=dtype)
    buffered[flat] += rows
    assert not np.array_equal(buffered, fast)


def test_embedding_forward_is_fancy_indexing():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((20, 4))
    ids = rng.integers(0, 20, size=(7, 3))
    e, _ = L.embedding_forward(table, ids)
    np.testing.assert_array_equal(e, table[ids].reshape(7, 12))


# ---------------------------------------------------------------------- Adam

def _textbook_adam(w, grads, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    """Adam exactly as Algorithm 1 of Kingma & Ba writes it (optim.adam_textbook_step), in float64."""
    w = w.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w, m, v = optim.adam_textbook_step(w, m, v, g, t, lr, b1, b2, eps)
    return w


def _sparse_steps(rng, V, k, n_steps, dtype):
    """Random SparseRows gradients, some with unsorted rows, some with none at all."""
    steps = []
    for s in range(n_steps):
        rows = rng.choice(V, size=rng.integers(0, V // 2 + 1), replace=False)
        if s % 2 == 0:
            rows = np.sort(rows)
        steps.append(SparseRows(rows, rng.standard_normal((len(rows), k)).astype(dtype), V))
    return steps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_entries", [7, 30, 2 ** 17])
def test_dense_adam_with_sparse_rows_equals_adam_on_the_dense_gradient(
        monkeypatch, dtype, block_entries):
    """lazy=False: SparseRows give bit for bit the update of the zero-padded gradient.

    Tiny blocks (7 or 30 entries: 2 or 10 rows of 3) make blocks with several,
    one or no gradient rows, and a last block shorter than the others.
    """
    monkeypatch.setattr(optim, "BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(11)
    V, k = 23, 3
    table = rng.standard_normal((V, k)).astype(dtype)
    a, b = {"E": table.copy()}, {"E": table.copy()}
    opt_a, opt_b = esmm_np.Adam(lr=0.01), esmm_np.Adam(lr=0.01)
    for g in _sparse_steps(rng, V, k, 8, dtype):
        opt_a.step(a, {"E": g})
        opt_b.step(b, {"E": L.sparse_to_dense(g)})
        np.testing.assert_array_equal(a["E"], b["E"])
        np.testing.assert_array_equal(opt_a.m["E"], opt_b.m["E"])
        np.testing.assert_array_equal(opt_a.v["E"], opt_b.v["E"])
    assert a["E"].dtype == dtype and opt_a.m["E"].dtype == dtype


def test_adam_matches_the_textbook_update():
    """Folding the bias corrections into lr_t and eps_t changes only rounding (float64)."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((6, 4))
    grads = [rng.standard_normal((6, 4)) * 10.0 ** rng.integers(-6, 2) for _ in range(30)]
    p, opt = {"w": w0.copy()}, esmm_np.Adam(lr=0.01)
    for g in grads:
        opt.step(p, {"w": g})
    # 30 steps of about 1e-2 each; rounding of order 1e-16 per operation.
    np.testing.assert_allclose(p["w"], _textbook_adam(w0, grads), rtol=1e-12, atol=1e-14)


def test_lazy_adam_touches_only_batch_rows_and_updates_them_as_dense_adam_would():
    """lazy=True: untouched rows keep weights and moments bit for bit; the batch's rows
    follow dense Adam run on those rows alone (same global step count t)."""
    rng = np.random.default_rng(2)
    V, k = 10, 3
    table = rng.standard_normal((V, k))
    p, opt = {"E": table.copy()}, esmm_np.Adam(lr=0.01, lazy=True)
    opt.step(p, {"E": SparseRows(np.arange(V), rng.standard_normal((V, k)), V)})  # all rows, t=1
    w1, m1, v1 = p["E"].copy(), opt.m["E"].copy(), opt.v["E"].copy()

    rows = np.array([7, 2, 5])
    g = SparseRows(rows, rng.standard_normal((3, k)), V)
    opt.step(p, {"E": g})                                                           # t=2
    others = np.setdiff1d(np.arange(V), rows)
    for after, before in ((p["E"], w1), (opt.m["E"], m1), (opt.v["E"], v1)):
        np.testing.assert_array_equal(after[others], before[others])

    sub, dense = {"E": w1[rows].copy()}, esmm_np.Adam(lr=0.01)
    dense.t, dense.m["E"], dense.v["E"] = 1, m1[rows].copy(), v1[rows].copy()
    dense.step(sub, {"E": g.values})
    np.testing.assert_array_equal(p["E"][rows], sub["E"])


# ------------------------------------------------------------------- float32

def _learnable_log(n=4000, seed=0):
    """Impressions whose click and conversion depend on the ids (no simulator needed)."""
    rng = np.random.default_rng(seed)
    field_dims = (30, 20, 5)
    X = np.stack([rng.integers(0, d, n) for d in field_dims], axis=1)
    p_click = 1 / (1 + np.exp(-(X[:, 0] % 7 - 4.0)))
    click = (rng.random(n) < p_click).astype(np.int8)
    conversion = click * (rng.random(n) < np.where(X[:, 1] < 8, 0.5, 0.05)).astype(np.int8)
    return field_dims, X, click, conversion


@pytest.mark.parametrize("lazy", [False, True])
def test_float32_training_follows_the_float64_loss_curve(lazy):
    """Same init (float32 is the float64 init rounded), same batches: every batch loss agrees.

    Observed here: at most 1e-7 relative over the 96 steps, while the loss
    falls from 1.09 to 0.50. float32 keeps about 7 digits, so rtol 1e-5 (about
    a hundred float32 roundings) leaves room for rounding to accumulate over
    the steps, and still fails a float32 path that drifts or differs.
    """
    field_dims, X, click, conversion = _learnable_log()
    curves = {}
    for dtype in (np.float64, np.float32):
        model = esmm_np.ESMM(field_dims, embed_dim=4, tower_units=(16, 8), dtype=dtype, seed=3)
        history = esmm_np.fit(model, X, click, conversion, epochs=3, batch_size=128,
                              optimizer=esmm_np.Adam(lr=0.01, lazy=lazy), verbose=False)
        curves[dtype] = np.array(history["batch_loss"])
        assert all(p.dtype == dtype for p in model.params.values())
    c64, c32 = curves[np.float64], curves[np.float32]
    assert c64[-1] < 0.6 * c64[0]                                 # it did learn something
    np.testing.assert_allclose(c32, c64, rtol=1e-5)


def test_a_float32_step_makes_no_float64_arrays():
    """No esmm_np function holds a float64 array while a float32 model trains or predicts.

    Python floats mixed with float32 arrays stay float32 (NEP 50), but NumPy
    scalars such as ``np.sqrt(0.5)`` are float64 and upcast whatever they touch,
    doubling memory traffic. Every option is on so every layer runs.
    """
    field_dims, X, click, conversion = _learnable_log(n=256)
    dense = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)
    found = set()

    def visit(where, name, value, depth=0):
        if isinstance(value, (np.ndarray, np.floating)) and value.dtype == np.float64:
            found.add((where, name))
        elif isinstance(value, (tuple, list)) and depth < 3:
            for i, x in enumerate(value):
                visit(where, f"{name}[{i}]", x, depth + 1)
        elif isinstance(value, dict) and depth < 2:
            for key, x in value.items():
                visit(where, f"{name}[{key}]", x, depth + 1)

    def tracer(frame, event, arg):
        if "esmm_np" not in frame.f_code.co_filename:
            return None
        if event == "return":
            where = frame.f_code.co_name
            for name, value in list(frame.f_locals.items()) + [("<returned>", arg)]:
                visit(where, name, value)
        return tracer

    options = [dict(activation="prelu", dropout=0.2, batch_norm=True, l2_reg_embedding=1e-3,
                    l2_reg_dnn=1e-3, n_dense=2),
               dict(activation="tanh", share_embedding=False, ctcvr_loss="naive", n_dense=2)]
    models = [esmm_np.ESMM(field_dims, embed_dim=4, tower_units=(8, 4), dtype=np.float32,
                           seed=0, **kw) for kw in options]
    tower = esmm_np.TowerModel(field_dims, embed_dim=4, tower_units=(8,), activation="sigmoid",
                               dropout=0.1, n_dense=2, dtype=np.float32, seed=0)
    sys.settrace(tracer)
    try:
        for model in models:
            for opt in (esmm_np.Adam(), esmm_np.Adam(lazy=True),
                        esmm_np.SGD(0.1, momentum=0.9), esmm_np.SGD(0.1, momentum=0.9, lazy=True)):
                esmm_np.fit(model, X, click, conversion, dense=dense, batch_size=64,
                            optimizer=opt, verbose=False)
            model.predict(X, dense=dense)
        esmm_np.fit(tower, X, click, dense=dense, batch_size=64, verbose=False)
        tower.predict(X, dense=dense)
    finally:
        sys.settrace(None)
    assert not found, sorted(found)
