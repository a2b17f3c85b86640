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

Cost: dense semantics read and write all of ``w``, ``m`` and ``v`` every step,
so they scale with the table; lazy semantics scale with the number of
distinct rows in the batch, at the price of scattered memory access. Once a
batch touches a large share of the table, dense can be the faster of the two
(docs/performance.md has the numbers).
"""

import math

import numpy as np

from . import validate as V
from .layers import SparseRows, sparse_to_dense


class Optimizer:
    """What both optimisers share: the model they serve and their saved state.

    An optimiser keeps per-parameter state (velocities, moments) keyed by
    parameter name, so it belongs to one model. It records the names,
    shapes and dtypes of the parameters it first serves and refuses any
    other set before changing anything: reusing one for a second model
    would otherwise apply the first model's moments to the second.
    """

    #: names of the per-parameter state dicts, saved by :meth:`state_arrays`
    slots = ()

    def bind(self, params, record=True):
        """Record ``params``' shapes on first use; afterwards refuse a different set.

        ``record=False`` only checks (for a caller that may still refuse its input).
        """
        shapes = {k: (tuple(w.shape), w.dtype.str) for k, w in params.items()}
        if self.shapes is None:
            if record:
                self.shapes = shapes
        elif shapes != self.shapes:
            differ = sorted(k for k in shapes.keys() | self.shapes.keys()
                            if shapes.get(k) != self.shapes.get(k))
            raise ValueError(f"this {type(self).__name__} already serves a model with other "
                             f"parameters (differing: {', '.join(differ[:5])}); its state "
                             "belongs to that model, so create one optimizer per model")

    def _check_step(self, params, grads):
        self.bind(params)
        for name, g in grads.items():
            shape = (g.n_rows, g.values.shape[1]) if isinstance(g, SparseRows) else np.shape(g)
            if name not in self.shapes or tuple(shape) != self.shapes[name][0]:
                raise ValueError(f"gradient {name!r} of shape {tuple(shape)} does not match a "
                                 f"parameter of this optimizer's model")

    def config(self):
        """The constructor's arguments, JSON-able (used by ``model.save``)."""
        raise NotImplementedError

    def state_arrays(self):
        """Per-parameter state as ``{"slot/param name": ndarray}`` (copies not made)."""
        return {f"{slot}/{k}": a for slot in self.slots for k, a in getattr(self, slot).items()}


class SGD(Optimizer):
    """``w -= lr * v`` with ``v = momentum * v + g`` (``v = g`` when momentum is 0).

    Parameters
    ----------
    lr : float
    momentum : float in [0, 1)
    lazy : bool
        For sparse gradients with momentum: update only the batch's rows.
    """

    slots = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0, lazy=False):
        self.lr = V.check_float(lr, "lr", low=0, low_open=True)
        self.momentum = V.check_float(momentum, "momentum", 0, 1, high_open=True)
        self.lazy = V.check_bool(lazy, "lazy")
        self.velocity = {}
        self.shapes = None   # the served model's parameter shapes, set by bind()

    def config(self):
        return {"class": "SGD", "lr": self.lr, "momentum": self.momentum, "lazy": self.lazy}

    def step(self, params, grads):
        """Update every parameter in place from its gradient."""
        self._check_step(params, grads)
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
            if name not in self.velocity:   # not setdefault: that would allocate every step
                self.velocity[name] = np.zeros_like(w)
            v = self.velocity[name]
            if sparse:
                v_rows = self.momentum * v[g.rows] + g.values       # (u, k)
                v[g.rows] = v_rows
                w[g.rows] -= self.lr * v_rows
            else:
                v *= self.momentum
                v += g
                w -= self.lr * v


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with the ESMM paper's settings.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``,
    ``w -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``
    and ``v_hat = v / (1 - b2**t)``. :func:`adam_textbook_step` is that
    update written out, the plain form this one is tested against.

    Parameters
    ----------
    lr : float
    beta1, beta2, eps : float
        Defaults 0.9, 0.999, 1e-8, as in the paper.
    lazy : bool
        See the module docstring.
    """

    slots = ("m", "v")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, lazy=False):
        self.lr = V.check_float(lr, "lr", low=0, low_open=True)
        self.beta1 = V.check_float(beta1, "beta1", 0, 1, high_open=True)
        self.beta2 = V.check_float(beta2, "beta2", 0, 1, high_open=True)
        self.eps = V.check_float(eps, "eps", low=0, low_open=True)
        self.lazy = V.check_bool(lazy, "lazy")
        self.t = 0
        self.m, self.v = {}, {}
        self.shapes = None   # the served model's parameter shapes, set by bind()

    def config(self):
        return {"class": "Adam", "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "lazy": self.lazy, "t": self.t}

    def step(self, params, grads):
        """Update every parameter in place from its gradient."""
        self._check_step(params, grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # Kingma & Ba (end of their section 2) fold both bias corrections into
        # the step: lr * m_hat / (sqrt(v_hat) + eps) == lr_t * m / (sqrt(v) + eps_t)
        # with lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) and eps_t = eps sqrt(1 - b2^t),
        # which saves two passes over every table. Python floats (math.sqrt, not
        # np.sqrt) so that float32 arrays are not computed in float64.
        c2 = math.sqrt(1 - b2 ** self.t)
        lr_t = self.lr * c2 / (1 - b1 ** self.t)
        eps_t = self.eps * c2
        for name, g in grads.items():
            w = params[name]
            if name not in self.m:
                self.m[name], self.v[name] = np.zeros_like(w), np.zeros_like(w)
            m, v = self.m[name], self.v[name]
            if isinstance(g, SparseRows) and self.lazy:
                r = g.rows                # np.take(m, r, axis=0) is m[r], faster
                m_r = b1 * np.take(m, r, axis=0) + (1 - b1) * g.values           # (u, k)
                v_r = b2 * np.take(v, r, axis=0) + (1 - b2) * (g.values * g.values)
                m[r], v[r] = m_r, v_r
                w[r] = np.take(w, r, axis=0) - _adam_step(m_r, v_r, lr_t, eps_t)   # (u, k)
            elif isinstance(g, SparseRows):
                # Dense semantics: the dense update on the zero-padded gradient,
                # built one block of rows at a time. The whole padded gradient
                # never exists, and the update's passes over a block run while
                # that block is still in the CPU cache.
                for lo, hi, g_block in _dense_blocks(g):
                    _adam_dense(w[lo:hi], m[lo:hi], v[lo:hi], g_block, b1, b2, lr_t, eps_t)
            else:
                _adam_dense(w, m, v, g, b1, b2, lr_t, eps_t)


def adam_textbook_step(w, m, v, g, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step exactly as Algorithm 1 of Kingma & Ba (2015) writes it.

    The plain form :class:`Adam` is tested against (tests/test_speed_paths.py);
    :class:`Adam` folds the two bias corrections into the step size instead,
    which changes only rounding.

    Parameters
    ----------
    w, m, v, g : ndarray of one shape
        Parameter, first and second moment, gradient. Not modified.
    t : int >= 1, the step number (the first step is 1)

    Returns
    -------
    w, m, v : the new parameter and moments, new arrays
    """
    m = beta1 * m + (1 - beta1) * g                 # biased first moment
    v = beta2 * v + (1 - beta2) * (g * g)           # biased second raw moment
    m_hat = m / (1 - beta1 ** t)                    # bias-corrected first moment
    v_hat = v / (1 - beta2 ** t)                    # bias-corrected second moment
    w = w - lr * m_hat / (np.sqrt(v_hat) + eps)     # the update
    return w, m, v


def _adam_dense(w, m, v, g, b1, b2, lr_t, eps_t):
    """One Adam update with a dense gradient, in place; all four arrays the same shape."""
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    w -= _adam_step(m, v, lr_t, eps_t)


def _adam_step(m, v, lr_t, eps_t):
    """``lr_t * m / (sqrt(v) + eps_t)``, the amount Adam subtracts from the weights.

    One new array, then in place: over an embedding table of V rows each
    extra temporary is another pass over V * k numbers.
    """
    step = np.sqrt(v)               # same shape as m
    step += eps_t
    np.divide(m, step, out=step)
    step *= lr_t
    return step


#: Rows per block of :func:`_dense_blocks`, as a number of table entries:
#: 2**17 float32 numbers are 512 KiB, so a block of w, m, v and the
#: gradient stays in the cache across the passes of one update.
BLOCK_ENTRIES = 2 ** 17


def _dense_blocks(g):
    """Zero-padded dense gradient of ``g`` one block of rows at a time.

    Parameters
    ----------
    g : SparseRows with ``n_rows`` rows of width k

    Yields
    ------
    lo, hi : int
        The block is table rows ``lo .. hi - 1``.
    g_block : ndarray of shape (hi - lo, k)
        ``sparse_to_dense(g)[lo:hi]``.
    """
    k = g.values.shape[1]
    rows, values = g.rows, g.values                                  # (u,), (u, k)
    if np.any(rows[1:] < rows[:-1]):       # embedding_backward sorts them; others may not
        order = np.argsort(rows)
        rows, values = rows[order], values[order]
    per_block = max(1, BLOCK_ENTRIES // k)                           # rows per block
    for lo in range(0, g.n_rows, per_block):
        hi = min(lo + per_block, g.n_rows)
        a, b = np.searchsorted(rows, (lo, hi))                       # rows[a:b] are in this block
        g_block = np.zeros((hi - lo, k), dtype=values.dtype)         # (hi - lo, k)
        g_block[rows[a:b] - lo] = values[a:b]
        yield lo, hi, g_block
