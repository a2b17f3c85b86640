"""Embeddings: one row per id, pooled bags of ids, and the scatter-add that undoes them.

The forward of each is a gather (``np.take``); the backward sums each
occurrence's gradient into the table row it came from. The plain forms sit
beside the fast ones and the tests pin the fast ones to them bit for bit:

- :func:`scatter_add_rows_reference` (``np.add.at`` on a zero table) beside
  :func:`scatter_add_rows` (sort, first occurrence, ``np.add.at`` on the repeats);
- :func:`embedding_backward_reference` beside :func:`embedding_backward`;
- :func:`bag_forward_reference`, :func:`bag_backward_reference` (loops over
  bags) beside :func:`bag_forward`, :func:`bag_backward`.

The symbols follow docs/derivation.md, sections 6 and 9. ``esmm_np.layers``
re-exports every name here.
"""

from collections import namedtuple

import numpy as np


#: Gradient of an embedding table that touches only some rows:
#: ``values[j]`` is the gradient of row ``rows[j]``; every other row of the
#: ``n_rows``-row table has zero gradient.
SparseRows = namedtuple("SparseRows", ["rows", "values", "n_rows"])


def sparse_to_dense(g):
    """Expand a :class:`SparseRows` into the full ``(n_rows, k)`` gradient."""
    dense = np.zeros((g.n_rows, g.values.shape[1]), dtype=g.values.dtype)
    dense[g.rows] = g.values  # rows are unique, so plain assignment is exact
    return dense


def embedding_forward(table, ids):
    """Look up one embedding row per id.

    Parameters
    ----------
    table : ndarray of shape (V, k)
        All fields' embeddings stacked; field ``f`` owns rows
        ``offsets[f] .. offsets[f] + field_dims[f] - 1``.
    ids : ndarray of int, shape (n, F)
        Row indices into ``table`` (field ids already shifted by their offset).

    Returns
    -------
    e : ndarray of shape (n, F * k)
        The F looked-up vectors of each row, side by side.
    cache : tuple (ids, V)
    """
    n, F = ids.shape
    # np.take is table[ids] (same result), about three times faster for row gathers.
    e = np.take(table, ids, axis=0).reshape(n, F * table.shape[1])  # (n, F, k) -> (n, F*k)
    return e, (ids, table.shape[0])


def embedding_backward(de, cache):
    """Scatter-add the upstream gradient back onto the rows that were looked up.

    Parameters
    ----------
    de : ndarray of shape (n, F * k)
    cache : from :func:`embedding_forward`

    Returns
    -------
    dtable : SparseRows
        Gradient of the table; rows not used by the batch are zero and are not
        stored. ``rows`` come out sorted ascending.

    Notes
    -----
    ``e[i, f] = table[ids[i, f]]``, so ``dtable[v] = sum of de[i, f] over every
    (i, f) with ids[i, f] == v``. An id that occurs several times in the batch
    must receive the sum of all its gradients. ``dtable[ids] += de`` would be
    wrong: NumPy's buffered fancy assignment keeps only the last write for a
    repeated index.

    So we sort the N = n * F occurrences by row, keeping batch order among
    equal rows; then the occurrences of each row are adjacent. Each row starts
    from its first occurrence's gradient, and the later ones are added with the
    unbuffered ``np.add.at``: the same sums, in the same order, as adding every
    occurrence to a zero row (``np.unique`` + ``np.add.at``, three times slower).
    """
    ids, V = cache
    k = de.shape[1] // ids.shape[1]
    flat = ids.ravel().astype(np.int64, copy=False)          # (N,) one table row per occurrence
    return scatter_add_rows(flat, de.reshape(-1, k), V)


def scatter_add_rows(flat, de_rows, V):
    """Sum per-occurrence gradients into the table rows they came from.

    Parameters
    ----------
    flat : ndarray of int64, shape (N,)
        The table row of each occurrence (repeats allowed).
    de_rows : ndarray of shape (N, k)
        The gradient of each occurrence's looked-up vector.
    V : int
        Number of rows of the table.

    Returns
    -------
    SparseRows with sorted, distinct ``rows``; ``values[j]`` is the sum of
    ``de_rows`` over the occurrences of ``rows[j]``, in their original order.
    The plain form of the same thing is :func:`scatter_add_rows_reference`,
    ``np.add.at(dtable, flat, de_rows)`` on a zero ``(V, k)`` table;
    :func:`embedding_backward`'s Notes say why this sorted form is used instead.
    """
    N, k = de_rows.shape
    if N == 0:
        return SparseRows(np.zeros(0, dtype=np.int64), np.zeros((0, k), dtype=de_rows.dtype), V)
    # Stable argsort of flat, by sorting the keys row * N + position (< V * N,
    # far below 2**63) and keeping the position: np.sort is several times
    # faster than np.argsort.
    order = np.sort(flat * N + np.arange(N)) % N             # (N,) positions, grouped by row
    sorted_rows = np.take(flat, order)                       # (N,) ascending
    first = np.empty(N, dtype=bool)                          # (N,) starts a new row?
    first[0] = True
    np.not_equal(sorted_rows[1:], sorted_rows[:-1], out=first[1:])
    rows = sorted_rows[first]                                # (u,) the distinct rows
    values = np.take(de_rows, order[first], axis=0)          # (u, k) first occurrences
    later = ~first
    slot = np.cumsum(first)[later] - 1                       # (N - u,) which row each repeat adds to
    # np.add.at is several times faster on a 1-d array than on rows of a 2-d
    # one, so each number de[., j] is added at its flat position slot * k + j.
    flat_pos = slot[:, None] * k + np.arange(k)              # (N - u, k) into values.ravel()
    repeats = np.take(de_rows, order[later], axis=0)         # (N - u, k)
    np.add.at(values.reshape(-1), flat_pos.ravel(), repeats.ravel())   # repeats summed
    return SparseRows(rows, values, V)


def scatter_add_rows_reference(flat, de_rows, V):
    """The plain form of :func:`scatter_add_rows`: ``np.add.at`` on a zero table.

    Returns the dense ``(V, k)`` gradient. ``np.add.at`` is unbuffered, so an
    occurrence repeated in ``flat`` adds every time, in order; ``dtable[flat]
    += de_rows`` would keep only one write per repeated row.
    """
    dtable = np.zeros((V, de_rows.shape[1]), dtype=de_rows.dtype)    # (V, k)
    np.add.at(dtable, flat, de_rows)                                 # (V, k) repeats summed
    return dtable


def embedding_backward_reference(de, cache):
    """The plain form of :func:`embedding_backward`; returns the dense ``(V, k)`` gradient."""
    ids, V = cache
    n, F = ids.shape
    k = de.shape[1] // F
    dtable = np.zeros((V, k), dtype=de.dtype)                        # (V, k)
    np.add.at(dtable, ids, de.reshape(n, F, k))                      # (V, k) the scatter-add
    return dtable


# --------------------------------------------------------- bag of ids (pooling)

BAG_MODES = ("sum", "mean")


def bag_coefficients(offsets, weights, mode, n_ids, dtype):
    """The coefficient ``c_j`` each id's embedding is multiplied by before the sum.

    Parameters
    ----------
    offsets : ndarray of int, shape (n + 1,)
        Row ``i``'s bag is ``ids[offsets[i]:offsets[i + 1]]``.
    weights : ndarray of shape (nnz,), or None (every weight 1)
    mode : {"sum", "mean"}
    n_ids : int, the number nnz of ids
    dtype : the table's dtype

    Returns
    -------
    c : ndarray of shape (nnz,)
        ``w_j`` for "sum"; ``w_j / n_i`` for "mean", where ``n_i`` is the
        number of ids in the bag of id ``j``.
    """
    if mode not in BAG_MODES:
        raise ValueError(f"mode must be one of {BAG_MODES}, got {mode!r}")
    c = np.ones(n_ids, dtype=dtype) if weights is None else np.asarray(weights, dtype=dtype)
    if mode == "mean":
        lengths = np.diff(offsets)                                   # (n,) ids per bag
        c = c / np.repeat(lengths, lengths).astype(dtype)            # (nnz,) empty bags repeat 0 times
    return c


def bag_forward(table, offsets, ids, weights=None, mode="sum"):
    """Field-wise pooling: one vector per row from a variable-length bag of ids.

    ``e[i] = sum over j in bag i of c_j * table[ids[j]]`` with ``c_j = w_j``
    ("sum") or ``w_j / n_i`` ("mean", ``n_i`` ids in the bag). An empty bag
    gives the zero vector in both modes. The bags are given in CSR form, the
    layout of ``torch.nn.EmbeddingBag``.

    Parameters
    ----------
    table : ndarray of shape (V, k)
    offsets : ndarray of int, shape (n + 1,)
        Non-decreasing, ``offsets[0] == 0`` and ``offsets[n] == nnz``; row
        ``i``'s bag is ``ids[offsets[i]:offsets[i + 1]]``.
    ids : ndarray of int, shape (nnz,)
        Rows of ``table`` (already shifted by their field's offset).
    weights : ndarray of float, shape (nnz,), or None
        The value attached to each id (Ali-CCP stores one per id); None means 1.
    mode : {"sum", "mean"}

    Returns
    -------
    e : ndarray of shape (n, k)
    cache : tuple (offsets, ids, c, V) for :func:`bag_backward`

    Notes
    -----
    :func:`bag_forward_reference` is the same computation as a loop over
    the rows; this form gathers every id's vector at once and sums each bag
    with ``np.add.reduceat``, which needs the start of each non-empty bag
    (``reduceat`` would return an element, not zero, for an empty one).
    """
    n, k = offsets.shape[0] - 1, table.shape[1]
    c = bag_coefficients(offsets, weights, mode, ids.shape[0], table.dtype)   # (nnz,)
    contrib = np.take(table, ids, axis=0) * c[:, None]                        # (nnz, k)
    e = np.zeros((n, k), dtype=table.dtype)                                   # (n, k) empty bags stay 0
    starts = offsets[:-1]                                                     # (n,)
    nonempty = offsets[1:] > starts                                           # (n,)
    if ids.shape[0] > 0:
        # Each non-empty bag runs from its start to the next non-empty bag's start.
        e[nonempty] = np.add.reduceat(contrib, starts[nonempty], axis=0)
    return e, (offsets, ids, c, table.shape[0])


def bag_backward(de, cache):
    """The scatter-add of :func:`embedding_backward`, generalised to weights.

    ``e[i] = sum_j c_j * table[ids[j]]``, so each occurrence ``j`` in bag ``i``
    contributes ``c_j * de[i]`` to the gradient of row ``ids[j]``; an id that
    occurs several times (in one bag or in several) receives the sum.

    Parameters
    ----------
    de : ndarray of shape (n, k)
    cache : from :func:`bag_forward`

    Returns
    -------
    dtable : SparseRows
        Rows sorted ascending; rows no bag used are absent (zero). The
        weights are data, not parameters, so they get no gradient.
    """
    offsets, ids, c, V = cache
    lengths = np.diff(offsets)                                        # (n,)
    bag_of = np.repeat(np.arange(lengths.shape[0]), lengths)          # (nnz,) bag of each id
    dcontrib = np.take(de, bag_of, axis=0) * c[:, None]               # (nnz, k)
    return scatter_add_rows(ids.astype(np.int64, copy=False), dcontrib, V)


def bag_forward_reference(table, offsets, ids, weights=None, mode="sum"):
    """The plain form of :func:`bag_forward`: one row at a time. Same return values."""
    n, k = offsets.shape[0] - 1, table.shape[1]
    c = bag_coefficients(offsets, weights, mode, ids.shape[0], table.dtype)
    e = np.zeros((n, k), dtype=table.dtype)
    for i in range(n):
        for j in range(offsets[i], offsets[i + 1]):
            e[i] += c[j] * table[ids[j]]
    return e, (offsets, ids, c, table.shape[0])


def bag_backward_reference(de, cache):
    """The plain form of :func:`bag_backward`; returns the dense ``(V, k)`` gradient."""
    offsets, ids, c, V = cache
    dtable = np.zeros((V, de.shape[1]), dtype=de.dtype)
    for i in range(offsets.shape[0] - 1):
        for j in range(offsets[i], offsets[i + 1]):
            dtable[ids[j]] += c[j] * de[i]
    return dtable


def add_sparse_rows(*grads):
    """Sum several :class:`SparseRows` gradients of the same table into one."""
    V = grads[0].n_rows
    rows = np.concatenate([g.rows for g in grads]).astype(np.int64, copy=False)
    values = np.concatenate([g.values for g in grads], axis=0)
    return scatter_add_rows(rows, values, V)
