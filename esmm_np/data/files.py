"""Every file esmm_np writes goes through :func:`write_file`.

A write either completes or leaves the old file as it was:

- the new content goes to a fresh, uniquely named temporary file in the
  target's own folder (never a fixed ``X.tmp`` that could be a user's file),
  is flushed and ``fsync``-ed, then renamed over the target in one step
  (``os.replace`` is atomic within a file system);
- the target's permission bits are kept (a read-only file stays read-only),
  a new file gets the usual ``0o666`` minus the umask;
- a symbolic link is followed: its target is rewritten and the link stays;
- on any failure the temporary file is removed;
- text is UTF-8 whatever the locale.

:func:`to_strict_json` turns results into JSON that every parser accepts:
NaN and inf, which Python's ``json`` would write as the bare tokens
``NaN``/``Infinity``, become ``null`` and are listed with the reason.
"""

import json
import math
import os
import tempfile

import numpy as np


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path):
    """Raise unless ``path`` is, or can be created as, a writable folder.

    Called before long work, so a bad ``--out`` fails in a second rather
    than after minutes of training.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"output folder {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {path} is not writable")
        return
    parent = path
    while not os.path.exists(parent):          # the nearest folder that exists must take it
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot create output folder {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create output folder {path}: {parent} is not writable")


def check_writable_file(path):
    """Raise unless the existing file ``path`` can be replaced by :func:`write_file`."""
    target = os.path.realpath(path)
    if not os.path.isfile(target):
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    folder = os.path.dirname(target)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot replace {path}: its folder {folder} is not writable")


def write_file(path, content):
    """Write ``content`` to ``path`` atomically; see the module docstring.

    Parameters
    ----------
    path : str or os.PathLike
    content : str (written as UTF-8), bytes, or callable(binary file object)
        A callable writes the content itself (``np.savez``, ``fig.savefig``).

    Returns
    -------
    str, the path written (``path`` itself, not a symlink's target)
    """
    path = os.fspath(path)
    target = os.path.realpath(path)            # a symlink's target is what gets rewritten
    folder, name = os.path.split(target)
    if os.path.exists(target):
        mode = os.stat(target).st_mode & 0o7777
    else:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            elif isinstance(content, str):
                f.write(content.encode("utf-8"))
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)                    # mkstemp creates 0o600
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder):
    """Make the rename itself durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_text(path):
    """Read a text file as UTF-8 (whatever the locale)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def to_strict_json(obj):
    """Return ``(clean, nulls)``: ``obj`` with NaN/inf replaced by None, and where they were.

    ``clean`` holds only dicts (string keys), lists, str, int, float, bool
    and None; NumPy scalars and arrays become Python numbers and lists,
    tuples become lists. ``nulls`` maps a dotted path (``runs.BASE.0.cvr_auc``)
    to the reason, ``"NaN"``, ``"inf"`` or ``"-inf"``.
    """
    nulls = {}

    def walk(x, where):
        if isinstance(x, dict):
            return {str(k): walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(x)]
        if isinstance(x, np.ndarray):
            return walk(x.tolist(), where)
        if isinstance(x, (bool, np.bool_)):
            return bool(x)
        if isinstance(x, (int, np.integer)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            x = float(x)
            if math.isfinite(x):
                return x
            nulls[where] = "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")
            return None
        if x is None or isinstance(x, str):
            return x
        raise TypeError(f"cannot write {type(x).__name__} at {where or 'top level'} as JSON")

    return walk(obj, ""), nulls


def dumps_strict(obj, **kwargs):
    """JSON text of ``obj`` with no NaN/inf tokens.

    When values were replaced, a dict gains the key ``"_null_reasons"``
    (path -> ``"NaN"`` / ``"inf"``), so a reader knows a ``null`` is a
    metric that could not be computed rather than a missing one.
    """
    clean, nulls = to_strict_json(obj)
    if nulls and isinstance(clean, dict):
        clean["_null_reasons"] = nulls
    return json.dumps(clean, allow_nan=False, **kwargs)


def write_json(path, obj, indent=1):
    """Write ``obj`` as strict JSON (see :func:`dumps_strict`) with :func:`write_file`."""
    return write_file(path, dumps_strict(obj, indent=indent) + "\n")
