"""The minibatch training loop shared by ESMM and the one-tower baselines."""

import time

import numpy as np

from . import validate as V
from .data.bags import check_ids_in_blocks, in_blocks, slice_bags, stored_arrays, take_bags
from .data.dataset import clean_dataset
from .optim import Adam, _Optimizer
from .threads import blas_limited
from .validate import check_dense, check_ids

#: Rows per shuffling block when the data are memory-mapped (rounded up to whole batches).
SHUFFLE_BLOCK = 1 << 16


@blas_limited   # one BLAS thread: faster for these small products, and no stall on a busy machine
def fit(model, X, *labels, dense=None, epochs=1, batch_size=256, optimizer=None, seed=0,
        verbose=True, callback=None, invalid="raise", validation=None, patience=None,
        eval_every=None, min_steps=0, max_steps=None, bags=None, shuffle="auto"):
    """Train ``model`` in place by minibatch gradient descent.

    Parameters
    ----------
    model : ESMM or TowerModel
    X : ndarray of int, shape (n, n_fields)
    *labels : 0/1 arrays of shape (n,)
        ``click, conversion`` for ESMM; ``y`` for a TowerModel.
    dense : ndarray of shape (n, n_dense) or None
    epochs : int
        Passes over the data; the step budget is ``epochs * ceil(n / batch_size)``
        unless ``max_steps`` is given.
    batch_size : int
    optimizer : SGD or Adam; default ``Adam(lr=1e-3)``
    seed : int or numpy.random.Generator
        Seeds the shuffling and the dropout masks. Together with the model's
        own seed (initialisation) it makes a run reproducible bit for bit;
        calls of ``model.loss`` in between do not change what ``fit`` trains.
    verbose : bool
        Print one line per epoch.
    callback : callable(epoch, history), optional
        Called after every epoch (for evaluation or progress bars).
    invalid : {"raise", "drop"}
        ESMM only: what to do with rows that have click = 0 and conversion = 1.
        "raise" (default) refuses the data; "drop" passes it through
        :func:`esmm_np.clean_dataset`, trains on the valid rows and prints how
        many rows were dropped. Any other problem always raises.
    validation : tuple ``(X_val, *labels_val)``, optionally followed by ``dense_val`` and/or
        a dict ``bags_val``, optional
        Held-out impressions. The data loss on them is computed in inference
        mode (:meth:`eval_loss`) after every epoch, or every ``eval_every``
        steps; at the end the model is restored to the validation point with
        the lowest loss (early stopping, the usual guard against the sharp
        overfitting of embedding models after their first epochs).
    patience : int, optional
        With ``validation``: stop once this many validations in a row have not
        improved the validation loss (and at least ``min_steps`` steps are
        done). Default: run the whole budget.
    eval_every : int, optional
        Validate every ``min(eval_every, steps per epoch)`` optimiser steps
        instead of once per epoch, and before that at steps 25, 50, 100, ...
        (doubling while below the interval), so that neither a long epoch,
        nor a short one, nor an optimum within the first few hundred steps
        makes a coarse stopping point. Default: once per epoch.
    min_steps : int
        At least this many optimiser steps, however small the data: the
        budget is raised to it and patience cannot stop before it.
    max_steps : int, optional
        The budget (the cap) in optimiser steps, replacing ``epochs``.
    bags : dict field -> (offsets, ids, weights), optional
        The multi-valued fields' bags (:mod:`esmm_np.data.bags`), required when the
        model was built with ``bag_dims``. May be memory-mapped.
    shuffle : {"auto", "full", "blocks"}
        "full": a new permutation of all rows every epoch. "blocks": the rows
        are cut into blocks of ``SHUFFLE_BLOCK`` (rounded up to whole batches);
        each epoch visits the blocks in random order, reads one block into
        memory and shuffles its rows, so an epoch over memory-mapped data needs
        memory for a block, not for the data (and reads the file in long runs).
        "auto" (default): "blocks" when any input is a ``numpy.memmap``, else "full".

    Returns
    -------
    history : dict
        ``"loss"``: mean training loss of each epoch (the last one possibly
        partial); ``"batch_loss"``: every step's loss; ``"seconds"``: wall
        time of each epoch; ``"steps"``: optimiser steps taken; ``"stopped"``:
        ``"patience"`` or ``"cap"`` (the budget ran out); ``"kept"``: the step
        whose parameters the model ends with. With ``invalid="drop"``,
        ``"clean_report"``: the :class:`~esmm_np.data.CleanReport`; with
        ``validation``, ``"val_loss"`` and ``"val_steps"`` per validation and
        ``"best_epoch"`` (1-based), the epoch the kept step belongs to.

    Raises
    ------
    FloatingPointError
        When a step's loss or a gradient is NaN or inf; the message names the
        epoch and step. The model (parameters and batch-norm statistics) and
        the optimizer keep the state they had before that step.
    """
    # Every option is checked before anything changes (the model, the optimizer).
    V.check_choice(invalid, "invalid", ("raise", "drop"))
    V.check_choice(shuffle, "shuffle", ("auto", "full", "blocks"))
    mapped = any(isinstance(a, np.memmap) for a in (X, dense, *labels, *stored_arrays(bags)))
    blocks = shuffle == "blocks" or (shuffle == "auto" and mapped)
    epochs = V.check_int(epochs, "epochs", low=1)
    batch_size = V.check_int(batch_size, "batch_size", low=1)
    verbose = V.check_bool(verbose, "verbose")
    seed = V.check_seed(seed)
    if patience is not None:
        patience = V.check_int(patience, "patience", low=1)
    if eval_every is not None:
        eval_every = V.check_int(eval_every, "eval_every", low=1)
    if max_steps is not None:
        max_steps = V.check_int(max_steps, "max_steps", low=1)
    min_steps = V.check_int(min_steps, "min_steps", low=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    optimizer = Adam() if optimizer is None else optimizer
    if not isinstance(optimizer, _Optimizer):
        raise TypeError(f"optimizer must be an esmm_np SGD or Adam, got {optimizer!r}")
    optimizer.bind(model.params, record=False)   # refuses an optimizer that serves another model
    report = None
    if invalid == "drop" and len(labels) == 2:
        clean, report = clean_dataset(X, labels[0], labels[1], dense, field_dims=model.field_dims,
                                      bags=bags, bag_dims=getattr(model, "bag_dims", None))
        X, labels, dense, bags = clean.X, (clean.click, clean.conversion), clean.dense, clean.bags
        if verbose:
            print(f"clean_dataset: dropped {report.n_invalid} of {report.n_in} rows with "
                  "click = 0 and conversion = 1", flush=True)
    # Validate once for the whole run; batches are offset into table rows one at a time,
    # so no shifted copy of the whole dataset is ever made.
    if blocks:
        # Block by block, keeping the arrays as they are (memory-mapped ones stay on disk);
        # each block is converted when it is read.
        X = check_ids_in_blocks(X, model.field_dims)
        n = X.shape[0]
        if dense is None or np.shape(dense)[0] != n:
            check_dense(dense, n, model.n_dense, model.dtype)   # raises the usual message
        else:
            in_blocks(lambda d: check_dense(d, d.shape[0], model.n_dense, model.dtype), (dense,))
        if not labels or any(np.shape(y)[:1] != (n,) for y in labels):
            model._check_labels(labels, n)                      # raises the usual message
        in_blocks(lambda *ys: model._check_labels(ys, ys[0].shape[0]), labels)
    else:
        X = check_ids(X, model.field_dims)
        dense = check_dense(dense, X.shape[0], model.n_dense, model.dtype)
        labels = model._check_labels(labels, X.shape[0])
    bags = model._bags(bags, X.shape[0])
    lazy = bool(getattr(optimizer, "lazy", False))
    rng = np.random.default_rng(seed)   # shuffling and dropout: nothing else draws from it
    n = X.shape[0]
    batch_norm = getattr(model, "batch_norm", False)
    if blocks:
        block = batch_size * max(1, -(-SHUFFLE_BLOCK // batch_size))
        starts = list(range(0, n, block))
        if len(starts) > 1 and n - starts[-1] < 2:
            starts.pop()                       # a lone last row joins the block before it
        blocks = list(zip(starts, starts[1:] + [n]))
        steps_per_epoch = sum(len(_batch_bounds(e - s, batch_size, batch_norm)) for s, e in blocks)
    else:
        bounds = _batch_bounds(n, batch_size, batch_norm)
        steps_per_epoch = len(bounds)
    cap = epochs * steps_per_epoch if max_steps is None else max_steps
    cap = max(cap, min_steps)
    # Validation points: every `interval` steps, or (None) at the end of every epoch.
    interval = None if eval_every is None else min(eval_every, steps_per_epoch)
    # ... and, with eval_every, early ones at 25, 50, 100, ... below the interval: embedding
    # models on rare labels can overfit within a few hundred steps.
    early = set() if interval is None else {25 * 2 ** k for k in range(20)
                                            if 25 * 2 ** k < interval}
    history = {"loss": [], "batch_loss": [], "seconds": []}
    if report is not None:
        history["clean_report"] = report
    if validation is not None:
        n_labels = len(labels)
        if not isinstance(validation, (tuple, list)) or len(validation) < 1 + n_labels:
            raise TypeError(f"validation must be a tuple (X_val, {n_labels} label array(s)[, "
                            f"dense_val][, bags_val]), got {type(validation).__name__}")
        validation = list(validation)
        val_kw = {"bags": validation.pop()} if isinstance(validation[-1], dict) else {}
        X_val, labels_val = validation[0], tuple(validation[1:1 + n_labels])
        dense_val = validation[1 + n_labels] if len(validation) > 1 + n_labels else None
        model.eval_loss(X_val, *labels_val, dense=dense_val, **val_kw)   # validate before training
        history["val_loss"], history["val_steps"], best = [], [], None

    def validate(step, epoch):
        """Record the validation loss, keep a copy of the best parameters; True = patience ran out."""
        nonlocal best
        val = model.eval_loss(X_val, *labels_val, dense=dense_val, **val_kw)
        history["val_loss"].append(val)
        history["val_steps"].append(step)
        if best is None or val < best[0]:
            # Copies, not views: training goes on updating the live arrays in place.
            best = (val, epoch, step, len(history["val_loss"]) - 1,
                    {k: w.copy() for k, w in model.params.items()},
                    {k: v.copy() for k, v in model.state.items()})
        waited = len(history["val_loss"]) - 1 - best[3]
        return patience is not None and waited >= patience and step >= min_steps

    optimizer.bind(model.params)   # everything is checked: from here on the optimizer is this model's
    step, epoch, stop = 0, 0, False
    while step < cap and not stop:
        start = time.perf_counter()
        batches = (_block_batches(model, X, labels, dense, bags, blocks, batch_size, rng)
                   if blocks else _batches(model, X, labels, dense, bags, bounds, rng))
        total, seen = 0.0, 0
        for i, (rows, d, ys, b) in enumerate(batches):
            try:
                loss, grads = model.train_loss(rows, d, ys, rng, lazy=lazy, bags=b)
            except FloatingPointError as err:   # raised before anything was updated
                raise FloatingPointError(
                    f"epoch {epoch + 1}, step {i + 1} of {steps_per_epoch}: {err}. The model and "
                    "the optimizer keep their state from before this step; a smaller learning "
                    "rate usually helps") from None
            optimizer.step(model.params, grads)
            step += 1
            history["batch_loss"].append(loss)
            total += loss * rows.shape[0]
            seen += rows.shape[0]
            if validation is not None and interval is not None and (
                    step % interval == 0 or step == cap or step in early):
                stop = validate(step, epoch)
            if stop or step >= cap:
                break
        history["loss"].append(total / seen)
        history["seconds"].append(time.perf_counter() - start)
        line = f"epoch {epoch + 1}/{-(-cap // steps_per_epoch)}  loss {history['loss'][-1]:.5f}"
        if interval is not None or max_steps is not None or cap > epochs * steps_per_epoch:
            line += f"  step {step}/{cap}"
        if validation is not None:
            if interval is None:
                stop = validate(step, epoch)
            line += f"  validation loss {history['val_loss'][-1]:.5f}"
        if verbose:
            print(f"{line}  ({history['seconds'][-1]:.1f} s)", flush=True)
        if callback is not None:
            callback(epoch, history)
        epoch += 1
    history["steps"] = step
    history["stopped"] = "patience" if stop else "cap"
    history["kept"] = step
    if validation is not None:
        _, best_epoch, best_step, _, params, state = best
        for k in params:
            model.params[k][...] = params[k]    # in place: model.params stays the same arrays
        for k in state:
            model.state[k][...] = state[k]
        history["best_epoch"] = best_epoch + 1
        history["kept"] = best_step
        if verbose and best_step < step:
            print(f"restored the parameters of step {best_step} (epoch {best_epoch + 1}, "
                  "lowest validation loss)", flush=True)
    return history


def _batch_bounds(n, batch_size, batch_norm):
    """``(start, end)`` of each minibatch of a pass over ``n`` shuffled rows.

    Batch norm cannot train on a one-row batch (the row is its own mean), so
    with batch norm a lone last row joins the batch before it.
    """
    if batch_norm and (n < 2 or batch_size < 2):
        raise ValueError(f"batch norm needs training batches of at least 2 rows; got "
                         f"{n} row(s) and batch_size={batch_size}")
    starts = list(range(0, n, batch_size))
    if batch_norm and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def _batches(model, X, labels, dense, bags, bounds, rng):
    """One epoch's minibatches, in a fresh permutation of all rows.

    Yields ``(rows, dense, labels, bags)`` of one batch: table rows (b, F),
    dense (b, d) or None, the label arrays (b,), the bags of the batch or None.
    """
    order = rng.permutation(X.shape[0])
    for s, e in bounds:
        idx = order[s:e]
        yield (X[idx] + model.offsets,                                   # (b, F)
               None if dense is None else dense[idx],
               tuple(y[idx] for y in labels),
               take_bags(bags, idx))


def _block_batches(model, X, labels, dense, bags, blocks, batch_size, rng):
    """One epoch's minibatches, shuffled by blocks (for memory-mapped data).

    The blocks ``(start, end)`` come in random order; each is read into
    memory once and its rows are permuted. Yields the same tuples as
    :func:`_batches`.
    """
    batch_norm = getattr(model, "batch_norm", False)
    for b in rng.permutation(len(blocks)):
        s, e = blocks[b]
        Xb = np.asarray(X[s:e])                                          # (m, F) in memory
        yb = tuple(np.asarray(y[s:e]).astype(np.int8, copy=False) for y in labels)
        db = None if dense is None else np.asarray(dense[s:e], dtype=model.dtype)
        bb = slice_bags(bags, s, e)
        order = rng.permutation(e - s)
        for t, u in _batch_bounds(e - s, batch_size, batch_norm):
            idx = order[t:u]
            yield (Xb[idx] + model.offsets,                              # (b, F)
                   None if db is None else db[idx],
                   tuple(y[idx] for y in yb),
                   take_bags(bb, idx))
