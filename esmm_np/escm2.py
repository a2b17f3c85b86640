"""ESCM² (Wang et al., "ESCM²: Entire Space Counterfactual Multi-Task Model for
Post-Click Conversion Rate Estimation", SIGIR 2022): ESMM plus a
counterfactual CVR loss.

ESMM supervises pCVR only through pCTCVR = pCTR · pCVR. ESCM² adds a direct
CVR loss over the entire space, built from the clicked impressions and
reweighted by the inverse of the propensity pCTR, so that in expectation it
equals the CVR loss every impression would have had if it had been clicked:

    L = w_ctr · L_ctr + w_ctcvr · L_ctcvr + λ_c · L_cf

(``loss_weights = (w_ctr, w_ctcvr)`` as in ESMM, so the paper's λ_g is
``w_ctcvr``; ``counterfactual_weight`` is λ_c). With ``a, b`` the CTR and CVR
logits, ``y`` the click, ``c`` the conversion, ``π = max(σ(a), floor)`` the
propensity (code ``q``) and ``r = BCE(c, σ(b))`` the CVR error of a row
(code ``err``; the symbols of docs/derivation.md section 10):

- IPS: ``L_cf = mean over impressions of y · r / π``;
- DR: a third tower, the imputation tower, predicts the error of every row,
  ``r̂ = softplus(g)`` (an error is never negative) from its logit ``g``;
  ``L_cf = mean of [r̂ + y (r − r̂) / π] + mean of y (r − r̂)² / π``, the
  doubly robust CVR loss plus the imputation tower's own loss.

Two choices are options, with defaults discussed (and sourced) in
docs/derivation.md section 10: whether the gradient flows into the CTR tower
through ``q`` (``propensity_grad``, default False: the propensity is a
constant in each step), and, for DR, whether each part trains only its own
tower (``dr_gradient="separate"``, the default) or the summed objective is
differentiated as a whole ("joint"). Early stopping validates on ESMM's two
losses by default (``validation_loss``). Every gradient here is
hand-written and derived in that section.

Parameter names: those of :class:`~esmm_np.model.ESMM`, plus for DR the
imputation tower's ``imp.W{i}``, ``imp.b{i}``, ... ``imp.W_out``, ``imp.b_out``
(and ``imp.embedding`` when ``share_embedding=False``).
"""

import numpy as np

from . import layers as L
from . import validate
from .gradcheck import EXAMPLE_FIELD_DIMS, EXAMPLE_OPTIONS, check_model, perturb_and_draw
from .losses import softplus
from .model import ESMM, check_tower_units, init_tower

VARIANTS = ("ips", "dr")


# ------------------------------------------------------------------ pieces

def propensity_forward(a, floor):
    """The propensity ``q = max(σ(a), floor)`` from the CTR logit.

    Parameters
    ----------
    a : ndarray of shape (n,), CTR logits
    floor : float in [0, 1)
        Propensities below it are raised to it, so no weight ``1 / q`` exceeds ``1 / floor``.

    Returns
    -------
    q : ndarray of shape (n,)
    cache : (p_ctr, inside) for :func:`propensity_backward`
    """
    p_ctr = L.sigmoid(a)                                               # (n,)
    inside = p_ctr > floor                                             # (n,) not clipped
    q = np.where(inside, p_ctr, a.dtype.type(floor))                   # (n,)
    return q, (p_ctr, inside)


def propensity_backward(dq, cache):
    """``da = dq · σ(a) (1 − σ(a))`` where the clip is inactive, 0 where it is.

    Returns
    -------
    da : ndarray of shape (n,)
    """
    p_ctr, inside = cache
    return np.where(inside, dq * p_ctr * (1 - p_ctr), 0).astype(dq.dtype, copy=False)  # (n,)


def cvr_error(b, conversion):
    """Per-row CVR error ``r = BCE(c, σ(b))`` and its derivative ``dr/db = σ(b) − c``.

    Parameters
    ----------
    b : ndarray of shape (n,), CVR logits
    conversion : ndarray of shape (n,), 0/1

    Returns
    -------
    err, derr_db : ndarray of shape (n,)
    """
    c = conversion.astype(b.dtype)
    err = c * softplus(-b) + (1 - c) * softplus(b)                     # (n,)
    return err, L.sigmoid(b) - c                                       # (n,), (n,)


def ips_cvr_loss(b, q, click, conversion):
    """IPS counterfactual CVR loss ``mean_j y_j err_j / q_j`` (err = r, q = π) and its gradients.

    Parameters
    ----------
    b : ndarray of shape (n,), CVR logits
    q : ndarray of shape (n,), propensities (already clipped)
    click, conversion : ndarray of shape (n,), 0/1

    Returns
    -------
    loss : float
    db, dq : ndarray of shape (n,)

    Notes
    -----
    With ``w = y / q``: ``dL/db = w (σ(b) − c) / n`` and ``dL/dq = −y err / (q² n)``.
    Unclicked rows have ``w = 0``: their (unknown) conversion never enters.
    """
    n = b.shape[0]
    y = click.astype(b.dtype)
    err, derr_db = cvr_error(b, conversion)                            # (n,), (n,)
    w = y / q                                                          # (n,) inverse propensity
    loss = float(np.mean(w * err))
    db = w * derr_db / n                                               # (n,)
    dq = -w * err / q / n                                              # (n,) = -y err / q² / n
    return loss, db, dq


def dr_cvr_loss(b, g, q, click, conversion, separate=True, held_err=None, held_err_hat=None):
    """DR counterfactual CVR loss plus the imputation loss, and their gradients.

    ``L = mean_j [err_hat_j + w_j delta_j] + mean_j w_j delta_j²`` with
    ``err_hat = softplus(g)`` (r̂ in docs/derivation.md), ``delta = err − err_hat``
    (Δ) and ``w = y / q`` (ω): the DR estimate of the CVR loss, then the
    imputation tower's own loss.

    Parameters
    ----------
    b : ndarray of shape (n,), CVR logits
    g : ndarray of shape (n,), imputation logits
    q : ndarray of shape (n,), propensities (already clipped)
    click, conversion : ndarray of shape (n,), 0/1
    separate : bool
        True (default): each part trains its own tower. The DR estimate
        trains the CVR tower with ``err_hat`` held, the imputation loss trains
        the imputation tower with ``err`` held (the joint-learning scheme of the
        doubly robust literature). False: the gradient of the summed
        objective with respect to both logits.
    held_err, held_err_hat : ndarray of shape (n,), optional
        With ``separate``: the values held constant, ``err`` in the imputation
        loss and ``err_hat`` in the DR estimate. By default the current ones (same
        value, same gradient); a gradient check passes them fixed, and the
        gradient returned is then exactly that of this loss as a function of
        ``b`` and ``g``.

    Returns
    -------
    loss : float
    db, dg, dq : ndarray of shape (n,)

    Notes
    -----
    Per row (then divided by n), with ``derr/db = σ(b) − c`` and ``derr_hat/dg = σ(g)``:

    - summed objective: ``dL/derr = w (1 + 2 delta)``, ``dL/derr_hat = 1 − w (1 + 2 delta)``;
    - separate: ``dL/derr = w`` (DR estimate), ``dL/derr_hat = −2 w delta`` (imputation loss);
    - both: ``dL/dq = −y (delta + delta²) / q²``.
    """
    n = b.shape[0]
    y = click.astype(b.dtype)
    err, derr_db = cvr_error(b, conversion)                            # (n,), (n,)
    err_hat = softplus(g)                                              # (n,) imputed error
    w = y / q                                                          # (n,)
    if separate:
        err_fix = err if held_err is None else held_err                # (n,) held in imputation loss
        hat_fix = err_hat if held_err_hat is None else held_err_hat    # (n,) held in DR estimate
        d_est, d_imp = err - hat_fix, err_fix - err_hat                # (n,), (n,)
        loss = float(np.mean(hat_fix + w * d_est) + np.mean(w * d_imp * d_imp))
        derr, derr_hat = w, -2 * w * d_imp                             # (n,) n · dL/derr, n · dL/derr_hat
        delta = err - err_hat                                          # (n,) for dq
    else:
        delta = err - err_hat                                          # (n,)
        loss = float(np.mean(err_hat + w * delta) + np.mean(w * delta * delta))
        derr = w * (1 + 2 * delta)                                     # (n,) n · dL/derr
        derr_hat = 1 - derr                                            # (n,) n · dL/derr_hat
    db = derr * derr_db / n                                            # (n,)
    dg = derr_hat * L.sigmoid(g) / n                                   # (n,)
    dq = -w * (delta + delta * delta) / q / n                          # (n,)
    return loss, db, dg, dq


# ------------------------------------------------------------------- model

class ESCM2(ESMM):
    """ESMM with a counterfactual CVR loss, IPS or DR.

    Parameters
    ----------
    field_dims, embed_dim, tower_units : as :class:`~esmm_np.model.ESMM`
    variant : {"ips", "dr"}
    counterfactual_weight : float >= 0
        λ_c, the weight of the counterfactual CVR loss (0 gives back ESMM's
        loss, plus an untrained imputation tower for DR).
    propensity_floor : float in [0, 1)
        Propensities are ``max(pCTR, propensity_floor)``, so no click weighs
        more than ``1 / propensity_floor``. Default 0.01 (weight at most 100).
    propensity_grad : bool
        False (default): the propensity is treated as a constant in each step,
        so the counterfactual loss trains the CVR (and imputation) tower and the
        shared embeddings but not the CTR tower through ``1 / pCTR``. True: the
        gradient also flows into the CTR logit through the propensity.
    imputation_units : tuple of int, optional
        DR only: hidden widths of the imputation tower (default: the CVR tower's).
    dr_gradient : {"separate", "joint"}
        DR only. "separate" (default): the DR estimate trains the CVR tower
        (imputed error held), the imputation loss trains the imputation tower
        (CVR error held). "joint": the gradient of the summed objective with
        respect to both towers (docs/derivation.md section 10 shows why the
        CVR tower then drifts to an error half a nat below the imputed one).
    validation_loss : {"observed", "full"}
        What :meth:`eval_loss` (early stopping in :func:`esmm_np.fit`)
        measures. "observed" (default): ESMM's two losses, the CTR and CTCVR
        cross-entropies on the log's own labels, the criterion ESMM is
        stopped on. "full": the training objective, counterfactual term
        included; its 1 / pCTR weights (up to 1 / floor) make it a noisy
        criterion that tends to stop within the first few hundred steps.
    **options
        Every other option of ESMM: activation, dropout, batch_norm,
        l2_reg_embedding, l2_reg_dnn, n_dense, loss_weights, ctcvr_loss,
        share_embedding (False gives every tower its own table), dtype, seed,
        bn_momentum.

    ``predict`` returns ``p_ctr``, ``p_cvr``, ``p_ctcvr`` as ESMM does;
    ``loss(X, click, conversion)`` returns ``(value, grads keyed like params)``.
    """

    def __init__(self, field_dims, embed_dim=8, tower_units=(64, 32), *, variant="ips",
                 counterfactual_weight=1.0, propensity_floor=0.01, propensity_grad=False,
                 imputation_units=None, dr_gradient="separate", validation_loss="observed",
                 **options):
        variant = validate.check_choice(variant, "variant", VARIANTS)
        counterfactual_weight = validate.check_float(counterfactual_weight, "counterfactual_weight", low=0)
        propensity_floor = validate.check_float(propensity_floor, "propensity_floor", low=0, high=1,
                                         high_open=True)
        propensity_grad = validate.check_bool(propensity_grad, "propensity_grad")
        if variant == "ips" and imputation_units is not None:
            raise ValueError("imputation_units is for variant='dr' only")
        validation_loss = validate.check_choice(validation_loss, "validation_loss", ("observed", "full"))
        dr_gradient = validate.check_choice(dr_gradient, "dr_gradient", ("separate", "joint"))
        super().__init__(field_dims, embed_dim, tower_units, **options)
        self.variant = variant
        self.counterfactual_weight = counterfactual_weight
        self.propensity_floor = propensity_floor
        self.propensity_grad = propensity_grad
        self.dr_gradient = dr_gradient
        self.validation_loss = validation_loss
        self._held = None
        self._observed_only = False
        if variant == "dr":
            units = self.tower_units[1] if imputation_units is None else \
                check_tower_units(imputation_units, 1)[0]
            self.towers = ("ctr", "cvr", "imp")
            self.tower_units = self.tower_units + (units,)
            if not self.share_embedding:
                self.tables = self.tables + ("imp.embedding",)
                self.params["imp.embedding"] = self._new_table()
            p, s = init_tower(self.rng, "imp", self.d_in, units, self.activation,
                              self.batch_norm, self.dtype)
            self.params.update(p)
            self.state.update(s)

    def get_config(self):
        """ESMM's constructor arguments plus ESCM2's (see :meth:`ESMM.get_config`)."""
        config = super().get_config()
        config["tower_units"] = config["tower_units"][:2]      # the imputation tower's are below
        config.update(variant=self.variant, counterfactual_weight=self.counterfactual_weight,
                      propensity_floor=self.propensity_floor,
                      propensity_grad=self.propensity_grad, dr_gradient=self.dr_gradient,
                      validation_loss=self.validation_loss)
        if self.variant == "dr":
            config["imputation_units"] = list(self.tower_units[2])
        return config

    def loss(self, X, click, conversion, dense=None, *, train=True, seed=None, masks=None,
             bags=None, held=None):
        """Loss and gradient of every parameter (see the module docstring for the loss).

        Parameters as :meth:`ESMM.loss`, plus

        held : dict, optional
            Values to use in place of the live ones, each ndarray of shape (n,):
            ``"propensity"`` (the clipped pCTR), and for DR ``"err"`` (the CVR
            error inside the imputation loss) and ``"err_hat"`` (the imputed
            error inside the DR estimate). The gradient treats exactly these
            quantities as constants (the default detached propensity, DR's
            separate gradients), so checking it against finite differences
            needs them fixed: :func:`check_gradients` passes
            :meth:`detached_values` here.
        """
        if held is None:
            return super().loss(X, click, conversion, dense=dense, train=train, seed=seed,
                                masks=masks, bags=bags)
        n = np.shape(X)[0]
        unknown = set(held) - {"propensity", "err", "err_hat"}
        if unknown:
            raise ValueError(f"held has unknown key(s) {sorted(unknown)}")
        held = {k: np.asarray(v, dtype=self.dtype) for k, v in held.items()}
        for k, v in held.items():
            if v.shape != (n,) or not np.all(np.isfinite(v)):
                raise ValueError(f"held[{k!r}] must be finite with shape ({n},)")
        if "propensity" in held and not np.all((held["propensity"] > 0)
                                               & (held["propensity"] <= 1)):
            raise ValueError("held['propensity'] must be in (0, 1]")
        self._held = held
        try:
            return super().loss(X, click, conversion, dense=dense, train=train, seed=seed,
                                masks=masks, bags=bags)
        finally:
            self._held = None

    def eval_loss(self, X, *labels, dense=None, batch_size=65536, bags=None):
        """The validation loss (inference mode, no L2): see ``validation_loss``."""
        self._observed_only = self.validation_loss == "observed"
        try:
            return super().eval_loss(X, *labels, dense=dense, batch_size=batch_size, bags=bags)
        finally:
            self._observed_only = False

    def propensity(self, X, dense=None, *, train=False, seed=None, bags=None):
        """The clipped propensities ``max(pCTR, floor)`` of a batch, shape (n,).

        Inference mode by default; ``train=True`` and ``seed`` as in
        :meth:`loss` give the propensity that call uses.
        """
        rows, dense = self.check_rows(X, dense)
        bags = self.check_bags(bags, rows.shape[0])
        logits, _ = self._forward(rows, dense, train, self._rng_for(seed), bags=bags)
        return propensity_forward(logits["ctr"], self.propensity_floor)[0]

    def detached_values(self, X, click, conversion, dense=None, *, train=True, seed=None,
                        bags=None):
        """The quantities this model's gradient holds constant, at their current values.

        Returns
        -------
        dict, possibly empty: ``"propensity"`` unless ``propensity_grad``; for
        DR with ``dr_gradient="separate"`` also ``"err"`` and ``"err_hat"``. Pass it
        as ``loss(..., held=...)`` with the same ``train`` and ``seed``.
        """
        rows, dense = self.check_rows(X, dense)
        _, conversion = self.check_labels((click, conversion), rows.shape[0])
        bags = self.check_bags(bags, rows.shape[0])
        logits, _ = self._forward(rows, dense, train, self._rng_for(seed), bags=bags)
        out = {}
        if not self.propensity_grad:
            out["propensity"] = propensity_forward(logits["ctr"], self.propensity_floor)[0]
        if self.variant == "dr" and self.dr_gradient == "separate":
            out["err"] = cvr_error(logits["cvr"], conversion)[0]
            out["err_hat"] = softplus(logits["imp"])
        return out

    def _loss_at_logits(self, logits, labels):
        """ESMM's two losses plus λ_c times the counterfactual CVR loss."""
        loss, dlogit = super()._loss_at_logits(logits, labels)
        if self._observed_only:
            return loss, dlogit
        click, conversion = labels
        lam = self.counterfactual_weight
        held = self._held or {}
        if "propensity" in held:
            q, q_cache = held["propensity"], None
        else:
            q, q_cache = propensity_forward(logits["ctr"], self.propensity_floor)   # (n,)
        if self.variant == "ips":
            cf, db, dq = ips_cvr_loss(logits["cvr"], q, click, conversion)
        else:
            cf, db, dg, dq = dr_cvr_loss(logits["cvr"], logits["imp"], q, click, conversion,
                                         separate=self.dr_gradient == "separate",
                                         held_err=held.get("err"),
                                         held_err_hat=held.get("err_hat"))
            dlogit["imp"] = lam * dg
        dlogit["cvr"] = dlogit["cvr"] + lam * db
        if self.propensity_grad and q_cache is not None:
            dlogit["ctr"] = dlogit["ctr"] + lam * propensity_backward(dq, q_cache)
        return loss + lam * cf, dlogit


# ------------------------------------------------------------ gradient check

class _Held:
    """A model whose loss holds some values fixed: what a detached gradient is the gradient of."""

    def __init__(self, model, held):
        self.model, self.held = model, held
        self.params, self.dtype = model.params, model.dtype

    def loss(self, X, *labels, dense=None, seed=None, bags=None):
        return self.model.loss(X, *labels, dense=dense, seed=seed, bags=bags, held=self.held)


def check_gradients(model, X, click, conversion, dense=None, h=1e-5, tol=1e-6, seed=0,
                    max_entries=None, bags=None):
    """Finite-difference check of every parameter of an ESCM2 model.

    When nothing is detached (``propensity_grad=True`` and, for DR,
    ``dr_gradient="joint"``) this is :func:`esmm_np.gradcheck.check_model`.
    Otherwise the gradient is, by design, not that of the loss as a function
    of every parameter: some values are held constant (the propensity; DR's
    ``err`` and ``err_hat`` in each other's part). So the check freezes them at the
    batch's current values (:meth:`ESCM2.detached_values`, same dropout masks,
    same batch statistics) and compares the gradient with finite differences
    of the loss with those values fixed.

    Returns the rows of :func:`esmm_np.gradcheck.check_model`.
    """
    held = model.detached_values(X, click, conversion, dense, train=True, seed=seed, bags=bags)
    target = _Held(model, held) if held else model
    return check_model(target, X, click, conversion, dense=dense, h=h, tol=tol, seed=seed,
                       max_entries=max_entries, bags=bags)


def everything_on_example(variant, n=16, seed=0, propensity_grad=False, dr_gradient="separate"):
    """A small float64 ESCM2 with every option on, a batch for it.

    As :func:`esmm_np.gradcheck.everything_on_example` (PReLU, dropout, batch
    norm, L2, dense features, different tower sizes, unequal loss weights),
    plus λ_c = 0.8, a DR imputation tower of its own width, and the
    propensity floor set to the median pCTR of the batch, so that half the
    rows are clipped and half are not (both paths of the clip are checked).

    Returns
    -------
    model, (X, click, conversion, dense)
    """
    extra = dict(imputation_units=(3,), dr_gradient=dr_gradient) if variant == "dr" else {}
    model = ESCM2(EXAMPLE_FIELD_DIMS, **EXAMPLE_OPTIONS, variant=variant,
                  counterfactual_weight=0.8, propensity_grad=propensity_grad, seed=seed, **extra)
    X, click, conversion, dense = perturb_and_draw(model, n, seed)
    model.propensity_floor = 0.0
    model.propensity_floor = float(np.median(model.propensity(X, dense, train=True, seed=seed)))
    return model, (X, click, conversion, dense)


# ------------------------------------------- the estimator on its own (notebook 4)

def ips_mean(values, click, propensity, floor=0.0):
    """IPS estimate of the mean of ``values`` over all rows, seeing only the clicked ones.

    ``estimate = mean_j click_j · values_j / max(propensity_j, floor)``: the
    same reweighting as :func:`ips_cvr_loss`, applied to any per-row quantity
    (say the potential conversion), so that its bias and variance can be
    measured against the mean a simulator knows.

    Parameters
    ----------
    values : ndarray of shape (n,)
        Only the clicked rows' values are used (the others may be anything).
    click : ndarray of shape (n,), 0/1
    propensity : ndarray of shape (n,), in (0, 1]
    floor : float in [0, 1)

    Returns
    -------
    dict with ``estimate``; ``se``, its standard error over rows
    (``std(terms) / sqrt(n)``); ``max_weight``, the largest ``1 / q`` of a
    clicked row; ``ess``, the effective number of clicked rows
    ``(sum w)² / sum w²`` (equal to the number of clicks when all weights are
    equal, smaller the more a few rows dominate); ``clipped``, the share of
    clicked rows whose propensity the floor raised.
    """
    values = np.asarray(values, dtype=np.float64)
    y = np.asarray(click).astype(bool)
    p = np.asarray(propensity, dtype=np.float64)
    if not (values.shape == y.shape == p.shape and values.ndim == 1):
        raise ValueError(f"values, click and propensity must be 1-d of one length, got "
                         f"{values.shape}, {y.shape}, {p.shape}")
    if not np.all((p > 0) & (p <= 1)) and floor <= 0:
        raise ValueError("propensity must be in (0, 1] (or give a positive floor)")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    q = np.maximum(p, floor)                                           # (n,)
    terms = np.where(y, values / q, 0.0)                               # (n,)
    w = 1.0 / q[y]                                                     # (clicks,)
    n = values.shape[0]
    return {"estimate": float(terms.mean()), "se": float(terms.std(ddof=1) / np.sqrt(n)),
            "max_weight": float(w.max()) if w.size else float("nan"),
            "ess": float(w.sum() ** 2 / np.sum(w * w)) if w.size else 0.0,
            "clipped": float(np.mean(p[y] < floor)) if w.size else 0.0}
