"""How a learner's function is graded against one case: run it, then compare.

:func:`grade` runs the function on copies of the case's inputs, refuses
anything but outputs of exactly the expected kind, shape and dtype with
finite entries and no floating-point warning, checks that no input the
caller still needs was written into, then compares with our outputs and
with finite differences, and on a failure names the likely mistake.
"""

import copy
import warnings

import numpy as np

from .. import layers as L

OURS_TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def _copy_args(args):
    """Deep copies, so a function that writes into its inputs cannot change the case."""
    return copy.deepcopy(args)


def _arrays(obj, name):
    """The arrays an argument holds, as (name, ndarray): nested tuples, lists, model.params."""
    if isinstance(obj, np.ndarray):
        return [(name, obj)]
    if isinstance(obj, (tuple, list)):
        return [a for i, o in enumerate(obj) for a in _arrays(o, f"{name}[{i}]")]
    params = getattr(obj, "params", None)
    if isinstance(params, dict):
        return [(f"{name}.params[{k!r}]", w) for k, w in params.items()]
    return []


def _call(fn, args, consumed=0):
    """Run ``fn(*args)``; return (output, floating-point warnings, exception or None, written).

    ``written`` names the first input the function wrote into (None if none),
    ignoring the first ``consumed`` arguments. The caller still needs the
    others (a forward's or a loss's input, e.g. the CTR logit both losses
    read; the cache a backward reads, which holds arrays the forward also
    returned; the model), so a function that overwrites them is wrong even
    when what it returns is right. A backward's upstream gradient is consumed:
    computing into it in place is fine.
    """
    given = _copy_args(args)
    with warnings.catch_warnings(record=True) as caught, \
            np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"):
        warnings.simplefilter("always")
        try:
            out = fn(*given)
        except Exception as exc:  # a learner's bug is a result to report, not a crash
            return None, [], exc, None
    fp = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    written = None
    for i, (a, b) in enumerate(zip(args[consumed:], given[consumed:]), start=consumed):
        for (nm, before), (_, after) in zip(_arrays(a, f"argument {i + 1}"),
                                            _arrays(b, f"argument {i + 1}")):
            if not np.array_equal(before, after, equal_nan=before.dtype.kind == "f"):
                written = nm
                break
        if written:
            break
    return out, fp, None, written


def _flatten(out, names, expected_dtype, like):
    """The outputs as a list of (name, ndarray); raises ValueError naming what is wrong.

    ``like`` is our output, which fixes the structure: a tuple of arrays and
    floats, a single array, or (loss, dict of arrays).
    """
    if len(names) == 1:
        out, like = (out,), (like,)
    if isinstance(out, L.SparseRows) or not isinstance(out, (tuple, list)):
        raise ValueError(f"returned one {type(out).__name__}; expected a tuple of "
                         f"{len(names)}: {', '.join(names)}")
    if len(out) != len(names):
        raise ValueError(f"returned {len(out)} values; expected {len(names)}: {', '.join(names)}")
    flat = []
    for name, o, ref in zip(names, out, like):
        if isinstance(ref, dict):
            if not isinstance(o, dict):
                raise ValueError(f"{name} is a {type(o).__name__}; expected a dict keyed like "
                                 "model.params")
            if set(o) != set(ref):
                missing, extra = sorted(set(ref) - set(o)), sorted(set(o) - set(ref))
                raise ValueError(f"{name} keys differ from model.params: missing {missing}, "
                                 f"extra {extra}")
            flat += _flatten(tuple(o[k] for k in ref), tuple(f"{name}[{k!r}]" for k in ref),
                             expected_dtype, tuple(ref.values()))
            continue
        if isinstance(o, L.SparseRows):
            o = L.sparse_to_dense(o)
        if isinstance(ref, float):        # a loss value: a real scalar
            if not (np.ndim(o) == 0 and np.isrealobj(o)
                    and isinstance(np.asarray(o).item(), (int, float))):
                raise ValueError(f"{name} should be a number (the mean over the batch), got "
                                 f"{type(o).__name__} of shape {np.shape(o)}")
            flat.append((name, np.asarray(o, dtype=np.float64)))
            continue
        ref = L.sparse_to_dense(ref) if isinstance(ref, L.SparseRows) else ref
        if not isinstance(o, np.ndarray):
            raise ValueError(f"{name} is a {type(o).__name__}; expected an ndarray of shape "
                             f"{ref.shape}")
        if o.shape != ref.shape:
            raise ValueError(f"{name} has shape {o.shape}, expected {ref.shape}"
                             + _shape_hint(o.shape, ref.shape))
        if o.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {o.dtype}, expected {ref.dtype} "
                             "(the dtype of the inputs)")
        flat.append((name, o))
    return flat


def _shape_hint(got, want):
    if tuple(reversed(got)) == want:
        return ": transposed?"
    if tuple(s for s in got if s != 1) == tuple(s for s in want if s != 1):
        return ": an extra or a missing axis of length 1 (this broadcasts silently elsewhere)"
    if len(got) > len(want):
        return ": a sum over the batch axis is missing"
    if len(got) < len(want):
        return ": summed over too many axes"
    return ""


def _rel(a, b):
    """``||a - b|| / (||a|| + ||b||)`` in float64; 0 when both are zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def _numeric_flat(names, numeric, like):
    """Finite-difference gradients aligned with the flattened output names (None: none)."""
    if len(names) == 1:
        numeric, like = list(numeric), (like,)
    flat = []
    for num, ref in zip(numeric, like):
        if isinstance(ref, dict):
            flat += [None if num is None else num[k] for k in ref]
        else:
            flat.append(num)
    return flat


def _matches(flat, other, names, dtype):
    """Does the learner's flattened output equal ``other``'s (a known mistake)?"""
    try:
        theirs = _flatten(other, names, dtype, other)
    except Exception:
        return False
    if len(theirs) != len(flat):
        return False
    return all(a.shape == b.shape and np.all(np.isfinite(b)) and _rel(a, b) <= 1e-6
               for (_, a), (_, b) in zip(flat, theirs))


def grade(fn, case, ours, mistakes, consumed=0):
    """Run ``fn`` on one case; return a dict: label, tried, rel_ours, rel_fd, ok, hint.

    Parameters
    ----------
    fn : the learner's function
    case : a :class:`~esmm_np.teach.cases.Case`
    ours : our function for the same exercise (the outputs ``fn`` must match)
    mistakes : list of (wrong function, hint), tried in order on a failure
    consumed : how many leading arguments ``fn`` may overwrite (a backward's
        upstream gradient)
    """
    expected = ours(*_copy_args(case.args))
    dtype = case.args[0].dtype           # of the first array, or of the model
    result = {"label": case.label, "tried": case.tried, "rel_ours": np.nan, "rel_fd": np.nan,
              "ok": False, "hint": ""}
    out, fp, exc, written = _call(fn, case.args, consumed=consumed)
    if exc is not None:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        result["hint"] = f"raised {type(exc).__name__}: {msg}"[:160]
        if isinstance(exc, NotImplementedError):
            result["hint"] = "not written yet (raises NotImplementedError)"
        return result
    if written is not None:
        result["hint"] = (f"wrote into its input ({written}): the caller still needs it; "
                          "compute into new arrays (y = x * s, not x *= s)")
        return result
    try:
        flat = _flatten(out, case.outputs, dtype, expected)
    except ValueError as err:
        result["hint"] = str(err)
        return result
    ours = _flatten(expected, case.outputs, dtype, expected)
    bad = [nm for nm, a in flat if not np.all(np.isfinite(a))]
    if fp or bad:
        what = (f"{', '.join(bad)} has NaN or inf entries" if bad
                else f"floating-point warning: {fp[0]}")
        result["hint"] = what + (f"; {case.hint}" if case.hint else "")
        return result
    tol_ours = OURS_TOL[np.dtype(dtype)]
    errs = [(_rel(a, b), nm) for (nm, a), (_, b) in zip(flat, ours)]
    rel_ours, worst = max(errs)
    result["rel_ours"] = rel_ours
    numeric = _numeric_flat(case.outputs, case.numeric, expected)
    fd_errs = [(_rel(a, num), nm) for (nm, a), num in zip(flat, numeric) if num is not None]
    rel_fd, worst_fd = max(fd_errs) if fd_errs else (np.nan, None)
    result["rel_fd"] = rel_fd
    ok = rel_ours <= tol_ours and (not fd_errs or rel_fd <= case.fd_tol)
    result["ok"] = bool(ok)
    if not ok:
        for wrong, hint in mistakes:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    other = wrong(*_copy_args(case.args))
                except Exception:
                    continue
            # Name a mistake only if this case can tell it from the right answer.
            if _matches(flat, other, case.outputs, dtype) and not _matches(
                    ours, other, case.outputs, dtype):
                result["hint"] = hint
                return result
        off = worst if rel_ours > tol_ours else worst_fd
        result["hint"] = f"{off} is off" + (f"; {case.hint}" if case.hint else "")
    return result



def format_results(name, signature, results):
    """The table :func:`esmm_np.exercises.check` prints: one line per case, hints, a verdict."""
    lines = [f"{name}: {signature}",
             f"{'case':<24} {'tried':<72} {'vs ours':>8} {'vs f.d.':>8}  ok", "-" * 120]
    for r in results:
        fmt = lambda x: "    -   " if np.isnan(x) else f"{x:8.1e}"  # noqa: E731
        lines.append(f"{r['label']:<24} {r['tried'][:72]:<72} {fmt(r['rel_ours'])} "
                     f"{fmt(r['rel_fd'])}  {'yes' if r['ok'] else 'NO'}")
        if not r["ok"]:
            lines.append(f"{'':<4}hint: {r['hint']}")
    n_ok = sum(r["ok"] for r in results)
    verdict = "PASS" if n_ok == len(results) else "FAIL"
    lines.append("-" * 120)
    lines.append(f"{name}: {n_ok}/{len(results)} cases passed: {verdict}. 'vs ours' and "
                 "'vs f.d.' are relative errors; '-' where not compared.")
    return "\n".join(lines)

