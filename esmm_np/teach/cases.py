"""The cases each exercise is checked on: inputs, finite-difference gradients, hints.

A case is built once per :func:`esmm_np.exercises.check` call from a seeded
generator, so every call sees the same numbers. The finite differences are
taken here, in float64, before any learner's function runs.
"""

from collections import namedtuple

import numpy as np

from .. import layers as L
from .. import losses
from ..gradcheck import LAYER_TOL, numerical_gradient
from ..model import ESMM

MODEL_TOL = 1e-7                       # whole model against finite differences

#: One case: a label, what it tries (a sentence), the arguments, the names of
#: the outputs, the finite-difference gradients (one per output, None where
#: there is none), a hint for what this case is there to catch, the bar
#: against finite differences, and whether outputs are compared with ours
#: entry by entry (the extreme cases, where the entries that matter can be
#: 1e-18 beside entries of 1: one norm over the array would not see them).
Case = namedtuple("Case", ["label", "tried", "args", "outputs", "numeric", "hint", "fd_tol",
                           "entrywise"], defaults=(False,))


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
    # exp overflows just above 709.78; sigmoid(-745) is the smallest float64 above 0
    edge = np.array([-745.0, -710.0, -709.0, -100.0, -37.0, 37.0, 100.0, 709.0, 710.0, 745.0])
    hint_ext = ("for very negative x, exp(-x) overflows; exponentiate only numbers <= 0 "
                "(split by the sign of x), and keep the tiny values: sigmoid(-40) is 4.2e-18, "
                "not 0 and not sigmoid(-25)")
    return [
        Case("moderate, float64", "x ~ N(0, 3^2), shape (4, 3)", (x,), ("s",), [None], "", None),
        Case("extreme, float64", "x = -800, -40, 0, 40, 800", (ext,), ("s",), [None], hint_ext,
             None, True),
        Case("float32", "x ~ N(0, 3^2) in float32", (x.astype(np.float32),), ("s",), [None],
             "keep the input's dtype", None),
        Case("extreme, float32", "x = -100, -30, 30, 100 in float32 (exp(89) overflows)",
             (np.array([-100.0, -30.0, 30.0, 100.0], dtype=np.float32),), ("s",), [None],
             hint_ext, None, True),
        Case("overflow edge, float64", "x = -745, -710, -709, -100, -37 and their negatives",
             (edge,), ("s",), [None], hint_ext, None, True),
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


def _loss_case(label, tried, loss_fn, args, diff, outputs, hint="", dtype=np.float64, fd=True,
               entrywise=False):
    """A case for a loss: value compared with ours, gradients also with finite differences."""
    args = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in args)
    numeric = [None] * len(outputs)
    if fd and dtype == np.float64:
        for i, g in zip(diff, _loss_numeric(loss_fn, args, diff)):
            numeric[1 + diff.index(i)] = g
    return Case(label, tried, args, outputs, numeric, hint, LAYER_TOL, entrywise)


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
                       f, (ext, y_ext), [0], out, hint_ext, fd=False, entrywise=True),
            _loss_case("one row", "n = 1", f, (np.array([0.7]), np.array([1])), [0], out),
            _loss_case("float32", "n = 8 in float32", f, (logit, y), [0], out,
                       "keep the dtype (an int or float64 array in the formula upcasts)",
                       np.float32),
            _loss_case("extreme, float32", "logits -100, 100 in float32, wrong labels", f,
                       (np.array([-100.0, 100.0, 3.0]), np.array([1, 0, 1])), [0], out, hint_ext,
                       np.float32, entrywise=True),
            _loss_case("both labels, to overflow",
                       "logits -800, 800, -710, 710, -40, 40, each with label 1 and with label 0",
                       f, (np.repeat([-800.0, 800.0, -710.0, 710.0, -40.0, 40.0], 2),
                           np.tile([1, 0], 6)), [0], out, hint_ext, fd=False, entrywise=True)]


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
    hint_one = ("with both logits large, p = sigmoid(a) * sigmoid(b) rounds to 1, so 1 - p "
                "formed from p (1 - p, log1p(-p), -expm1(log p)) is 0 and its log -inf: write "
                "1 - p from the logits, (e^-a + e^-b + e^-(a+b)) / ((1 + e^-a)(1 + e^-b)), and "
                "take its log with logaddexp")
    # every sign pair of (a, b) at +-800 and +-710 (exp overflows above 709.78), z = 0 and 1
    big = np.array([800.0, 710.0])
    a_o = np.concatenate([np.repeat(sa * big, 2) for sa in (1, 1, -1, -1)])
    b_o = np.concatenate([np.repeat(sb * big, 2) for sb in (1, -1, 1, -1)])
    z_o = np.tile([0, 1], 8)
    out = ("loss", "da", "db")
    return [_loss_case("float64", "logits ~ N(0, 2^2), n = 8, both labels", f, (a, b, z), [0, 1],
                       out),
            _loss_case("extreme logits", "(a,b) z=1: (-20,-5) (-400,-400) (-3,800); z=0: (20,20) "
                       "(40,40) (40,-40)", f, (a_x, b_x, z_x), [0, 1], out,
                       hint_ext, fd=False, entrywise=True),
            _loss_case("one row", "n = 1, z = 0", f, (np.array([0.4]), np.array([-1.2]),
                                                         np.array([0])), [0, 1], out),
            _loss_case("float32", "n = 8 in float32", f, (a, b, z), [0, 1], out,
                       "keep the dtype", np.float32),
            _loss_case("extreme, float32", "float32, z=1: a = b = -60; z=0: a = b = 20",
                       f, (np.array([-60.0, 20.0]), np.array([-60.0, 20.0]), np.array([1, 0])),
                       [0, 1], out, hint_ext, np.float32, entrywise=True),
            _loss_case("z = 0, p rounds to 1", "z = 0 with a = b = 800, 710, 40",
                       f, (np.array([800.0, 710.0, 40.0]), np.array([800.0, 710.0, 40.0]),
                           np.array([0, 0, 0])), [0, 1], out, hint_one, fd=False, entrywise=True),
            _loss_case("both labels, to overflow",
                       "a, b = +-800 or +-710, all four sign pairs, each with z = 0 and z = 1",
                       f, (a_o, b_o, z_o), [0, 1], out, hint_ext + "; " + hint_one, fd=False,
                       entrywise=True),
            _loss_case("p rounds to 1, float32", "float32, z = 0 with a = b = 100",
                       f, (np.array([100.0]), np.array([100.0]), np.array([0])), [0, 1], out,
                       hint_one, np.float32, entrywise=True)]


def tiny_esmm(field_dims=(5, 4, 3), units=(6, 3), loss_weights=(1.0, 1.0), dtype=np.float64,
               seed=0):
    """A small ReLU ESMM whose biases are not zero (zeros could hide a wrong backward)."""
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
        _esmm_case("float64", "towers (6, 3), n = 6 with repeated ids", tiny_esmm(), X, click,
                   conversion),
        _esmm_case("weights, unequal towers",
                   "loss_weights (1.0, 0.4), towers (5, 3) and (4,)",
                   tiny_esmm(units=((5, 3), (4,)), loss_weights=(1.0, 0.4), seed=1), X, click,
                   conversion, "the two losses are weighted by model.loss_weights"),
        _esmm_case("one row", "n = 1, a clicked impression that converted", tiny_esmm(seed=2),
                   X[:1], click[:1], conversion[:1]),
        _esmm_case("float32", "the first case's model in float32", tiny_esmm(dtype=np.float32),
                   X, click, conversion, "keep the model's dtype in every gradient"),
    ]


CASES = {
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
