"""The minibatch training loop shared by ESMM and the one-tower baselines."""

import time

import numpy as np

from .bags import in_blocks, slice_bags, take_bags
from .data import clean_dataset
from .optim import Adam
from .validate import check_dense, check_ids

#: Rows per shuffling block when the data are memory-mapped (a multiple of the batch size).
SHUFFLE_BLOCK = 1 << 16


def fit(model, X, *labels, dense=None, epochs=1, batch_size=256, optimizer=None, seed=0,
        verbose=True, callback=None, invalid="raise", validation=None, patience=None,
        bags=None, shuffle="auto"):
    """Train ``model`` in place by minibatch gradient descent.

    Parameters
    ----------
    model : ESMM or TowerModel
    X : ndarray of int, shape (n, n_fields)
    *labels : 0/1 arrays of shape (n,)
        ``click, conversion`` for ESMM; ``y`` for a TowerModel.
    dense : ndarray of shape (n, n_dense) or None
    epochs : int
    batch_size : int
    optimizer : SGD or Adam; default ``Adam(lr=1e-3)``
    seed : int
        Seeds the shuffling. Together with the model's own seed (init and
        dropout) it makes a run reproducible bit for bit.
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
        Held-out impressions. After every epoch the data loss on them is
        computed in inference mode (:meth:`eval_loss`); at the end the model is
        restored to the epoch with the lowest validation loss (early stopping,
        the usual guard against the sharp overfitting of embedding models
        after their first epochs).
    patience : int, optional
        With ``validation``: stop once this many epochs in a row have not
        improved the validation loss. Default: run all ``epochs``.
    bags : dict field -> (offsets, ids, weights), optional
        The multi-valued fields' bags (:mod:`esmm_np.bags`), required when the
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
        ``"loss"``: mean training loss of each epoch; ``"batch_loss"``: every
        step's loss; ``"seconds"``: wall time of each epoch; with
        ``invalid="drop"``, ``"clean_report"``: the :class:`~esmm_np.data.CleanReport`;
        with ``validation``, ``"val_loss"`` per epoch and ``"best_epoch"``
        (1-based), the epoch whose parameters the model ends with.
    """
    if invalid not in ("raise", "drop"):
        raise ValueError(f"invalid must be 'raise' or 'drop', got {invalid!r}")
    if shuffle not in ("auto", "full", "blocks"):
        raise ValueError(f"shuffle must be 'auto', 'full' or 'blocks', got {shuffle!r}")
    mapped = any(isinstance(a, np.memmap) for a in
                 (X, dense, *labels, *(a for t in (bags or {}).values() for a in t)))
    blocks = shuffle == "blocks" or (shuffle == "auto" and mapped)
    report = None
    if invalid == "drop" and len(labels) == 2:
        clean, report = clean_dataset(X, labels[0], labels[1], dense, field_dims=model.field_dims,
                                      bags=bags, bag_dims=getattr(model, "bag_dims", None))
        X, labels, dense = clean.X, (clean.click, clean.conversion), clean.dense
        bags = clean.bags
        if verbose:
            print(f"clean_dataset: dropped {report.n_invalid} of {report.n_in} rows with "
                  "click = 0 and conversion = 1", flush=True)
    # Validate once for the whole run; batches are offset into table rows one at a time,
    # so no shifted copy of the whole dataset is ever made.
    if blocks:
        # Block by block, keeping the arrays as they are (memory-mapped ones stay on disk);
        # each batch is converted when it is read.
        X = X if isinstance(X, np.ndarray) else np.asarray(X)
        in_blocks(lambda x: check_ids(x, model.field_dims), (X,))
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
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    optimizer = Adam() if optimizer is None else optimizer
    lazy = bool(getattr(optimizer, "lazy", False))
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    history = {"loss": [], "batch_loss": [], "seconds": []}
    if report is not None:
        history["clean_report"] = report
    if validation is not None:
        n_labels = len(labels)
        validation = list(validation)
        val_kw = {"bags": validation.pop()} if isinstance(validation[-1], dict) else {}
        X_val, labels_val = validation[0], tuple(validation[1:1 + n_labels])
        dense_val = validation[1 + n_labels] if len(validation) > 1 + n_labels else None
        model.eval_loss(X_val, *labels_val, dense=dense_val, **val_kw)   # validate before training
        history["val_loss"], best = [], None
    batches = _block_batches if blocks else _batches
    for epoch in range(int(epochs)):
        start = time.perf_counter()
        total = 0.0
        for rows, d, ys, b in batches(model, X, labels, dense, bags, batch_size, rng):
            loss, grads = model.train_loss(rows, d, ys, model.rng, lazy=lazy, bags=b)
            optimizer.step(model.params, grads)
            history["batch_loss"].append(loss)
            total += loss * rows.shape[0]
        history["loss"].append(total / n)
        history["seconds"].append(time.perf_counter() - start)
        line = f"epoch {epoch + 1}/{epochs}  loss {history['loss'][-1]:.5f}"
        if validation is not None:
            val = model.eval_loss(X_val, *labels_val, dense=dense_val, **val_kw)
            history["val_loss"].append(val)
            line += f"  validation loss {val:.5f}"
            if best is None or val < best[0]:
                # Copies, not views: training goes on updating the live arrays in place.
                best = (val, epoch, {k: w.copy() for k, w in model.params.items()},
                        {k: v.copy() for k, v in model.state.items()})
        if verbose:
            print(f"{line}  ({history['seconds'][-1]:.1f} s)", flush=True)
        if callback is not None:
            callback(epoch, history)
        if validation is not None and patience is not None and epoch - best[1] >= patience:
            break
    if validation is not None:
        _, best_epoch, params, state = best
        for k in params:
            model.params[k][...] = params[k]    # in place: model.params stays the same arrays
        for k in state:
            model.state[k][...] = state[k]
        history["best_epoch"] = best_epoch + 1
        if verbose and best_epoch + 1 < len(history["loss"]):
            print(f"restored the parameters of epoch {best_epoch + 1} (lowest validation loss)",
                  flush=True)
    return history


def _batches(model, X, labels, dense, bags, batch_size, rng):
    """One epoch's minibatches, in a fresh permutation of all rows.

    Yields ``(rows, dense, labels, bags)`` of one batch: table rows (b, F),
    dense (b, d) or None, the label arrays (b,), the bags of the batch or None.
    """
    n = X.shape[0]
    order = rng.permutation(n)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        yield (X[idx] + model.offsets,                                   # (b, F)
               None if dense is None else dense[idx],
               tuple(y[idx] for y in labels),
               take_bags(bags, idx))


def _block_batches(model, X, labels, dense, bags, batch_size, rng):
    """One epoch's minibatches, shuffled by blocks (for memory-mapped data).

    The blocks (``SHUFFLE_BLOCK`` rows rounded up to whole batches) come in
    random order; each is read into memory once and its rows are permuted.
    Yields the same tuples as :func:`_batches`.
    """
    n = X.shape[0]
    block = batch_size * max(1, -(-SHUFFLE_BLOCK // batch_size))
    for s in rng.permutation(np.arange(0, n, block)):
        e = min(int(s) + block, n)
        Xb = np.asarray(X[s:e])                                          # (m, F) in memory
        yb = tuple(np.asarray(y[s:e]).astype(np.int8, copy=False) for y in labels)
        db = None if dense is None else np.asarray(dense[s:e], dtype=model.dtype)
        bb = slice_bags(bags, s, e)
        order = rng.permutation(e - s)
        for t in range(0, e - s, batch_size):
            idx = order[t:t + batch_size]
            yield (Xb[idx] + model.offsets,                              # (b, F)
                   None if db is None else db[idx],
                   tuple(y[idx] for y in yb),
                   take_bags(bb, idx))
