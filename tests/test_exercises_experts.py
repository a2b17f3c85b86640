"""The experts exercises (E3): softmax, the gated mixture, AITM's attention.

Our functions pass; answers written differently but right pass; typical wrong
answers fail with a hint naming the mistake. The wrong answers are written
here as a learner would write them, not taken from the checker's list.
"""

import numpy as np
import pytest

import esmm_np.exercises as ex
from esmm_np import experts, transfer
from grading import fails_with

E3 = ("softmax_forward", "softmax_backward", "mixture_backward", "attention_backward")


def _passes(name, fn, capsys):
    ok = ex.check(name, fn)
    out = capsys.readouterr().out
    assert ok, out
    assert "PASS" in out and " NO" not in out
    return out


def test_the_new_exercises_are_listed():
    for name in E3:
        assert name in ex.NAMES and name in ex.SIGNATURES
    assert ex.reference("softmax_backward") is experts.softmax_backward
    assert ex.reference("attention_backward") is transfer.attention_backward


@pytest.mark.parametrize("name", E3)
def test_our_function_passes(name, capsys):
    out = _passes(name, ex.reference(name), capsys)
    assert out.count(" yes") >= 5            # several cases each


# ----------------------------------------------------------------- softmax, forward

def test_softmax_without_the_max_shift_fails(capsys):
    def wrong(g):
        e = np.exp(g)
        psi = e / e.sum(axis=1, keepdims=True)
        return psi, psi
    out = fails_with("softmax_forward", wrong, capsys, "subtract each row's max")
    # moderate logits do not need the shift: those cases pass
    moderate = out.split("moderate, float64")[1].split("\n")[0]
    assert moderate.endswith("yes"), out


def test_softmax_over_the_batch_axis_fails(capsys):
    def wrong(g):
        e = np.exp(g - g.max(axis=0))
        psi = e / e.sum(axis=0)
        return psi, psi
    fails_with("softmax_forward", wrong, capsys, "batch axis")


def test_softmax_written_differently_passes(capsys):
    def right(g):
        # log-sum-exp first, then one exp: the same softmax
        c = g.max(axis=1, keepdims=True)
        lse = c + np.log(np.sum(np.exp(g - c), axis=1, keepdims=True))
        psi = np.exp(g - lse)
        return psi, psi
    _passes("softmax_forward", right, capsys)


# ---------------------------------------------------------------- softmax, backward

def test_softmax_backward_with_only_the_diagonal_fails(capsys):
    fails_with("softmax_backward", lambda dpsi, psi: psi * dpsi, capsys, "psi * dpsi",
                "delta_ik")


def test_softmax_backward_with_the_true_diagonal_only_fails(capsys):
    fails_with("softmax_backward", lambda dpsi, psi: psi * (1 - psi) * dpsi, capsys,
                "only the diagonal")


def test_softmax_backward_without_the_psi_factor_fails(capsys):
    def wrong(dpsi, psi):
        return dpsi - np.sum(psi * dpsi, axis=1, keepdims=True)
    fails_with("softmax_backward", wrong, capsys, "factor psi is missing")


def test_softmax_backward_through_the_full_jacobian_passes(capsys):
    def right(dpsi, psi):
        # J[n, i, k] = psi_i (delta_ik - psi_k); dgate_logit_k = sum_i dpsi_i J[i, k]
        K = psi.shape[1]
        jac = psi[:, :, None] * (np.eye(K, dtype=psi.dtype) - psi[:, None, :])
        return np.einsum("ni,nik->nk", dpsi, jac)
    _passes("softmax_backward", right, capsys)


# -------------------------------------------------------------------------- mixture

def test_mixture_backward_with_dpsi_summed_over_the_batch_fails(capsys):
    def wrong(dm, cache):
        o, psi = cache
        do = psi[:, :, None] * dm[:, None, :]
        dpsi = np.einsum("nkd,nd->k", o, dm)              # one number per expert
        return do, dpsi
    fails_with("mixture_backward", wrong, capsys, "dpsi is summed over the batch")


def test_mixture_backward_without_the_gate_weight_fails(capsys):
    def wrong(dm, cache):
        o, psi = cache
        do = np.repeat(dm[:, None, :], o.shape[1], axis=1)
        return do, np.sum(o * dm[:, None, :], axis=2)
    out = fails_with("mixture_backward", wrong, capsys, "without the gate weight")
    assert "K = 1" in out and out.split("K = 1")[1].split("\n")[0].endswith("yes")  # psi = 1


def test_mixture_backward_written_differently_passes(capsys):
    def right(dm, cache):
        o, psi = cache
        do = np.einsum("nk,nd->nkd", psi, dm)
        dpsi = np.einsum("nkd,nd->nk", o, dm)
        return do, dpsi
    _passes("mixture_backward", right, capsys)


# ------------------------------------------------------------------------ attention

def _attention(dtau, cache, key=True, query=True, scale=True, value=True):
    """A learner's attention backward, written out, with one path optionally left out."""
    cand, W_v, W_k, W_q, k, q, att, (val, _) = cache
    root = np.sqrt(W_v.shape[1]).astype(dtau.dtype) if scale else dtau.dtype.type(1)
    dval = att[:, :, None] * dtau[:, None, :]                 # (n, J, d_att)
    datt = np.einsum("njd,nd->nj", val, dtau)                 # (n, J)
    dscore = att * (datt - np.sum(att * datt, axis=1, keepdims=True))
    dkey = dscore[:, :, None] * q / root
    dqry = dscore[:, :, None] * k / root
    n, J, d = cand.shape
    flat = cand.reshape(n * J, d)
    dW_v = flat.T @ dval.reshape(n * J, -1)
    dW_k = flat.T @ dkey.reshape(n * J, -1)
    dW_q = flat.T @ dqry.reshape(n * J, -1)
    dcand = np.zeros_like(cand)
    if value:
        dcand = dcand + dval @ W_v.T
    if key:
        dcand = dcand + dkey @ W_k.T
    if query:
        dcand = dcand + dqry @ W_q.T
    return dcand, dW_v, dW_k, dW_q


def test_attention_backward_written_differently_passes(capsys):
    _passes("attention_backward", _attention, capsys)


def test_attention_backward_without_the_key_path_fails(capsys):
    fails_with("attention_backward", lambda d, c: _attention(d, c, key=False), capsys,
                "missing the key path")


def test_attention_backward_without_the_query_path_fails(capsys):
    fails_with("attention_backward", lambda d, c: _attention(d, c, query=False), capsys,
                "missing the query path")


def test_attention_backward_without_the_scale_fails(capsys):
    fails_with("attention_backward", lambda d, c: _attention(d, c, scale=False), capsys,
                "1/sqrt(d_att)")


def test_attention_backward_with_dcand_from_the_values_only_fails(capsys):
    fails_with("attention_backward",
                lambda d, c: _attention(d, c, key=False, query=False), capsys,
                "value path only")


def test_attention_backward_that_keeps_float32(capsys):
    # float32 in, float32 out: the layer itself (transfer.py) must not promote
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((3, 2, 4)).astype(np.float32)
    W = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    tau, cache = transfer.attention_forward(cand, *W)
    assert tau.dtype == np.float32
    assert all(g.dtype == np.float32 for g in transfer.attention_backward(tau.copy(), cache))


def test_every_listed_mistake_is_told_apart_by_some_case(capsys):
    # Each known mistake, handed in as an answer, fails, and some case names it by its own
    # hint (the cases can tell it from the right answer and from the other mistakes).
    from esmm_np.teach.mistakes_experts import MISTAKES
    for name in E3:
        for wrong, hint in MISTAKES[name]:
            fails_with(name, wrong, capsys, hint)
