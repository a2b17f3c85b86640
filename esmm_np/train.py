"""The minibatch training loop shared by ESMM and the one-tower baselines."""

import time

import numpy as np

from .data import clean_dataset
from .optim import Adam
from .validate import check_dense, check_ids


def fit(model, X, *labels, dense=None, epochs=1, batch_size=256, optimizer=None, seed=0,
        verbose=True, callback=None, invalid="raise"):
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

    Returns
    -------
    history : dict
        ``"loss"``: mean training loss of each epoch; ``"batch_loss"``: every
        step's loss; ``"seconds"``: wall time of each epoch; with
        ``invalid="drop"``, ``"clean_report"``: the :class:`~esmm_np.data.CleanReport`.
    """
    if invalid not in ("raise", "drop"):
        raise ValueError(f"invalid must be 'raise' or 'drop', got {invalid!r}")
    report = None
    if invalid == "drop" and len(labels) == 2:
        clean, report = clean_dataset(X, labels[0], labels[1], dense, field_dims=model.field_dims)
        X, labels, dense = clean.X, (clean.click, clean.conversion), clean.dense
        if verbose:
            print(f"clean_dataset: dropped {report.n_invalid} of {report.n_in} rows with "
                  "click = 0 and conversion = 1", flush=True)
    # Validate once for the whole run; batches are offset into table rows one at a time,
    # so no shifted copy of the whole dataset is ever made.
    X = check_ids(X, model.field_dims)
    dense = check_dense(dense, X.shape[0], model.n_dense, model.dtype)
    labels = model._check_labels(labels, X.shape[0])
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    optimizer = Adam() if optimizer is None else optimizer
    lazy = bool(getattr(optimizer, "lazy", False))
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    history = {"loss": [], "batch_loss": [], "seconds": []}
    if report is not None:
        history["clean_report"] = report
    for epoch in range(int(epochs)):
        start = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            rows = X[idx] + model.offsets                                # (b, F)
            d = None if dense is None else dense[idx]
            loss, grads = model.train_loss(rows, d, tuple(y[idx] for y in labels),
                                           model.rng, lazy=lazy)
            optimizer.step(model.params, grads)
            history["batch_loss"].append(loss)
            total += loss * len(idx)
        history["loss"].append(total / n)
        history["seconds"].append(time.perf_counter() - start)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}  loss {history['loss'][-1]:.5f}  "
                  f"({history['seconds'][-1]:.1f} s)", flush=True)
        if callback is not None:
            callback(epoch, history)
    return history
