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
dtype or an overwritten cache never passes. In the extreme cases (logits
out to +-800, past where exp overflows, with both labels) outputs are
compared with ours entry by entry, so sigmoid(-40) = 4.2e-18 must come out
as 4.2e-18, not 0 and not a clip's 1e-11.

What a function may not do. Each call has a time limit (:data:`TIME_LIMIT`,
10 s; a loop that never ends fails its case, and the remaining cases are not
run). A whole-model answer gets a copy of the model: changing its options or
parameters fails, and so does calling ``model.loss``, the answer itself. A
function that patches the checker, the package or NumPy while it runs fails,
and what it changed is put back.

Bars. Against finite differences (float64, h = 1e-5): 1e-9 for one layer or
loss (gradcheck.LAYER_TOL), 1e-7 for the whole model (gradcheck.py). Against
our implementation: 1e-10 in float64 (two correct formulas differ by rounding,
~1e-15) and 1e-5 in float32 (rounding ~1e-7 per operation, a few hundred
operations at most); a wrong formula is off by 1e-3 or more.

The cases live in :mod:`esmm_np.teach.cases` (the experts exercises of E3,
softmax, mixture and AITM's attention, in :mod:`esmm_np.teach.cases_experts`),
the typical mistakes the hints name in :mod:`esmm_np.teach.mistakes` (and
:mod:`esmm_np.teach.mistakes_experts`), and the grading of one case in
:mod:`esmm_np.teach.grading`; this module is what a learner calls.
"""

import numpy as np

from . import experts
from . import layers as L
from . import losses
from . import transfer
from . import reference as _plain   # the plain ESMM: our answer to esmm_loss
from .optim import Adam
from .teach.cases import CASES as _LAYER_CASES
from .teach.cases import MODEL_TOL, Case
from .teach.cases_experts import CASES as _EXPERT_CASES
from .teach.grading import OURS_TOL, grade
from .teach.grading import format_results as _format_table
from .teach.guard import TIME_LIMIT, check_time_limit
from .teach.mistakes import MISTAKES as _LAYER_MISTAKES
from .teach.mistakes_experts import MISTAKES as _EXPERT_MISTAKES

CASES = {**_LAYER_CASES, **_EXPERT_CASES}              # E1 and E2, then E3
MISTAKES = {**_LAYER_MISTAKES, **_EXPERT_MISTAKES}

__all__ = ["NAMES", "SIGNATURES", "MODEL_TOL", "OURS_TOL", "TIME_LIMIT", "Case", "check",
           "esmm_loss", "fill_blanks", "format_results", "reference", "run_case", "train"]

NAMES = ("sigmoid", "sigmoid_backward", "relu_backward", "affine_backward",
         "batchnorm_backward", "embedding_backward", "ctcvr_backward",
         "bce_with_logits", "ctcvr_bce_logspace", "esmm_loss",
         "softmax_forward", "softmax_backward", "mixture_backward", "attention_backward")


# ------------------------------------------------------------ references

def esmm_loss(model, X, click, conversion):
    """Our answer to the last exercise: the loss and gradients of a plain ESMM.

    The learner's version assembles them from the parts: embedding lookup,
    both towers (affine and ReLU), the two losses at the logits, and the
    backward of each step in reverse. Ours is :func:`esmm_np.reference.loss`,
    the plain ESMM written out in one file, which agrees with ``model.loss``
    (tests/test_reference.py). Returns ``(loss, grads)`` with ``grads``
    keyed like ``model.params``.
    """
    plain = (model.activation == "relu" and model.share_embedding and not model.batch_norm
             and model.dropout == 0 and model.l2_reg_embedding == 0 and model.l2_reg_dnn == 0
             and model.n_dense == 0 and not model.bag_dims and model.ctcvr_loss == "logspace")
    if not plain:
        raise ValueError("the esmm_loss exercise is the plain ESMM: ReLU towers, one shared "
                         "table, no dropout, batch norm, L2, dense features or bags, the "
                         "log-space CTCVR loss")
    return _plain.loss(model.params, X + model.offsets, click, conversion, model.loss_weights)


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
    "softmax_forward": experts.softmax_forward,
    "softmax_backward": experts.softmax_backward,
    "mixture_backward": experts.mixture_backward,
    "attention_backward": transfer.attention_backward,
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
    "softmax_forward": "softmax_forward(gate_logit) -> (psi, cache), a softmax over each row "
                       "(n, K), no overflow for any finite logit, with cache = psi",
    "softmax_backward": "softmax_backward(dpsi, cache) -> dgate_logit (n, K), with cache = psi",
    "mixture_backward": "mixture_backward(dm, cache) -> (do, dpsi), with cache = (o (n, K, d), "
                        "psi (n, K)) and m = sum_k psi_k o_k",
    "attention_backward": "attention_backward(dtau, cache) -> (dcand, dW_v, dW_k, dW_q), with "
                          "cache = (cand, W_v, W_k, W_q, key, qry, att, (val, att))",
}


def reference(name):
    """Our implementation of exercise ``name`` (what the tests put into the blanks)."""
    _check_name(name)
    return _REFERENCE[name]


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"unknown exercise {name!r}; the exercises are {', '.join(NAMES)}")


def run_case(name, fn, case, time_limit=TIME_LIMIT):
    """Run one case of exercise ``name``; return a dict: label, tried, rel_ours, rel_fd, ok, hint.

    ``fn`` gets copies of the case's inputs, at most ``time_limit`` seconds
    (None: no limit), and no way to change the checker: see
    :func:`esmm_np.teach.grading.grade`.
    """
    _check_name(name)
    time_limit = check_time_limit(time_limit)
    return grade(fn, case, _REFERENCE[name], MISTAKES[name],
                 consumed=int(name.endswith("_backward")), time_limit=time_limit)


def check(name, fn, verbose=True, time_limit=TIME_LIMIT):
    """Check the learner's ``fn`` for exercise ``name``; print a table, return True/False.

    Parameters
    ----------
    name : str, one of :data:`NAMES`
    fn : callable with the signature of ours (:data:`SIGNATURES`)
    verbose : bool
        Print one line per case and, on a failure, its hint.
    time_limit : float or None
        Seconds each call of ``fn`` may take before the case fails as "did
        not return" (default :data:`esmm_np.teach.guard.TIME_LIMIT`); None: no limit.

    Returns
    -------
    bool : True when every case passes.
    """
    _check_name(name)
    if not callable(fn):
        raise TypeError(f"check({name!r}, fn) needs your function as fn, got "
                        f"{type(fn).__name__}")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False, got {verbose!r}")
    time_limit = check_time_limit(time_limit)
    rng = np.random.default_rng(sum(map(ord, name)))   # the same cases on every call
    results = []
    for case in CASES[name](rng):
        if results and results[-1]["hint"].startswith(("did not return", "not run:")):
            # one endless call is enough: do not wait for it again on every case
            results.append({"label": case.label, "tried": case.tried, "rel_ours": np.nan,
                            "rel_fd": np.nan, "ok": False,
                            "hint": "not run: an earlier case did not return"})
            continue
        results.append(run_case(name, fn, case, time_limit))
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

    Each step's loss and gradients are checked before the optimiser uses
    them: a gradient that is not keyed like ``model.params``, has the wrong
    shape, or holds a NaN or inf (or a NaN or inf loss) stops training with
    an error naming the minibatch and the tensor; the parameters are then
    those after the previous step, never NaN.
    """
    optimizer = Adam() if optimizer is None else optimizer
    rng = np.random.default_rng(seed)
    n, batch_loss = X.shape[0], []
    for epoch in range(int(epochs)):
        order = rng.permutation(n)
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            loss, grads = loss_fn(model, X[idx], click[idx], conversion[idx])
            _check_step(loss, grads, model, f"epoch {epoch + 1}, minibatch {s // batch_size + 1}")
            optimizer.step(model.params, grads)
            batch_loss.append(float(loss))
    return batch_loss


def _check_step(loss, grads, model, where):
    """Refuse a step whose loss or gradients the optimiser must not use (see :func:`train`)."""
    if not isinstance(grads, dict) or set(grads) != set(model.params):
        raise ValueError("loss_fn must return gradients keyed like model.params")
    stop = (f"exercises.train stopped at {where}, before the optimiser step; the parameters "
            "are those after the step before. Check the function with "
            "exercises.check('esmm_loss', loss_fn)")
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise TypeError(f"loss_fn's loss must be a number, got {type(loss).__name__}; "
                        f"{stop}") from None
    if not np.isfinite(value):
        raise FloatingPointError(f"loss_fn returned the loss {value}: {stop}")
    for name, w in model.params.items():
        g = grads[name]
        values = g.values if isinstance(g, L.SparseRows) else g
        shape = (g.n_rows,) + g.values.shape[1:] if isinstance(g, L.SparseRows) else np.shape(g)
        if not isinstance(values, np.ndarray) or tuple(shape) != w.shape:
            raise ValueError(f"loss_fn's gradient of {name!r} has shape {tuple(shape)}, the "
                             f"parameter {w.shape}: {stop}")
        if not np.all(np.isfinite(values)):
            n_bad = int(np.count_nonzero(~np.isfinite(values)))
            raise FloatingPointError(f"loss_fn's gradient of {name!r} has {n_bad} NaN or inf "
                                     f"entries: {stop}")


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
