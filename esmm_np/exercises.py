"""Exercises that check themselves: write a piece of ESMM, be told whether it is right.

Each exercise is one function of the package, to be written by the learner
with the *same signature* as ours (the cache a backward receives is the one
our forward builds). :func:`check` runs it on several cases, compares every
output with finite differences (float64) and with our implementation, and
prints one line per case: what was tried, the relative errors, pass or fail,
and on a failure a hint that names the likely mistake::

    import esmm_np.exercises as ex
    ex.NAMES                                      # the exercises, in teaching order
    ok = ex.check("ctcvr_backward", my_ctcvr_backward)   # prints a table, returns True/False

A case passes only when the function returns outputs of exactly the
expected kind, shape and dtype, every entry finite, no floating-point
warning was raised, no input the caller still needs was written into (a
backward may reuse its upstream gradient's memory), and the relative errors
are within the bars below. A NaN, a broadcast shape, a silently changed
dtype or an overwritten cache never passes.

Bars. Against finite differences (float64, h = 1e-5): 1e-9 for one layer or
loss (gradcheck.LAYER_TOL), 1e-7 for the whole model (gradcheck.py). Against
our implementation: 1e-10 in float64 (two correct formulas differ by rounding,
~1e-15) and 1e-5 in float32 (rounding ~1e-7 per operation, a few hundred
operations at most); a wrong formula is off by 1e-3 or more.

The cases live in :mod:`esmm_np.teach.cases`, the typical mistakes the hints
name in :mod:`esmm_np.teach.mistakes`, and the grading of one case in
:mod:`esmm_np.teach.grading`; this module is what a learner calls.
"""

import numpy as np

from . import layers as L
from . import losses
from .optim import Adam
from .teach.cases import CASES, MODEL_TOL, Case
from .teach.grading import OURS_TOL, grade
from .teach.grading import format_results as _format_table
from .teach.mistakes import MISTAKES

__all__ = ["NAMES", "SIGNATURES", "MODEL_TOL", "OURS_TOL", "Case", "check", "esmm_loss",
           "fill_blanks", "format_results", "reference", "run_case", "train"]

NAMES = ("sigmoid", "sigmoid_backward", "relu_backward", "affine_backward",
         "batchnorm_backward", "embedding_backward", "ctcvr_backward",
         "bce_with_logits", "ctcvr_bce_logspace", "esmm_loss")


# ------------------------------------------------------------ references

def esmm_loss(model, X, click, conversion):
    """Our answer to the last exercise: ``model.loss`` of a plain ESMM.

    The learner's version assembles the same from the parts: embedding lookup,
    both towers (affine and ReLU), the two losses at the logits, and the
    backward of each step in reverse. Returns ``(loss, grads)`` with ``grads``
    keyed like ``model.params``.
    """
    return model.loss(X, click, conversion)


_REFERENCE = {
    "sigmoid": L.sigmoid,
    "sigmoid_backward": L.sigmoid_backward,
    "relu_backward": L.relu_backward,
    "affine_backward": L.affine_backward,
    "batchnorm_backward": L.batchnorm_backward,
    "embedding_backward": L.embedding_backward,
    "ctcvr_backward": L.ctcvr_backward,
    "bce_with_logits": losses.bce_with_logits,
    "ctcvr_bce_logspace": losses.ctcvr_bce_logspace,
    "esmm_loss": esmm_loss,
}

SIGNATURES = {
    "sigmoid": "sigmoid(x) -> s, any shape, no overflow for any finite x",
    "sigmoid_backward": "sigmoid_backward(dout, cache) -> dx, with cache = s = sigmoid(x)",
    "relu_backward": "relu_backward(dout, cache) -> dx, with cache = the mask x > 0",
    "affine_backward": "affine_backward(dout, cache) -> (dx, dW, db), with cache = (x, W)",
    "batchnorm_backward": "batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta), "
                          "with cache = (xhat, gamma, inv_std, train)",
    "embedding_backward": "embedding_backward(de, cache) -> dtable (V, k) "
                          "(or SparseRows), with cache = (rows, V)",
    "ctcvr_backward": "ctcvr_backward(dp_ctcvr, cache) -> (dp_ctr, dp_cvr), "
                      "with cache = (p_ctr, p_cvr)",
    "bce_with_logits": "bce_with_logits(logit, y) -> (loss, dlogit), the mean over the batch",
    "ctcvr_bce_logspace": "ctcvr_bce_logspace(a, b, z) -> (loss, da, db), the mean BCE of "
                          "sigmoid(a) * sigmoid(b) against z, from the logits",
    "esmm_loss": "esmm_loss(model, X, click, conversion) -> (loss, grads), grads keyed like "
                 "model.params (ReLU towers, shared embedding, no dropout, batch norm or L2)",
}


def reference(name):
    """Our implementation of exercise ``name`` (what the tests put into the blanks)."""
    _check_name(name)
    return _REFERENCE[name]


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are {', '.join(NAMES)}")


def run_case(name, fn, case):
    """Run one case of exercise ``name``; return a dict: label, tried, rel_ours, rel_fd, ok, hint."""
    _check_name(name)
    return grade(fn, case, _REFERENCE[name], MISTAKES[name],
                 consumed=int(name.endswith("_backward")))


def check(name, fn, verbose=True):
    """Check the learner's ``fn`` for exercise ``name``; print a table, return True/False.

    Parameters
    ----------
    name : str, one of :data:`NAMES`
    fn : callable with the signature of ours (:data:`SIGNATURES`)
    verbose : bool
        Print one line per case and, on a failure, its hint.

    Returns
    -------
    bool : True when every case passes.
    """
    _check_name(name)
    rng = np.random.default_rng(sum(map(ord, name)))   # the same cases on every call
    results = [run_case(name, fn, case) for case in CASES[name](rng)]
    if verbose:
        print(format_results(name, results))
    return all(r["ok"] for r in results)


def format_results(name, results):
    """The table :func:`check` prints."""
    return _format_table(name, SIGNATURES[name], results)


# ------------------------------------------------- the exercise notebooks

def train(loss_fn, model, X, click, conversion, *, epochs=1, batch_size=512, optimizer=None,
          seed=0):
    """Train ``model`` in place with the learner's ``loss_fn(model, X, click, conversion)``.

    The same loop as :func:`esmm_np.fit` (same shuffling for the same
    ``seed``, one optimiser step per minibatch), with the gradients coming
    from ``loss_fn``. So a correct ``loss_fn`` trains the same model as
    ``fit`` does, up to rounding. Returns the list of minibatch losses.
    """
    optimizer = Adam() if optimizer is None else optimizer
    rng = np.random.default_rng(seed)
    n, batch_loss = X.shape[0], []
    for _ in range(int(epochs)):
        order = rng.permutation(n)
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            loss, grads = loss_fn(model, X[idx], click[idx], conversion[idx])
            if set(grads) != set(model.params):
                raise ValueError("loss_fn must return gradients keyed like model.params")
            optimizer.step(model.params, grads)
            batch_loss.append(float(loss))
    return batch_loss


def fill_blanks(nb):
    """Put our reference functions into an exercise notebook's blanks, in place.

    A blank is a code cell whose metadata has ``"exercise": name``; its
    source becomes ``name = esmm_np.exercises.reference("name")``. The test
    suite runs the exercise notebooks this way, so every check cell and the
    final training run are exercised end to end. ``nb`` is a notebook as
    ``nbformat.read`` returns it (or the same structure as plain dicts).

    Returns
    -------
    list of str : the names filled, in notebook order.
    """
    filled = []
    for cell in nb["cells"]:
        name = cell.get("metadata", {}).get("exercise")
        if name:
            _check_name(name)
            cell["source"] = (f"import esmm_np.exercises\n"
                              f"{name} = esmm_np.exercises.reference({name!r})   # filled in")
            filled.append(name)
    return filled
