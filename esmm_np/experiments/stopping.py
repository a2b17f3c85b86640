"""How every network of a run picks the point it keeps.

Three rules, the same for every network that shares them:

- **The criterion** (:data:`CRITERIA`). A network that predicts CVR through
  a product with pCTR (ESMM, ESMM-NS, ESCM²-IPS, ESCM²-DR) stops on the CTCVR
  log loss of its validation rows, L_ctcvr: the loss of its own training
  objective in which the CVR tower counts fully. Its full loss
  ``w_ctr·L_ctr + w_ctcvr·L_ctcvr`` is mostly L_ctr (about 88% in the
  default world), in which the CVR tower hardly counts. A single-task
  network (BASE's CVR tower and the other click-space towers, DIVISION's
  CTCVR and CTR networks, the shared CTR network) stops on its one loss.
  :func:`esmm_np.experiments.criteria.measure` compares L_ctcvr with the
  training objective and the clicked rows' CVR loss along one training path
  per world, in both presets (docs/experiments.md, "Which criterion to stop
  on"): under the decay and averaging below, none is told apart from it.
- **A validation set must be able to rank** (:data:`MIN_VAL_POSITIVES`).
  When the labels the criterion reads have fewer positives than that, the
  validation does not pick the point: the network trains the run's fixed
  budget of ``min_steps`` steps and is recorded ``stopped="budget"``; the
  run's notes list how many did.
- **A kept point that does not depend on which validation happened to be
  lowest** (:class:`Criterion`'s learning-rate decay). The learning rate
  halves every ``half_life`` optimiser steps, so late steps move the
  network less and adjacent validations differ less. Each network also
  records the noise that is left (:func:`adjacent_noise`): how much a
  probe metric on test rows moves between the kept validation and its
  neighbours. The probe only measures; it never chooses.
- **A kept point that is an average** (:data:`AVERAGE`). Each validation
  scores, and early stopping keeps, the mean of the weights at the last
  ``AVERAGE`` validations (:func:`esmm_np.fit`'s ``average``), not the live
  weights of one step: averaging halves ESMM's adjacent-validation noise in
  the default worlds (docs/experiments.md, "Averaging recent weights").
"""

import numpy as np

from ..data.bags import take_bags
from ..metrics import auc, log_loss, soft_auc

#: The fewest positives (conversions) a validation set needs to choose a network's kept point.
MIN_VAL_POSITIVES = 20
#: Optimiser steps over which the learning rate halves.
HALF_LIFE = 1000
#: Validations whose weights are averaged into the point scored and kept (fit's ``average``).
AVERAGE = 4
#: Network kind -> what early stopping minimises on its validation rows.
CRITERIA = {"two-tower": "CTCVR log loss (L_ctcvr)", "tower": "its own log loss"}


class Criterion:
    """A ``stop_on`` for :func:`esmm_np.fit` that also decays the learning rate and probes.

    Parameters
    ----------
    kind : "two-tower" or "tower" (see :data:`CRITERIA`)
    optimizer : Adam or SGD, the one ``fit`` steps; its ``lr`` is set at every
        validation to ``lr0 * 0.5 ** (t / half_life)``, ``t`` its step count.
    half_life : int or None (None: no decay)
    probe : callable(model) -> float, optional
        A metric on test rows recorded at every validation (never used to choose).
    """

    def __init__(self, kind, optimizer, half_life=HALF_LIFE, probe=None):
        if kind not in CRITERIA:
            raise ValueError(f"kind must be one of {tuple(CRITERIA)}, got {kind!r}")
        self.kind, self.optimizer, self.half_life, self.probe = kind, optimizer, half_life, probe
        self.lr0 = optimizer.lr
        self.probed = []

    def __call__(self, model, X, *labels, dense=None, bags=None):
        kw = {} if bags is None else {"bags": bags}
        if self.kind == "two-tower":
            click, conversion = labels
            p = model.predict(X, dense, **kw)["p_ctcvr"]
            value = log_loss(click * conversion, p)
        else:
            value = model.eval_loss(X, *labels, dense=dense, **kw)
        if self.probe is not None:
            self.probed.append(float(self.probe(model)))
        if self.half_life:
            self.optimizer.lr = self.lr0 * 0.5 ** (self.optimizer.t / self.half_life)
        return value


def criterion_positives(kind, labels):
    """Positives of the labels the criterion reads (two-tower: click AND conversion)."""
    if kind == "two-tower":
        click, conversion = labels
        return int(np.count_nonzero(np.asarray(click) * np.asarray(conversion)))
    return int(np.count_nonzero(np.asarray(labels[0])))


def make_probe(test, tower, n_rows=20_000, seed=0):
    """A probe on a fixed sample of test rows: soft CVR AUC against the true CVR.

    Without ground truth (real logs) the CVR AUC on the clicked sample rows
    against conversion. ``tower``: True for a single-output network (``"p"``
    is its pCVR), False for a two-tower model (``"p_cvr"``). None when the
    sample cannot score (one class).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(test))[:n_rows])
    X = test.X[rows]
    dense = None if test.dense is None else test.dense[rows]
    bags = {} if getattr(test, "bags", None) is None else {"bags": take_bags(test.bags, rows)}
    key = "p" if tower else "p_cvr"
    if test.true_cvr is not None:
        target = test.true_cvr[rows]
        return lambda model: soft_auc(target, model.predict(X, dense, **bags)[key])
    clicked = test.click[rows] == 1
    y = test.conversion[rows][clicked]
    if y.min(initial=1) == y.max(initial=0):
        return None
    return lambda model: auc(y, model.predict(X, dense, **bags)[key][clicked])


def adjacent_noise(val_steps, probed, kept):
    """Mean |probe(kept) − probe(neighbour)| over the kept validation's neighbours, in probe units.

    None when there is no probe or no neighbour.
    """
    if not probed or kept not in val_steps or len(probed) != len(val_steps):
        return None
    i = val_steps.index(kept)
    near = [j for j in (i - 1, i + 1) if 0 <= j < len(probed)]
    if not near:
        return None
    return float(np.mean([abs(probed[i] - probed[j]) for j in near]))
