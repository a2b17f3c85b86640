"""The cases of the experts exercises (E3): the softmax gate, the mixture, AITM's attention.

Built like :mod:`esmm_np.teach.cases`: from a seeded generator, with the
finite differences (float64) taken here before any learner's function runs.
The layers are :mod:`esmm_np.experts` and :mod:`esmm_np.transfer`.
"""

import numpy as np

from .. import experts
from .. import transfer
from ..gradcheck import LAYER_TOL, numerical_gradient
from .cases import Case

#: Why the extreme softmax cases exist (the hint a failure there adds).
SHIFT_HINT = ("exp overflows above 709.78 in float64 (88.7 in float32), and exp(-800) underflows "
              "to 0 so a row of very negative logits gives 0 / 0: subtract each row's max "
              "before exponentiating (softmax(g - c) = softmax(g) for any c per row)")


def _as(dtype, inputs):
    return [x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x
            for x in inputs]


def _numeric(forward, inputs, diff, dout):
    """Finite differences of ``sum(forward(*inputs)[0] * dout)`` for the inputs ``diff``."""
    inputs = [np.array(x, copy=True) for x in inputs]

    def f():
        return float(np.sum(forward(*inputs)[0] * dout))

    return [numerical_gradient(f, inputs[i]) for i in diff]


def _backward(label, tried, forward, inputs, diff, outputs, rng, hint="", dtype=np.float64,
              fd=True, entrywise=False):
    """A backward's case: our forward's cache, a random upstream gradient, finite differences.

    ``fd=False`` where a finite difference cannot be trusted (logits of 1000,
    whose rounding, 1e-13, is 1e-8 of the step h = 1e-5): there the outputs are
    compared with ours, entry by entry.
    """
    inputs = _as(dtype, inputs)
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    numeric = (_numeric(forward, inputs, diff, dout) if fd and dtype == np.float64
               else [None] * len(outputs))
    return Case(label, tried, (dout, cache), outputs, numeric, hint, LAYER_TOL, entrywise)


# Rows that need the shift: exp(800) and exp(1000) overflow, exp(-800) underflows
# to 0 (a row of them is 0 / 0), and 710 is just past float64's overflow.
_EXTREME = np.array([[800.0, 0.0, -800.0],
                     [1000.0, 999.0, 998.0],
                     [-800.0, -800.0, -801.0],
                     [710.0, 709.0, 0.0],
                     [-1e-3, 0.0, 1e-3]])
_EXTREME32 = np.array([[100.0, 0.0, -100.0], [90.0, 89.0, 88.0], [-120.0, -120.0, -121.0]])
_DOMINANT = np.array([[30.0, 0.0, 0.0, 0.0], [0.0, -2.0, 25.0, 1.0]])


def cases_softmax_forward(rng):
    g = rng.normal(0, 3, size=(5, 4))
    out = ("psi", "cache")
    return [
        Case("moderate, float64", "gate logits ~ N(0, 3^2), n = 5, K = 4", (g,), out,
             [None, None], "", None),
        Case("extreme, float64", "rows (800, 0, -800), (1000, 999, 998), (-800, -800, -801), "
             "(710, 709, 0)", (_EXTREME,), out, [None, None], SHIFT_HINT, None, True),
        Case("one expert dominates",
             "rows (30, 0, 0, 0), (0, -2, 25, 1): weights of 1e-13 stay 1e-13",
             (_DOMINANT,), out, [None, None], SHIFT_HINT, None, True),
        Case("K = 1", "one expert: every weight is 1, whatever the logit", (g[:, :1] * 100,),
             out, [None, None], "with one expert every weight is 1; " + SHIFT_HINT, None, True),
        Case("float32", "gate logits ~ N(0, 3^2) in float32", (g.astype(np.float32),), out,
             [None, None], "keep the input's dtype", None),
        Case("extreme, float32", "float32 rows (100, 0, -100), (90, 89, 88), (-120, -120, -121)",
             (_EXTREME32.astype(np.float32),), out, [None, None], SHIFT_HINT, None, True),
    ]


def cases_softmax_backward(rng):
    f = experts.softmax_forward
    g = rng.normal(0, 2, size=(6, 4))
    out = ("dgate_logit",)
    return [
        _backward("moderate, float64", "gate logits ~ N(0, 2^2), n = 6, K = 4", f, [g], [0], out,
                  rng),
        _backward("one expert dominates", "rows (8, 0, 0, 0), (0, -1, 6, 1): psi near 1 and "
                  "near 0", f, [np.array([[8.0, 0.0, 0.0, 0.0], [0.0, -1.0, 6.0, 1.0]])], [0],
                  out, rng),
        _backward("extreme, float64", "logits out to 1000 and -800 (compared with ours entry "
                  "by entry)", f, [_EXTREME], [0], out, rng, fd=False, entrywise=True),
        _backward("K = 1", "one expert: psi = 1, so the logit cannot move it (gradient 0)", f,
                  [g[:, :1]], [0], out, rng, "with one expert psi is 1 whatever the logit"),
        _backward("one row", "n = 1, K = 3", f, [rng.normal(0, 2, size=(1, 3))], [0], out, rng),
        _backward("float32", "n = 6, K = 4 in float32", f, [g], [0], out, rng,
                  "keep the dtype", np.float32),
    ]


def _experts_and_gate(rng, n, K, d, scale=1.0):
    o = rng.standard_normal((n, K, d))
    psi = experts.softmax_forward(scale * rng.standard_normal((n, K)))[0]
    return [o, psi]


def cases_mixture_backward(rng):
    f = experts.mixture_forward
    out = ("do", "dpsi")
    dominant = _experts_and_gate(rng, 4, 3, 5)
    dominant[1] = experts.softmax_forward(np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 1.0],
                                                    [0.0, 0.5, 9.0], [1.0, 1.0, 1.0]]))[0]
    return [
        _backward("float64", "o (5, 3, 4): K = 3 experts of width 4; psi from a softmax", f,
                  _experts_and_gate(rng, 5, 3, 4), [0, 1], out, rng),
        _backward("one expert dominates", "psi near 1 for one expert in three rows, uniform in "
                  "the fourth", f, dominant, [0, 1], out, rng),
        _backward("K = 1", "one expert (psi = 1): m is that expert's output", f,
                  _experts_and_gate(rng, 4, 1, 3), [0, 1], out, rng),
        _backward("one row", "n = 1, K = 4, d = 2", f, _experts_and_gate(rng, 1, 4, 2), [0, 1],
                  out, rng, "every gradient keeps its input's shape, rows included"),
        _backward("float32", "the first case's shapes in float32", f,
                  _experts_and_gate(rng, 5, 3, 4), [0, 1], out, rng, "keep the dtype",
                  np.float32),
    ]


def _attention_inputs(rng, n, J, d, d_att, scale=1.0):
    return [rng.standard_normal((n, J, d)), scale * rng.standard_normal((d, d_att)),
            scale * rng.standard_normal((d, d_att)), scale * rng.standard_normal((d, d_att))]


def cases_attention_backward(rng):
    f = transfer.attention_forward
    out = ("dcand", "dW_v", "dW_k", "dW_q")
    every = [0, 1, 2, 3]
    return [
        _backward("J = 2, as in AITM", "cand (6, 2, 4): the CTR tower's and the CTCVR tower's; "
                  "d_att = 3", f, _attention_inputs(rng, 6, 2, 4, 3), every, out, rng),
        _backward("J = 3", "three candidates, cand (4, 3, 3), d_att = 5", f,
                  _attention_inputs(rng, 4, 3, 3, 5), every, out, rng),
        _backward("one candidate dominates", "weights scaled by 2: scores far apart, one "
                  "attention weight near 1", f, _attention_inputs(rng, 5, 2, 4, 3, scale=2.0),
                  every, out, rng),
        _backward("one row", "n = 1, J = 2, d = 3, d_att = 2", f,
                  _attention_inputs(rng, 1, 2, 3, 2), every, out, rng,
                  "the weights' gradients sum over rows and candidates"),
        _backward("float32", "J = 2, d = 4, d_att = 3 in float32", f,
                  _attention_inputs(rng, 6, 2, 4, 3), every, out, rng, "keep the dtype",
                  np.float32),
    ]


CASES = {
    "softmax_forward": cases_softmax_forward,
    "softmax_backward": cases_softmax_backward,
    "mixture_backward": cases_mixture_backward,
    "attention_backward": cases_attention_backward,
}
