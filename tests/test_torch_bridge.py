"""esmm_np.torch_bridge: our forward and hand-written backward against PyTorch autograd.

Skipped without PyTorch (it is an optional extra), except where
``ESMM_NP_REQUIRE_TORCH`` is set (``.ci/run`` sets it): there a missing
PyTorch is an error, so CI cannot skip the cross-check unnoticed.

Tolerance 1e-10 relative on every tensor in float64: the two compute the same operations in a
different order, so they differ by rounding (~1e-15); any wrong gradient
term would differ by 1e-3 or more. The one exception is a tensor whose true
gradient is zero (an affine bias right before batch norm): there both sides
are rounding noise, and the row must instead be below
``torch_bridge.ZERO_ATOL`` in every entry on both sides.
"""

import os

import numpy as np
import pytest

from batches import draw_batch
from esmm_np import ESMM, gradcheck

if os.environ.get("ESMM_NP_REQUIRE_TORCH"):   # set by .ci/run: there a skip would hide the check
    import torch
else:
    torch = pytest.importorskip("torch")
from esmm_np import torch_bridge  # noqa: E402

TOL = 1e-10


def _batch(field_dims, n, n_dense, seed):
    return draw_batch(np.random.default_rng(seed), field_dims, n, n_dense)


def _assert_matches(model, X, click, conversion, dense):
    rows = torch_bridge.compare(model, X, click, conversion, dense=dense, seed=0)
    print(torch_bridge.format_rows(rows))
    assert len(rows) == 4 + len(model.params)
    bad = [(r["tensor"], r["rel_error"]) for r in rows
           if not (r["rel_error"] <= TOL or r["zero_gradient"])]
    assert not bad, bad
    zero = [r["tensor"] for r in rows if r["zero_gradient"]]
    if model.batch_norm:   # exactly the hidden biases, each followed by batch norm
        assert sorted(zero) == sorted(f"d {t}.b{i}" for t, u in zip(model.towers, model.tower_units)
                                      for i in range(len(u)))
    else:
        assert not zero


def test_every_option_on():
    model, (X, click, conversion, dense) = gradcheck.everything_on_example(n=16, seed=0)
    _assert_matches(model, X, click, conversion, dense)


@pytest.mark.parametrize("options", [
    dict(activation="relu"),
    dict(activation="sigmoid", batch_norm=True),
    dict(activation="tanh", dropout=0.3),
    dict(activation="relu", share_embedding=False, l2_reg_embedding=1e-2),
    dict(activation="prelu", ctcvr_loss="naive", loss_weights=(0.5, 2.0)),
], ids=["relu", "sigmoid+bn", "tanh+dropout", "separate tables+l2", "naive loss+weights"])
def test_options(options):
    field_dims = (6, 4, 5)
    model = ESMM(field_dims, embed_dim=3, tower_units=((5, 4), (3,)), seed=1, **options)
    rng = np.random.default_rng(1)
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)
    _assert_matches(model, *_batch(field_dims, 12, 0, 2))


def test_extreme_logits_stay_finite():
    """Log-space loss in both: a confidently wrong batch still matches, with no NaN."""
    field_dims = (4, 3)
    model = ESMM(field_dims, embed_dim=2, tower_units=(3,), seed=0)
    model.params["ctr.b_out"][:] = 30.0
    model.params["cvr.b_out"][:] = 30.0
    _assert_matches(model, *_batch(field_dims, 8, 0, 3))


def test_weights_round_trip():
    model = ESMM((5, 4), embed_dim=2, tower_units=(3,), seed=0)
    module = torch_bridge.to_torch(model)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    before = {k: v.copy() for k, v in model.params.items()}
    torch_bridge.load_into(model, module)
    assert all(np.allclose(model.params[k], before[k] + 1.0, rtol=0, atol=1e-15) for k in before)


def test_the_comparison_can_fail(monkeypatch):
    """Break our ReLU backward (gate by the sign of dout): autograd disagrees, by far."""
    from esmm_np import model as M

    monkeypatch.setitem(M._ACT_BACKWARD, "relu", lambda dout, mask: dout * (dout > 0))
    field_dims = (6, 4, 5)
    model = ESMM(field_dims, embed_dim=3, tower_units=(5, 4), seed=1)
    rows = torch_bridge.compare(model, *_batch(field_dims, 12, 0, 2))
    by_name = {r["tensor"]: r["rel_error"] for r in rows}
    assert by_name["loss"] <= TOL and by_name["d ctr.W_out"] <= TOL   # above the first ReLU: fine
    assert by_name["d ctr.W0"] > 1e-3 and by_name["d embedding"] > 1e-3
