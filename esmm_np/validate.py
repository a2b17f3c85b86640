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


def as_array(value, name):
    """``np.asarray(value)``, with a sentence instead of NumPy's error for ragged nested lists."""
    try:
        return np.asarray(value)
    except ValueError:   # "setting an array element with a sequence ... inhomogeneous shape"
        raise ValueError(f"{name} must be a rectangular array: it is a nested sequence whose "
                         "rows have different lengths") from None


def check_field_dims(field_dims):
    """Return ``field_dims`` as a tuple of positive ints.

    Parameters
    ----------
    field_dims : sequence of int
        Number of distinct ids of each categorical field.
    """
    if isinstance(field_dims, (str, bytes)) or not hasattr(field_dims, "__iter__"):
        raise TypeError(f"field_dims must be a sequence of integers, got {field_dims!r}")
    field_dims = list(field_dims)
    bad = [d for d in field_dims if not is_int(d)]
    if bad:   # 3.7 is refused, not truncated to 3
        raise TypeError(f"field_dims must be a sequence of integers, got {field_dims!r} "
                        f"(not integers: {bad[:_MAX_LISTED]})")
    dims = tuple(int(d) for d in field_dims)
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
    X = as_array(X, name)
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
    if X.dtype == np.uint64:
        # Every id is now below field_dims, so int64 holds it; uint64 + int64
        # offsets would otherwise give float64 table rows.
        X = X.astype(np.int64)
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
    dense = as_array(dense, name)
    if not (np.issubdtype(dense.dtype, np.floating) or np.issubdtype(dense.dtype, np.integer)) \
            or dense.dtype == bool:
        raise TypeError(f"{name} must be numeric, got dtype {dense.dtype}")
    if dense.shape != (n, n_dense):
        raise ValueError(f"{name} must have shape (n, n_dense) = ({n}, {n_dense}), got {dense.shape}")
    bad = ~np.isfinite(dense)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or inf value(s) at (row, column) "
                         f"{_where(np.argwhere(bad))}")
    with np.errstate(over="ignore"):     # an overflow is reported below, by position
        out = dense.astype(dtype, copy=False)
    if out is not dense:
        # Checked again after the cast: 1e39 is finite in float64 but inf in float32.
        bad = ~np.isfinite(out)
        if bad.any():
            raise ValueError(f"{name} has {int(bad.sum())} value(s) too large for {np.dtype(dtype)} "
                             f"(they would become inf) at (row, column) {_where(np.argwhere(bad))}")
    return out


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
    y = as_array(y, name)
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


# ------------------------------------------------------------ hyperparameters
#
# Options are checked as strictly as data: a float where an integer is meant
# is refused rather than truncated (``embed_dim=2.7`` is not 2), a string is
# never read as a truth value (``batch_norm="no"`` is not True), and NaN or
# inf never slips through a comparison (``lr=nan`` fails every ``>`` test, so
# ``if lr <= 0: raise`` alone would accept it).

def is_int(value):
    """True for a Python or NumPy integer, False for a bool (which Python counts as one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name, low=None, high=None):
    """Return ``value`` as a Python int in ``[low, high]`` (either bound optional).

    Refuses booleans, floats (even 2.0: a float here is usually a computed
    size that was meant to be rounded on purpose) and strings.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = (f">= {low}" if high is None else f"<= {high}" if low is None
                else f"in [{low}, {high}]")
        raise ValueError(f"{name} must be {span}, got {value}")
    return value


def check_float(value, name, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as a finite Python float within the given bounds.

    ``low_open`` / ``high_open`` exclude the bound itself (``lr > 0`` is
    ``low=0, low_open=True``). NaN and inf are refused whatever the bounds.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        span = (f"{'>' if low_open else '>='} {low:g}" if high is None
                else f"{'<' if high_open else '<='} {high:g}" if low is None else f"in {lo}, {hi}")
        raise ValueError(f"{name} must be {span}, got {value:g}")
    return value


def check_bool(value, name):
    """Return ``value`` as a bool; only True/False (or NumPy's) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(value, name, choices):
    """Return ``value`` if it is one of ``choices`` (compared as strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_seed(seed, name="seed"):
    """A seed is None, a non-negative int or a ``numpy.random.Generator``."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    return check_int(seed, name, low=0)
