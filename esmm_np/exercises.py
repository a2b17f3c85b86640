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
"""

import copy
import warnings
from collections import namedtuple

import numpy as np

from . import layers as L
from . import losses
from .gradcheck import LAYER_TOL, numerical_gradient

MODEL_TOL = 1e-7                       # whole model against finite differences
OURS_TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}

NAMES = ("sigmoid", "sigmoid_backward", "relu_backward", "affine_backward",
         "batchnorm_backward", "embedding_backward", "ctcvr_backward",
         "bce_with_logits", "ctcvr_bce_logspace", "esmm_loss")

#: One case: a label, what it tries (a sentence), the arguments, the names of
#: the outputs, the finite-difference gradients (one per output, None where
#: there is none), and a hint for what this case is there to catch.
Case = namedtuple("Case", ["label", "tried", "args", "outputs", "numeric", "hint", "fd_tol"])


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


# ------------------------------------------------------------- the cases

def _away_from_zero(x, margin=0.1):
    """Push entries away from 0, where ReLU has a kink and a finite difference lies."""
    return x + np.sign(x) * margin


def _layer_numeric(forward, inputs, diff, dout):
    """Finite-difference gradients of ``sum(forward(*inputs)[0] * dout)`` for inputs ``diff``."""
    inputs = [np.array(x, copy=True) for x in inputs]

    def f():
        return float(np.sum(forward(*inputs)[0] * dout))

    return [numerical_gradient(f, inputs[i]) for i in diff]


def _backward_case(label, tried, forward, inputs, diff, outputs, rng, hint="", dtype=np.float64):
    """A case for a backward: our forward's cache, a random ``dout``, finite differences in float64."""
    inputs = [x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x
              for x in inputs]
    out, cache = forward(*inputs)[:2]
    dout = rng.standard_normal(out.shape).astype(dtype)
    numeric = (_layer_numeric(forward, inputs, diff, dout) if dtype == np.float64
               else [None] * len(outputs))
    return Case(label, tried, (dout, cache), outputs, numeric, hint, LAYER_TOL)


def _loss_numeric(loss_fn, args, diff):
    """Finite differences of the scalar ``loss_fn(*args)[0]`` for the arguments ``diff``."""
    args = [np.array(x, copy=True) for x in args]

    def f():
        return loss_fn(*args)[0]

    return [numerical_gradient(f, args[i]) for i in diff]


def _cases_sigmoid(rng):
    x = rng.normal(0, 3, size=(4, 3))
    ext = np.array([-800.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 800.0])
    hint_ext = ("for very negative x, exp(-x) overflows; exponentiate only numbers <= 0 "
                "(split by the sign of x)")
    return [
        Case("moderate, float64", "x ~ N(0, 3^2), shape (4, 3)", (x,), ("s",), [None], "", None),
        Case("extreme, float64", "x = -800, -40, 0, 40, 800", (ext,), ("s",), [None], hint_ext, None),
        Case("float32", "x ~ N(0, 3^2) in float32", (x.astype(np.float32),), ("s",), [None],
             "keep the input's dtype", None),
        Case("extreme, float32", "x = -100, -30, 30, 100 in float32 (exp(89) overflows)",
             (np.array([-100.0, -30.0, 30.0, 100.0], dtype=np.float32),), ("s",), [None],
             hint_ext, None),
    ]


def _cases_sigmoid_backward(rng):
    x = rng.normal(0, 2, size=(6, 4))
    return [_backward_case("moderate, float64", "x ~ N(0, 2^2), shape (6, 4)", L.sigmoid_forward,
                           [x], [0], ("dx",), rng),
            _backward_case("one row", "x of shape (1, 5)", L.sigmoid_forward,
                           [rng.normal(0, 2, size=(1, 5))], [0], ("dx",), rng),
            _backward_case("float32", "x ~ N(0, 2^2) in float32", L.sigmoid_forward, [x], [0],
                           ("dx",), rng, "keep the input's dtype", np.float32)]


def _cases_relu_backward(rng):
    x = _away_from_zero(rng.standard_normal((6, 4)))
    return [_backward_case("float64", "x ~ N(0, 1) kept 0.1 away from the kink, shape (6, 4)",
                           L.relu_forward, [x], [0], ("dx",), rng),
            _backward_case("one row", "x of shape (1, 5)", L.relu_forward,
                           [_away_from_zero(rng.standard_normal((1, 5)))], [0], ("dx",), rng),
            _backward_case("float32", "x in float32", L.relu_forward, [x], [0], ("dx",), rng,
                           "keep the upstream gradient's dtype", np.float32)]


def _cases_affine_backward(rng):
    def inputs(n):
        return [rng.standard_normal((n, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)]

    out = ("dx", "dW", "db")
    return [_backward_case("float64", "x (5, 4), W (4, 3), b (3,)", L.affine_forward, inputs(5),
                           [0, 1, 2], out, rng),
            _backward_case("one row", "x (1, 4), W (4, 3): db must still have shape (3,)",
                           L.affine_forward, inputs(1), [0, 1, 2], out, rng,
                           "with one row, every gradient must still have its input's shape"),
            _backward_case("float32", "x, W, b in float32", L.affine_forward, inputs(5), [0, 1, 2],
                           out, rng, "keep the dtype", np.float32)]


def _bn_forward(train):
    rm, rv = np.array([0.3, -0.2, 0.1, 0.0]), np.array([1.5, 0.8, 2.0, 1.1])

    def forward(x, gamma, beta):
        return L.batchnorm_forward(x, gamma, beta, rm.astype(x.dtype), rv.astype(x.dtype), train)

    return forward


def _cases_batchnorm_backward(rng):
    def inputs(n):
        return [3 + 2 * rng.standard_normal((n, 4)), rng.uniform(0.5, 2, size=4),
                rng.standard_normal(4)]

    out = ("dx", "dgamma", "dbeta")
    return [_backward_case("training mode", "batch statistics, x (7, 4)", _bn_forward(True),
                           inputs(7), [0, 1, 2], out, rng,
                           "in training mode mu and var are functions of every row of x"),
            _backward_case("three rows", "training mode, x (3, 4): every row moves mu and var a lot",
                           _bn_forward(True), inputs(3), [0, 1, 2], out, rng,
                           "in training mode mu and var are functions of every row of x"),
            _backward_case("inference mode", "running statistics (constants), x (5, 4)",
                           _bn_forward(False), inputs(5), [0, 1, 2], out, rng,
                           "in inference mode (cache[3] is False) the statistics are constants"),
            _backward_case("inference, one row", "running statistics, x (1, 4)",
                           _bn_forward(False), inputs(1), [0, 1, 2], out, rng,
                           "in inference mode (cache[3] is False) the statistics are constants"),
            _backward_case("float32", "training mode in float32", _bn_forward(True), inputs(7),
                           [0, 1, 2], out, rng, "keep the dtype", np.float32)]


def _cases_embedding_backward(rng):
    k = 3
    unique = np.array([[0, 5], [1, 6], [2, 7]])                           # no id twice
    # rows 0 and 5 repeat across impressions, row 4 within one (a per-impression
    # `table[ids[i]] += de[i]` is buffered too, so it must fail here)
    repeated = np.array([[0, 5], [0, 6], [2, 5], [0, 5], [3, 9], [4, 4]])
    hint_rep = ("an id that occurs several times in the batch must receive the sum of all "
                "its gradients")
    return [_backward_case("distinct ids", "ids (3, 2), no id repeated, table (10, 3)",
                           L.embedding_forward, [rng.standard_normal((10, k)), unique], [0],
                           ("dtable",), rng),
            _backward_case("repeated ids",
                           "ids (6, 2): rows 0, 5 three times; row 4 twice in one impression",
                           L.embedding_forward, [rng.standard_normal((10, k)), repeated], [0],
                           ("dtable",), rng, hint_rep),
            _backward_case("one row", "ids (1, 2)", L.embedding_forward,
                           [rng.standard_normal((10, k)), np.array([[4, 8]])], [0], ("dtable",), rng),
            _backward_case("float32", "repeated ids, float32", L.embedding_forward,
                           [rng.standard_normal((10, k)), repeated], [0], ("dtable",), rng,
                           hint_rep, np.float32)]


def _cases_ctcvr_backward(rng):
    def inputs(n):
        return [rng.uniform(0.05, 0.95, size=n), rng.uniform(0.05, 0.95, size=n)]

    out = ("dp_ctr", "dp_cvr")
    return [_backward_case("float64", "p_ctr, p_cvr uniform in (0.05, 0.95), n = 6",
                           L.ctcvr_forward, inputs(6), [0, 1], out, rng),
            _backward_case("one row", "n = 1", L.ctcvr_forward, inputs(1), [0, 1], out, rng),
            _backward_case("float32", "n = 6 in float32", L.ctcvr_forward, inputs(6), [0, 1], out,
                           rng, "keep the dtype", np.float32)]


def _loss_case(label, tried, loss_fn, args, diff, outputs, hint="", dtype=np.float64, fd=True):
    """A case for a loss: value compared with ours, gradients also with finite differences."""
    args = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)
    numeric = [None] * len(outputs)
    if fd and dtype == np.float64:
        for i, g in zip(diff, _loss_numeric(loss_fn, args, diff)):
            numeric[1 + diff.index(i)] = g
    return Case(label, tried, args, outputs, numeric, hint, LAYER_TOL)


def _cases_bce_with_logits(rng):
    f = losses.bce_with_logits
    logit = rng.normal(0, 2, size=8)
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    ext = np.array([-800.0, 800.0, -40.0, 40.0, -40.0, 40.0])
    y_ext = np.array([1, 0, 1, 0, 0, 1])
    hint_ext = ("with a confidently wrong logit, sigmoid(logit) rounds to 0 or 1 and its log "
                "is -inf: write -log(sigmoid(a)) and -log(1 - sigmoid(a)) without forming sigmoid(a)")
    out = ("loss", "dlogit")
    return [_loss_case("float64", "logits ~ N(0, 2^2), n = 8, both labels", f, (logit, y), [0], out),
            _loss_case("extreme logits", "logits -800, 800, -40, 40, each with the wrong label",
                       f, (ext, y_ext), [0], out, hint_ext, fd=False),
            _loss_case("one row", "n = 1", f, (np.array([0.7]), np.array([1])), [0], out),
            _loss_case("float32", "n = 8 in float32", f, (logit, y), [0], out,
                       "keep the dtype (an int or float64 array in the formula upcasts)",
                       np.float32),
            _loss_case("extreme, float32", "logits -100, 100 in float32, wrong labels", f,
                       (np.array([-100.0, 100.0, 3.0]), np.array([1, 0, 1])), [0], out, hint_ext,
                       np.float32)]


def _cases_ctcvr_bce_logspace(rng):
    f = losses.ctcvr_bce_logspace
    a, b = rng.normal(0, 2, size=8), rng.normal(0, 2, size=8)
    z = np.array([1, 0, 0, 1, 0, 1, 0, 0])
    a_x = np.array([-20.0, 20.0, -400.0, 40.0, 40.0, -3.0])
    b_x = np.array([-5.0, 20.0, -400.0, 40.0, -40.0, 800.0])
    z_x = np.array([1, 0, 1, 0, 0, 1])
    hint_ext = ("the product sigmoid(a) * sigmoid(b) underflows to 0 or rounds to 1 here, so "
                "log(p) or log(1 - p) of the product is -inf, or capped by a clip; take logs "
                "first and work from the logits")
    out = ("loss", "da", "db")
    return [_loss_case("float64", "logits ~ N(0, 2^2), n = 8, both labels", f, (a, b, z), [0, 1],
                       out),
            _loss_case("extreme logits", "(a,b) z=1: (-20,-5) (-400,-400) (-3,800); z=0: (20,20) (40,40) (40,-40)", f, (a_x, b_x, z_x), [0, 1], out,
                       hint_ext, fd=False),
            _loss_case("one row", "n = 1, z = 0", f, (np.array([0.4]), np.array([-1.2]),
                                                         np.array([0])), [0, 1], out),
            _loss_case("float32", "n = 8 in float32", f, (a, b, z), [0, 1], out,
                       "keep the dtype", np.float32),
            _loss_case("extreme, float32", "float32, z=1: a = b = -60; z=0: a = b = 20",
                       f, (np.array([-60.0, 20.0]), np.array([-60.0, 20.0]), np.array([1, 0])),
                       [0, 1], out, hint_ext, np.float32)]


def _tiny_esmm(field_dims=(5, 4, 3), units=(6, 3), loss_weights=(1.0, 1.0), dtype=np.float64,
               seed=0):
    """A small ReLU ESMM whose biases are not zero (zeros could hide a wrong backward)."""
    from .model import ESMM  # local: model imports layers, as this module does

    model = ESMM(field_dims, embed_dim=2, tower_units=units, loss_weights=loss_weights,
                 dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for w in model.params.values():
        w += (0.1 * rng.standard_normal(w.shape)).astype(dtype)
    return model


def _esmm_case(label, tried, model, X, click, conversion, hint=""):
    numeric = None
    if model.dtype == np.float64:
        numeric = {}
        for name, w in model.params.items():
            numeric[name] = numerical_gradient(lambda: model.loss(X, click, conversion)[0], w)
    return Case(label, tried, (model, X, click, conversion), ("loss", "grads"),
                [None, numeric], hint, MODEL_TOL)


def _cases_esmm_loss(rng):
    X = np.array([[0, 1, 2], [3, 1, 0], [0, 2, 1], [4, 3, 2], [1, 0, 0], [0, 1, 1]])
    click = np.array([1, 0, 1, 0, 1, 0])
    conversion = np.array([1, 0, 0, 0, 1, 0])
    return [
        _esmm_case("float64", "towers (6, 3), n = 6 with repeated ids", _tiny_esmm(), X, click,
                   conversion),
        _esmm_case("weights, unequal towers",
                   "loss_weights (1.0, 0.4), towers (5, 3) and (4,)",
                   _tiny_esmm(units=((5, 3), (4,)), loss_weights=(1.0, 0.4), seed=1), X, click,
                   conversion, "the two losses are weighted by model.loss_weights"),
        _esmm_case("one row", "n = 1, a clicked impression that converted", _tiny_esmm(seed=2),
                   X[:1], click[:1], conversion[:1]),
        _esmm_case("float32", "the first case's model in float32", _tiny_esmm(dtype=np.float32),
                   X, click, conversion, "keep the model's dtype in every gradient"),
    ]


_CASES = {
    "sigmoid": _cases_sigmoid,
    "sigmoid_backward": _cases_sigmoid_backward,
    "relu_backward": _cases_relu_backward,
    "affine_backward": _cases_affine_backward,
    "batchnorm_backward": _cases_batchnorm_backward,
    "embedding_backward": _cases_embedding_backward,
    "ctcvr_backward": _cases_ctcvr_backward,
    "bce_with_logits": _cases_bce_with_logits,
    "ctcvr_bce_logspace": _cases_ctcvr_bce_logspace,
    "esmm_loss": _cases_esmm_loss,
}


# ------------------------------------------------- known mistakes, for hints
#
# Each exercise lists typical wrong answers as functions. When a learner's
# function fails a case, the checker runs each of these on the same case; if
# the learner's outputs equal one of them, the hint names that mistake.

def _sig_swap_sign(x):
    return L.sigmoid(-x)


def _sigb_plus(dout, s):
    return dout * s * (1 + s)


def _sigb_no_dout(dout, s):
    return s * (1 - s) + 0 * dout


def _sigb_of_x(dout, s):
    t = L.sigmoid(s)
    return dout * t * (1 - t)


def _relu_gate_dout(dout, mask):
    return np.maximum(dout, 0)


def _relu_no_gate(dout, mask):
    return dout * 1


def _relu_inverted(dout, mask):
    return dout * ~mask


def _aff_mean_db(dout, cache):
    dx, dW, _ = L.affine_backward(dout, cache)
    return dx, dW, dout.mean(axis=0)


def _aff_no_db_sum(dout, cache):
    dx, dW, _ = L.affine_backward(dout, cache)
    return dx, dW, dout


def _bn_no_means(dout, cache):
    xhat, gamma, inv_std, train = cache
    return dout * gamma * inv_std, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def _bn_no_var_path(dout, cache):
    xhat, gamma, inv_std, train = cache
    dxhat = dout * gamma
    return (inv_std * (dxhat - dxhat.mean(axis=0)), (dout * xhat).sum(axis=0), dout.sum(axis=0))


def _bn_no_mean_path(dout, cache):
    xhat, gamma, inv_std, train = cache
    dxhat = dout * gamma
    return (inv_std * (dxhat - xhat * (dxhat * xhat).mean(axis=0)), (dout * xhat).sum(axis=0),
            dout.sum(axis=0))


def _bn_always_train(dout, cache):
    return L.batchnorm_backward(dout, cache[:3] + (True,))


def _bn_dgamma_plain(dout, cache):
    dx, _, dbeta = L.batchnorm_backward(dout, cache)
    return dx, dout.sum(axis=0), dbeta


def _emb_buffered(de, cache):
    ids, V = cache
    n, F = ids.shape
    dtable = np.zeros((V, de.shape[1] // F), dtype=de.dtype)
    dtable[ids] += de.reshape(n, F, -1)
    return dtable


def _ctcvr_swapped(dp, cache):
    p_ctr, p_cvr = cache
    return dp * p_ctr, dp * p_cvr


def _ctcvr_no_factor(dp, cache):
    return dp * 1, dp * 1


def _bce_no_mean(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    return loss, d * logit.dtype.type(logit.shape[0])


def _bce_sum(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    n = logit.shape[0]
    return loss * n, d * logit.dtype.type(n)


def _bce_sign(logit, y):
    loss, d = losses.bce_with_logits(logit, y)
    return loss, -d


def _bce_clipped(logit, y, eps=1e-7):
    p = np.clip(L.sigmoid(logit), eps, 1 - eps)
    yf = y.astype(logit.dtype)
    loss = float(np.mean(-(yf * np.log(p) + (1 - yf) * np.log(1 - p))))
    return loss, losses.bce_with_logits(logit, y)[1]


def _ctcvr_clipped(a, b, z):
    pa, sa = L.sigmoid_forward(a)
    pb, sb = L.sigmoid_forward(b)
    loss, dpa, dpb = losses.ctcvr_bce_naive(pa, pb, z)
    return loss, L.sigmoid_backward(dpa, sa), L.sigmoid_backward(dpb, sb)


def _ctcvr_logits_swapped(a, b, z):
    loss, da, db = losses.ctcvr_bce_logspace(a, b, z)
    return loss, db, da


def _ctcvr_no_mean(a, b, z):
    loss, da, db = losses.ctcvr_bce_logspace(a, b, z)
    n = a.dtype.type(a.shape[0])
    return loss, da * n, db * n


def _plain_esmm(model, X, click, conversion, *, weights=True, both_towers=True,
                ctr_gets_ctcvr=True):
    """A plain ESMM assembly with switches that reproduce typical mistakes."""
    from .model import tower_backward, tower_forward

    rows = X + model.offsets
    e, emb_cache = L.embedding_forward(model.params["embedding"], rows)
    logits, caches = {}, {}
    for t, units in zip(model.towers, model.tower_units):
        cfg = model.tower_config(units)
        logits[t], caches[t] = tower_forward(model.params, model.state, t, e, cfg, True)
    w_ctr, w_ctcvr = model.loss_weights if weights else (1.0, 1.0)
    z = click * conversion
    loss_ctr, da_ctr = losses.bce_with_logits(logits["ctr"], click)
    loss_ctcvr, da, db = losses.ctcvr_bce_logspace(logits["ctr"], logits["cvr"], z)
    dlogit = {"ctr": w_ctr * da_ctr + (w_ctcvr * da if ctr_gets_ctcvr else 0),
              "cvr": w_ctcvr * db}
    grads, dh0 = {}, 0
    for t, units in zip(model.towers, model.tower_units):
        d = tower_backward(dlogit[t], caches[t], t, model.tower_config(units), grads)
        if both_towers or t == "ctr":
            dh0 = dh0 + d
    grads["embedding"] = L.sparse_to_dense(L.embedding_backward(dh0, emb_cache))
    return w_ctr * loss_ctr + w_ctcvr * loss_ctcvr, grads


def _esmm_no_weights(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, weights=False)


def _esmm_one_tower_table(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, both_towers=False)


def _esmm_ctr_only_bce(model, X, click, conversion):
    return _plain_esmm(model, X, click, conversion, ctr_gets_ctcvr=False)


_MISTAKES = {
    "sigmoid": [(_sig_swap_sign, "this is sigmoid(-x): check the sign in the exponent")],
    "sigmoid_backward": [
        (_sigb_plus, "this looks like s * (1 + s): the derivative of the sigmoid must vanish "
                     "as s approaches 1, check the sign of the second factor"),
        (_sigb_no_dout, "the upstream gradient dout is not multiplied in (chain rule)"),
        (_sigb_of_x, "the cache already holds s = sigmoid(x), not x: do not apply the sigmoid again"),
    ],
    "relu_backward": [
        (_relu_gate_dout, "you gated by the sign of dout; the gate is where the forward's input "
                          "was positive (the cache)"),
        (_relu_no_gate, "the gradient passes unchanged: it must be zero where the input was "
                        "not positive"),
        (_relu_inverted, "the gate is inverted: the gradient flows where the input was positive"),
    ],
    "affine_backward": [
        (_aff_mean_db, "db is a mean over rows: b is added to every row, so its gradient "
                       "collects every row's"),
        (_aff_no_db_sum, "db keeps the batch axis: it must have b's shape"),
    ],
    "batchnorm_backward": [
        (_bn_no_means, "dx has no terms through the batch mean and variance: in training mode "
                       "every row moves mu and var, and they move every output"),
        (_bn_no_var_path, "dx has the path through the batch mean but not the one through the "
                          "batch variance"),
        (_bn_no_mean_path, "dx has the path through the batch variance but not the one through "
                           "the batch mean"),
        (_bn_always_train, "the batch-statistics terms were applied in inference mode "
                           "(cache[3] is False): there mu and var are constants"),
        (_bn_dgamma_plain, "dgamma is missing a factor: gamma multiplies xhat"),
    ],
    "embedding_backward": [
        (_emb_buffered, "this is `table[ids] += de`: NumPy's fancy-index += is buffered, so a "
                        "repeated id keeps one write instead of the sum (look for an unbuffered add)"),
    ],
    "ctcvr_backward": [
        (_ctcvr_swapped, "the product rule's factors are swapped: each probability's gradient is "
                         "the upstream times the *other* probability"),
        (_ctcvr_no_factor, "the upstream gradient is passed unchanged: multiply by the other factor"),
    ],
    "bce_with_logits": [
        (_bce_no_mean, "the gradient is n times too large: the loss is the mean over the batch"),
        (_bce_sum, "loss and gradient are n times too large: the loss is the mean, not the sum"),
        (_bce_sign, "the gradient has the wrong sign"),
        (_bce_clipped, "the loss is capped by clipping the probability: with a confidently wrong "
                       "logit the true loss is larger; work from the logit instead"),
    ],
    "ctcvr_bce_logspace": [
        (_ctcvr_clipped, "this is the clipped product: with confidently wrong logits the loss "
                         "is capped at -log(eps) and the gradient is 0; work in log space"),
        (_ctcvr_logits_swapped, "da and db are swapped"),
        (_ctcvr_no_mean, "the gradients are n times too large: the loss is the mean over the batch"),
    ],
    "esmm_loss": [
        (_esmm_no_weights, "the loss weights (model.loss_weights) are not applied"),
        (_esmm_one_tower_table, "the shared table gets only the CTR tower's gradient: both "
                                "towers read h0, so their gradients add before the lookup"),
        (_esmm_ctr_only_bce, "the CTR logit gets only the CTR loss's gradient: it also feeds "
                             "p_ctcvr"),
    ],
}


# --------------------------------------------------------------- checking

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


def _call(fn, args, consumed=0):
    """Run ``fn(*args)``; return (output, floating-point warnings, exception or None, written).

    ``written`` names the first input the function wrote into (None if none),
    ignoring the first ``consumed`` arguments. The caller still needs the
    others (a forward's or a loss's input, e.g. the CTR logit both losses
    read; the cache a backward reads, which holds arrays the forward also
    returned; the model), so a function that overwrites them is wrong even
    when what it returns is right. A backward's upstream gradient is consumed:
    computing into it in place is fine.
    """
    given = _copy_args(args)
    with warnings.catch_warnings(record=True) as caught, \
            np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"):
        warnings.simplefilter("always")
        try:
            out = fn(*given)
        except Exception as exc:  # a learner's bug is a result to report, not a crash
            return None, [], exc, None
    fp = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    written = None
    for i, (a, b) in enumerate(zip(args[consumed:], given[consumed:]), start=consumed):
        for (nm, before), (_, after) in zip(_arrays(a, f"argument {i + 1}"),
                                            _arrays(b, f"argument {i + 1}")):
            if not np.array_equal(before, after, equal_nan=before.dtype.kind == "f"):
                written = nm
                break
        if written:
            break
    return out, fp, None, written


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


def _matches(flat, other, names, dtype):
    """Does the learner's flattened output equal ``other``'s (a known mistake)?"""
    try:
        theirs = _flatten(other, names, dtype, other)
    except Exception:
        return False
    if len(theirs) != len(flat):
        return False
    return all(a.shape == b.shape and np.all(np.isfinite(b)) and _rel(a, b) <= 1e-6
               for (_, a), (_, b) in zip(flat, theirs))


def run_case(name, fn, case):
    """Run one case; return a dict: label, tried, rel_ours, rel_fd, ok, hint."""
    ref_fn = _REFERENCE[name]
    expected = ref_fn(*_copy_args(case.args))
    dtype = case.args[0].dtype           # of the first array, or of the model
    result = {"label": case.label, "tried": case.tried, "rel_ours": np.nan, "rel_fd": np.nan,
              "ok": False, "hint": ""}
    out, fp, exc, written = _call(fn, case.args, consumed=int(name.endswith("_backward")))
    if exc is not None:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        result["hint"] = f"raised {type(exc).__name__}: {msg}"[:160]
        if isinstance(exc, NotImplementedError):
            result["hint"] = "not written yet (raises NotImplementedError)"
        return result
    if written is not None:
        result["hint"] = (f"wrote into its input ({written}): the caller still needs it; "
                          "compute into new arrays (y = x * s, not x *= s)")
        return result
    try:
        flat = _flatten(out, case.outputs, dtype, expected)
    except ValueError as err:
        result["hint"] = str(err)
        return result
    ours = _flatten(expected, case.outputs, dtype, expected)
    bad = [nm for nm, a in flat if not np.all(np.isfinite(a))]
    if fp or bad:
        what = (f"{', '.join(bad)} has NaN or inf entries" if bad
                else f"floating-point warning: {fp[0]}")
        result["hint"] = what + (f"; {case.hint}" if case.hint else "")
        return result
    tol_ours = OURS_TOL[np.dtype(dtype)]
    errs = [(_rel(a, b), nm) for (nm, a), (_, b) in zip(flat, ours)]
    rel_ours, worst = max(errs)
    result["rel_ours"] = rel_ours
    numeric = _numeric_flat(case.outputs, case.numeric, expected)
    fd_errs = [(_rel(a, num), nm) for (nm, a), num in zip(flat, numeric) if num is not None]
    rel_fd, worst_fd = max(fd_errs) if fd_errs else (np.nan, None)
    result["rel_fd"] = rel_fd
    ok = rel_ours <= tol_ours and (not fd_errs or rel_fd <= case.fd_tol)
    result["ok"] = bool(ok)
    if not ok:
        for wrong, hint in _MISTAKES[name]:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    other = wrong(*_copy_args(case.args))
                except Exception:
                    continue
            # Name a mistake only if this case can tell it from the right answer.
            if _matches(flat, other, case.outputs, dtype) and not _matches(
                    ours, other, case.outputs, dtype):
                result["hint"] = hint
                return result
        off = worst if rel_ours > tol_ours else worst_fd
        result["hint"] = f"{off} is off" + (f"; {case.hint}" if case.hint else "")
    return result


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
    results = [run_case(name, fn, case) for case in _CASES[name](rng)]
    if verbose:
        print(format_results(name, results))
    return all(r["ok"] for r in results)


def format_results(name, results):
    """The table :func:`check` prints."""
    lines = [f"{name}: {SIGNATURES[name]}",
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


# ------------------------------------------------- the exercise notebooks

def train(loss_fn, model, X, click, conversion, *, epochs=1, batch_size=512, optimizer=None,
          seed=0):
    """Train ``model`` in place with the learner's ``loss_fn(model, X, click, conversion)``.

    The same loop as :func:`esmm_np.fit` (same shuffling for the same
    ``seed``, one optimiser step per minibatch), with the gradients coming
    from ``loss_fn``. So a correct ``loss_fn`` trains the same model as
    ``fit`` does, up to rounding. Returns the list of minibatch losses.
    """
    from .optim import Adam

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
