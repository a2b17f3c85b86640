"""Saving and loading trained models, without pickle.

A model file is an ``.npz`` archive (NumPy's zip of ``.npy`` arrays) holding

- ``meta``: one JSON string with the format version, the model's class
  name, its constructor arguments (``model.get_config()``), the state of its
  random generator and, when saved with one, the optimizer's settings;
- ``param/<name>``: every array of ``model.params``;
- ``state/<name>``: every array of ``model.state`` (batch-norm statistics);
- ``optim/<slot>/<name>``: the optimizer's per-parameter state (SGD's
  ``velocity``, Adam's ``m`` and ``v``), when saved with one.

Loading reads with ``allow_pickle=False``, so a file from someone else can
hold numbers and text only, never code; it then rebuilds the model from its
configuration and checks that the file holds exactly the arrays that model
has, with the same shapes and dtype, all finite, before copying them in.

The writing side is ``model.save`` (:meth:`esmm_np.model.ESMM.save`,
which builds the arrays above in ``file_arrays``); this module reads. It
imports the model classes, never the other way round. A new model class
joins by being imported into :data:`MODEL_CLASSES` here, named in
``esmm_np.model.FILE_CLASSES``, and reporting its constructor arguments in
``get_config``; new options are new keys of that dict.
"""

import json
import zipfile

import numpy as np

from .escm2 import ESCM2
from .model import FILE_FORMAT_VERSION, ESMM, TowerModel
from .optim import SGD, Adam
from .validate import check_bool, is_int

#: Version of the file layout; a file with a higher number is refused.
FORMAT_VERSION = FILE_FORMAT_VERSION

#: The classes a file may name, imported explicitly (no registry written at import time).
MODEL_CLASSES = {"ESMM": ESMM, "ESCM2": ESCM2, "TowerModel": TowerModel}

OPTIMIZER_CLASSES = {"SGD": SGD, "Adam": Adam}


def save_model(model, path, optimizer=None):
    """Write ``model`` (and optionally ``optimizer``'s state) to ``path``: ``model.save``.

    Parameters
    ----------
    model : a model whose class is in :data:`MODEL_CLASSES`
    path : str or os.PathLike
        Written as given (``.npz`` is the customary extension), atomically.
    optimizer : SGD or Adam serving ``model``, optional
        Saved too, so that training can resume where it stopped.

    Returns
    -------
    str, the path written
    """
    name = type(model).__name__
    if MODEL_CLASSES.get(name) is not type(model):
        raise TypeError(f"cannot save a {name}: known model classes are {sorted(MODEL_CLASSES)}")
    return model.save(path, optimizer=optimizer)


def load_model(path, with_optimizer=False):
    """Read a model written by :meth:`save` / :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
    with_optimizer : bool
        True: return ``(model, optimizer)``, the optimizer rebuilt with its
        state (None when the file has none), ready for ``fit(..., optimizer=...)``.

    Returns
    -------
    model, or (model, optimizer)

    Raises
    ------
    ValueError
        The file is not an esmm_np model file, was written by a newer
        version, holds an object (pickled) array, or its arrays do not match
        its configuration (missing, extra, wrong shape or dtype, NaN or inf).
    """
    with_optimizer = check_bool(with_optimizer, "with_optimizer")
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays.pop("meta", None))
    cls = MODEL_CLASSES.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"{path}: unknown model class {meta.get('class')!r} "
                         f"(known: {sorted(MODEL_CLASSES)})")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the model configuration is missing")
    try:
        model = cls(**config)
    except (TypeError, ValueError) as err:  # an option this version does not know, or a bad value
        raise ValueError(f"{path}: the configuration does not fit {cls.__name__}: {err}") from None
    expected = {f"param/{k}": w for k, w in model.params.items()}
    expected.update({f"state/{k}": a for k, a in model.state.items()})
    optim = {k: a for k, a in arrays.items() if k.startswith("optim/")}
    found = {k: a for k, a in arrays.items() if not k.startswith("optim/")}
    _check_arrays(path, found, expected)
    for k, a in found.items():      # in place: the arrays the optimizer will see
        expected[k][...] = a
    if "rng_state" in meta:
        try:
            model.rng.bit_generator.state = meta["rng_state"]
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: the random generator state is damaged ({err!r})") from None
    if not with_optimizer:
        return model
    return model, _load_optimizer(path, meta.get("optimizer"), optim, model)


def _read_arrays(path):
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not an esmm_np model file ({err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single array, not an esmm_np model file")
    arrays = {}
    with npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError:   # NumPy refuses object arrays when allow_pickle=False
                raise ValueError(f"{path}: array {key!r} holds Python objects (a pickle); "
                                 "model files hold numbers only and are never unpickled") from None
    return arrays


def _read_meta(path, meta):
    if meta is None or meta.dtype.kind != "U" or meta.ndim != 0:
        raise ValueError(f"{path} is not an esmm_np model file (no 'meta' text)")
    try:
        meta = json.loads(str(meta))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its 'meta' is not valid JSON ({err})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not is_int(version) or version < 1:
        raise ValueError(f"{path} is not an esmm_np model file (no format version)")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written in format version {version} by a newer esmm_np; "
                         f"this version reads up to {FORMAT_VERSION}: upgrade esmm_np")
    return meta


def _check_arrays(path, found, expected):
    """Raise unless ``found`` has exactly the keys, shapes and dtypes of ``expected``, all finite."""
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    if missing or extra:
        raise ValueError(f"{path}: the arrays do not match the configuration; missing "
                         f"{missing or 'none'}, unexpected {extra or 'none'}")
    for k, want in expected.items():
        a = found[k]
        if a.shape != want.shape or a.dtype != want.dtype:
            raise ValueError(f"{path}: {k} has shape {a.shape} and dtype {a.dtype}; the "
                             f"configuration needs {want.shape} and {want.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: {k} holds NaN or inf")


def _load_optimizer(path, config, arrays, model):
    """Rebuild the saved optimizer and its per-parameter state; None if none was saved."""
    if config is None:
        if arrays:
            raise ValueError(f"{path}: optimizer arrays without optimizer settings")
        return None
    config = dict(config)
    cls = OPTIMIZER_CLASSES.get(config.pop("class", None))
    if cls is None:
        raise ValueError(f"{path}: unknown optimizer {config!r}")
    t = config.pop("t", None)
    try:
        opt = cls(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the optimizer settings do not fit {cls.__name__}: {err}") from None
    if t is not None:
        if not is_int(t) or t < 0:
            raise ValueError(f"{path}: the optimizer's step count must be an integer >= 0, got {t!r}")
        opt.t = t
    opt.bind(model.params)
    for key, a in arrays.items():
        _, slot, name = key.split("/", 2)
        if slot not in opt.slots or name not in model.params:
            raise ValueError(f"{path}: unexpected optimizer array {key!r}")
        w = model.params[name]
        if a.shape != w.shape or a.dtype != w.dtype or not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: optimizer array {key!r} does not match parameter {name!r} "
                             f"(shape {a.shape}, dtype {a.dtype}; needs {w.shape}, {w.dtype}, finite)")
        getattr(opt, slot)[name] = a.copy()
    return opt
