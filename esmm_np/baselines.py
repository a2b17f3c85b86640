"""The ESMM paper's baselines (Table 2), built from the same layers as ESMM.

Every method answers one question, ``predict(X, dense) -> {"p_ctr", "p_cvr",
"p_ctcvr"}``, so the experiment runner scores them alike:

- BASE: a CVR network (:class:`~esmm_np.model.TowerModel`) trained on clicked
  impressions only, labels = conversion.
- AMAN (all missing as negative): BASE plus a sampled share of the unclicked
  impressions, labelled as non-conversions.
- OVERSAMPLING: BASE with every converted example present k times.
- UNBIAS: the clicked impressions, each rejected with probability pCTR (the
  paper follows Zhang et al., KDD 2016, and uses pCTR as the rejection
  probability), so that rows the click filter favoured are thinned out.
- DIVISION: a CTR network and a CTCVR network trained separately over all
  impressions; pCVR = pCTCVR / pCTR, which nothing keeps below 1.
- ESMM-NS: ESMM with a separate embedding table per tower.
- ESMM.

The paper scores the CTCVR of the click-space CVR models with an
independently trained CTR network of the same architecture; so do we
(``ctr_net`` below, trained once and shared by those methods).

The training-set builders return row indices into the full training set
and a label per row, so their defining properties are easy to test.
"""

import numpy as np

from .model import ESMM, TowerModel
from .optim import Adam
from .train import fit

METHODS = ("BASE", "AMAN", "OVERSAMPLING", "UNBIAS", "DIVISION", "ESMM-NS", "ESMM")


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


# ----------------------------------------------------------------- methods

def _fit(model, X, labels, dense, val, train, seed, verbose):
    """Train ``model`` with the shared budget, early-stopped on its validation rows."""
    validation = None if val is None else (val[0], *val[1]) + ((val[2],) if val[2] is not None else ())
    return fit(model, X, *labels, dense=dense, epochs=train["epochs"],
               batch_size=train["batch_size"],
               optimizer=Adam(lr=train["lr"], lazy=train.get("lazy", False)), seed=seed,
               verbose=verbose, validation=validation, patience=train.get("patience"))


def _tower(part, idx, y, val_part, val_idx, val_y, arch, train, seed, verbose):
    """Train a TowerModel on rows ``idx`` of ``part`` (labels ``y``), validated on ``val_part``."""
    model = TowerModel(part.field_dims, n_dense=part.n_dense, seed=seed, **arch)
    val = None
    if val_part is not None:
        val = (val_part.X[val_idx], (val_y,),
               None if val_part.dense is None else val_part.dense[val_idx])
    _fit(model, part.X[idx], (y,), None if part.dense is None else part.dense[idx], val,
         train, seed, verbose)
    return model


class ClickSpaceCVR:
    """BASE, AMAN, OVERSAMPLING or UNBIAS: a CVR tower plus a separate CTR network."""

    def __init__(self, name, cvr_net, ctr_net):
        self.name, self.cvr_net, self.ctr_net = name, cvr_net, ctr_net

    def predict(self, X, dense=None):
        p_cvr = self.cvr_net.predict(X, dense)["p"]
        p_ctr = self.ctr_net.predict(X, dense)["p"]
        return {"p_ctr": p_ctr, "p_cvr": p_cvr, "p_ctcvr": p_ctr * p_cvr}


class Division:
    """DIVISION: pCVR = pCTCVR / pCTR from two separately trained networks.

    ``predict`` returns the raw ratio as ``p_cvr_raw`` (it can exceed 1, the
    instability the paper reports) and ``p_cvr`` clipped to [0, 1].
    """

    name = "DIVISION"

    def __init__(self, ctr_net, ctcvr_net):
        self.ctr_net, self.ctcvr_net = ctr_net, ctcvr_net

    def predict(self, X, dense=None):
        p_ctr = self.ctr_net.predict(X, dense)["p"]
        p_ctcvr = self.ctcvr_net.predict(X, dense)["p"]
        raw = p_ctcvr / p_ctr
        return {"p_ctr": p_ctr, "p_cvr": np.minimum(raw, 1.0), "p_cvr_raw": raw,
                "p_ctcvr": p_ctcvr}


class ESMMMethod:
    """ESMM or ESMM-NS, trained on every impression."""

    def __init__(self, name, model):
        self.name, self.model = name, model

    def predict(self, X, dense=None):
        return self.model.predict(X, dense)


def _click_space_rows(name, part, rng, aman_rate, oversampling_k, ctr_net):
    """The training rows and labels of a click-space method on ``part``."""
    if name == "BASE":
        return base_rows(part.click, part.conversion)
    if name == "AMAN":
        return aman_rows(part.click, part.conversion, aman_rate, rng)
    if name == "OVERSAMPLING":
        return oversampling_rows(part.click, part.conversion, oversampling_k)
    p_ctr = ctr_net.predict(part.X, part.dense)["p"]                  # UNBIAS
    return unbias_rows(part.click, part.conversion, p_ctr, rng)


def train_methods(data, methods=METHODS, *, arch, train, seed=0, aman_rate=0.5,
                  oversampling_k=5, validation_fraction=0.1, verbose=False, progress=None):
    """Train the chosen methods on one training set.

    Parameters
    ----------
    data : Dataset
        The training impressions (entire space).
    methods : sequence of names from :data:`METHODS`
    arch : dict
        Model options shared by every network (embed_dim, tower_units,
        activation, dropout, batch_norm, l2_reg_embedding, l2_reg_dnn, dtype).
    train : dict
        epochs, batch_size, lr (Adam), optional lazy and patience: the same
        budget for every network, at most ``epochs`` passes over its own
        training rows.
    seed : int
        Seeds the validation split, every network's initialisation,
        shuffling and sampling.
    validation_fraction : float
        Share of ``data`` held out for early stopping (0 disables it). Each
        method's validation rows are built from it by the same rule as its
        training rows (BASE validates on clicked rows, AMAN on clicked rows
        plus sampled unclicked ones, and so on), and each network keeps the
        epoch with its lowest validation loss.
    progress : callable(str), optional
        Told the name of each network as it starts.

    Returns
    -------
    dict name -> method (an object with ``name`` and ``predict(X, dense)``), plus ``"_ctr_net"`` when a click-space method needed it.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {METHODS}")
    say = progress or (lambda s: None)
    rng = np.random.default_rng(seed)
    if validation_fraction > 0:
        part, val = data.split(validation_fraction, seed=seed)
    else:
        part, val = data, None
    every = np.arange(len(part))
    every_val = None if val is None else np.arange(len(val))
    out, ctr_net = {}, None
    if any(m in ("BASE", "AMAN", "OVERSAMPLING", "UNBIAS", "DIVISION") for m in methods):
        say("CTR network (shared by the click-space methods and DIVISION)")
        ctr_net = _tower(part, every, part.click, val, every_val,
                         None if val is None else val.click, arch, train, seed, verbose)
        out["_ctr_net"] = ctr_net
    for name in methods:
        say(name)
        if name in ("ESMM", "ESMM-NS"):
            model = ESMM(part.field_dims, n_dense=part.n_dense, seed=seed,
                         share_embedding=(name == "ESMM"), **arch)
            v = None if val is None else (val.X, (val.click, val.conversion), val.dense)
            _fit(model, part.X, (part.click, part.conversion), part.dense, v, train, seed,
                 verbose)
            out[name] = ESMMMethod(name, model)
        elif name == "DIVISION":
            z = (part.click * part.conversion).astype(np.int8)
            vz = None if val is None else (val.click * val.conversion).astype(np.int8)
            out[name] = Division(ctr_net, _tower(part, every, z, val, every_val, vz, arch,
                                                 train, seed, verbose))
        else:
            idx, y = _click_space_rows(name, part, rng, aman_rate, oversampling_k, ctr_net)
            vidx, vy = (None, None) if val is None else _click_space_rows(
                name, val, rng, aman_rate, oversampling_k, ctr_net)
            out[name] = ClickSpaceCVR(name, _tower(part, idx, y, val, vidx, vy, arch, train,
                                                   seed, verbose), ctr_net)
    return out
