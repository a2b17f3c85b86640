"""Impression logs as the rest of esmm_np sees them.

A :class:`Dataset` is one table of impressions: categorical ids ``X``, the
two funnel labels ``click`` and ``conversion``, optional numeric features
``dense``, and, when the data came from :func:`esmm_np.data.simulator.simulate`,
the ground truth that a real log never has (``true_ctr``, ``true_cvr``,
``conversion_if_clicked``).

A Dataset is always valid: its constructor runs the checks of
:mod:`esmm_np.validate` and refuses a row with click = 0 and conversion = 1.
Raw logs that may hold such rows go through :func:`clean_dataset` first,
which counts them, drops them (or raises in strict mode) and says which
rows it dropped.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from .bags import SharedBag, check_bags, check_ids_in_blocks, in_blocks, take_bags
from ..validate import (check_binary, check_click_conversion, check_dense, check_field_dims,
                       check_ids, check_int, check_labels)

_MAX_LISTED = 10  # how many dropped rows a strict-mode error lists

#: Dataset fields that __post_init__ validates (and then protects).
_CHECKED = ("X", "click", "conversion", "field_dims", "field_names", "dense", "true_ctr",
            "true_cvr", "conversion_if_clicked", "bags", "bag_dims")


def _check_probability(p, n, name):
    """Return ``p`` as a float array of shape (n,) with every value in [0, 1]."""
    p = np.asarray(p)
    if not np.issubdtype(p.dtype, np.floating):
        raise TypeError(f"{name} must be floating-point probabilities, got dtype {p.dtype}")
    if p.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like the labels, got {p.shape}")
    bad = ~((p >= 0) & (p <= 1))  # NaN fails both comparisons, so it lands in ``bad``
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise ValueError(f"{name} must lie in [0, 1]; {len(rows)} value(s) do not, "
                         f"e.g. row {int(rows[0])} = {p[rows[0]]!r}")
    return p


def _check_dense_any(dense, n):
    """Check dense features whose width is whatever the caller has; keep a float dtype."""
    d = np.asarray(dense)
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError(f"dense must have shape (n, n_dense) with n_dense >= 1 (use None for "
                         f"no dense features), got shape {d.shape}")
    dtype = d.dtype if np.issubdtype(d.dtype, np.floating) else np.float64
    return check_dense(d, n, d.shape[1], dtype)


@dataclass(eq=False, repr=False)  # arrays make == and the default repr unhelpful
class Dataset:
    """A table of impressions with the ESMM funnel labels.

    Parameters
    ----------
    X : ndarray of int, shape (n, n_fields)
        Categorical ids; column ``f`` holds ids in ``[0, field_dims[f])``.
        Stored as int32.
    click : ndarray of shape (n,)
        1 if the impression was clicked. Stored as int8.
    conversion : ndarray of shape (n,)
        1 if the impression was clicked and then converted. Stored as int8.
        A conversion without a click is refused (see :func:`clean_dataset`).
    field_dims : tuple of int, length n_fields
        Number of possible ids of each field (the embedding table sizes),
        which may exceed the largest id that happens to occur.
    field_names : tuple of str, length n_fields, optional
        Defaults to ``("field_0", "field_1", ...)``.
    dense : ndarray of float, shape (n, n_dense), or None
        Numeric features, if any.
    true_ctr : ndarray of float, shape (n,), or None
        Ground truth P(click = 1 | features); None for a real log.
    true_cvr : ndarray of float, shape (n,), or None
        Ground truth P(conversion = 1 | click = 1, features), defined for
        every impression, clicked or not; None for a real log.
    conversion_if_clicked : ndarray of shape (n,), or None
        The potential outcome: whether the impression would have converted
        had it been clicked. ``conversion == click * conversion_if_clicked``
        must hold. None for a real log.
    info : dict
        Free-form provenance, e.g. the simulator knobs.
    bags : dict str -> (offsets, ids, weights), or None
        Multi-valued fields, one CSR triple each (see :mod:`esmm_np.data.bags`),
        e.g. Ali-CCP's ``"210"`` (a user's recent categories).
    bag_dims : dict str -> int, or None
        Number of possible ids of each multi-valued field; inferred as the
        largest id + 1 when omitted.

    Notes
    -----
    Arrays already of the stored dtype are kept, not copied, so a Dataset
    built from arrays shares memory with them. :meth:`subset` and
    :meth:`split` always copy.
    """

    X: np.ndarray
    click: np.ndarray
    conversion: np.ndarray
    field_dims: tuple
    field_names: tuple = None
    dense: np.ndarray = None
    true_ctr: np.ndarray = None
    true_cvr: np.ndarray = None
    conversion_if_clicked: np.ndarray = None
    info: dict = field(default_factory=dict)
    bags: dict = None
    bag_dims: dict = None

    def __post_init__(self):
        self.field_dims = check_field_dims(self.field_dims)
        # Block by block, so that memory-mapped arrays (esmm_np.aliccp.load) stay on disk.
        X = check_ids_in_blocks(self.X, self.field_dims)
        if max(self.field_dims) > np.iinfo(np.int32).max:
            raise ValueError("field_dims above 2**31 - 1 do not fit the int32 ids of a Dataset")
        self.X = X.astype(np.int32, copy=False)                           # (n, F)
        n = self.X.shape[0]
        click, conversion = (a if isinstance(a, np.ndarray) else np.asarray(a)
                             for a in (self.click, self.conversion))
        if click.shape != (n,) or conversion.shape != (n,):
            check_labels(click, conversion, n)                            # the usual message
        in_blocks(lambda c, v: check_labels(c, v, c.shape[0]), (click, conversion))
        self.click = click.astype(np.int8, copy=False)                    # (n,)
        self.conversion = conversion.astype(np.int8, copy=False)          # (n,)
        if self.field_names is None:
            self.field_names = tuple(f"field_{f}" for f in range(len(self.field_dims)))
        self.field_names = tuple(str(s) for s in self.field_names)
        if len(self.field_names) != len(self.field_dims):
            raise ValueError(f"field_names has {len(self.field_names)} names but there are "
                             f"{len(self.field_dims)} fields")
        if self.dense is not None:
            self.dense = _check_dense_any(self.dense, n)                  # (n, n_dense)
        for name in ("true_ctr", "true_cvr"):
            if getattr(self, name) is not None:
                setattr(self, name, _check_probability(getattr(self, name), n, name))
        if self.conversion_if_clicked is not None:
            c = check_binary(self.conversion_if_clicked, n, "conversion_if_clicked")
            # The observed conversion is the potential outcome revealed by a click;
            # anything else means the arrays were not built together.
            bad = self.conversion != self.click * c
            if bad.any():
                rows = np.nonzero(bad)[0]
                raise ValueError(f"conversion must equal click * conversion_if_clicked; "
                                 f"{len(rows)} row(s) differ, e.g. row {int(rows[0])}")
            self.conversion_if_clicked = c
        self.info = dict(self.info)
        if not self.bags and not self.bag_dims:
            self.bags = self.bag_dims = None                              # no multi-valued fields
        if self.bags is not None and self.bag_dims is None:
            self.bag_dims = {f: max((t.max_id() if isinstance(t, SharedBag)          # 1 when
                                     else int(np.max(t[1], initial=-1))) + 1, 1)    # all empty
                             for f, t in self.bags.items()}
        if self.bag_dims is not None:
            self.bag_dims = {str(f): check_int(d, f"bag_dims[{f!r}]", low=1)
                             for f, d in self.bag_dims.items()}
            if self.bags is None:
                raise ValueError("bag_dims was given without bags")
            self.bags = check_bags({str(f): t for f, t in self.bags.items()}, self.bag_dims, n)
        # Checked once, so kept as checked: the arrays are read-only views (the
        # caller's own arrays are not touched) and the checked fields cannot be
        # reassigned. dataclasses.replace(ds, click=...) builds a new, checked Dataset.
        def read_only(a):
            if isinstance(a, np.ndarray):
                a = a.view()
                a.flags.writeable = False
            return a
        for name in _CHECKED:
            object.__setattr__(self, name, read_only(getattr(self, name)))
        if self.bags is not None:
            object.__setattr__(self, "bags", {f: t.map_arrays(read_only) if isinstance(t, SharedBag)
                                              else tuple(read_only(a) for a in t)
                                              for f, t in self.bags.items()})
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name, value):
        if name in _CHECKED and getattr(self, "_sealed", False):
            raise AttributeError(f"Dataset.{name} cannot be reassigned after the checks ran; "
                                 f"use dataclasses.replace(dataset, {name}=...) for a checked copy")
        object.__setattr__(self, name, value)

    def __len__(self):
        return self.X.shape[0]

    def __repr__(self):
        bags = f"bag_fields={self.bag_dims}, " if self.bags else ""
        return (f"Dataset(n={len(self)}, fields={dict(zip(self.field_names, self.field_dims))}, "
                f"{bags}"
                f"clicks={int(self.click.sum(dtype=np.int64))}, "
                f"conversions={int(self.conversion.sum(dtype=np.int64))}, "
                f"n_dense={self.n_dense}, ground_truth={self.has_ground_truth})")

    @property
    def n_dense(self):
        """Number of dense features (0 when ``dense`` is None)."""
        return 0 if self.dense is None else self.dense.shape[1]

    @property
    def has_ground_truth(self):
        """True when ``true_ctr``, ``true_cvr`` and ``conversion_if_clicked`` are all present."""
        return (self.true_ctr is not None and self.true_cvr is not None
                and self.conversion_if_clicked is not None)

    def subset(self, idx):
        """Return a new Dataset holding the rows ``idx`` (copied).

        Parameters
        ----------
        idx : ndarray of int, shape (m,), or ndarray of bool, shape (n,)
            Row indices (in the order wanted) or a row mask.

        Returns
        -------
        Dataset with m rows (m = number of True values for a mask).
        """
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"a boolean mask must have shape ({len(self)},), got {idx.shape}")
        elif np.issubdtype(idx.dtype, np.integer):
            if idx.ndim != 1:
                raise ValueError(f"row indices must be 1-d, got shape {idx.shape}")
            out = (idx < -len(self)) | (idx >= len(self))
            if out.any():
                raise IndexError(f"{int(out.sum())} row index(es) out of range for "
                                 f"{len(self)} rows, e.g. {int(idx[out][0])}")
        else:
            raise TypeError(f"idx must be integer indices or a boolean mask, got dtype {idx.dtype}")

        def take(a):
            return None if a is None else a[idx]

        return replace(self, X=self.X[idx], click=self.click[idx],
                       conversion=self.conversion[idx], dense=take(self.dense),
                       true_ctr=take(self.true_ctr), true_cvr=take(self.true_cvr),
                       conversion_if_clicked=take(self.conversion_if_clicked),
                       info=dict(self.info),
                       bags=take_bags(self.bags, np.arange(len(self))[idx]))

    def split(self, test_fraction=0.2, seed=0):
        """Split the rows at random into a train and a test Dataset.

        Parameters
        ----------
        test_fraction : float in (0, 1)
            Share of rows that go to the test set (rounded to whole rows).
        seed : int or numpy.random.Generator
            Same seed, same split.

        Returns
        -------
        train, test : Dataset
            Disjoint, together all rows; each keeps the original row order.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        n = len(self)
        n_test = int(round(test_fraction * n))
        if n_test == 0 or n_test == n:
            raise ValueError(f"test_fraction={test_fraction} of {n} rows leaves "
                             f"{n_test} test and {n - n_test} train rows; both must be non-empty")
        rng = np.random.default_rng(seed)
        in_test = np.zeros(n, dtype=bool)                                 # (n,)
        in_test[rng.permutation(n)[:n_test]] = True
        return self.subset(~in_test), self.subset(in_test)


@dataclass
class CleanReport:
    """What :func:`clean_dataset` did.

    Attributes
    ----------
    n_in : int
        Rows given.
    n_invalid : int
        Rows with click = 0 and conversion = 1.
    n_out : int
        Rows kept (``n_in - n_invalid``).
    dropped_rows : ndarray of int64, shape (n_invalid,)
        Indices, into the input arrays, of the dropped rows.
    """

    n_in: int
    n_invalid: int
    n_out: int
    dropped_rows: np.ndarray


def clean_dataset(X, click, conversion, dense=None, *, field_dims=None, field_names=None,
                  strict=False, info=None, bags=None, bag_dims=None):
    """Validate a raw impression log and drop conversions without a click.

    Every problem other than click = 0 with conversion = 1 (wrong shapes,
    ids out of range, labels other than 0/1, NaN features) raises, because
    it says the log was read wrongly rather than that some rows are bad.

    Parameters
    ----------
    X : array_like of int, shape (n, n_fields)
    click, conversion : array_like of 0/1, shape (n,)
    dense : array_like of float, shape (n, n_dense), or None
    field_dims : sequence of int, length n_fields, optional
        Number of possible ids of each field. When omitted it is inferred as
        ``X.max(axis=0) + 1``, which is too small if the largest ids happen
        not to occur in this log (e.g. a training split), so pass it when you
        know it.
    field_names : sequence of str, optional
    strict : bool
        If True, raise ``ValueError`` naming the count and the rows instead
        of dropping them.
    info : dict, optional
        Stored in the returned Dataset's ``info``.
    bags, bag_dims : the multi-valued fields, as for :class:`Dataset`; optional

    Returns
    -------
    dataset : Dataset
        The valid rows, copied (the inputs are never modified or shared).
    report : CleanReport
        Counts and the indices of the dropped rows.
    """
    X = np.asarray(X)
    if field_dims is None:
        if X.ndim != 2 or X.shape[0] == 0 or not np.issubdtype(X.dtype, np.integer):
            # Let the shared checks produce the message, with a placeholder width.
            check_ids(X, (1,) * (X.shape[1] if X.ndim == 2 else 1))
        field_dims = tuple(int(m) + 1 for m in X.max(axis=0))
    field_dims = check_field_dims(field_dims)
    X = check_ids(X, field_dims)                                          # (n, F)
    n = X.shape[0]
    click = check_binary(click, n, "click")                               # (n,) int8
    conversion = check_binary(conversion, n, "conversion")                # (n,) int8
    if dense is not None:
        dense = _check_dense_any(dense, n)                                # (n, n_dense)

    invalid = (click == 0) & (conversion == 1)                            # (n,) bool
    dropped = np.flatnonzero(invalid).astype(np.int64)                   # (n_invalid,)
    if strict and dropped.size:
        shown = ", ".join(str(int(r)) for r in dropped[:_MAX_LISTED])
        more = f" (and {dropped.size - _MAX_LISTED} more)" if dropped.size > _MAX_LISTED else ""
        raise ValueError(f"{dropped.size} of {n} row(s) have click = 0 and conversion = 1 "
                         f"(a conversion must follow a click): rows {shown}{more}")
    keep = ~invalid
    if keep.sum() == 0:
        raise ValueError(f"all {n} rows have click = 0 and conversion = 1; nothing is left")
    # Boolean indexing copies, so the Dataset never aliases the caller's arrays.
    ds = Dataset(X=X[keep], click=click[keep], conversion=conversion[keep],
                 field_dims=field_dims, field_names=field_names,
                 dense=None if dense is None else dense[keep], info=dict(info or {}),
                 bags=take_bags(bags, np.flatnonzero(keep)), bag_dims=bag_dims)
    check_click_conversion(ds.click, ds.conversion)  # the invariant the drop established
    report = CleanReport(n_in=n, n_invalid=int(dropped.size), n_out=len(ds), dropped_rows=dropped)
    return ds, report


def _distinct(column, dim):
    """Number of distinct ids in ``column``: by counting when ``dim`` is small, else by
    sorting (a table of ``dim`` counters could need gigabytes for a few rows)."""
    if dim <= 4 * len(column) + 1024:
        return int(np.count_nonzero(np.bincount(column, minlength=dim)))
    return int(len(np.unique(column)))


def describe(dataset):
    """Counts and rates of the funnel, plus ground-truth means when present.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    dict with
        ``n_impressions``, ``n_clicks``, ``n_conversions`` : int
        ``ctr`` : clicks / impressions
        ``cvr`` : conversions / clicks (NaN without clicks)
        ``ctcvr`` : conversions / impressions
        ``ids_seen`` : dict field name -> number of distinct ids that occur
        and, if the dataset has ground truth, ``mean_true_ctr`` and
        ``mean_true_cvr_clicked`` / ``_unclicked`` / ``_entire`` (NaN for an
        empty group): the gap between clicked and unclicked is the
        selection bias a clicked-only CVR model never sees.
    """
    n = len(dataset)
    n_clicks = int(dataset.click.sum(dtype=np.int64))
    n_conv = int(dataset.conversion.sum(dtype=np.int64))
    out = {
        "n_impressions": n,
        "n_clicks": n_clicks,
        "n_conversions": n_conv,
        "ctr": n_clicks / n,
        "cvr": n_conv / n_clicks if n_clicks else float("nan"),
        "ctcvr": n_conv / n,
        "ids_seen": {name: _distinct(dataset.X[:, f], dim)
                     for f, (name, dim) in enumerate(zip(dataset.field_names,
                                                         dataset.field_dims))},
    }
    if dataset.true_ctr is not None:
        out["mean_true_ctr"] = float(dataset.true_ctr.mean(dtype=np.float64))
    if dataset.true_cvr is not None:
        clicked = dataset.click == 1
        for key, mask in (("clicked", clicked), ("unclicked", ~clicked),
                          ("entire", np.ones(n, dtype=bool))):
            out[f"mean_true_cvr_{key}"] = (float(dataset.true_cvr[mask].mean(dtype=np.float64))
                                           if mask.any() else float("nan"))
    return out
