"""Gradient checking: compare the hand-written backward pass with finite differences.

Learners call this themselves: :func:`check_model` returns one row per
parameter tensor and :func:`format_table` prints them. The numerical
gradient uses centred differences,

    df/dw_j ~ (f(w + h e_j) - f(w - h e_j)) / (2 h),

whose error is O(h^2), in float64. What "good" looks like: a relative error
around 1e-7 or below for a whole model and 1e-9 or below for a single smooth
layer; ReLU kinks or a clipped loss can raise it, a wrong formula gives 1e-2
or worse.
"""

import numpy as np

from .layers import SparseRows, sparse_to_dense
from .model import ESMM


def numerical_gradient(f, x, h=1e-5, index=None):
    """Centred-difference gradient of the scalar function ``f()`` with respect to ``x``.

    Parameters
    ----------
    f : callable with no arguments returning a float; it must read ``x`` live
    x : ndarray, float64, perturbed in place and restored
    h : float > 0, finite
    index : ndarray of flat indices, optional
        Only these entries are estimated; the others are left at 0 and are
        not checked (pass :func:`checked_mask` of ``index`` to :func:`compare`).

    Returns
    -------
    ndarray of the shape of ``x``
    """
    h = _check_step(h)
    grad = np.zeros(x.shape)
    flat, gflat = x.reshape(-1), grad.reshape(-1)   # views: writes reach x and grad
    for j in (range(x.size) if index is None else index):
        old = flat[j]
        flat[j] = old + h
        f_plus = f()
        flat[j] = old - h
        f_minus = f()
        flat[j] = old
        gflat[j] = (f_plus - f_minus) / (2 * h)
    return grad


def checked_mask(shape, index=None):
    """Boolean mask of the entries :func:`numerical_gradient` estimated (all when ``index`` is None).

    "Not checked" is this mask, never a NaN in the gradient: a NaN there
    would be indistinguishable from a NaN the computation produced.
    """
    mask = np.ones(shape, dtype=bool) if index is None else np.zeros(shape, dtype=bool)
    if index is not None:
        mask.reshape(-1)[index] = True
    return mask


def _check_step(h):
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) \
            or not np.isfinite(h) or h <= 0:
        raise ValueError(f"the finite-difference step h must be a finite number > 0, got {h!r}")
    return float(h)


#: Noise level of a gradient entry. A centred difference carries rounding noise
#: of about eps * |loss| / h ~ 2e-16 * 1 / 1e-5 = 2e-11, so for a tensor whose
#: true gradient is zero (a bias just before batch norm, whose shift the
#: normalisation removes) the relative error compares two noises and means
#: nothing. When both estimates stay below 1e-9 (fifty times that noise) in
#: every entry, the tensor is ok as "zero gradient"; a wrong backward pass for
#: such a tensor produces entries far above it.
ATOL = 1e-9


def relative_error(analytic, numeric, checked=None):
    """``||a - n|| / (||a|| + ||n||)`` over the checked entries (0 if both are 0).

    NaN when any checked entry of either is NaN or inf: such a tensor has no
    meaningful error, and :func:`compare` marks it failed.
    """
    keep = np.ones(np.shape(analytic), dtype=bool) if checked is None else checked
    a, n = np.asarray(analytic)[keep], np.asarray(numeric)[keep]
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(n))):
        return float("nan")
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - n) / denom)


def compare(name, analytic, numeric, tol, atol=ATOL, checked=None):
    """One table row: name, shape, max |a - n|, relative error, ok.

    ok when every checked entry of both gradients is finite and either the
    relative error is at most ``tol`` or both gradients are zero up to
    rounding noise (every entry of both within ``atol``). A NaN or inf entry
    always fails; the row's ``non_finite`` counts them.

    Parameters
    ----------
    analytic, numeric : ndarray of the same shape
    tol, atol : finite float >= 0
    checked : ndarray of bool of that shape, optional
        The entries to compare (default all); see :func:`checked_mask`.
    """
    for value, what in ((tol, "tol"), (atol, "atol")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or value < 0:
            raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    for what, g in (("analytic", analytic), ("numeric", numeric)):
        if np.iscomplexobj(g):            # float64 would silently drop the imaginary part
            raise TypeError(f"{name}: the {what} gradient must be real, got {np.asarray(g).dtype}")
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"{name}: analytic shape {analytic.shape} != numeric shape {numeric.shape}")
    keep = np.ones(analytic.shape, dtype=bool) if checked is None else np.asarray(checked, bool)
    a, n = analytic[keep], numeric[keep]
    non_finite = int(np.count_nonzero(~np.isfinite(a)) + np.count_nonzero(~np.isfinite(n)))
    rel = relative_error(analytic, numeric, keep)
    if non_finite:
        diff, zero, ok = float("nan"), False, False
    else:
        diff = float(np.max(np.abs(a - n))) if keep.any() else 0.0
        zero = bool(np.all(np.abs(a) <= atol) and np.all(np.abs(n) <= atol))
        ok = rel <= tol or zero
    return {"tensor": name, "shape": tuple(analytic.shape), "max_abs_diff": diff,
            "rel_error": rel, "zero_gradient": zero, "non_finite": non_finite,
            "n_checked": int(keep.sum()), "ok": bool(ok)}


def check_model(model, X, *labels, dense=None, h=1e-5, tol=1e-6, seed=0, max_entries=None,
                bags=None):
    """Check every parameter tensor of ``model`` against finite differences.

    Parameters
    ----------
    model : ESMM or TowerModel built with ``dtype=float64``
    X, *labels, dense : a (small) batch, as for ``model.loss``
    h : float
        Finite-difference step.
    tol : float
        A row is ``ok`` when its relative error is at most ``tol`` (or, for a
        tensor whose true gradient is zero, both estimates are within ``ATOL`` of 0).
    seed : int
        Fixes the dropout masks, so every loss evaluation sees the same network.
    max_entries : int, optional
        Check at most this many randomly chosen entries per tensor (large tables).
    bags : dict field -> (offsets, ids, weights), optional
        The multi-valued fields, for a model built with ``bag_dims``.

    Returns
    -------
    list of dict, one per tensor: tensor, shape, max_abs_diff, rel_error,
    zero_gradient, ok
    """
    if model.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model: float32 rounding "
                         "(~1e-7) swamps a finite difference with h = 1e-5")

    def f():
        return model.loss(X, *labels, dense=dense, seed=seed, **bag_kw)[0]

    h = _check_step(h)
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(
            max_entries, (int, np.integer)) or max_entries < 1):
        raise ValueError(f"max_entries must be None or an integer >= 1, got {max_entries!r}")
    bag_kw = {} if bags is None else {"bags": bags}
    _, grads = model.loss(X, *labels, dense=dense, seed=seed, **bag_kw)
    pick = np.random.default_rng(seed)
    rows = []
    for name, w in model.params.items():
        index = None
        if max_entries is not None and w.size > max_entries:
            index = pick.choice(w.size, size=max_entries, replace=False)
        rows.append(compare(name, grads[name], numerical_gradient(f, w, h, index), tol,
                            checked=checked_mask(w.shape, index)))
    return rows


def format_table(rows):
    """Render :func:`check_model`'s rows as a fixed-width text table."""
    lines = [f"{'tensor':<18} {'shape':<12} {'max |a - n|':>12} {'rel. error':>11}  ok",
             "-" * 60]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        ok = ("yes (zero)" if r["zero_gradient"] else "yes") if r["ok"] else "NO"
        if r.get("non_finite"):
            ok = f"NO ({r['non_finite']} NaN/inf)"
        lines.append(f"{r['tensor']:<18} {shape:<12} {r['max_abs_diff']:>12.2e} "
                     f"{r['rel_error']:>11.2e}  {ok}")
    lines.append("-" * 60)
    lines.append(f"{sum(r['ok'] for r in rows)}/{len(rows)} tensors ok")
    live = [r for r in rows if not r["zero_gradient"] and not r.get("non_finite")]
    if any(r.get("non_finite") for r in rows):
        lines.append("NaN/inf: a gradient entry is not a finite number, so the check fails "
                     "whatever the other entries say")
    if live:
        worst = max(live, key=lambda r: r["rel_error"])
        lines.append(f"worst relative error {worst['rel_error']:.2e} ({worst['tensor']})")
    if any(r["zero_gradient"] for r in rows):
        lines.append(f"(zero): true gradient is zero; both estimates are below {ATOL:g} "
                     "in every entry, so their relative error is rounding noise")
    return "\n".join(lines)


def everything_on_example(n=16, seed=0):
    """A small float64 ESMM with every option switched on, a batch for it, and its rows.

    PReLU activations, dropout, batch norm, L2 on embeddings and towers,
    dense features, different tower sizes per tower, unequal loss weights.
    Parameters are perturbed away from their initial values (zero biases and
    unit BN scales could hide a wrong backward pass).

    Returns
    -------
    model, (X, click, conversion, dense)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"the example needs n >= 2 rows (batch norm and both click "
                         f"classes), got {n!r}")
    model = ESMM(EXAMPLE_FIELD_DIMS, **EXAMPLE_OPTIONS, seed=seed)
    return model, perturb_and_draw(model, n, seed)


# The every-option configuration, shared with esmm_np.escm2's example.
EXAMPLE_FIELD_DIMS = (7, 5, 3)
EXAMPLE_OPTIONS = dict(embed_dim=3, tower_units=((6, 4), (5,)), activation="prelu", dropout=0.2,
                       batch_norm=True, l2_reg_embedding=1e-2, l2_reg_dnn=1e-2, n_dense=2,
                       loss_weights=(1.0, 0.7))


def perturb_and_draw(model, n, seed):
    """Move ``model``'s parameters off their initial values and draw a batch for it.

    Zero biases and unit BN scales could hide a wrong backward pass, hence the
    perturbation. Returns ``(X, click, conversion, dense)`` with both click
    classes and at least one conversion present.
    """
    rng = np.random.default_rng(seed)
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)
    X = np.stack([rng.integers(0, d, size=n) for d in model.field_dims], axis=1)
    click = rng.integers(0, 2, size=n)
    click[:2] = (0, 1)                                   # both classes present
    conversion = click * rng.integers(0, 2, size=n)
    conversion[1] = 1
    dense = rng.standard_normal((n, model.n_dense))
    return X, click, conversion, dense


# ------------------------------------------------------------- one layer

#: Bar for one layer in float64 (docs/derivation.md, section 8): a correct
#: smooth layer lands near 1e-10 (truncation ~h^2, rounding ~1e-16 / h), a
#: wrong term gives 1e-3 or worse.
LAYER_TOL = 1e-9


def _as_dense(g):
    """A layer gradient as an ndarray (a :class:`~esmm_np.layers.SparseRows` is expanded)."""
    return sparse_to_dense(g) if isinstance(g, SparseRows) else g


def layer_row(name, analytic, numeric, tol=LAYER_TOL, atol=ATOL):
    """One table row comparing an analytic gradient with a finite-difference one.

    The row of :func:`compare` (every entry checked; a NaN or inf entry
    fails it), plus ``"problem"``: why the row failed outright, or None.
    Unlike :func:`compare`, an analytic gradient that is not an array of the
    input's shape (a broadcastable ``(1, d)`` for ``(d,)``, a scalar, None)
    is a failed row, not an exception, so a table can show it.

    Returns
    -------
    dict with tensor, shape, max_abs_diff, rel_error, zero_gradient, non_finite, ok, problem
    """
    a = _as_dense(analytic)
    numeric = np.asarray(numeric)
    if not isinstance(a, np.ndarray) or a.shape != numeric.shape:
        return {"tensor": name, "shape": numeric.shape, "max_abs_diff": float("inf"),
                "rel_error": float("inf"), "zero_gradient": False, "non_finite": 0,
                "n_checked": 0, "ok": False,
                "problem": f"gradient has shape {np.shape(a)}, the input has {numeric.shape}"}
    row = compare(name, a, numeric, tol, atol)
    row["problem"] = "gradient has NaN or inf entries" if row["non_finite"] else None
    return row


def check_layer(forward, backward, inputs, names=None, *, h=1e-5, tol=LAYER_TOL, seed=0,
                dout=None):
    """Check a layer's backward against finite differences, every input at once.

    The trick: for a fixed random upstream gradient ``dout`` of the output's
    shape, the scalar ``f = sum(forward(*inputs) * dout)`` has as gradient
    with respect to each input exactly what ``backward(dout, cache)`` must
    return. So one centred-difference estimate of ``f`` per input checks the
    whole backward of an array-valued function.

    Parameters
    ----------
    forward : callable(*inputs) -> (out, cache, ...)
        A layer forward as in :mod:`esmm_np.layers`; extra return values
        (batch norm's batch statistics) are ignored.
    backward : callable(dout, cache) -> gradient or tuple of gradients
        One gradient per differentiable input, in the order of ``inputs``
        (a :class:`~esmm_np.layers.SparseRows` is expanded to the full table).
    inputs : sequence of ndarray
        The layer's inputs, float64 where a gradient is checked. Integer
        arrays (ids) are passed through and get no gradient.
    names : sequence of str, optional
        Names of the differentiable inputs for the table (default x0, x1, ...).
    h : float
        Finite-difference step.
    tol : float
        Relative-error bar per input (default :data:`LAYER_TOL`).
    seed : int
        Seeds ``dout``.
    dout : ndarray, optional
        A fixed upstream gradient instead of a random one.

    Returns
    -------
    list of dict, one per differentiable input, as :func:`layer_row`
    (print them with :func:`format_table`). An input is ``ok`` only when its
    gradient has the input's shape, is finite and is within ``tol``.

    Examples
    --------
    >>> rows = check_layer(layers.affine_forward, layers.affine_backward, (x, W, b),
    ...                    names=("x", "W", "b"))
    >>> print(format_table(rows))
    """
    inputs = list(inputs)
    diff = [i for i, x in enumerate(inputs)
            if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)]
    if any(inputs[i].dtype != np.float64 for i in diff):
        raise ValueError("check_layer needs float64 inputs: float32 rounding (~1e-7) "
                         "swamps a finite difference with h = 1e-5")
    names = [f"x{i}" for i in diff] if names is None else list(names)
    if len(names) != len(diff):
        raise ValueError(f"{len(names)} names for {len(diff)} differentiable inputs")
    out = forward(*inputs)[0]
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    # The backward gets copies: it may reuse dout's memory or (wrongly) write
    # into the cache, which holds the inputs themselves; the finite
    # differences below must still see the original dout and inputs.
    given = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in inputs]
    analytic = backward(np.array(dout, copy=True), forward(*given)[1])
    # One gradient, although SparseRows is a namedtuple (a tuple).
    several = isinstance(analytic, (tuple, list)) and not isinstance(analytic, SparseRows)
    analytic = list(analytic) if several else [analytic]
    if len(analytic) != len(diff):
        problem = (f"backward returned {len(analytic)} gradient(s) for "
                   f"{len(diff)} differentiable input(s)")
        return [dict(layer_row(nm, None, inputs[i], tol), problem=problem)
                for nm, i in zip(names, diff)]
    analytic = [np.array(_as_dense(a), copy=True) if isinstance(_as_dense(a), np.ndarray)
                else a for a in analytic]   # copies: the estimates below perturb the inputs

    def f():
        return float(np.sum(forward(*inputs)[0] * dout))

    return [layer_row(nm, a, numerical_gradient(f, inputs[i], h), tol)
            for nm, a, i in zip(names, analytic, diff)]
