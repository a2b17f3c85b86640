"""Hand-written optimisers: SGD (with optional momentum) and Adam.

``step(params, grads)`` updates ``params`` in place. A gradient may be a
dense array or, for an embedding table, a :class:`~esmm_np.layers.SparseRows`
holding only the rows a batch used. Two semantics are offered for those:

- ``lazy=False`` (default): exactly the dense update, as if the full
  zero-padded gradient had been given. Adam's moments of every row decay
  every step, and rows the batch did not use still move (their momentum
  carries them). This is what ``torch.optim.Adam`` does with a dense
  embedding.
- ``lazy=True``: only the rows in the batch are touched; the moments of
  other rows are frozen until their id appears again (TensorFlow's LazyAdam,
  the usual choice for large embedding tables). Cheaper per step, and a
  different trajectory: a rare id's moments are not decayed between visits.
  Bias correction uses the global step count.

For plain SGD without momentum the two coincide.
"""

import numpy as np

from .layers import SparseRows, sparse_to_dense


class SGD:
    """``w -= lr * v`` with ``v = momentum * v + g`` (``v = g`` when momentum is 0).

    Parameters
    ----------
    lr : float
    momentum : float in [0, 1)
    lazy : bool
        For sparse gradients with momentum: update only the batch's rows.
    """

    def __init__(self, lr=0.01, momentum=0.0, lazy=False):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.lr, self.momentum, self.lazy = float(lr), float(momentum), bool(lazy)
        self.velocity = {}

    def step(self, params, grads):
        """Update every parameter in place from its gradient."""
        for name, g in grads.items():
            w = params[name]
            sparse = isinstance(g, SparseRows)
            if self.momentum == 0:
                if sparse:
                    w[g.rows] -= self.lr * g.values
                else:
                    w -= self.lr * g
                continue
            if sparse and not self.lazy:
                g, sparse = sparse_to_dense(g), False
            v = self.velocity.setdefault(name, np.zeros_like(w))
            if sparse:
                v_rows = self.momentum * v[g.rows] + g.values       # (u, k)
                v[g.rows] = v_rows
                w[g.rows] -= self.lr * v_rows
            else:
                v *= self.momentum
                v += g
                w -= self.lr * v


class Adam:
    """Adam (Kingma & Ba, 2015) with the ESMM paper's settings.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``,
    ``w -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``
    and ``v_hat = v / (1 - b2**t)``.

    Parameters
    ----------
    lr : float
    beta1, beta2, eps : float
        Defaults 0.9, 0.999, 1e-8, as in the paper.
    lazy : bool
        See the module docstring.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, lazy=False):
        if lr <= 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1) or eps <= 0:
            raise ValueError(f"need lr > 0, betas in [0, 1), eps > 0; got {lr}, {beta1}, {beta2}, {eps}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.lazy = bool(lazy)
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads):
        """Update every parameter in place from its gradient."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # lr * m_hat / (sqrt(v_hat) + eps) == step_size * m / (sqrt(v) / c2 + eps)
        step_size = self.lr / (1 - b1 ** self.t)
        c2 = np.sqrt(1 - b2 ** self.t)
        for name, g in grads.items():
            w = params[name]
            m = self.m.setdefault(name, np.zeros_like(w))
            v = self.v.setdefault(name, np.zeros_like(w))
            if isinstance(g, SparseRows) and self.lazy:
                r = g.rows
                m_r = b1 * m[r] + (1 - b1) * g.values                  # (u, k)
                v_r = b2 * v[r] + (1 - b2) * (g.values * g.values)     # (u, k)
                m[r], v[r] = m_r, v_r
                w[r] -= step_size * m_r / (np.sqrt(v_r) / c2 + self.eps)
                continue
            if isinstance(g, SparseRows):
                # Dense semantics without building the dense gradient: every
                # row decays, only the used rows receive (1 - b) * g.
                m *= b1
                m[g.rows] += (1 - b1) * g.values
                v *= b2
                v[g.rows] += (1 - b2) * (g.values * g.values)
            else:
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= c2
            denom += self.eps
            w -= step_size * m / denom
