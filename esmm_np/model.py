"""The ESMM model (Ma et al., "Entire Space Multi-Task Model", SIGIR 2018).

Shared embeddings feed two MLP towers; the CTR tower outputs ``p_ctr``, the
CVR tower ``p_cvr``, and ``p_ctcvr = p_ctr * p_cvr``. Only CTR and CTCVR are
supervised, both over every impression; ``p_cvr`` is learned through the
product. :class:`TowerModel` is the same embedding + one tower, a plain
binary classifier, from which the paper's baselines are built.

Parameter names (keys of ``model.params``):

- ``embedding``: all fields' embeddings stacked, shape (sum(field_dims), k);
  ESMM-NS (``share_embedding=False``) has ``ctr.embedding`` and ``cvr.embedding``.
- per tower ``t`` in {ctr, cvr} and hidden layer ``i``: ``t.W{i}``, ``t.b{i}``,
  with batch norm ``t.gamma{i}``, ``t.beta{i}``, with PReLU ``t.alpha{i}``;
  the logit layer ``t.W_out`` (d, 1) and ``t.b_out`` (1,).

Batch-norm running statistics are not trained by gradient; they live in
``model.state``.
"""

import json
from collections import namedtuple

import numpy as np

from . import layers as L
from . import validate
from .data.bags import check_bags, check_ids_in_blocks, in_blocks, slice_bags
from .data.files import write_file
from .losses import bce_with_logits, ctcvr_bce_logspace, ctcvr_bce_naive, l2_penalty
from .validate import check_binary, check_choice, check_dense, check_field_dims, check_ids
from .version import __version__

#: Version of the model file layout (``save``; esmm_np.persist reads it).
FILE_FORMAT_VERSION = 1

#: The classes a model file may name (esmm_np.persist maps each name to its class).
FILE_CLASSES = ("ESMM", "ESCM2", "TowerModel")

_ACT_FORWARD = {"relu": L.relu_forward, "sigmoid": L.sigmoid_forward, "tanh": L.tanh_forward}
_ACT_BACKWARD = {"relu": L.relu_backward, "sigmoid": L.sigmoid_backward, "tanh": L.tanh_backward}

#: A tower's options: hidden widths, activation name, batch norm on/off, dropout rate.
TowerConfig = namedtuple("TowerConfig", ["units", "activation", "batch_norm", "dropout"])

#: What one hidden layer's forward keeps for the backward: the affine layer's
#: cache, batch norm's cache and batch statistics (None without batch norm),
#: the activation's cache, the dropout mask (None when no dropout ran).
HiddenCache = namedtuple("HiddenCache", ["affine", "batchnorm", "batch_stats", "activation",
                                         "dropout"])

#: A tower's cache: one HiddenCache per hidden layer, and the logit layer's affine cache.
TowerCache = namedtuple("TowerCache", ["hidden", "out"])

#: The input path's cache: the lookup's, the concatenation's, and one per bag field (or None).
EmbedCache = namedtuple("EmbedCache", ["lookup", "concat", "bags"])


# ----------------------------------------------------------------- one tower

def init_tower(rng, prefix, d_in, units, activation, batch_norm, dtype):
    """Create the parameters and batch-norm state of one MLP tower.

    Weights use He-uniform scaling (variance 2 / d_in), suited to ReLU-like
    units; biases start at 0, PReLU slopes at 0.25, BN scale 1 and shift 0.

    Returns
    -------
    params : dict[str, ndarray]
    state : dict[str, ndarray]  batch-norm running mean and variance
    """
    params, state = {}, {}
    d = d_in
    for i, u in enumerate(units):
        limit = np.sqrt(6.0 / d)
        params[f"{prefix}.W{i}"] = rng.uniform(-limit, limit, size=(d, u)).astype(dtype)  # (d, u)
        params[f"{prefix}.b{i}"] = np.zeros(u, dtype=dtype)                              # (u,)
        if batch_norm:
            params[f"{prefix}.gamma{i}"] = np.ones(u, dtype=dtype)                       # (u,)
            params[f"{prefix}.beta{i}"] = np.zeros(u, dtype=dtype)                       # (u,)
            state[f"{prefix}.bn_mean{i}"] = np.zeros(u, dtype=dtype)                     # (u,)
            state[f"{prefix}.bn_var{i}"] = np.ones(u, dtype=dtype)                       # (u,)
        if activation == "prelu":
            params[f"{prefix}.alpha{i}"] = np.full(u, 0.25, dtype=dtype)                 # (u,)
        d = u
    limit = np.sqrt(6.0 / (d + 1))  # Glorot-uniform for the single-unit logit layer
    params[f"{prefix}.W_out"] = rng.uniform(-limit, limit, size=(d, 1)).astype(dtype)    # (d, 1)
    params[f"{prefix}.b_out"] = np.zeros(1, dtype=dtype)                                 # (1,)
    return params, state


def tower_forward(params, state, prefix, h, cfg, train, rng=None, masks=None):
    """Run one tower: per hidden layer affine -> [batch norm] -> activation -> [dropout].

    Parameters
    ----------
    params, state : the model's dicts
    prefix : "ctr", "cvr", ...
    h : ndarray of shape (n, d_in), the tower input
    cfg : TowerConfig
    train : bool; dropout and batch statistics only in training mode
    rng : numpy.random.Generator for the dropout masks
    masks : list of fixed dropout masks, one per hidden layer (gradient checks)

    Returns
    -------
    logit : ndarray of shape (n,)
    cache : TowerCache, for :func:`tower_backward`
    """
    hidden = []
    for i in range(len(cfg.units)):
        u, affine = L.affine_forward(h, params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"])  # (n, u_i)
        bn = stats = None
        if cfg.batch_norm:
            u, bn, stats = L.batchnorm_forward(                                          # (n, u_i)
                u, params[f"{prefix}.gamma{i}"], params[f"{prefix}.beta{i}"],
                state[f"{prefix}.bn_mean{i}"], state[f"{prefix}.bn_var{i}"], train)
        if cfg.activation == "prelu":
            h, act = L.prelu_forward(u, params[f"{prefix}.alpha{i}"])                    # (n, u_i)
        else:
            h, act = _ACT_FORWARD[cfg.activation](u)                               # (n, u_i)
        mask = None
        if train and cfg.dropout > 0:
            h, mask = L.dropout_forward(h, cfg.dropout, rng=rng,                         # (n, u_i)
                                        mask=None if masks is None else masks[i])
        hidden.append(HiddenCache(affine, bn, stats, act, mask))
    logit, out = L.affine_forward(h, params[f"{prefix}.W_out"], params[f"{prefix}.b_out"])  # (n, 1)
    return logit[:, 0], TowerCache(hidden, out)


def tower_backward(dlogit, cache, prefix, cfg, grads):
    """Walk the tower in reverse, writing parameter gradients into ``grads``.

    Parameters
    ----------
    dlogit : ndarray of shape (n,)
    cache : TowerCache from :func:`tower_forward`
    cfg : TowerConfig
    grads : dict, filled with ``prefix.W{i}`` etc.

    Returns
    -------
    dh : ndarray of shape (n, d_in), gradient of the tower input
    """
    dh, grads[f"{prefix}.W_out"], grads[f"{prefix}.b_out"] = L.affine_backward(
        dlogit[:, None], cache.out)                                                      # (n, u_last)
    for i in reversed(range(len(cache.hidden))):
        c = cache.hidden[i]
        if c.dropout is not None:
            dh = L.dropout_backward(dh, c.dropout)                                       # (n, u_i)
        if cfg.activation == "prelu":
            du, grads[f"{prefix}.alpha{i}"] = L.prelu_backward(dh, c.activation)         # (n, u_i)
        else:
            du = _ACT_BACKWARD[cfg.activation](dh, c.activation)                   # (n, u_i)
        if c.batchnorm is not None:
            du, grads[f"{prefix}.gamma{i}"], grads[f"{prefix}.beta{i}"] = \
                L.batchnorm_backward(du, c.batchnorm)                                    # (n, u_i)
        dh, grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = L.affine_backward(du, c.affine)
    return dh                                                                            # (n, d_in)


def check_batch_stats(prefix, cache):
    """Raise ``FloatingPointError`` if a batch's BN mean or variance is NaN or inf.

    A finite input can still have an inf variance (its square overflows)
    while the normalised output and the loss stay finite.
    """
    for i, c in enumerate(cache.hidden):
        if c.batch_stats is not None and not (np.isfinite(c.batch_stats[0]).all()
                                              and np.isfinite(c.batch_stats[1]).all()):
            raise FloatingPointError(f"the batch statistics of {prefix}.bn_mean{i} / "
                                     f"{prefix}.bn_var{i} are NaN or inf")


def fold_running_stats(state, prefix, cache, momentum):
    """Move the running BN statistics toward this batch's (training loop only)."""
    for i, c in enumerate(cache.hidden):
        if c.batch_stats is not None:
            mu, var = c.batch_stats                                  # (u_i,), (u_i,)
            m = state[f"{prefix}.bn_mean{i}"]
            v = state[f"{prefix}.bn_var{i}"]
            m *= momentum
            m += (1 - momentum) * mu
            v *= momentum
            v += (1 - momentum) * var


# ------------------------------------------------------------ shared base

def check_finite_step(loss, grads):
    """Raise ``FloatingPointError`` if the loss or any gradient entry is NaN or inf.

    A sum is NaN or inf whenever one of its terms is, so one ``np.sum`` per
    tensor (no temporary array) is the test; only on failure are the bad
    entries counted for the message.
    """
    if not np.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss}")
    for name, g in grads.items():
        values = g.values if isinstance(g, L.SparseRows) else g
        if not np.isfinite(np.sum(values)):
            n_bad = int(np.count_nonzero(~np.isfinite(values)))
            what = f"{n_bad} NaN or inf entries" if n_bad else "entries so large their sum overflows"
            raise FloatingPointError(f"the gradient of {name!r} has {what}")


def check_logits(logits, start):
    """Raise ``FloatingPointError`` if an inference logit is NaN (``predict`` never returns NaN).

    Finite inputs can still overflow inside the towers (float32 dense
    features near its largest value 3.4e38 give inf - inf = NaN in the first
    affine layer); a NaN probability would then pass silently into a metric.
    ``start`` is the chunk's first row, so the message counts rows from 0.
    """
    for t, logit in logits.items():
        bad = np.isnan(logit)                                           # (n,)
        if bad.any():
            rows = np.flatnonzero(bad) + start
            raise FloatingPointError(
                f"the {t} tower's logit is NaN for {rows.size} row(s), e.g. row {rows[0]}: the "
                f"forward pass overflowed (inputs or parameters too large for {logit.dtype}), "
                "so no probability can be given")


def check_tower_units(units, n_towers):
    """Normalise ``units``: one tuple for every tower, or one tuple per tower."""
    if isinstance(units, str) or not hasattr(units, "__iter__"):
        raise TypeError(f"tower_units must be a tuple of ints or {n_towers} such tuples, "
                        f"got {units!r}")
    units = tuple(units)
    if all(validate.is_int(u) for u in units):
        per = (units,) * n_towers
    elif len(units) == n_towers and all(isinstance(u, (tuple, list)) for u in units):
        per = units
    else:
        raise ValueError(f"tower_units must be a tuple of ints or {n_towers} such tuples, got {units!r}")
    return tuple(tuple(validate.check_int(v, "tower_units entry", low=1) for v in u) for u in per)


class _EmbeddingMLP:
    """What ESMM and the single-tower model share: options, embeddings, input checks."""

    def __init__(self, field_dims, embed_dim, *, activation, dropout, batch_norm,
                 l2_reg_embedding, l2_reg_dnn, n_dense, dtype, seed, bn_momentum,
                 bag_dims=None, bag_pooling="sum"):
        self.field_dims = check_field_dims(field_dims)
        self._init_bags(bag_dims, bag_pooling)
        self.activation = check_choice(activation, "activation", L.ACTIVATIONS)
        self.dropout = validate.check_float(dropout, "dropout", 0, 1, high_open=True)
        self.embed_dim = validate.check_int(embed_dim, "embed_dim", low=1)
        self.n_dense = validate.check_int(n_dense, "n_dense", low=0)
        self.l2_reg_embedding = validate.check_float(l2_reg_embedding, "l2_reg_embedding", low=0)
        self.l2_reg_dnn = validate.check_float(l2_reg_dnn, "l2_reg_dnn", low=0)
        self.batch_norm = validate.check_bool(batch_norm, "batch_norm")
        self.bn_momentum = validate.check_float(bn_momentum, "bn_momentum", 0, 1, high_open=True)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.seed = validate.check_seed(seed)
        self.rng = np.random.default_rng(seed)  # init now, dropout masks later
        # Row offset of each field in the stacked table: field f's id j is row offsets[f] + j.
        self.offsets = np.concatenate([[0], np.cumsum(self.field_dims)[:-1]]).astype(np.int64)
        self.params, self.state = {}, {}
        self.d_in = (len(self.field_dims) + len(self.bag_dims)) * self.embed_dim + self.n_dense

    def _init_bags(self, bag_dims, bag_pooling):
        """Multi-valued fields: their sizes, pooling, and rows after the single-id fields'."""
        if bag_dims is not None and not isinstance(bag_dims, dict):
            raise TypeError(f"bag_dims must be a dict field -> number of ids, got {bag_dims!r}")
        bag_dims = dict(bag_dims or {})
        names = [str(f) for f in bag_dims]
        dims = check_field_dims(bag_dims.values()) if bag_dims else ()
        self.bag_dims = dict(zip(names, dims))
        self.bag_pooling = check_choice(bag_pooling, "bag_pooling", L.BAG_MODES)
        # Bag field b's id j is table row bag_offsets[b] + j, after every single-id field's rows.
        starts = sum(self.field_dims) + np.concatenate([[0], np.cumsum(dims)[:-1]]) if dims else []
        self.bag_offsets = {f: int(o) for f, o in zip(names, starts)}

    def _new_table(self):
        """An embedding table with small random rows (N(0, 0.05^2))."""
        V = sum(self.field_dims) + sum(self.bag_dims.values())
        return (0.05 * self.rng.standard_normal((V, self.embed_dim))).astype(self.dtype)

    def tower_config(self, units):
        """The :class:`TowerConfig` of a tower with hidden widths ``units``."""
        return TowerConfig(units, self.activation, self.batch_norm, self.dropout)

    _tower_cfg = tower_config     # the former name (tests/test_exercises.py still calls it)

    def check_rows(self, X, dense):
        """Validate ``X`` and ``dense``; return table rows (n, F) and dense (n, d) or None."""
        X = check_ids(X, self.field_dims)
        dense = check_dense(dense, X.shape[0], self.n_dense, self.dtype)
        return X + self.offsets, dense  # (n, F) int64

    def check_inputs(self, X, dense):
        """Validate ``X`` and ``dense`` for chunked use (predict, eval_loss).

        Checked block by block and not shifted, so a memory-mapped ``X`` is
        never copied whole; each chunk is shifted by ``offsets`` when used.
        """
        if not isinstance(X, np.ndarray):
            X = validate.as_array(X, "X")          # a ragged list gets a sentence
        X = check_ids_in_blocks(X, self.field_dims)
        return X, check_dense(dense, X.shape[0], self.n_dense, self.dtype)

    def check_labels_in_blocks(self, labels, n):
        """:meth:`check_labels` block by block (memory-mapped labels stay on disk); returns them."""
        if not labels or any(np.shape(y) != (n,) for y in labels):
            self.check_labels(labels, n)                     # raises the usual message
        in_blocks(lambda *ys: self.check_labels(ys, ys[0].shape[0]), labels)
        return labels

    def check_bags(self, bags, n):
        """Validate the bags of the multi-valued fields (None for a model without any).

        Weights keep their dtype (nothing is copied); ``bag_forward`` casts
        each batch's to the model's dtype.
        """
        return check_bags(bags, self.bag_dims, n, finite_in=self.dtype)

    def _embed(self, table, rows, dense, bags=None):
        """The input path shared by every model: rows of the table -> tower input ``h0``.

        ``h0 = [e, pooled bags, dense]``: the single-id fields' embeddings
        (``embedding_forward``), then one pooled vector per multi-valued field
        (``bag_forward``, ids shifted here to their table rows), then the
        numeric features.

        Parameters
        ----------
        table : ndarray of shape (V, k)
        rows : ndarray of int, shape (n, F), already shifted by ``offsets``
        dense : ndarray of shape (n, n_dense) or None
        bags : dict field -> (offsets, ids, weights) as :meth:`_bags` returns, or None

        Returns
        -------
        h0 : ndarray of shape (n, d_in)
        cache : for :meth:`_embed_backward`
        """
        e, emb_cache = L.embedding_forward(table, rows)                     # (n, F*k)
        if bags is None:
            h0, cat_cache = L.concat_forward(e, dense)                      # (n, d_in)
            return h0, EmbedCache(emb_cache, cat_cache, None)
        pooled, bag_caches = [e], []
        for f, (offsets, ids, weights) in bags.items():
            rows_f = ids.astype(np.int64) + self.bag_offsets[f]             # (nnz,) table rows
            p, c = L.bag_forward(table, offsets, rows_f, weights, self.bag_pooling)  # (n, k)
            pooled.append(p)
            bag_caches.append(c)
        h0, cat_cache = L.concat_forward(np.concatenate(pooled, axis=1), dense)  # (n, d_in)
        return h0, EmbedCache(emb_cache, cat_cache, bag_caches)

    def _embed_backward(self, dh0, cache):
        """Gradient of the table from ``dh0``: the lookups' and every bag's scatter-adds, summed."""
        de = L.concat_backward(dh0, cache.concat)                           # (n, (F+B)*k)
        if cache.bags is None:
            return L.embedding_backward(de, cache.lookup)
        width = cache.lookup[0].shape[1] * self.embed_dim                   # F*k
        parts = [L.embedding_backward(de[:, :width], cache.lookup)]
        for b, c in enumerate(cache.bags):
            lo = width + b * self.embed_dim
            parts.append(L.bag_backward(de[:, lo:lo + self.embed_dim], c))  # (n, k) each
        return L.add_sparse_rows(*parts)

    def _l2(self, grads, lazy=False):
        """Add the L2 penalties to ``grads``; return their value.

        The tables' penalty is ``l2_reg_embedding * sum(E**2)`` over the whole
        table, which makes its gradient dense. With ``lazy=True`` (the lazy
        optimisers' training steps) only the rows this batch used are
        penalised, so the gradient stays sparse; docs/derivation.md discusses
        the difference.
        """
        total = 0.0
        if self.l2_reg_embedding > 0:
            lam = self.l2_reg_embedding
            for name in self.tables:
                g = grads[name]
                if lazy:
                    E_used = self.params[name][g.rows]                       # (u, k)
                    total += float(lam * np.sum(E_used * E_used))
                    grads[name] = L.SparseRows(g.rows, g.values + 2 * lam * E_used, g.n_rows)
                else:
                    pen, dpen = l2_penalty(self.params[name], lam)
                    total += pen
                    grads[name] = L.sparse_to_dense(g) + dpen
        if self.l2_reg_dnn > 0:
            for name in self.params:
                if name.split(".")[0] in self.towers and ".W" in name:
                    pen, dpen = l2_penalty(self.params[name], self.l2_reg_dnn)
                    total += pen
                    grads[name] = grads[name] + dpen
        return total

    def loss(self, X, *labels, dense=None, train=True, seed=None, masks=None, bags=None):
        """Loss and gradient of every parameter (see the subclass for the labels).

        Parameters
        ----------
        X : ndarray of int, shape (n, n_fields)
        *labels : the 0/1 label arrays, each shape (n,)
        dense : ndarray of shape (n, n_dense) or None
        train : bool
            True (default): dropout and batch statistics, as in a training step.
        seed : int, optional
            Seeds this call's dropout masks, so repeated calls see the same
            network (gradient checking needs that); by default they come from
            the model's generator.
        masks : fixed dropout masks per tower, overriding ``seed``
        bags : dict field -> (offsets, ids, weights), or None
            The multi-valued fields' bags (see :mod:`esmm_np.data.bags`); required
            exactly when the model was built with ``bag_dims``.

        Returns
        -------
        loss : float
            The data loss (means over the batch) plus the L2 penalties.
        grads : dict[str, ndarray]
            Same keys and shapes as ``params``.
        """
        train = validate.check_bool(train, "train")
        seed = validate.check_seed(seed)
        rows, dense = self.check_rows(X, dense)
        labels = self.check_labels(labels, rows.shape[0])
        bags = self.check_bags(bags, rows.shape[0])
        loss, grads, _ = self._loss_grads(rows, dense, labels, train, self._rng_for(seed), masks,
                                          bags=bags)
        loss += self._l2(grads)
        return loss, self._densify(grads)

    def train_loss(self, rows, dense, labels, rng, lazy=False, bags=None):
        """One training step's loss and gradients on already-validated input.

        Used by :func:`esmm_np.fit`: dropout and batch statistics on, the BN
        running statistics updated, the embedding gradient left as
        :class:`~esmm_np.layers.SparseRows` unless L2 on the table makes it dense.
        """
        loss, grads, caches = self._loss_grads(rows, dense, labels, True, rng, bags=bags)
        loss += self._l2(grads, lazy=lazy)
        check_finite_step(loss, grads)   # before the running statistics move
        self._fold_bn(caches)
        return loss, grads

    def eval_loss(self, X, *labels, dense=None, batch_size=65536, bags=None):
        """The data loss (no L2) in inference mode, as for validation; no gradients kept.

        Parameters as for :meth:`loss`. Computed in chunks of ``batch_size`` rows
        and averaged over all rows.
        """
        batch_size = validate.check_int(batch_size, "batch_size", low=1)
        X, dense = self.check_inputs(X, dense)
        n = X.shape[0]
        labels = self.check_labels_in_blocks(labels, n)
        bags = self.check_bags(bags, n)
        total = 0.0
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            d = None if dense is None else dense[s:e]                       # (b, n_dense)
            logits, _ = self._forward(X[s:e] + self.offsets, d, train=False,
                                      bags=slice_bags(bags, s, e))
            ys = tuple(np.asarray(y[s:e]).astype(np.int8, copy=False) for y in labels)  # (b,) each
            part, _ = self._loss_at_logits(logits, ys)
            total += part * (e - s)
        return total / n

    def get_config(self):
        """The constructor's arguments as a JSON-able dict.

        ``type(model)(**model.get_config())`` builds the same architecture
        (with fresh weights); :meth:`save` stores it beside the arrays.
        Subclasses add their own arguments.
        """
        return {"field_dims": list(self.field_dims), "embed_dim": self.embed_dim,
                "activation": self.activation, "dropout": self.dropout,
                "batch_norm": self.batch_norm, "l2_reg_embedding": self.l2_reg_embedding,
                "l2_reg_dnn": self.l2_reg_dnn, "n_dense": self.n_dense,
                "dtype": self.dtype.name, "bn_momentum": self.bn_momentum,
                "seed": self.seed if isinstance(self.seed, int) else None,
                **({"bag_dims": dict(self.bag_dims), "bag_pooling": self.bag_pooling}
                   if self.bag_dims else {})}

    def save(self, path, optimizer=None):
        """Save the model (and optionally its optimizer) to ``path``, a ``.npz`` file.

        Written atomically; :mod:`esmm_np.persist` describes the layout and
        :func:`esmm_np.load_model` reads it. ``optimizer`` (SGD or Adam serving
        this model) is saved too, so that training can resume where it stopped.
        Returns the path written.
        """
        arrays = self.file_arrays(optimizer)
        return write_file(path, lambda f: np.savez(f, **arrays))

    def file_arrays(self, optimizer=None):
        """What a model file holds: ``meta`` (JSON text), ``param/``, ``state/``, ``optim/`` arrays."""
        name = type(self).__name__
        if name not in FILE_CLASSES or not type(self).__module__.startswith("esmm_np."):
            raise TypeError(f"cannot save a {name}: known model classes are {sorted(FILE_CLASSES)}")
        meta = {"format": "esmm_np model", "format_version": FILE_FORMAT_VERSION,
                "esmm_np_version": __version__, "class": name, "config": self.get_config(),
                "rng_state": self.rng.bit_generator.state}
        arrays = {f"param/{k}": w for k, w in self.params.items()}
        arrays.update({f"state/{k}": a for k, a in self.state.items()})
        if optimizer is not None:
            optimizer.bind(self.params)     # refuses an optimizer that serves another model
            meta["optimizer"] = optimizer.config()
            arrays.update({f"optim/{k}": a for k, a in optimizer.state_arrays().items()})
        arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))   # text, not a pickle
        return arrays

    def _rng_for(self, seed):
        return self.rng if seed is None else np.random.default_rng(seed)

    def n_parameters(self):
        """Total number of trainable scalars."""
        return int(sum(p.size for p in self.params.values()))

    def _densify(self, grads):
        return {k: (L.sparse_to_dense(g) if isinstance(g, L.SparseRows) else g)
                for k, g in grads.items()}


# --------------------------------------------------------------------- ESMM

class ESMM(_EmbeddingMLP):
    """Entire Space Multi-Task Model.

    Parameters
    ----------
    field_dims : sequence of int
        Number of ids of each categorical field; ``X[:, f]`` is in ``[0, field_dims[f])``.
    embed_dim : int
        Embedding size k of every field.
    tower_units : tuple of int, or pair of tuples
        Hidden layer widths; one tuple for both towers, or ``(ctr_units, cvr_units)``
        (the seed's ``tower_dnn_units_lists``).
    activation : {"relu", "sigmoid", "tanh", "prelu"}
    dropout : float
        Inverted-dropout rate after each hidden activation (training only).
    batch_norm : bool
        Batch normalisation between each hidden affine layer and its activation.
    l2_reg_embedding, l2_reg_dnn : float
        L2 strengths ``lam * sum(w**2)`` on the embedding table(s) and on the
        towers' weight matrices (not biases), as the seed's arguments of the same names.
    n_dense : int
        Number of numeric features concatenated after the embeddings.
    loss_weights : (float, float)
        Weights of the CTR and CTCVR losses.
    ctcvr_loss : {"logspace", "naive"}
        "logspace" (default) computes the CTCVR loss from the two logits and is
        exact for any logits; "naive" multiplies probabilities and clips (teaching only).
    share_embedding : bool
        False gives ESMM-NS: each tower has its own table.
    dtype : float64 (default) or float32
    seed : int or None
        Seeds initialisation and dropout masks.
    bn_momentum : float
        Running statistics move as ``r = m * r + (1 - m) * batch``.
    bag_dims : dict str -> int, optional
        Multi-valued fields and their number of ids (e.g. Ali-CCP's
        ``{"210": ..., "109_14": ...}``). Their rows follow the single-id
        fields' rows in the same table(s); each contributes one pooled
        vector of size k to the tower input, after the single-id fields.
        ``loss``, ``predict`` and ``fit`` then take ``bags=``.
    bag_pooling : {"sum", "mean"}
        How a bag's (value-weighted) embeddings are pooled; see
        :func:`esmm_np.layers.bag_forward`.
    """

    towers = ("ctr", "cvr")

    def __init__(self, field_dims, embed_dim=8, tower_units=(64, 32), *, activation="relu",
                 dropout=0.0, batch_norm=False, l2_reg_embedding=0.0, l2_reg_dnn=0.0,
                 n_dense=0, loss_weights=(1.0, 1.0), ctcvr_loss="logspace",
                 share_embedding=True, dtype=np.float64, seed=0, bn_momentum=0.9,
                 bag_dims=None, bag_pooling="sum"):
        super().__init__(field_dims, embed_dim, activation=activation, dropout=dropout,
                         batch_norm=batch_norm, l2_reg_embedding=l2_reg_embedding,
                         l2_reg_dnn=l2_reg_dnn, n_dense=n_dense, dtype=dtype, seed=seed,
                         bn_momentum=bn_momentum, bag_dims=bag_dims, bag_pooling=bag_pooling)
        self.ctcvr_loss = check_choice(ctcvr_loss, "ctcvr_loss", ("logspace", "naive"))
        if isinstance(loss_weights, (str, bytes, dict)) or not hasattr(loss_weights, "__len__"):
            raise TypeError(f"loss_weights must be a pair of non-negative numbers "
                            f"(w_ctr, w_ctcvr), got {loss_weights!r}")
        if len(loss_weights) != 2:
            raise ValueError(f"loss_weights must be two non-negative numbers, got {loss_weights!r}")
        self.loss_weights = tuple(validate.check_float(w, f"loss_weights[{i}]", low=0)
                                  for i, w in enumerate(loss_weights))
        self.share_embedding = validate.check_bool(share_embedding, "share_embedding")
        self.tower_units = check_tower_units(tower_units, 2)
        self.tables = ("embedding",) if self.share_embedding else ("ctr.embedding", "cvr.embedding")
        for name in self.tables:
            self.params[name] = self._new_table()
        for t, units in zip(self.towers, self.tower_units):
            p, s = init_tower(self.rng, t, self.d_in, units, activation, batch_norm, self.dtype)
            self.params.update(p)
            self.state.update(s)

    def get_config(self):
        config = super().get_config()
        config.update(tower_units=[list(u) for u in self.tower_units],
                      loss_weights=list(self.loss_weights), ctcvr_loss=self.ctcvr_loss,
                      share_embedding=self.share_embedding)
        return config

    def _forward(self, rows, dense, train, rng=None, masks=None, bags=None):
        """Embeddings -> every tower -> one logit each; returns logits and caches.

        ``caches[t]`` is ``(TowerCache, EmbedCache)``; with a shared table
        every tower reads the same ``h0`` and the same EmbedCache.
        """
        h0, emb_cache = self._embed(self.params[self.tables[0]], rows, dense, bags)   # (n, d_in)
        logits, caches = {}, {}
        for t, units in zip(self.towers, self.tower_units):
            if not self.share_embedding and t != self.towers[0]:
                h0, emb_cache = self._embed(self.params[f"{t}.embedding"], rows, dense,
                                            bags)                                   # (n, d_in)
            logits[t], tower_cache = tower_forward(                                 # (n,)
                self.params, self.state, t, h0, self.tower_config(units), train, rng,
                None if masks is None else masks[t])
            caches[t] = (tower_cache, emb_cache)
        return logits, caches

    def predict(self, X, dense=None, batch_size=65536, bags=None):
        """Inference-mode probabilities for every impression.

        Parameters
        ----------
        X : ndarray of int, shape (n, n_fields)
        dense : ndarray of shape (n, n_dense) or None
        bags : dict field -> (offsets, ids, weights), or None (multi-valued fields)

        Returns
        -------
        dict with "p_ctr", "p_cvr", "p_ctcvr", each ndarray of shape (n,)
        """
        batch_size = validate.check_int(batch_size, "batch_size", low=1)
        X, dense = self.check_inputs(X, dense)
        bags = self.check_bags(bags, X.shape[0])
        out = {"p_ctr": [], "p_cvr": [], "p_ctcvr": []}
        for s in range(0, X.shape[0], batch_size):      # chunks bound the memory
            d = None if dense is None else dense[s:s + batch_size]
            logits, _ = self._forward(X[s:s + batch_size] + self.offsets, d, train=False,
                                      bags=slice_bags(bags, s, s + batch_size))
            check_logits(logits, s)
            p_ctr, p_cvr = L.sigmoid(logits["ctr"]), L.sigmoid(logits["cvr"])
            out["p_ctr"].append(p_ctr)
            out["p_cvr"].append(p_cvr)
            out["p_ctcvr"].append(p_ctr * p_cvr)
        return {k: np.concatenate(v) for k, v in out.items()}

    def loss(self, X, click, conversion, dense=None, *, train=True, seed=None, masks=None,
             bags=None):
        """Loss and gradient of every parameter.

        ``loss = w_ctr * mean BCE(click, p_ctr) + w_ctcvr * mean BCE(click * conversion, p_ctcvr)``
        plus the L2 penalties; ``grads`` has exactly the keys and shapes of
        ``params``. Keyword arguments as in ``_EmbeddingMLP.loss``: ``train``
        (dropout and batch statistics), ``seed`` (fixes this call's dropout
        masks), ``masks``, ``bags`` (the multi-valued fields).
        """
        return super().loss(X, click, conversion, dense=dense, train=train, seed=seed, masks=masks,
                            bags=bags)

    def check_labels(self, labels, n):
        """Validate ``(click, conversion)`` for ``n`` rows; return them as int8 arrays."""
        if len(labels) != 2:
            raise TypeError(f"ESMM needs two label arrays (click, conversion), got {len(labels)}")
        return validate.check_labels(labels[0], labels[1], n)

    def _loss_grads(self, rows, dense, labels, train, rng, masks=None, bags=None):
        """Forward and backward on validated input; embedding grads stay sparse.

        Returns (data loss without L2, grads, caches).
        """
        logits, caches = self._forward(rows, dense, train, rng, masks, bags=bags)
        loss, dlogit = self._loss_at_logits(logits, labels)
        grads = {}
        dh0_shared = None
        for t, units in zip(self.towers, self.tower_units):
            tower_cache, emb_cache = caches[t]
            dh0 = tower_backward(dlogit[t], tower_cache, t, self.tower_config(units),
                                 grads)                                             # (n, d_in)
            if not self.share_embedding:
                grads[f"{t}.embedding"] = self._embed_backward(dh0, emb_cache)
            else:   # both towers read the same h0: their gradients add before the lookup
                dh0_shared = dh0 if dh0_shared is None else dh0_shared + dh0        # (n, d_in)
        if self.share_embedding:
            grads["embedding"] = self._embed_backward(dh0_shared, emb_cache)
        return loss, grads, caches

    def _loss_at_logits(self, logits, labels):
        """The two losses from the two logits; returns (loss, {"ctr": dlogit, "cvr": dlogit})."""
        click, conversion = labels
        a, b = logits["ctr"], logits["cvr"]                     # (n,), (n,)
        z = click * conversion                                  # CTCVR label
        w_ctr, w_ctcvr = self.loss_weights
        loss_ctr, da_ctr = bce_with_logits(a, click)
        if self.ctcvr_loss == "logspace":
            loss_ctcvr, da_ctcvr, db = ctcvr_bce_logspace(a, b, z)
        else:  # naive: probabilities, product, clip; then the two sigmoid backwards
            p_ctr, s_ctr = L.sigmoid_forward(a)
            p_cvr, s_cvr = L.sigmoid_forward(b)
            loss_ctcvr, dp_ctr, dp_cvr = ctcvr_bce_naive(p_ctr, p_cvr, z)
            da_ctcvr = L.sigmoid_backward(dp_ctr, s_ctr)
            db = L.sigmoid_backward(dp_cvr, s_cvr)
        dlogit = {"ctr": w_ctr * da_ctr + w_ctcvr * da_ctcvr,   # CTR logit feeds both losses
                  "cvr": w_ctcvr * db}                          # CVR logit only via p_ctcvr
        return w_ctr * loss_ctr + w_ctcvr * loss_ctcvr, dlogit

    def _fold_bn(self, caches):
        for t in self.towers:           # every tower checked before any moves
            check_batch_stats(t, caches[t][0])
        for t in self.towers:
            fold_running_stats(self.state, t, caches[t][0], self.bn_momentum)


# ------------------------------------------------------- one-tower classifier

class TowerModel(_EmbeddingMLP):
    """Embedding + one MLP tower + sigmoid: a binary classifier on impressions.

    The building block of the paper's baselines: a CVR network trained on
    clicks (BASE and its variants), a CTR network, or a CTCVR network.
    Same options as :class:`ESMM` (``tower_units`` is a single tuple).

    ``predict(X)`` returns ``{"p": ...}``; ``loss(X, y)`` the mean BCE plus L2.
    """

    def __init__(self, field_dims, embed_dim=8, tower_units=(64, 32), *, activation="relu",
                 dropout=0.0, batch_norm=False, l2_reg_embedding=0.0, l2_reg_dnn=0.0,
                 n_dense=0, dtype=np.float64, seed=0, bn_momentum=0.9, bag_dims=None,
                 bag_pooling="sum"):
        super().__init__(field_dims, embed_dim, activation=activation, dropout=dropout,
                         batch_norm=batch_norm, l2_reg_embedding=l2_reg_embedding,
                         l2_reg_dnn=l2_reg_dnn, n_dense=n_dense, dtype=dtype, seed=seed,
                         bn_momentum=bn_momentum, bag_dims=bag_dims, bag_pooling=bag_pooling)
        (self.tower_units,) = check_tower_units(tower_units, 1)
        self.tables, self.towers = ("embedding",), ("net",)
        self.params["embedding"] = self._new_table()
        p, s = init_tower(self.rng, "net", self.d_in, self.tower_units, activation,
                          batch_norm, self.dtype)
        self.params.update(p)
        self.state.update(s)

    def get_config(self):
        config = super().get_config()
        config.update(tower_units=list(self.tower_units))
        return config

    def _forward(self, rows, dense, train, rng=None, masks=None, bags=None):
        h0, emb_cache = self._embed(self.params["embedding"], rows, dense, bags)  # (n, d_in)
        logit, tower_cache = tower_forward(self.params, self.state, "net", h0,
                                           self.tower_config(self.tower_units), train, rng,
                                           masks)                                   # (n,)
        return logit, (tower_cache, emb_cache)

    def predict(self, X, dense=None, batch_size=65536, bags=None):
        """Inference-mode probability; returns ``{"p": ndarray of shape (n,)}``."""
        batch_size = validate.check_int(batch_size, "batch_size", low=1)
        X, dense = self.check_inputs(X, dense)
        bags = self.check_bags(bags, X.shape[0])
        ps = []
        for s in range(0, X.shape[0], batch_size):
            d = None if dense is None else dense[s:s + batch_size]
            logit, _ = self._forward(X[s:s + batch_size] + self.offsets, d, train=False,
                                     bags=slice_bags(bags, s, s + batch_size))
            check_logits({"net": logit}, s)
            ps.append(L.sigmoid(logit))
        return {"p": np.concatenate(ps)}

    def loss(self, X, y, dense=None, *, train=True, seed=None, masks=None, bags=None):
        """Mean BCE(y, p) plus L2, and gradients keyed like ``params``."""
        return super().loss(X, y, dense=dense, train=train, seed=seed, masks=masks, bags=bags)

    def check_labels(self, labels, n):
        """Validate ``(y,)`` for ``n`` rows; return it as a 1-tuple of an int8 array."""
        if len(labels) != 1:
            raise TypeError(f"TowerModel needs one label array, got {len(labels)}")
        return (check_binary(labels[0], n, "y"),)

    def _loss_grads(self, rows, dense, labels, train, rng, masks=None, bags=None):
        logit, (tower_cache, emb_cache) = self._forward(rows, dense, train, rng, masks, bags=bags)
        loss, dlogit = self._loss_at_logits(logit, labels)
        grads = {}
        dh0 = tower_backward(dlogit, tower_cache, "net", self.tower_config(self.tower_units),
                             grads)                                                 # (n, d_in)
        grads["embedding"] = self._embed_backward(dh0, emb_cache)
        return loss, grads, tower_cache

    def _loss_at_logits(self, logit, labels):
        """Mean BCE at the logit; returns (loss, dlogit)."""
        return bce_with_logits(logit, labels[0])

    def _fold_bn(self, cache):
        check_batch_stats("net", cache)
        fold_running_stats(self.state, "net", cache, self.bn_momentum)
