"""How a learner's function is graded against one case: run it, then compare.

:func:`grade` runs the function on copies of the case's inputs, refuses
anything but outputs of exactly the expected kind, shape and dtype with
finite entries and no floating-point warning, checks that no input the
caller still needs was written into, then compares with our outputs and
with finite differences, and on a failure names the likely mistake.
"""

import copy
import warnings
from collections import namedtuple

import numpy as np

from .. import layers as L
from .guard import TIME_LIMIT, PackageSnapshot, Recorder, TimedOut, call_with_time_limit

OURS_TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
#: How close a learner's outputs must be to a known mistake's for the hint to name it: far
#: looser than OURS_TOL (the two may be written differently, float32 rounds at 1e-7 per
#: operation), far tighter than the 1e-3 and more by which a mistake differs from the answer.
MATCH_TOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-4}


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


#: What a learner's run produced (see :func:`_call`).
Run = namedtuple("Run", ["out", "fp", "exc", "written", "patched", "model_change", "calls"])

#: The model's methods that compute the answer of a whole-model exercise.
_MODEL_ANSWERS = ("loss", "train_loss")


def _model_of(args):
    """The model among the arguments (a whole-model exercise), or None."""
    first = args[0] if args else None
    return first if isinstance(getattr(first, "params", None), dict) else None


def _differs(a, b):
    """Do two snapshots of a model attribute differ (arrays by value, containers entry by entry)?"""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                    and a.shape == b.shape and a.dtype == b.dtype
                    and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict) or isinstance(b, dict):
        return (type(a) is not type(b) or a.keys() != b.keys()
                or any(_differs(a[k], b[k]) for k in a))
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (type(a) is not type(b) or len(a) != len(b)
                or any(_differs(x, y) for x, y in zip(a, b)))
    if isinstance(a, np.random.Generator) or isinstance(b, np.random.Generator):
        return (type(a) is not type(b)
                or _differs(a.bit_generator.state, b.bit_generator.state))
    try:
        return bool(a != b)
    except Exception:       # an object without a usable comparison: identity
        return a is not b


def _model_change(before, model):
    """A sentence naming how ``model`` differs from the snapshot ``before``, or None."""
    now = vars(model)
    params, params0 = now.get("params", {}), before.get("params", {})
    if isinstance(params, dict) and isinstance(params0, dict):
        added, removed = sorted(set(params) - set(params0)), sorted(set(params0) - set(params))
        if added:
            return (f"added a parameter, model.params[{added[0]!r}]: the gradients must be "
                    "those of the parameters the model was given, and the model left as it was")
        if removed:
            return f"removed model.params[{removed[0]!r}]: leave the model as it was given"
    for key in sorted(set(now) - set(before)):
        return f"added model.{key}: an answer reads the model, it must not change it"
    for key in sorted(before):
        if key not in now:
            return f"deleted model.{key}: an answer reads the model, it must not change it"
        if _differs(before[key], now[key]):
            shown = "" if isinstance(now[key], (dict, np.ndarray)) else \
                f" (from {before[key]!r} to {now[key]!r})"
            return (f"changed model.{key}{shown}: an answer reads the model's options and "
                    "parameters, it must not change them")
    return None


def _call(fn, args, consumed=0, time_limit=TIME_LIMIT):
    """Run ``fn(*args)`` on copies, guarded; return a :data:`Run`.

    ``written`` names the first input the function wrote into (None if none),
    ignoring the first ``consumed`` arguments. The caller still needs the
    others (a forward's or a loss's input, e.g. the CTR logit both losses
    read; the cache a backward reads, which holds arrays the forward also
    returned; the model), so a function that overwrites them is wrong even
    when what it returns is right. A backward's upstream gradient is consumed:
    computing into it in place is fine.

    The call has a time limit (``exc`` is then a :class:`~esmm_np.teach.guard.TimedOut`);
    ``patched`` lists what it changed in the package or NumPy (put back
    since); ``model_change`` says how it changed the model it was given;
    ``calls`` lists its calls of the model class's :data:`_MODEL_ANSWERS`
    (the answer a whole-model exercise asks for), on this model or any other.
    """
    given = _copy_args(args)
    model = _model_of(given)
    targets, before = [], None
    if model is not None:
        # Recorded on the classes, so that ESMM.loss(model, ...) or a fresh ESMM's loss
        # counts as well as model.loss(...).
        targets = [(cls, a, f"model.{a}") for cls in type(model).__mro__
                   for a in _MODEL_ANSWERS if a in vars(cls)]
        before = copy.deepcopy(vars(model))
    out, exc, patched = None, None, []
    with warnings.catch_warnings(record=True) as caught, \
            np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"), \
            Recorder(targets) as calls:
        warnings.simplefilter("always")
        snapshot = PackageSnapshot()
        try:
            out = call_with_time_limit(fn, given, time_limit)
        except (Exception, SystemExit) as err:  # a learner's bug is a result, not a crash
            exc = err
        finally:
            patched = snapshot.restore()
    fp = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    written = None
    for i, (a, b) in enumerate(zip(args[consumed:], given[consumed:]), start=consumed):
        for (nm, was), (_, now) in zip(_arrays(a, f"argument {i + 1}"),
                                       _arrays(b, f"argument {i + 1}")):
            if not np.array_equal(was, now, equal_nan=was.dtype.kind == "f"):
                written = nm
                break
        if written:
            break
    change = _model_change(before, model) if model is not None and exc is None else None
    return Run(out, fp, exc, written, patched, change, list(calls))


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


def _rel_entries(a, b, floor):
    """The worst entry's ``(|a - b| - floor) / (|a| + |b|)`` and its index; 0 where both agree.

    Relative error entry by entry, for the extreme cases: there an entry of
    4e-18 matters beside entries of 1. ``floor`` (the dtype's smallest normal
    number) forgives differences below what the dtype represents at full
    precision, so a value that underflows to 0 instead of a subnormal passes.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0:
        return 0.0, 0
    with np.errstate(all="ignore"):
        excess = np.maximum(np.abs(a - b) - floor, 0.0)
        denom = np.abs(a) + np.abs(b)
        rel = np.where(excess > 0, excess / np.where(denom > 0, denom, 1.0), 0.0)
    i = int(np.argmax(rel))
    return float(rel[i]), i


def _error(a, b, entrywise, floor):
    """The error a case judges by: one norm over the array, or the worst entry."""
    return _rel_entries(a, b, floor)[0] if entrywise else _rel(a, b)


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


def _matches(flat, other, names, dtype, entrywise=False):
    """Does the learner's flattened output equal ``other``'s (a known mistake)?"""
    try:
        theirs = _flatten(other, names, dtype, other)
    except Exception:
        return False
    if len(theirs) != len(flat):
        return False
    floor = np.finfo(dtype).tiny
    return all(a.shape == b.shape and np.all(np.isfinite(b))
               and _error(a, b, entrywise, floor) <= MATCH_TOL[np.dtype(dtype)]
               for (_, a), (_, b) in zip(flat, theirs))


def _where(flat, ours, name, floor):
    """``" (entry i: theirs, ours)"`` for the worst entry of output ``name``, or ``""``."""
    a = dict(flat)[name]
    b = dict(ours)[name]
    if a.size < 2:
        return ""
    _, i = _rel_entries(a, b, floor)
    idx = tuple(int(j) for j in np.unravel_index(i, a.shape))
    idx = idx[0] if len(idx) == 1 else idx
    return f" (entry {idx}: {a.ravel()[i]:.3g}, ours {b.ravel()[i]:.3g})"


def grade(fn, case, ours, mistakes, consumed=0, time_limit=TIME_LIMIT):
    """Run ``fn`` on one case; return a dict: label, tried, rel_ours, rel_fd, ok, hint.

    Parameters
    ----------
    fn : the learner's function
    case : a :class:`~esmm_np.teach.cases.Case`
    ours : our function for the same exercise (the outputs ``fn`` must match)
    mistakes : list of (wrong function, hint), tried in order on a failure
    consumed : how many leading arguments ``fn`` may overwrite (a backward's
        upstream gradient)
    time_limit : seconds ``fn`` may take (None: no limit)

    A whole-model answer (the first argument has ``.params``) gets a copy of
    the model; it fails if it changes the copy's options or parameters, or
    if it calls the model's own ``loss`` (the answer it is asked to write).
    """
    expected = ours(*_copy_args(case.args))
    dtype = case.args[0].dtype           # of the first array, or of the model
    result = {"label": case.label, "tried": case.tried, "rel_ours": np.nan, "rel_fd": np.nan,
              "ok": False, "hint": ""}
    run = _call(fn, case.args, consumed=consumed, time_limit=time_limit)
    if run.patched:
        more = f" and {len(run.patched) - 1} more" if len(run.patched) > 1 else ""
        result["hint"] = (f"changed {run.patched[0]}{more} while it ran: an answer computes "
                          "its outputs, it must not patch the checker, the package or NumPy "
                          "(all of it has been put back)")
        return result
    if run.exc is not None:
        exc = run.exc
        msg = str(exc).splitlines()[0] if str(exc) else ""
        result["hint"] = f"raised {type(exc).__name__}: {msg}"[:160]
        if isinstance(exc, TimedOut):
            result["hint"] = str(exc)
        if isinstance(exc, NotImplementedError):
            result["hint"] = "not written yet (raises NotImplementedError)"
        return result
    if run.written is not None:
        result["hint"] = (f"wrote into its input ({run.written}): the caller still needs it; "
                          "compute into new arrays (y = x * s, not x *= s)")
        return result
    if run.model_change is not None:
        result["hint"] = run.model_change
        return result
    try:
        flat = _flatten(run.out, case.outputs, dtype, expected)
    except ValueError as err:
        # A wrong shape can still be a known mistake (a gradient summed over the batch):
        # then the hint names it after the shape.
        named = _shaped_like_mistake(run.out, case, mistakes, dtype)
        result["hint"] = str(err) + (f"; {named}" if named else "")
        return result
    ours = _flatten(expected, case.outputs, dtype, expected)
    bad = [nm for nm, a in flat if not np.all(np.isfinite(a))]
    if run.fp or bad:
        verb = "has" if len(bad) == 1 else "have"
        what = (f"{', '.join(bad)} {verb} NaN or inf entries" if bad
                else f"floating-point warning: {run.fp[0]}")
        result["hint"] = what + (f"; {case.hint}" if case.hint else "")
        return result
    tol_ours = OURS_TOL[np.dtype(dtype)]
    floor = np.finfo(dtype).tiny
    errs = [(_error(a, b, case.entrywise, floor), nm) for (nm, a), (_, b) in zip(flat, ours)]
    rel_ours, worst = max(errs)
    result["rel_ours"] = rel_ours
    numeric = _numeric_flat(case.outputs, case.numeric, expected)
    fd_errs = [(_rel(a, num), nm) for (nm, a), num in zip(flat, numeric) if num is not None]
    rel_fd, worst_fd = max(fd_errs) if fd_errs else (np.nan, None)
    result["rel_fd"] = rel_fd
    ok = rel_ours <= tol_ours and (not fd_errs or rel_fd <= case.fd_tol)
    if ok and run.calls:
        result["hint"] = (f"calls {run.calls[0]}, the package's own answer: assemble "
                          "the loss from the parts (the lookup, each tower's layers, the two "
                          "losses) and walk their backwards in reverse")
        return result
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
            if _matches(flat, other, case.outputs, dtype, case.entrywise) and not _matches(
                    ours, other, case.outputs, dtype, case.entrywise):
                result["hint"] = hint
                return result
        if rel_ours > tol_ours:
            off = f"{worst} is off" + _where(flat, ours, worst, floor)
        else:
            off = f"{worst_fd} is off (against finite differences)"
        result["hint"] = off + (f"; {case.hint}" if case.hint else "")
    return result


def _shaped_like_mistake(out, case, mistakes, dtype):
    """The hint of the known mistake whose outputs (shapes included) equal ``out``, or None."""
    for wrong, hint in mistakes:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                other = wrong(*_copy_args(case.args))
                flat = _flatten(out, case.outputs, dtype, other)
            except Exception:
                continue
        if _matches(flat, other, case.outputs, dtype, case.entrywise):
            return hint
    return None


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

