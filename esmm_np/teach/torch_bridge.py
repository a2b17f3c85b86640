"""The same ESMM under PyTorch's autograd: a check of our backward pass, and a way out.

Optional: needs PyTorch (``pip install torch``); nothing else in esmm_np imports it.

:func:`to_torch` builds a ``torch.nn.Module`` with the architecture of an
``esmm_np`` ESMM and a copy of its parameters. Its forward pass is written
with PyTorch operations only, step for step as in ``esmm_np.model``, and its
gradients come from autograd, not from our hand-written backward.
:func:`compare` runs both on the same batch (same dropout masks) and returns,
tensor by tensor, the relative difference of the forward outputs and of
every gradient, like the ``cmp`` table of the backprop-ninja notebook::

    from esmm_np.teach import torch_bridge   # or: from esmm_np import torch_bridge
    rows = torch_bridge.compare(model, X, click, conversion, dense=dense)
    print(torch_bridge.format_rows(rows))

In float64 the two agree to about 1e-15 relative; ``tests/test_torch_bridge.py``
requires 1e-10 on every tensor for ESMM with every option.

The same module is the way on for data that outgrows NumPy: train it with a
PyTorch optimiser, then copy the weights back with :func:`load_into`.
"""

import math

import numpy as np

from .. import layers as L

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without PyTorch
    torch = None

_LN2 = math.log(2.0)

#: A tensor whose true gradient is zero (an affine bias right before batch
#: norm) comes out of both computations as rounding noise, about 1e-17 here;
#: its relative error compares two noises and means nothing. Such a row is
#: marked ``zero_gradient`` when every entry of both is below this bound,
#: far below any real gradient entry of these checks (1e-3 and up).
ZERO_ATOL = 1e-12


def _require_torch():
    if torch is None:
        raise ImportError("esmm_np.torch_bridge needs PyTorch: pip install torch")


def _key(name):
    """ParameterDict keys cannot contain '.', so 'ctr.W0' is stored as 'ctr__W0'."""
    return name.replace(".", "__")


def to_torch(model):
    """A ``torch.nn.Module`` with ``model``'s architecture and a copy of its parameters.

    Parameters
    ----------
    model : esmm_np.ESMM
        Any options (activation, dropout, batch norm, L2, dense features,
        towers of different sizes, loss weights, either CTCVR loss, separate
        embeddings). The dtype is kept (float64 for checking).

    Returns
    -------
    ESMMTorch module; ``module.params[_key(name)]`` is the copy of ``model.params[name]``.
    """
    _require_torch()
    return _make_module(model)


def _make_module(model):
    class ESMMTorch(torch.nn.Module):
        """ESMM written with PyTorch operations; its backward pass is autograd's."""

        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterDict(
                {_key(k): torch.nn.Parameter(torch.from_numpy(np.array(v, copy=True)))
                 for k, v in model.params.items()})
            self.state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in model.state.items()}
            self.cfg = dict(towers=model.towers, units=model.tower_units,
                            activation=model.activation, batch_norm=model.batch_norm,
                            share=model.share_embedding, offsets=torch.from_numpy(model.offsets),
                            l2_emb=model.l2_reg_embedding, l2_dnn=model.l2_reg_dnn,
                            weights=model.loss_weights, ctcvr_loss=model.ctcvr_loss)

        def p(self, name):
            return self.params[_key(name)]

        def logits(self, X, dense=None, train=True, masks=None):
            """The two logits, (n,) each. ``masks``: {tower: [scaled dropout mask per layer]}."""
            c = self.cfg
            rows = torch.as_tensor(X, dtype=torch.int64) + c["offsets"]          # (n, F)
            out = {}
            for t, units in zip(c["towers"], c["units"]):
                table = self.p("embedding" if c["share"] else f"{t}.embedding")
                h = table[rows].reshape(rows.shape[0], -1)                       # (n, F*k)
                if dense is not None:
                    h = torch.cat([h, torch.as_tensor(dense)], dim=1)
                for i in range(len(units)):
                    h = h @ self.p(f"{t}.W{i}") + self.p(f"{t}.b{i}")
                    if c["batch_norm"]:
                        if train:
                            mu = h.mean(dim=0)
                            var = ((h - mu) ** 2).mean(dim=0)               # biased, as ours
                        else:
                            mu, var = self.state[f"{t}.bn_mean{i}"], self.state[f"{t}.bn_var{i}"]
                        h = (h - mu) / torch.sqrt(var + 1e-5) * self.p(f"{t}.gamma{i}") \
                            + self.p(f"{t}.beta{i}")
                    act = c["activation"]
                    if act == "relu":
                        h = torch.relu(h)
                    elif act == "sigmoid":
                        h = torch.sigmoid(h)
                    elif act == "tanh":
                        h = torch.tanh(h)
                    else:  # prelu, one slope per unit
                        h = torch.where(h > 0, h, self.p(f"{t}.alpha{i}") * h)
                    if train and masks is not None and masks.get(t) is not None:
                        h = h * torch.as_tensor(masks[t][i])
                out[t] = (h @ self.p(f"{t}.W_out") + self.p(f"{t}.b_out"))[:, 0]
            return out

        def forward(self, X, click, conversion, dense=None, masks=None):
            """The training loss (data loss + L2), as ``model.loss`` computes it."""
            c = self.cfg
            lg = self.logits(X, dense, train=True, masks=masks)
            a, b = lg["ctr"], lg["cvr"]
            y = torch.as_tensor(click).to(a.dtype)
            z = torch.as_tensor(click * conversion).to(a.dtype)
            loss_ctr = torch.nn.functional.binary_cross_entropy_with_logits(a, y)
            if c["ctcvr_loss"] == "logspace":
                sp_a, sp_b = torch.nn.functional.softplus(-a), torch.nn.functional.softplus(-b)
                log_p = -sp_a - sp_b
                lse = torch.logsumexp(torch.stack([-a, -b, -a - b]), dim=0)
                log_1mp = torch.where(log_p < -_LN2,
                                      torch.log1p(-torch.exp(torch.clamp(log_p, max=-_LN2))),
                                      lse - sp_a - sp_b)
                loss_ctcvr = -(z * log_p + (1 - z) * log_1mp).mean()
            else:  # naive: the clipped product
                p = torch.clamp(torch.sigmoid(a) * torch.sigmoid(b), 1e-7, 1 - 1e-7)
                loss_ctcvr = -(z * torch.log(p) + (1 - z) * torch.log(1 - p)).mean()
            w_ctr, w_ctcvr = c["weights"]
            loss = w_ctr * loss_ctr + w_ctcvr * loss_ctcvr
            for name in model.params:
                if name.endswith("embedding") and c["l2_emb"] > 0:
                    loss = loss + c["l2_emb"] * (self.p(name) ** 2).sum()
                elif name.split(".")[0] in c["towers"] and ".W" in name and c["l2_dnn"] > 0:
                    loss = loss + c["l2_dnn"] * (self.p(name) ** 2).sum()
            return loss

        def predict(self, X, dense=None):
            """Inference-mode probabilities, as ``model.predict``."""
            with torch.no_grad():
                lg = self.logits(X, dense, train=False)
                p_ctr, p_cvr = torch.sigmoid(lg["ctr"]), torch.sigmoid(lg["cvr"])
            return {"p_ctr": p_ctr.numpy(), "p_cvr": p_cvr.numpy(), "p_ctcvr": (p_ctr * p_cvr).numpy()}

    return ESMMTorch()


def load_into(model, module):
    """Copy ``module``'s parameters back into ``model.params`` (in place)."""
    _require_torch()
    for name, w in model.params.items():
        w[...] = module.params[_key(name)].detach().cpu().numpy()


def dropout_masks(model, n, seed=0):
    """One fixed set of scaled dropout masks for a batch of ``n`` rows: {tower: [mask per layer]}."""
    if model.dropout == 0:
        return None
    rng = np.random.default_rng(seed)
    return {t: [L.dropout_forward(np.ones((n, u), dtype=model.dtype), model.dropout, rng=rng)[1]
                for u in units] for t, units in zip(model.towers, model.tower_units)}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def compare(model, X, click, conversion, dense=None, seed=0):
    """Forward outputs and every gradient, esmm_np against PyTorch autograd.

    Both see the same parameters, batch and dropout masks (batch norm in
    training mode for the loss and gradients, inference mode for the
    probabilities).

    Returns
    -------
    list of dict: tensor, shape, max_abs_diff, rel_error, zero_gradient
    """
    _require_torch()
    module = to_torch(model)
    masks = dropout_masks(model, len(X), seed)
    loss_np, grads_np = model.loss(X, click, conversion, dense=dense, masks=masks)
    loss_t = module(X, click, conversion, dense=dense, masks=masks)
    loss_t.backward()
    rows = [_row("loss", loss_np, loss_t.detach().numpy())]
    pred_np, pred_t = model.predict(X, dense=dense), module.predict(X, dense=dense)
    rows += [_row(k, pred_np[k], pred_t[k]) for k in ("p_ctr", "p_cvr", "p_ctcvr")]
    rows += [_row(f"d {name}", grads_np[name], module.params[_key(name)].grad.numpy())
             for name in model.params]
    return rows


def _row(name, ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape or not np.all(np.isfinite(theirs)) or not np.all(np.isfinite(ours)):
        return {"tensor": name, "shape": ours.shape, "max_abs_diff": float("inf"),
                "rel_error": float("inf"), "zero_gradient": False}
    zero = bool(np.all(np.abs(ours) <= ZERO_ATOL) and np.all(np.abs(theirs) <= ZERO_ATOL))
    return {"tensor": name, "shape": ours.shape,
            "max_abs_diff": float(np.max(np.abs(ours - theirs))) if ours.size else 0.0,
            "rel_error": _rel(ours, theirs), "zero_gradient": zero}


def format_rows(rows):
    """The cmp table: one line per tensor, esmm_np against autograd."""
    lines = [f"{'tensor':<20} {'shape':<10} {'max |ours - torch|':>19} {'rel. error':>11}", "-" * 64]
    for r in rows:
        shape = "x".join(map(str, r["shape"])) or "scalar"
        note = "  (zero)" if r["zero_gradient"] else ""
        lines.append(f"{r['tensor']:<20} {shape:<10} {r['max_abs_diff']:>19.2e} "
                     f"{r['rel_error']:>11.2e}{note}")
    live = [r for r in rows if not r["zero_gradient"]]
    worst = max(live, key=lambda r: r["rel_error"])
    lines.append("-" * 64)
    lines.append(f"worst relative error {worst['rel_error']:.2e} ({worst['tensor']})")
    if len(live) < len(rows):
        lines.append(f"(zero): true gradient zero; both below {ZERO_ATOL:g} in every entry, "
                     "so the relative error is rounding noise")
    return "\n".join(lines)
