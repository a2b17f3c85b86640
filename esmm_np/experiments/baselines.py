"""The ESMM paper's baselines (Table 2), built from the same layers as ESMM.

Every method answers one question, ``predict(X, dense[, bags]) -> {"p_ctr", "p_cvr",
"p_ctcvr"}``, so the experiment runner scores them alike:

- BASE: a CVR network (:class:`~esmm_np.model.TowerModel`) trained on clicked
  impressions only, labels = conversion.
- AMAN (all missing as negative): BASE plus a sampled share of the unclicked
  impressions, labelled as non-conversions.
- OVERSAMPLING: BASE with every converted example present k times.
- UNBIAS: the clicked impressions, each rejected with probability pCTR (the
  paper follows Zhang et al., KDD 2016, and uses pCTR as the rejection
  probability), so that rows the click filter favoured are thinned out.
- UNBIAS-IPS (ours, not in the paper): the clicked impressions resampled
  with probability proportional to 1 / pCTR (inverse propensity), which
  reweights the clicked rows towards the entire space.
- DIVISION: a CTR network and a CTCVR network trained separately over all
  impressions; pCVR = pCTCVR / pCTR, which nothing keeps below 1.
- ESMM-NS: ESMM with a separate embedding table per tower.
- ESMM.
- CTR-ONLY (a reference row, not a CVR method): pCTR alone as the CTCVR
  score, to show how much of the CTCVR AUC the CTR network earns alone.

The paper scores the CTCVR of the click-space CVR models with an
independently trained CTR network of the same architecture; so do we
(``ctr_net`` below, trained once and shared by those methods).

AMAN's sampling rate and OVERSAMPLING's k are chosen, as in the paper, from
a range (the paper: 10% to 100%, and 2 to 10): one network per candidate,
and the one with the best CVR AUC on the clicked validation rows is kept
(the only CVR metric a real log allows).

The training-set builders return row indices into the full training set
and a label per row, so their defining properties are easy to test.

Adding a method: write ``train_<name>(ctx) -> method`` (``ctx`` is a
:class:`Context`; the method has ``predict(X, dense)``, ``networks`` and
``choice``), add it to :data:`TRAINERS`, and to :data:`USES_CTR_NET` if it
needs the shared CTR network. The experiment runner takes it from there.
"""

from dataclasses import dataclass, field

import numpy as np

from ..escm2 import ESCM2
from .stopping import CRITERIA, Criterion, adjacent_noise, criterion_positives
from ..metrics import auc
from ..data.bags import take_bags
from ..model import ESMM, TowerModel
from ..optim import Adam
from ..train import fit

#: The paper's Table 2, in its order.
METHODS = ("BASE", "AMAN", "OVERSAMPLING", "UNBIAS", "DIVISION", "ESMM-NS", "ESMM")
#: Rows we add beside the paper's: a baseline of ours, the CTR-only reference,
#: and ESMM's successor ESCM² (Wang et al., SIGIR 2022; esmm_np/escm2.py).
EXTRA_METHODS = ("UNBIAS-IPS", "CTR-ONLY", "ESCM2-IPS", "ESCM2-DR")
#: The paper's search ranges, sampled: AMAN's rate of unclicked rows, OVERSAMPLING's k.
AMAN_RATES = (0.1, 0.3, 1.0)
OVERSAMPLING_KS = (2, 5, 10)


# ----------------------------------------------------------- training sets

def base_rows(click, conversion):
    """BASE: the clicked impressions, labelled by conversion.

    Returns
    -------
    idx : ndarray of int, shape (m,)  rows of the training set
    y : ndarray of int8, shape (m,)   CVR labels
    """
    idx = np.flatnonzero(click == 1)
    return idx, conversion[idx].astype(np.int8)


def aman_rows(click, conversion, rate, rng):
    """AMAN: clicked impressions plus a ``rate`` share of the unclicked as negatives.

    Parameters
    ----------
    rate : float in [0, 1]
        Share of unclicked impressions sampled (without replacement); the
        paper searched 10% to 100%.
    rng : numpy.random.Generator
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"AMAN rate must be in [0, 1], got {rate}")
    clicked, y = base_rows(click, conversion)
    unclicked = np.flatnonzero(click == 0)
    take = rng.choice(unclicked, size=int(round(rate * len(unclicked))), replace=False)
    idx = np.concatenate([clicked, np.sort(take)])
    return idx, np.concatenate([y, np.zeros(len(take), dtype=np.int8)])


def oversampling_rows(click, conversion, k):
    """OVERSAMPLING: clicked impressions with each converted one present ``k`` times (paper: 2 to 10)."""
    if int(k) != k or k < 1:
        raise ValueError(f"OVERSAMPLING k must be a positive integer, got {k}")
    idx, y = base_rows(click, conversion)
    idx = np.concatenate([idx] + [idx[y == 1]] * (int(k) - 1))
    return idx, conversion[idx].astype(np.int8)


def unbias_rows(click, conversion, p_ctr, rng):
    """UNBIAS: keep each clicked impression with probability 1 - pCTR.

    Parameters
    ----------
    p_ctr : ndarray of shape (n,)
        A CTR model's prediction for every training row (the rejection probability).
    rng : numpy.random.Generator
    """
    idx, y = base_rows(click, conversion)
    keep = rng.random(len(idx)) >= p_ctr[idx]
    return idx[keep], y[keep]


def ips_rows(click, conversion, p_ctr, rng, clip_quantile=0.05):
    """UNBIAS-IPS (ours): clicked impressions resampled with probability ∝ 1 / pCTR.

    A clicked row of propensity pCTR stands for 1 / pCTR impressions of the
    entire space; drawing as many rows as there are clicks, with replacement
    and with those weights, gives a training set whose mean true CVR is
    (for a good pCTR) the entire space's, not the clicked rows'. pCTR is
    clipped from below at its ``clip_quantile`` quantile over the clicked
    rows, so that a handful of near-zero propensities cannot fill the set.

    Returns
    -------
    idx : ndarray of int, shape (m,) with m = number of clicks, repeats allowed
    y : ndarray of int8, shape (m,)
    """
    clicked, _ = base_rows(click, conversion)
    if len(clicked) == 0:
        return clicked, conversion[clicked].astype(np.int8)
    p = p_ctr[clicked].astype(np.float64)                              # (c,)
    p = np.maximum(p, np.quantile(p, clip_quantile))
    weight = 1.0 / p                                                   # (c,)
    idx = np.sort(rng.choice(clicked, size=len(clicked), replace=True, p=weight / weight.sum()))
    return idx, conversion[idx].astype(np.int8)


# ----------------------------------------------------------------- methods

@dataclass
class Context:
    """What a trainer gets: the data, the shared settings and the shared CTR network.

    ``part`` is the training set with the validation rows removed; ``val``
    the held-out rows (None: no early stopping). ``train`` is the budget
    (:func:`fit_network`). ``options`` holds method settings: ``aman_rate``
    and ``oversampling_k`` (a number, or a tuple of candidates to choose
    from on validation).
    """

    part: object
    val: object
    arch: dict
    train: dict
    seed: int = 0
    ctr_net: object = None
    options: dict = field(default_factory=dict)
    verbose: bool = False
    probes: dict = field(default_factory=dict)     # "tower"/"two-tower" -> probe(model)


def bag_kw(d, idx=None):
    """``{"bags": ...}`` for a Dataset with multi-valued fields (rows ``idx`` if given), else ``{}``.

    Spread into ``predict``/``fit`` calls so that data without bags takes
    exactly the path it always took.
    """
    if getattr(d, "bags", None) is None:
        return {}
    return {"bags": d.bags if idx is None else take_bags(d.bags, idx)}


def _model_kw(d):
    """Constructor arguments a model needs for the multi-valued fields of ``d`` (if any)."""
    return {"bag_dims": d.bag_dims} if getattr(d, "bags", None) is not None else {}


def fit_network(model, X, labels, dense, validation, train, seed, verbose=False, bags=None,
                probe=None):
    """Train one network under the shared budget; return its stopping record.

    ``train`` holds ``batch_size``, ``lr`` (Adam), and either ``epochs`` or
    the fair-effort rule: ``max_steps`` (the cap), ``min_steps``,
    ``eval_every`` and ``patience`` (validations without improvement), as in
    :func:`esmm_np.fit`; and the stopping rule (:mod:`.stopping`):
    ``criterion`` ("measured": the network's criterion with the
    learning-rate decay of ``half_life`` steps; "loss": its full validation
    loss at a constant learning rate) and ``min_val_positives`` (fewer
    validation positives: a fixed budget of ``min_steps`` steps,
    ``stopped="budget"``). ``bags``: the multi-valued fields of the training
    rows, if any (a trailing dict in ``validation`` carries the validation
    rows'). ``probe``: a metric on test rows recorded at every validation.

    Returns
    -------
    dict with ``steps``, ``kept`` (the step whose parameters are kept),
    ``stopped`` (``"patience"``, ``"cap"`` or ``"budget"``), ``rows``
    (training rows), ``kept_first_validation`` (the best point was the very
    first one looked at, so the optimum may lie earlier), ``best_val_loss``,
    ``criterion``, ``val_positives``, and with a probe ``probe`` (its value
    at every validation), ``val_steps`` and ``adjacent_noise``.
    """
    optimizer = Adam(lr=train["lr"], lazy=train.get("lazy", False))
    kind = "two-tower" if len(labels) == 2 else "tower"
    stop_on, min_pos, crit = "loss", 0, None
    max_steps = train.get("max_steps")
    positives = None
    if validation is not None:
        positives = criterion_positives(kind, validation[1:1 + len(labels)])
    if validation is not None and train.get("criterion", "loss") == "measured":
        crit = Criterion(kind, optimizer, train.get("half_life"), probe)
        stop_on, min_pos = crit, int(train.get("min_val_positives", 0))
        if positives < min_pos:
            max_steps = train.get("min_steps", 0) or max_steps   # the fixed budget
    h = fit(model, X, *labels, dense=dense, epochs=train.get("epochs", 1),
            batch_size=train["batch_size"], optimizer=optimizer, seed=seed,
            verbose=verbose, validation=validation, patience=train.get("patience"),
            eval_every=train.get("eval_every"), min_steps=train.get("min_steps", 0),
            max_steps=max_steps, stop_on=stop_on, min_val_positives=min_pos,
            average=train.get("average", 1),
            **({} if bags is None else {"bags": bags}))
    record = {"steps": h["steps"], "kept": h["kept"], "stopped": h["stopped"],
              "rows": int(X.shape[0]),
              "kept_first_validation": bool(h.get("val_steps")) and h["kept"] == h["val_steps"][0],
              "best_val_loss": float(min(h["val_loss"])) if h.get("val_loss") else None,
              "criterion": CRITERIA[kind] if crit is not None else "validation loss",
              "val_positives": positives}
    if h.get("val_steps"):
        record["val_steps"] = list(h["val_steps"])
    if crit is not None and crit.probed:
        record.update(probe=crit.probed,
                      adjacent_noise=adjacent_noise(record["val_steps"], crit.probed, h["kept"]))
    return record


def _tower(ctx, idx, y, val_idx, val_y, probe=None):
    """Train a TowerModel on rows ``idx`` of ``ctx.part`` (labels ``y``); returns (model, record)."""
    part, val = ctx.part, ctx.val
    model = TowerModel(part.field_dims, n_dense=part.n_dense, seed=ctx.seed, **_model_kw(part),
                       **ctx.arch)
    validation = None
    if val is not None:
        validation = (val.X[val_idx], val_y) + (
            () if val.dense is None else (val.dense[val_idx],)) + tuple(
            bag_kw(val, val_idx).values())
    record = fit_network(model, part.X[idx], (y,),
                         None if part.dense is None else part.dense[idx], validation,
                         ctx.train, ctx.seed, ctx.verbose, **bag_kw(part, idx), probe=probe)
    return model, record


class ClickSpaceCVR:
    """BASE, AMAN, OVERSAMPLING, UNBIAS or UNBIAS-IPS: a CVR tower plus a separate CTR network.

    Without a CTR network (``ctr_net=None``, as in the sparsity sweep) only
    ``p_cvr`` is predicted.
    """

    def __init__(self, name, cvr_net, ctr_net, networks=None, choice=None):
        self.name, self.cvr_net, self.ctr_net = name, cvr_net, ctr_net
        self.networks, self.choice = networks or {}, choice

    def predict(self, X, dense=None, bags=None):
        p_cvr = self.cvr_net.predict(X, dense, bags=bags)["p"]
        if self.ctr_net is None:
            return {"p_cvr": p_cvr}
        p_ctr = self.ctr_net.predict(X, dense, bags=bags)["p"]
        return {"p_ctr": p_ctr, "p_cvr": p_cvr, "p_ctcvr": p_ctr * p_cvr}


class Division:
    """DIVISION: pCVR = pCTCVR / pCTR from two separately trained networks.

    ``predict`` returns the raw ratio as ``p_cvr_raw`` (it can exceed 1, the
    instability the paper reports) and ``p_cvr`` clipped to [0, 1].
    """

    name = "DIVISION"
    choice = None

    def __init__(self, ctr_net, ctcvr_net, networks=None):
        self.ctr_net, self.ctcvr_net = ctr_net, ctcvr_net
        self.networks = networks or {}

    def predict(self, X, dense=None, bags=None):
        p_ctr = self.ctr_net.predict(X, dense, bags=bags)["p"]
        p_ctcvr = self.ctcvr_net.predict(X, dense, bags=bags)["p"]
        raw = p_ctcvr / p_ctr
        return {"p_ctr": p_ctr, "p_cvr": np.minimum(raw, 1.0), "p_cvr_raw": raw,
                "p_ctcvr": p_ctcvr}


class ESMMMethod:
    """ESMM or ESMM-NS, trained on every impression."""

    choice = None

    def __init__(self, name, model, networks=None):
        self.name, self.model = name, model
        self.networks = networks or {}

    def predict(self, X, dense=None, bags=None):
        return self.model.predict(X, dense, bags=bags)


class CTROnly:
    """The reference row: pCTR as the CTCVR score, no CVR model at all."""

    name = "CTR-ONLY"
    choice = None
    networks = {}

    def __init__(self, ctr_net):
        self.ctr_net = ctr_net

    def predict(self, X, dense=None, bags=None):
        p_ctr = self.ctr_net.predict(X, dense, bags=bags)["p"]
        return {"p_ctr": p_ctr, "p_ctcvr": p_ctr}


def train_ctr_net(ctx):
    """The CTR network every click-space method and DIVISION share; returns (model, record)."""
    part, val = ctx.part, ctx.val
    return _tower(ctx, np.arange(len(part)), part.click,
                  None if val is None else np.arange(len(val)),
                  None if val is None else val.click)


def _click_space(ctx, name, rows):
    """Train the CVR tower of a click-space method whose rows come from ``rows(dataset, rng)``.

    The training and the validation rows are built by the same rule. The
    rng is seeded from the method's name as well as the seed, so a method's
    sampled rows do not depend on which other methods ran before it.
    """
    rng = np.random.default_rng([ctx.seed, sum(map(ord, name))])
    idx, y = rows(ctx.part, rng)
    vidx, vy = (None, None) if ctx.val is None else rows(ctx.val, rng)
    model, record = _tower(ctx, idx, y, vidx, vy, probe=ctx.probes.get("tower"))
    return model, record


def _clicked_val_auc(ctx, model):
    """CVR AUC on the clicked validation rows, the choice criterion; NaN when undefined."""
    val = ctx.val
    clicked = np.flatnonzero(val.click == 1)
    y = val.conversion[clicked]
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    p = model.predict(val.X[clicked], None if val.dense is None else val.dense[clicked],
                      **bag_kw(val, clicked))["p"]
    return auc(y, p)


def _choose(ctx, name, key, candidates, rows_for):
    """Train one network per candidate setting; keep the best by clicked validation AUC."""
    candidates = tuple(np.atleast_1d(candidates).tolist())
    trained = []
    for c in candidates:
        model, record = _click_space(ctx, name, lambda d, rng, c=c: rows_for(d, rng, c))
        score = _clicked_val_auc(ctx, model) if ctx.val is not None and len(candidates) > 1 \
            else float("nan")
        trained.append((c, model, record, score))
    scores = [t[3] for t in trained]
    best = 0 if np.all(np.isnan(scores)) else int(np.nanargmax(scores))
    c, model, record, _ = trained[best]
    choice = {key: c, "candidates": list(candidates),
              "val_cvr_auc_clicked": [None if np.isnan(v) else v for v in scores]}
    networks = {f"CVR net ({key} = {t[0]})": t[2] for t in trained}
    return ClickSpaceCVR(name, model, ctx.ctr_net, networks, choice)


def train_base(ctx):
    model, record = _click_space(ctx, "BASE", lambda d, rng: base_rows(d.click, d.conversion))
    return ClickSpaceCVR("BASE", model, ctx.ctr_net, {"CVR net": record})


def train_aman(ctx):
    return _choose(ctx, "AMAN", "aman_rate", ctx.options.get("aman_rate", AMAN_RATES),
                   lambda d, rng, rate: aman_rows(d.click, d.conversion, rate, rng))


def train_oversampling(ctx):
    return _choose(ctx, "OVERSAMPLING", "oversampling_k",
                   ctx.options.get("oversampling_k", OVERSAMPLING_KS),
                   lambda d, rng, k: oversampling_rows(d.click, d.conversion, int(k)))


def _pctr(ctx, d):
    return ctx.ctr_net.predict(d.X, d.dense, **bag_kw(d))["p"]


def train_unbias(ctx):
    model, record = _click_space(
        ctx, "UNBIAS", lambda d, rng: unbias_rows(d.click, d.conversion, _pctr(ctx, d), rng))
    return ClickSpaceCVR("UNBIAS", model, ctx.ctr_net, {"CVR net": record})


def train_unbias_ips(ctx):
    model, record = _click_space(
        ctx, "UNBIAS-IPS", lambda d, rng: ips_rows(d.click, d.conversion, _pctr(ctx, d), rng))
    return ClickSpaceCVR("UNBIAS-IPS", model, ctx.ctr_net, {"CVR net": record})


def train_division(ctx):
    part, val = ctx.part, ctx.val
    z = (part.click * part.conversion).astype(np.int8)
    vz = None if val is None else (val.click * val.conversion).astype(np.int8)
    model, record = _tower(ctx, np.arange(len(part)), z,
                           None if val is None else np.arange(len(val)), vz)
    return Division(ctx.ctr_net, model, {"CTCVR net": record})


def _esmm(ctx, name, share=True, model_class=ESMM, net="ESMM net", **options):
    """Train one two-tower model (ESMM, ESMM-NS, or a subclass such as ESCM2) on all rows."""
    part, val = ctx.part, ctx.val
    model = model_class(part.field_dims, n_dense=part.n_dense, seed=ctx.seed,
                        share_embedding=share, **options, **_model_kw(part), **ctx.arch)
    v = None if val is None else (val.X, val.click, val.conversion) + (
        () if val.dense is None else (val.dense,)) + tuple(bag_kw(val).values())
    record = fit_network(model, part.X, (part.click, part.conversion), part.dense, v,
                         ctx.train, ctx.seed, ctx.verbose, **bag_kw(part),
                         probe=ctx.probes.get("two-tower"))
    return ESMMMethod(name, model, {net: record})


def train_esmm(ctx):
    return _esmm(ctx, "ESMM", True)


def train_esmm_ns(ctx):
    return _esmm(ctx, "ESMM-NS", False)


def train_ctr_only(ctx):
    return CTROnly(ctx.ctr_net)


def _escm2(ctx, name, variant):
    """Train an ESCM2 like ESMM: same architecture, same effort rule, its own validation loss."""
    return _esmm(ctx, name, model_class=ESCM2, net=f"{name} net", variant=variant,
                 **ctx.options.get("escm2", {}))


def train_escm2_ips(ctx):
    """ESCM2-IPS (:class:`~esmm_np.escm2.ESCM2`); options from ``ctx.options["escm2"]``."""
    return _escm2(ctx, "ESCM2-IPS", "ips")


def train_escm2_dr(ctx):
    """ESCM2-DR (:class:`~esmm_np.escm2.ESCM2`); options from ``ctx.options["escm2"]``."""
    return _escm2(ctx, "ESCM2-DR", "dr")


#: Method name -> trainer(ctx) -> method. Add a method here (and to
#: USES_CTR_NET if its training or prediction needs the shared CTR network).
TRAINERS = {
    "BASE": train_base, "AMAN": train_aman, "OVERSAMPLING": train_oversampling,
    "UNBIAS": train_unbias, "UNBIAS-IPS": train_unbias_ips, "DIVISION": train_division,
    "ESMM-NS": train_esmm_ns, "ESMM": train_esmm, "CTR-ONLY": train_ctr_only,
    "ESCM2-IPS": train_escm2_ips, "ESCM2-DR": train_escm2_dr,
}
#: Methods whose trainer reads ``ctx.ctr_net``; the others can start before it exists.
USES_CTR_NET = {"BASE", "AMAN", "OVERSAMPLING", "UNBIAS", "UNBIAS-IPS", "DIVISION", "CTR-ONLY"}


def make_context(data, *, arch, train, seed=0, validation_fraction=0.1, ctr_net=None,
                 options=None, verbose=False):
    """Split off the validation rows (seeded) and bundle everything a trainer needs."""
    if validation_fraction > 0:
        part, val = data.split(validation_fraction, seed=seed)
    else:
        part, val = data, None
    return Context(part, val, arch, train, seed, ctr_net, dict(options or {}), verbose)


def train_methods(data, methods=METHODS, *, arch, train, seed=0, aman_rate=0.5,
                  oversampling_k=5, validation_fraction=0.1, verbose=False, progress=None):
    """Train the chosen methods on one training set, one after another.

    Parameters
    ----------
    data : Dataset
        The training impressions (entire space).
    methods : sequence of names from :data:`TRAINERS`
    arch : dict
        Model options shared by every network (embed_dim, tower_units,
        activation, dropout, batch_norm, l2_reg_embedding, l2_reg_dnn, dtype).
    train : dict
        The budget, the same for every network (:func:`fit_network`).
    seed : int
        Seeds the validation split, every network's initialisation,
        shuffling and sampling.
    aman_rate, oversampling_k : number or tuple of candidates
        A tuple is searched: one network per value, the best on the clicked
        validation rows kept (:data:`AMAN_RATES`, :data:`OVERSAMPLING_KS`
        are the paper's ranges).
    validation_fraction : float
        Share of ``data`` held out for early stopping (0 disables it). Each
        method's validation rows are built from it by the same rule as its
        training rows (BASE validates on clicked rows, AMAN on clicked rows
        plus sampled unclicked ones, and so on).
    progress : callable(str), optional
        Told the name of each network as it starts.

    Returns
    -------
    dict name -> method (``predict(X, dense)``, ``networks``: name -> stopping
    record, ``choice``), plus ``"_ctr_net"`` when a method needed it.
    """
    unknown = set(methods) - set(TRAINERS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {tuple(TRAINERS)}")
    say = progress or (lambda s: None)
    ctx = make_context(data, arch=arch, train=train, seed=seed,
                       validation_fraction=validation_fraction,
                       options=dict(aman_rate=aman_rate, oversampling_k=oversampling_k),
                       verbose=verbose)
    out = {}
    if any(m in USES_CTR_NET for m in methods):
        say("CTR network (shared by the click-space methods and DIVISION)")
        ctx.ctr_net, record = train_ctr_net(ctx)
        out["_ctr_net"] = ctx.ctr_net
        out["_ctr_net"].record = record
    for name in methods:
        say(name)
        out[name] = TRAINERS[name](ctx)
    return out
