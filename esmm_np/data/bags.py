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
    """Check one field's ``(offsets, ids, weights)``; see :func:`check_bags`."""
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


def take_bags(bags, idx):
    """The bags of rows ``idx`` (int array, any order, repeats allowed), copied.

    Returns a dict of the same fields, each a new CSR triple for ``len(idx)`` rows.
    """
    if bags is None:
        return None
    idx = np.asarray(idx, dtype=np.int64)
    out = {}
    for f, (offsets, ids, weights) in bags.items():
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
    """The bags of the contiguous rows ``start:stop``, read into memory."""
    if bags is None:
        return None
    out = {}
    for f, (offsets, ids, weights) in bags.items():
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
