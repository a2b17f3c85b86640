"""Running a learner's function so that it cannot hang the checker or change it.

Two things a grader must survive, whatever the function does:

- **A function that never returns** (a loop whose condition never turns
  false). :func:`call_with_time_limit` stops it after a time limit. In the
  main thread (a script, pytest, a Jupyter kernel's cell) it uses a
  ``SIGALRM`` timer, which interrupts Python code wherever it is; elsewhere
  (another thread, Windows, or a timer already set by someone else, such as
  pytest-timeout) it runs the function in a daemon thread and stops waiting
  for it. A thread cannot be killed, so there the function may keep running
  in the background; the result is still "did not return in time".
- **A function that patches the checker** (replaces ``np.isfinite``, a
  tolerance, our reference, a method of ``ESMM``) so that a wrong answer
  compares as right. :class:`PackageSnapshot` records every binding of every
  loaded ``esmm_np`` module, of the classes they define and of NumPy's main
  namespaces before the call; afterwards it names what changed and puts it
  all back, so the grade is computed by the real machinery and the next
  check is not affected.
"""

import signal
import sys
import threading

import numpy as np

#: Seconds one call of a learner's function may take. A correct answer to
#: any exercise takes milliseconds on the checker's small cases; a loaded
#: machine is slower, but not a thousand times.
TIME_LIMIT = 10.0


class _TimeUp(BaseException):
    """Raised inside the learner's function by the alarm (a BaseException, so
    that a learner's ``except Exception`` cannot swallow it)."""


class TimedOut(Exception):
    """The learner's function did not return within the time limit."""

    def __init__(self, seconds, still_running=False):
        self.seconds = seconds
        self.still_running = still_running
        msg = (f"did not return within {seconds:g} s (an endless loop? a loop whose "
               "condition never turns false?)")
        if still_running:
            msg += "; it may still be running in the background"
        super().__init__(msg)


def _alarm_usable():
    """SIGALRM works here: Unix, the main thread, and no timer set by someone else."""
    return (hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0)


def check_time_limit(seconds):
    """``seconds`` as a float, or None (no limit); a sentence for anything else."""
    if seconds is None:
        return None
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating))
            or not 0 < seconds < 1e6):
        raise ValueError(f"time_limit must be a positive number of seconds (or None for no "
                         f"limit), got {seconds!r}")
    return float(seconds)


def call_with_time_limit(fn, args, seconds=TIME_LIMIT):
    """``fn(*args)``, or :class:`TimedOut` if it takes longer than ``seconds``.

    Exceptions of ``fn`` propagate unchanged. ``seconds=None`` means no limit.
    """
    seconds = check_time_limit(seconds)
    if seconds is None:
        return fn(*args)
    if _alarm_usable():
        return _call_with_alarm(fn, args, float(seconds))
    return _call_in_thread(fn, args, float(seconds))


def _call_with_alarm(fn, args, seconds):
    state = {"done": False, "fired": False}

    def on_alarm(signum, frame):
        if not state["done"]:
            state["fired"] = True
            signal.setitimer(signal.ITIMER_REAL, 0.2)   # again, should fn swallow this one
            raise _TimeUp

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            out = fn(*args)
            state["done"] = True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
    except _TimeUp:
        raise TimedOut(seconds) from None
    finally:
        signal.signal(signal.SIGALRM, previous)
    if state["fired"]:              # it caught the alarm and went on: still too slow
        raise TimedOut(seconds)
    return out


def _call_in_thread(fn, args, seconds):
    box = {}

    def run():
        # np.errstate is per thread (a context variable): set it where fn runs.
        with np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"):
            try:
                box["out"] = fn(*args)
            except BaseException as exc:  # handed to the caller below
                box["exc"] = exc

    worker = threading.Thread(target=run, name="esmm_np-exercise", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimedOut(seconds, still_running=True)
    if "exc" in box:
        raise box["exc"]
    return box["out"]


# ------------------------------------------------------------ patching

_CONTAINERS = (dict, list, set)


def _watched_modules():
    """The namespaces a patch could hide in: every loaded esmm_np module, NumPy's main ones."""
    mods = {name: m for name, m in list(sys.modules.items())
            if m is not None and (name == "esmm_np" or name.startswith("esmm_np."))}
    for name in ("numpy", "numpy.linalg", "math", "copy"):
        if name in sys.modules:
            mods[name] = sys.modules[name]
    return mods


def _content(value):
    """A copy of a container's entries (compared by identity later), or None for others."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, set):
        return set(value)
    return None


def _same_content(saved, value):
    if isinstance(value, dict):
        return saved.keys() == value.keys() and all(saved[k] is value[k] for k in saved)
    if isinstance(value, list):
        return len(saved) == len(value) and all(a is b for a, b in zip(saved, value))
    return saved == value


class PackageSnapshot:
    """Every binding of the watched modules and classes, to compare and restore after a call.

    Usage::

        snap = PackageSnapshot()
        ... the learner's function runs ...
        changed = snap.restore()     # names of what it changed, now put back
    """

    def __init__(self):
        self.modules = _watched_modules()
        self.names = {}       # module name -> dict of its globals
        self.contents = {}    # (module name, global) -> copy of a dict/list/set's entries
        self.classes = {}     # class -> dict of its attributes
        for mname, mod in self.modules.items():
            space = dict(vars(mod))
            self.names[mname] = space
            for key, value in space.items():
                if isinstance(value, _CONTAINERS) and mname.startswith("esmm_np"):
                    self.contents[(mname, key)] = _content(value)
                if (isinstance(value, type) and mname.startswith("esmm_np")
                        and getattr(value, "__module__", "").startswith("esmm_np")):
                    self.classes[value] = dict(vars(value))

    def restore(self):
        """Put back every changed binding; return a sorted list naming each change."""
        changed = []
        for mname, mod in self.modules.items():
            saved, now = self.names[mname], vars(mod)
            for key in list(now):
                if key in saved:
                    continue
                value = now[key]
                if getattr(value, "__name__", None) == f"{mname}.{key}":
                    continue      # a submodule imported for the first time: not a patch
                changed.append(f"{mname}.{key} (added)")
                delattr(mod, key)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    changed.append(f"{mname}.{key}")
                    setattr(mod, key, value)
        for (mname, key), entries in self.contents.items():
            value = self.names[mname][key]
            if not _same_content(entries, value):
                changed.append(f"{mname}.{key} (its entries)")
                value.clear()
                if isinstance(value, list):
                    value.extend(entries)
                else:
                    value.update(entries)
        for cls, saved in self.classes.items():
            now = dict(vars(cls))
            for key in now.keys() - saved.keys():
                changed.append(f"{cls.__module__}.{cls.__qualname__}.{key} (added)")
                delattr(cls, key)
            for key, value in saved.items():
                if key not in now or now[key] is not value:
                    changed.append(f"{cls.__module__}.{cls.__qualname__}.{key}")
                    setattr(cls, key, value)
        return sorted(changed)


class Recorder:
    """Replace attributes by wrappers that note each call, then put the originals back.

    Used to notice a whole-model answer that calls the package's answer
    (``model.loss``, ``esmm_np.reference.loss``) instead of computing it::

        with Recorder([(model, "loss", "model.loss")]) as calls:
            fn(model, ...)
        calls   # ["model.loss", ...], one entry per call
    """

    def __init__(self, targets):
        self.targets = [(owner, attr, label) for owner, attr, label in targets
                        if callable(getattr(owner, attr, None))]
        self.calls = []
        self._saved = []

    def __enter__(self):
        for owner, attr, label in self.targets:
            original = getattr(owner, attr)
            own = attr in vars(owner)          # a module's function, or an instance attribute
            self._saved.append((owner, attr, own, vars(owner).get(attr)))
            setattr(owner, attr, self._wrap(original, label))
        return self.calls

    def _wrap(self, original, label):
        calls = self.calls

        def recorded(*args, **kwargs):
            calls.append(label)
            return original(*args, **kwargs)
        return recorded

    def __exit__(self, *exc):
        for owner, attr, own, value in reversed(self._saved):
            if own:
                setattr(owner, attr, value)
            elif attr in vars(owner):          # (unless the function deleted it itself)
                delattr(owner, attr)           # uncovers the class's method again
        return False
