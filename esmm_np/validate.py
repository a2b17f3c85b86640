"""One validation path for every public entry point.

Every function here either returns a clean array (right dtype, right shape)
or raises a ``ValueError`` / ``TypeError`` whose message names the argument,
the problem and where it is (row, column, field). Nothing downstream repeats
these checks, so a learner who wants to know what input is accepted reads
this file only.
"""

import numpy as np

_MAX_LISTED = 5  # how many offending positions an error message lists


def _where(idx):
    """Format the first few offending positions for an error message."""
    idx = np.asarray(idx)
    shown = ", ".join(str(tuple(int(v) for v in i)) if np.ndim(i) else str(int(i))
                      for i in idx[:_MAX_LISTED])
    more = f" (and {len(idx) - _MAX_LISTED} more)" if len(idx) > _MAX_LISTED else ""
    return shown + more


def check_field_dims(field_dims):
    """Return ``field_dims`` as a tuple of positive ints.

    Parameters
    ----------
    field_dims : sequence of int
        Number of distinct ids of each categorical field.
    """
    try:
        dims = tuple(int(d) for d in field_dims)
    except (TypeError, ValueError):
        raise TypeError(f"field_dims must be a sequence of integers, got {field_dims!r}") from None
    if len(dims) == 0:
        raise ValueError("field_dims is empty: the model needs at least one categorical field")
    bad = [f for f, d in enumerate(dims) if d < 1]
    if bad:
        raise ValueError(f"field_dims must be positive; field(s) {bad} have {[dims[f] for f in bad]}")
    return dims


def check_ids(X, field_dims, name="X"):
    """Check a matrix of categorical ids.

    Parameters
    ----------
    X : array_like of int, shape (n, n_fields)
        Column ``f`` holds ids in ``[0, field_dims[f])``.
    field_dims : tuple of int, length n_fields

    Returns
    -------
    ndarray of shape (n, n_fields), integer dtype (not copied when already integer)
    """
    X = np.asarray(X)
    if X.dtype == bool or not np.issubdtype(X.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n, n_fields) = (n, {len(field_dims)}), "
                         f"got {X.ndim}-d array of shape {X.shape}")
    if X.shape[1] != len(field_dims):
        raise ValueError(f"{name} has {X.shape[1]} columns but the model has "
                         f"{len(field_dims)} fields (field_dims={list(field_dims)})")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    # One vectorised comparison per bound; only on failure do we locate the rows.
    negative = X < 0
    too_big = X >= np.asarray(field_dims, dtype=np.int64)
    for mask, what in ((negative, "negative"), (too_big, "out of range (>= field_dims[field])")):
        if mask.any():
            rows, fields = np.nonzero(mask)
            details = "; ".join(f"row {r}, field {f}: id {int(X[r, f])} (field_dims[{f}]={field_dims[f]})"
                                for r, f in zip(rows[:_MAX_LISTED], fields[:_MAX_LISTED]))
            more = f" (and {len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
            raise ValueError(f"{name} has {len(rows)} id(s) {what}: {details}{more}")
    return X


def check_dense(dense, n, n_dense, dtype, name="dense"):
    """Check the numeric (dense) features.

    Parameters
    ----------
    dense : array_like of float, shape (n, n_dense), or None when n_dense == 0
    n : int
        Number of rows the ids have.
    n_dense : int
        Number of dense features the model was built with.
    dtype : numpy dtype the model computes in.

    Returns
    -------
    ndarray of shape (n, n_dense) and dtype ``dtype``, or None when n_dense == 0
    """
    if n_dense == 0:
        if dense is not None:
            raise ValueError(f"{name} was given but the model was built with n_dense=0")
        return None
    if dense is None:
        raise ValueError(f"the model was built with n_dense={n_dense}, so {name} "
                         f"of shape (n, {n_dense}) is required")
    dense = np.asarray(dense)
    if not (np.issubdtype(dense.dtype, np.floating) or np.issubdtype(dense.dtype, np.integer)) \
            or dense.dtype == bool:
        raise TypeError(f"{name} must be numeric, got dtype {dense.dtype}")
    if dense.shape != (n, n_dense):
        raise ValueError(f"{name} must have shape (n, n_dense) = ({n}, {n_dense}), got {dense.shape}")
    bad = ~np.isfinite(dense)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or inf value(s) at (row, column) "
                         f"{_where(np.argwhere(bad))}")
    return dense.astype(dtype, copy=False)


def check_binary(y, n, name):
    """Check a 0/1 label vector.

    Parameters
    ----------
    y : array_like, shape (n,)
        Labels; bool, integer or float holding exactly 0 and 1.
    n : int
        Expected length (the number of rows of ``X``).
    name : str
        Used in error messages (``"click"``, ``"conversion"``).

    Returns
    -------
    ndarray of shape (n,), dtype int8
    """
    y = np.asarray(y)
    if not (y.dtype == bool or np.issubdtype(y.dtype, np.integer)
            or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"{name} must be 0/1 numbers or booleans, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d of length {n}, got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has length {y.shape[0]} but X has {n} rows")
    bad = (y != 0) & (y != 1)  # NaN compares unequal to both, so it is caught here
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise ValueError(f"{name} must hold only 0 and 1; {len(rows)} row(s) do not, "
                         f"e.g. row {int(rows[0])} = {y[rows[0]].item()!r} (rows {_where(rows)})")
    return y.astype(np.int8, copy=False)


def check_click_conversion(click, conversion):
    """Refuse impressions that converted without a click.

    In the ESMM funnel a conversion can only follow a click, so a row with
    click = 0 and conversion = 1 is corrupt data, not a label to learn from.

    Parameters
    ----------
    click, conversion : ndarray of shape (n,), int8 (already passed ``check_binary``)
    """
    bad = (click == 0) & (conversion == 1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise ValueError(f"{len(rows)} row(s) have click = 0 and conversion = 1, which is invalid "
                         f"(a conversion must follow a click): rows {_where(rows)}. "
                         "esmm_np.clean_dataset can count and drop them.")


def check_labels(click, conversion, n):
    """Check click and conversion together; return them as int8 arrays."""
    click = check_binary(click, n, "click")
    conversion = check_binary(conversion, n, "conversion")
    check_click_conversion(click, conversion)
    return click, conversion
