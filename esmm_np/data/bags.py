"""Bags of ids: the CSR triples that carry multi-valued fields, and their checks.

A multi-valued field (a user's recent categories, an ad's intention nodes)
gives each impression a bag of zero or more ids, each with a value. For n
impressions a field's bags are one triple ``(offsets, ids, weights)``:

- ``offsets``: int, shape (n + 1,), non-decreasing, ``offsets[0] == 0``,
  ``offsets[n] == len(ids)``; row ``i``'s bag is ``ids[offsets[i]:offsets[i + 1]]``;
- ``ids``: int, shape (nnz,), each in ``[0, bag_dims[field])``;
- ``weights``: float, shape (nnz,), finite, or None for all ones.

This is the layout ``torch.nn.EmbeddingBag`` takes. A dict maps each field
name to its triple (``dataset.bags``, ``model.loss(..., bags=)``).

When many rows share one bag (Ali-CCP's user features, the same for every
impression of a request), a :class:`SharedBag` stores each shared bag once,
in a table, and each row the number of its table row; :func:`take_bags`
and :func:`slice_bags` gather a batch's bags from it when the batch is
drawn, so the full triple of all rows is never built. Unpacked
(``offsets, ids, weights = shared``), it gives that full triple.

The checks here follow :mod:`esmm_np.validate`: they return clean arrays or
raise an error naming the field, the problem and where it is. Arrays may be
memory-mapped; the checks read them block by block so that checking a split
never needs memory for the whole split.
"""

import numpy as np

from ..validate import check_ids

#: Rows (or ids) per block when a check or a copy walks a large array.
BLOCK = 1 << 18


def in_blocks(check, arrays, block=BLOCK):
    """Run ``check(*parts)`` on successive row blocks of ``arrays``.

    The checks of :mod:`esmm_np.validate` build temporaries as large as
    their input; block by block they stay small. When a block fails, the
    check is run once more on the whole arrays, so the error names rows
    counted from the start (the error path may use the memory).
    """
    n = len(arrays[0]) if np.ndim(arrays[0]) else 0     # a 0-d array: the check names it
    if n <= block:
        return check(*arrays)
    try:
        for s in range(0, n, block):
            check(*(a[s:s + block] for a in arrays))
    except (ValueError, TypeError):
        check(*arrays)
        raise
    return None


def check_ids_in_blocks(X, field_dims, name="X"):
    """:func:`esmm_np.validate.check_ids`, block by block; returns ``X`` uncopied.

    Only uint64 ids are converted (to int64, as ``check_ids`` does), since
    adding the int64 row offsets to them would give floats.
    """
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    in_blocks(lambda x: check_ids(x, field_dims, name), (X,))
    return X.astype(np.int64) if X.dtype == np.uint64 else X


class SharedBag:
    """The bags of ``n`` rows, where rows share bags: row ``i``'s bag is its own bag
    (``own``, a CSR triple over the ``n`` rows, or None for none) followed by row
    ``ref[i]`` of ``table`` (a CSR triple over the table's ``m`` rows).

    Parameters
    ----------
    ref : ndarray of int, shape (n,), values in ``[0, m)``
    table : (offsets (m + 1,), ids (nnz_t,), weights (nnz_t,) or None)
    own : (offsets (n + 1,), ids (nnz_o,), weights (nnz_o,) or None), or None

    The arrays may be memory-mapped; :meth:`take` and :meth:`slice` read only
    the rows asked for. Iterating or indexing (``offsets, ids, weights =
    bag``, ``bag[1]``) builds the plain triple of all ``n`` rows in memory.
    """

    def __init__(self, ref, table, own=None):
        self.ref, self.table = ref, tuple(table)
        self.own = None if own is None else tuple(own)

    @property
    def n(self):
        return len(self.ref)

    def arrays(self):
        """Every stored array (the ones on disk for a loaded cache), Nones left out."""
        return [a for a in (self.ref, *self.table, *(self.own or ())) if a is not None]

    def map_arrays(self, fn):
        """A SharedBag whose every stored array is ``fn(array)``."""
        def each(t):
            return None if t is None else tuple(None if a is None else fn(a) for a in t)
        return SharedBag(fn(self.ref), each(self.table), each(self.own))

    def take(self, idx):
        """The plain triple of rows ``idx`` (int array, any order, repeats allowed)."""
        idx = np.asarray(idx, dtype=np.int64)
        shared = take_bags({"t": self.table}, np.asarray(self.ref[idx], dtype=np.int64))["t"]
        if self.own is None:
            return shared
        return interleave(take_bags({"o": self.own}, idx)["o"], shared)

    def slice(self, start, stop):
        """The rows ``start:stop`` as a SharedBag whose row part is read into memory."""
        own = None if self.own is None else slice_bags({"o": self.own}, start, stop)["o"]
        return SharedBag(np.asarray(self.ref[start:stop]), self.table, own)

    def max_id(self):
        """The largest id any row's bag holds (-1 when all are empty)."""
        parts = [self.table[1]] + ([] if self.own is None else [self.own[1]])
        return max(int(np.max(a, initial=-1)) for a in parts)

    def materialize(self):
        """The plain triple of all rows, in memory."""
        return self.take(np.arange(self.n))

    def __iter__(self):
        return iter(self.materialize())

    def __getitem__(self, i):
        return self.materialize()[i]

    def __repr__(self):
        return (f"SharedBag(n={self.n}, table_rows={len(self.table[0]) - 1}, "
                f"own={'yes' if self.own is not None else 'no'})")


def interleave(first, second):
    """Row by row, the bag of ``first`` followed by the bag of ``second`` (two CSR triples
    over the same rows); weights of a None side count as ones."""
    (o1, i1, w1), (o2, i2, w2) = first, second
    n1, n2 = np.diff(o1), np.diff(o2)                                    # (m,), (m,)
    new = np.zeros(len(n1) + 1, dtype=np.int64)                          # (m + 1,)
    np.cumsum(n1 + n2, out=new[1:])
    ids = np.empty(int(new[-1]), dtype=np.result_type(i1.dtype, i2.dtype))
    both = w1 is not None or w2 is not None
    if both:
        wdt = np.result_type(*(w.dtype for w in (w1, w2) if w is not None))
        weights = np.empty(len(ids), dtype=wdt)
    for (o, i, w, n, shift) in ((o1, i1, w1, n1, 0), (o2, i2, w2, n2, n1)):
        # Output position: the row's new start (+ the first side's length) + rank in the bag.
        at = np.repeat(new[:-1] + shift - o[:-1], n) + np.arange(int(n.sum()))   # (nnz,)
        ids[at] = i
        if both:
            weights[at] = 1 if w is None else w
    return new, ids, weights if both else None


def stored_arrays(bags):
    """The arrays a bag dict stores (a SharedBag's stored ones, not its expanded triple)."""
    for t in (bags or {}).values():
        if isinstance(t, SharedBag):
            yield from t.arrays()
        else:
            yield from t


def check_bags(bags, bag_dims, n, dtype=None, name="bags", finite_in=None):
    """Check the bags of every multi-valued field.

    Parameters
    ----------
    bags : dict str -> (offsets, ids, weights), or None
    bag_dims : dict str -> int
        The fields the model (or dataset) has and their number of ids.
    n : int
        Number of impressions (rows of ``X``).
    dtype : numpy float dtype or None
        The dtype weights are returned in; None (default) keeps floating
        weights as they are (a memory-mapped float32 array stays on disk;
        the layer casts each batch) and turns integer ones into float64.
    finite_in : numpy float dtype or None
        The dtype the weights will be cast to later (the model's): they must
        be finite there too (1e39 is finite in float64, inf in float32).

    Returns
    -------
    dict str -> (offsets int64, ids int, weights of ``dtype`` or None), in
    the order of ``bag_dims``; None when ``bag_dims`` is empty and no bags
    were given. Arrays already of the right dtype (memory-mapped ones
    included) are not copied.
    """
    bag_dims = dict(bag_dims or {})
    if not bag_dims:
        if bags:
            raise ValueError(f"{name} were given for field(s) {sorted(bags)} but the model "
                             "has no multi-valued fields (build it with bag_dims=...)")
        return None
    if bags is None:
        raise ValueError(f"the model has multi-valued field(s) {list(bag_dims)}, so {name}= "
                         "(a dict field -> (offsets, ids, weights)) is required")
    if not isinstance(bags, dict):
        raise TypeError(f"{name} must be a dict field -> (offsets, ids, weights), "
                        f"got {type(bags).__name__}")
    missing = [f for f in bag_dims if f not in bags]
    unknown = [f for f in bags if f not in bag_dims]
    if missing or unknown:
        raise ValueError(f"{name} fields do not match: missing {missing}, unknown {unknown} "
                         f"(expected {list(bag_dims)})")
    return {f: check_bag(bags[f], bag_dims[f], n, dtype, f"{name}[{f!r}]", finite_in)
            for f in bag_dims}


def check_bag(triple, dim, n, dtype=None, name="bag", finite_in=None):
    """Check one field's ``(offsets, ids, weights)`` or :class:`SharedBag`; see :func:`check_bags`."""
    if isinstance(triple, SharedBag):
        return check_shared_bag(triple, dim, n, dtype, name, finite_in)
    if not isinstance(triple, (tuple, list)) or len(triple) != 3:
        raise TypeError(f"{name} must be a triple (offsets, ids, weights), got {type(triple).__name__}"
                        + (f" of length {len(triple)}" if isinstance(triple, (tuple, list)) else ""))
    offsets, ids, weights = (None if a is None else np.asarray(a) for a in triple)
    for what, a in (("offsets", offsets), ("ids", ids)):
        if a is None or a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} {what} must be integers, got "
                            f"{'None' if a is None else a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{name} {what} must be 1-d, got shape {a.shape}")
    if offsets.shape[0] != n + 1:
        raise ValueError(f"{name} offsets must have length n + 1 = {n + 1} (one more than the "
                         f"rows), got {offsets.shape[0]}")
    if offsets[0] != 0:
        raise ValueError(f"{name} offsets must start at 0, got {int(offsets[0])}")
    if offsets[-1] != ids.shape[0]:
        raise ValueError(f"{name} offsets must end at len(ids) = {ids.shape[0]}, "
                         f"got {int(offsets[-1])}")

    def monotone(part):
        down = np.flatnonzero(np.diff(part) < 0)
        if down.size:
            raise ValueError(f"{name} offsets must be non-decreasing; they decrease after "
                             f"position(s) {down[:5].tolist()}")
    # Blocks overlap by one so that every adjacent pair is compared once.
    for s in range(0, n, BLOCK):
        try:
            monotone(offsets[s:s + BLOCK + 1])
        except ValueError:
            monotone(offsets)
            raise
    if ids.shape[0]:
        lo = min(int(ids[s:s + BLOCK].min()) for s in range(0, ids.shape[0], BLOCK))
        hi = max(int(ids[s:s + BLOCK].max()) for s in range(0, ids.shape[0], BLOCK))
        if lo < 0 or hi >= dim:
            bad = np.flatnonzero((ids < 0) | (ids >= dim))
            row = int(np.searchsorted(offsets, bad[0], side="right")) - 1
            raise ValueError(f"{name} has {bad.size} id(s) out of range [0, {dim}): e.g. "
                             f"id {int(ids[bad[0]])} at position {int(bad[0])} (row {row})")
    if weights is not None:
        if weights.dtype == bool or not (np.issubdtype(weights.dtype, np.floating)
                                         or np.issubdtype(weights.dtype, np.integer)):
            raise TypeError(f"{name} weights must be numbers, got dtype {weights.dtype}")
        if weights.shape != ids.shape:
            raise ValueError(f"{name} weights must have the shape of ids {ids.shape}, "
                             f"got {weights.shape}")
        cast = dtype if dtype is not None else finite_in
        for s in range(0, weights.shape[0], BLOCK):
            part = weights[s:s + BLOCK]
            if cast is not None:
                with np.errstate(over="ignore"):
                    part = part.astype(cast)
            if not np.isfinite(part).all():
                bad = s + np.flatnonzero(~np.isfinite(part))
                raise ValueError(f"{name} weights have NaN or inf at position(s) "
                                 f"{bad[:5].tolist()}")
        if dtype is None:
            dtype = weights.dtype if np.issubdtype(weights.dtype, np.floating) else np.float64
        weights = weights.astype(dtype, copy=False)
    return offsets.astype(np.int64, copy=False), ids, weights


def check_shared_bag(bag, dim, n, dtype=None, name="bag", finite_in=None):
    """Check a :class:`SharedBag` of ``n`` rows: its table, its own part, and every ``ref``."""
    ref = bag.ref if isinstance(bag.ref, np.ndarray) else np.asarray(bag.ref)
    if ref.dtype == bool or not np.issubdtype(ref.dtype, np.integer) or ref.ndim != 1:
        raise TypeError(f"{name} ref must be a 1-d integer array, got dtype {ref.dtype} and "
                        f"shape {ref.shape}")
    if ref.shape[0] != n:
        raise ValueError(f"{name} ref must have one entry per row ({n}), got {ref.shape[0]}")
    table = check_bag(bag.table, dim, len(bag.table[0]) - 1, dtype, f"{name} table", finite_in)
    m = len(table[0]) - 1
    for s in range(0, n, BLOCK):
        part = ref[s:s + BLOCK]
        if int(part.min()) < 0 or int(part.max()) >= m:
            bad = s + np.flatnonzero((part < 0) | (part >= m))
            raise ValueError(f"{name} ref must lie in [0, {m}) (the table's rows); row "
                             f"{int(bad[0])} has {int(ref[bad[0]])}")
    own = None if bag.own is None else check_bag(bag.own, dim, n, dtype, f"{name} own", finite_in)
    return SharedBag(ref, table, own)


def take_bags(bags, idx):
    """The bags of rows ``idx`` (int array, any order, repeats allowed), copied.

    Returns a dict of the same fields, each a new CSR triple for ``len(idx)`` rows.
    """
    if bags is None:
        return None
    idx = np.asarray(idx, dtype=np.int64)
    out = {}
    for f, t in bags.items():
        if isinstance(t, SharedBag):
            out[f] = t.take(idx)
            continue
        offsets, ids, weights = t
        starts = np.asarray(offsets[idx])                                # (m,)
        lengths = np.asarray(offsets[idx + 1]) - starts                  # (m,)
        new = np.zeros(idx.shape[0] + 1, dtype=np.int64)                 # (m + 1,)
        np.cumsum(lengths, out=new[1:])
        # Position in ids of every kept occurrence: its bag's old start + its rank in the bag.
        pos = np.repeat(starts - new[:-1], lengths) + np.arange(new[-1])  # (nnz_m,)
        out[f] = (new, np.asarray(ids[pos]),
                  None if weights is None else np.asarray(weights[pos]))
    return out


def slice_bags(bags, start, stop):
    """The bags of the contiguous rows ``start:stop``, read into memory (a SharedBag's
    row part; its table stays where it is)."""
    if bags is None:
        return None
    out = {}
    for f, t in bags.items():
        if isinstance(t, SharedBag):
            out[f] = t.slice(start, stop)
            continue
        offsets, ids, weights = t
        o = np.asarray(offsets[start:stop + 1], dtype=np.int64)
        a, b = int(o[0]), int(o[-1])
        out[f] = (o - a, np.asarray(ids[a:b]), None if weights is None else np.asarray(weights[a:b]))
    return out


def concat_bags(parts):
    """Stack the bags of consecutive row blocks (a list of bag dicts) into one."""
    out = {}
    for f in parts[0]:
        offs, ids, ws, base = [np.zeros(1, dtype=np.int64)], [], [], 0
        for p in parts:
            o, i, w = p[f]
            offs.append(o[1:] + base)
            base += int(o[-1])
            ids.append(i)
            ws.append(w)
        out[f] = (np.concatenate(offs), np.concatenate(ids),
                  None if ws[0] is None else np.concatenate(ws))
    return out
