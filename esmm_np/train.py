"""The minibatch training loop shared by ESMM and the one-tower baselines.

:func:`fit` reads in three parts: *check* every option and array before
anything changes, *prepare* the epoch's batches, the step budget and the
validation points, then the loop itself, visible in one place. Early
stopping is :class:`EarlyStopping`: the validation values of a run, the
best point so far (a :class:`BestPoint`) and the patience count.
"""

import time
from collections import namedtuple

import numpy as np

from . import validate
from .data.bags import check_ids_in_blocks, in_blocks, slice_bags, stored_arrays, take_bags
from .data.dataset import clean_dataset
from .optim import Adam, Optimizer
from .threads import blas_limited

#: Rows per shuffling block when the data are memory-mapped (rounded up to whole batches).
SHUFFLE_BLOCK = 1 << 16

#: The validation point with the lowest value so far: its value, epoch (0-based),
#: step, index among the validations, and copies of the parameters and BN statistics.
BestPoint = namedtuple("BestPoint", ["value", "epoch", "step", "index", "params", "state"])


class EarlyStopping:
    """The validation points of one run: keeps the best, says when patience has run out.

    Parameters
    ----------
    patience : int or None
        Stop once this many validations in a row have not improved on the
        best one; None never stops.
    min_steps : int
        Patience cannot stop before this many optimiser steps.

    Attributes
    ----------
    values : list of float, the validation value of each validation
    steps : list of int, the step of each validation
    best : BestPoint or None, the lowest value so far (the first of equal ones)
    """

    def __init__(self, patience=None, min_steps=0):
        self.patience, self.min_steps = patience, min_steps
        self.values, self.steps = [], []
        self.best = None

    def update(self, model, value, step, epoch):
        """Record one validation, copying the model if it is the best; True: stop now."""
        self.values.append(value)
        self.steps.append(step)
        if self.best is None or value < self.best.value:
            # Copies, not views: training goes on updating the live arrays in place.
            self.best = BestPoint(value, epoch, step, len(self.values) - 1,
                                  {k: w.copy() for k, w in model.params.items()},
                                  {k: s.copy() for k, s in model.state.items()})
        waited = len(self.values) - 1 - self.best.index
        return self.patience is not None and waited >= self.patience and step >= self.min_steps

    def restore(self, model):
        """Copy the best point's parameters and BN statistics back into ``model``, in place."""
        for k, w in self.best.params.items():
            model.params[k][...] = w        # in place: model.params stays the same arrays
        for k, s in self.best.state.items():
            model.state[k][...] = s


class RecentAverage:
    """The mean of the parameters at the last ``k`` validation points.

    A network trained by minibatches moves a little at every step, so the
    validation value of its live parameters jumps between validations and
    which one happens to be lowest is partly luck. With ``k > 1`` each
    validation scores, and early stopping keeps, the plain average of the
    parameters at this validation and the ``k - 1`` before it (checkpoint
    averaging; the batch-norm statistics stay the live ones). ``k = 1`` is
    the live parameters themselves.
    """

    def __init__(self, k):
        self.k, self.snapshots = k, []

    def push(self, params):
        """Record the live parameters of one validation point (copies)."""
        self.snapshots.append({name: w.copy() for name, w in params.items()})
        del self.snapshots[:-self.k]

    def swap_in(self, model):
        """Write the average into ``model.params`` in place; return the live values to put back."""
        live = {name: w.copy() for name, w in model.params.items()}
        for name, w in model.params.items():
            total = np.zeros(w.shape, dtype=np.float64)
            for snap in self.snapshots:
                total += snap[name]
            w[...] = total / len(self.snapshots)
        return live


class ValidationSet:
    """The held-out impressions of a run and the criterion early stopping minimises.

    Parameters
    ----------
    model : the model being trained
    validation : tuple ``(X_val, *labels_val[, dense_val][, bags_val])``, as :func:`fit` takes
    n_labels : int, how many label arrays the model takes
    stop_on : "loss" or callable, as :func:`fit` takes

    The arrays are checked here, once, by a first :meth:`eval_loss` call.
    """

    def __init__(self, model, validation, n_labels, stop_on="loss"):
        if not isinstance(validation, (tuple, list)) or len(validation) < 1 + n_labels:
            raise TypeError(f"validation must be a tuple (X_val, {n_labels} label array(s)[, "
                            f"dense_val][, bags_val]), got {type(validation).__name__}")
        validation = list(validation)
        self.kw = {"bags": validation.pop()} if isinstance(validation[-1], dict) else {}
        self.X, self.labels = validation[0], tuple(validation[1:1 + n_labels])
        self.dense = validation[1 + n_labels] if len(validation) > 1 + n_labels else None
        self.stop_on = stop_on
        model.eval_loss(self.X, *self.labels, dense=self.dense, **self.kw)   # checks them all

    def positives(self):
        """Positives of the label array with the fewest (for ESMM, the conversions)."""
        return min(int(np.count_nonzero(np.asarray(y))) for y in self.labels)

    def value(self, model):
        """The criterion at the model's current parameters (lower is better)."""
        if self.stop_on == "loss":
            return model.eval_loss(self.X, *self.labels, dense=self.dense, **self.kw)
        kw = dict(self.kw) if self.dense is None else {"dense": self.dense, **self.kw}
        value = self.stop_on(model, self.X, *self.labels, **kw)
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)):
            raise TypeError(f"stop_on must return a number (lower is better), got {value!r}")
        return float(value)


@blas_limited   # one BLAS thread: faster for these small products, and no stall on a busy machine
def fit(model, X, *labels, dense=None, epochs=1, batch_size=256, optimizer=None, seed=0,
        verbose=True, callback=None, invalid="raise", validation=None, patience=None,
        eval_every=None, min_steps=0, max_steps=None, bags=None, shuffle="auto",
        stop_on="loss", min_val_positives=0, average=1):
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
        done). Default: run the whole budget. :class:`EarlyStopping` keeps
        the count and the best point.
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
    stop_on : "loss" or callable
        What early stopping minimises on ``validation``. "loss" (default): the
        model's data loss in inference mode, :meth:`eval_loss` (for ESMM the
        weighted sum of its two losses). A callable is called as
        ``stop_on(model, X_val, *labels_val)`` (plus ``dense=dense_val`` and
        ``bags=bags_val`` when the validation tuple has them) and returns a
        number, lower is better.
    min_val_positives : int
        With ``validation``: when the validation label array with the fewest
        positives (for ESMM the conversions) has fewer than this many, the
        validation cannot pick a point. Then ``fit`` does not validate, trains
        for the whole step budget and records ``stopped="budget"``. Default 0
        (always validate).
    average : int
        With ``validation``: each validation scores the mean of the
        parameters at the last ``average`` validation points
        (:class:`RecentAverage`), and the model ends with the best such
        mean. Averaging recent weights makes the kept point depend less on
        which validation happened to be lowest. Default 1: the live
        parameters, as without averaging.

    Returns
    -------
    history : dict
        ``"loss"``: mean training loss of each epoch (the last one possibly
        partial); ``"batch_loss"``: every step's loss; ``"seconds"``: wall
        time of each epoch; ``"steps"``: optimiser steps taken; ``"stopped"``:
        ``"patience"``, ``"cap"`` (the budget ran out) or ``"budget"`` (too few
        validation positives, see ``min_val_positives``; ``"val_positives"``
        holds their number); ``"kept"``: the step whose parameters the model
        ends with. With ``invalid="drop"``, ``"clean_report"``: the
        :class:`~esmm_np.data.CleanReport`; with ``validation``, ``"val_loss"``
        (the ``stop_on`` value) and ``"val_steps"`` per validation and
        ``"best_epoch"`` (1-based), the epoch the kept step belongs to.

    Raises
    ------
    FloatingPointError
        When a step's loss or a gradient is NaN or inf; the message names the
        epoch and step. The model (parameters and batch-norm statistics) and
        the optimizer keep the state they had before that step. Also when a
        validation value is NaN or inf; the model then keeps the parameters of
        the step just validated.
    """
    # ---- check: every option, then the data, before anything changes
    validate.check_choice(invalid, "invalid", ("raise", "drop"))
    validate.check_choice(shuffle, "shuffle", ("auto", "full", "blocks"))
    mapped = any(isinstance(a, np.memmap) for a in (X, dense, *labels, *stored_arrays(bags)))
    blocks = shuffle == "blocks" or (shuffle == "auto" and mapped)
    epochs = validate.check_int(epochs, "epochs", low=1)
    batch_size = validate.check_int(batch_size, "batch_size", low=1)
    verbose = validate.check_bool(verbose, "verbose")
    seed = validate.check_seed(seed)
    if patience is not None:
        patience = validate.check_int(patience, "patience", low=1)
    if eval_every is not None:
        eval_every = validate.check_int(eval_every, "eval_every", low=1)
    if max_steps is not None:
        max_steps = validate.check_int(max_steps, "max_steps", low=1)
    min_steps = validate.check_int(min_steps, "min_steps", low=0)
    min_val_positives = validate.check_int(min_val_positives, "min_val_positives", low=0)
    average = validate.check_int(average, "average", low=1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    if not (callable(stop_on) or (isinstance(stop_on, str) and stop_on == "loss")):
        raise TypeError(f"stop_on must be \"loss\" or a callable(model, X_val, *labels_val) "
                        f"returning a number, got {stop_on!r}")
    if callable(stop_on) and validation is None:
        raise ValueError("stop_on is a criterion on the validation set: give validation=")
    optimizer = Adam() if optimizer is None else optimizer
    if not isinstance(optimizer, Optimizer):
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
    X, labels, dense, bags = _check_data(model, X, labels, dense, bags, blocks)

    # ---- prepare: the batches of an epoch, the step budget, the validation points
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
    val, stopper, budget = None, None, False
    if validation is not None:
        val = ValidationSet(model, validation, len(labels), stop_on)
        if min_val_positives > 0 and val.positives() < min_val_positives:
            history["val_positives"] = val.positives()
            val, budget = None, True
            if verbose:
                print(f"validation has {history['val_positives']} positive label(s), fewer than "
                      f"min_val_positives={min_val_positives}: no early stopping, training "
                      f"for the whole budget of {cap} steps", flush=True)
        else:
            stopper = EarlyStopping(patience, min_steps)
            recent = RecentAverage(average)
            history["val_loss"], history["val_steps"] = stopper.values, stopper.steps

    def validate_at(step, epoch):
        """One validation point; True when patience has run out."""
        if average == 1:
            return score_and_keep(step, epoch)
        recent.push(model.params)
        live = recent.swap_in(model)           # score and keep the recent average ...
        try:
            return score_and_keep(step, epoch)
        finally:                               # ... then training goes on from the live weights
            for name, w in live.items():
                model.params[name][...] = w

    def score_and_keep(step, epoch):
        """The validation value of the model as it stands; early stopping records it."""
        value = val.value(model)
        if not np.isfinite(value):
            raise FloatingPointError(
                f"epoch {epoch + 1}, step {step}: the validation value is {value}. The model "
                "keeps the parameters of this step; a smaller learning rate usually helps")
        return stopper.update(model, value, step, epoch)

    # ---- the loop
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
            if val is not None and interval is not None and (
                    step % interval == 0 or step == cap or step in early):
                stop = validate_at(step, epoch)
            if stop or step >= cap:
                break
        history["loss"].append(total / seen)
        history["seconds"].append(time.perf_counter() - start)
        line = f"epoch {epoch + 1}/{-(-cap // steps_per_epoch)}  loss {history['loss'][-1]:.5f}"
        if interval is not None or max_steps is not None or cap > epochs * steps_per_epoch:
            line += f"  step {step}/{cap}"
        if val is not None:
            if interval is None:
                stop = validate_at(step, epoch)
            line += f"  validation loss {history['val_loss'][-1]:.5f}"
        if verbose:
            print(f"{line}  ({history['seconds'][-1]:.1f} s)", flush=True)
        if callback is not None:
            callback(epoch, history)
        epoch += 1
    history["steps"] = step
    history["stopped"] = "patience" if stop else "budget" if budget else "cap"
    history["kept"] = step
    if stopper is not None:
        best = stopper.best
        stopper.restore(model)
        history["best_epoch"] = best.epoch + 1
        history["kept"] = best.step
        if verbose and best.step < step:
            print(f"restored the parameters of step {best.step} (epoch {best.epoch + 1}, "
                  "lowest validation loss)", flush=True)
    return history


def _check_data(model, X, labels, dense, bags, blocks):
    """Validate the training arrays once for the whole run; return them clean.

    Batches are offset into table rows one at a time, so no shifted copy of
    the whole dataset is ever made. With ``blocks`` the arrays are checked
    block by block and kept as they are (memory-mapped ones stay on disk);
    each block is converted when it is read.
    """
    if blocks:
        X = check_ids_in_blocks(X, model.field_dims)
        n = X.shape[0]
        if dense is None or np.shape(dense)[0] != n:
            validate.check_dense(dense, n, model.n_dense, model.dtype)   # raises the usual message
        else:
            in_blocks(lambda d: validate.check_dense(d, d.shape[0], model.n_dense, model.dtype),
                      (dense,))
        if not labels or any(np.shape(y)[:1] != (n,) for y in labels):
            model.check_labels(labels, n)                         # raises the usual message
        in_blocks(lambda *ys: model.check_labels(ys, ys[0].shape[0]), labels)
    else:
        X = validate.check_ids(X, model.field_dims)
        dense = validate.check_dense(dense, X.shape[0], model.n_dense, model.dtype)
        labels = model.check_labels(labels, X.shape[0])
    return X, labels, dense, model.check_bags(bags, X.shape[0])


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
