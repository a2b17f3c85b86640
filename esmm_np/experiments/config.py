"""What an experiment run depends on: the configurations, the effort rule, the world.

**Fair effort.** Every network trains until its own validation loss stops
improving: validation every ``eval_every`` optimiser steps (or every epoch
when an epoch is shorter), stop after ``patience`` validations without
improvement but never before ``min_steps`` steps, cap ``max_steps``. Each
network's ``steps``, ``kept`` (the step kept) and ``stopped`` (``"patience"``
or ``"cap"``) are recorded in the results.
"""

from dataclasses import dataclass, field

import numpy as np

from .baselines import AMAN_RATES, EXTRA_METHODS, METHODS, OVERSAMPLING_KS
from .stopping import AVERAGE, HALF_LIFE, MIN_VAL_POSITIVES
from ..data.simulator import simulate

#: The ESMM paper's Table 2 (public dataset), AUC in percent: (CVR AUC, CTCVR AUC).
PAPER_TABLE2 = {
    "BASE": (66.00, 62.07), "AMAN": (65.21, 63.53), "OVERSAMPLING": (67.18, 63.05),
    "UNBIAS": (66.65, 63.56), "DIVISION": (67.56, 63.62), "ESMM-NS": (68.25, 64.44),
    "ESMM": (68.56, 65.32),
}

#: Metrics reported per method, with their column titles.
COLUMNS = {
    "cvr_auc_clicked": "CVR AUC, clicked (paper's protocol)",
    "cvr_soft_auc_clicked": "soft CVR AUC, clicked",
    "cvr_auc_entire": "CVR AUC, entire space",
    "cvr_soft_auc_entire": "soft CVR AUC, entire space",
    "ctcvr_auc": "CTCVR AUC",
    "pcvr_bias_unclicked": "pCVR bias, unclicked",
    "pcvr_bias_clicked": "pCVR bias, clicked",
    "pcvr_bias_potential_unclicked": "pCVR bias vs potential outcome, unclicked",
}

#: Metrics with a paired bootstrap interval of their difference to ESMM:
#: metric -> (test rows it is computed on, target).
INTERVAL_METRICS = ("cvr_auc_clicked", "cvr_soft_auc_clicked", "cvr_auc_entire",
                    "cvr_soft_auc_entire", "ctcvr_auc")

#: What a null in results.json means.
NULL_MEANS = ("undefined: the method has no prediction the metric needs (CTR-ONLY has no "
              "pCVR), the test data has no ground truth for it, or one class is missing")


def fair_effort(eval_every=200, patience=5, min_steps=2000, max_steps=60_000, batch_size=512,
                lr=2e-3, criterion="measured", half_life=HALF_LIFE, min_val_positives=0,
                average=AVERAGE):
    """The training budget and stopping rule every network of a run gets.

    See the module docstring, and :mod:`esmm_np.experiments.stopping` for
    ``criterion`` ("measured" or "loss"), ``half_life`` and
    ``min_val_positives`` (the configurations use :data:`MIN_VAL_POSITIVES`),
    and :func:`esmm_np.fit` for ``average`` (validate and keep the mean of the
    weights at the last ``average`` validations; 1: the live weights; the
    default :data:`~esmm_np.experiments.stopping.AVERAGE`).
    """
    return dict(batch_size=batch_size, lr=lr, eval_every=eval_every, patience=patience,
                min_steps=min_steps, max_steps=max_steps, criterion=criterion,
                half_life=half_life, min_val_positives=min_val_positives, average=average)


@dataclass
class ExperimentConfig:
    """Everything one experiment run depends on.

    Every method gets the same architecture (``arch``) and the same effort
    and stopping rule (``train``, :func:`fair_effort`); every network keeps
    the step its criterion prefers on its own validation rows
    (``validation_fraction`` of the training set). Each world seed
    (``world_seeds``, or the one ``world_seed``) gives a world of ``preset``
    (plus the ``world`` knobs) and its train/test split; ``seeds`` vary the
    networks' initialisation, shuffling, sampling and validation split
    inside every world. ``label`` is
    "full" for a run whose numbers are the documented table's; anything
    else ("quick", "demo", "small") makes every printed table say it is not.
    """

    n_impressions: int = 300_000
    test_fraction: float = 0.25
    preset: str = "default"
    world: dict = field(default_factory=dict)        # extra simulate() knobs
    world_seed: int = 0
    world_seeds: tuple = (0, 1, 2, 3)   # several worlds (empty: the one world_seed)
    seeds: tuple = (0, 1)
    methods: tuple = METHODS + EXTRA_METHODS
    arch: dict = field(default_factory=lambda: dict(embed_dim=8, tower_units=(64, 32),
                                                    dtype="float32"))
    train: dict = field(default_factory=lambda: fair_effort(min_val_positives=MIN_VAL_POSITIVES))
    validation_fraction: float = 0.1
    aman_rate: tuple = (AMAN_RATES[0], AMAN_RATES[-1])          # the ends of the paper's range
    oversampling_k: tuple = (OVERSAMPLING_KS[0], OVERSAMPLING_KS[-1])
    sweep_fractions: tuple = (0.05, 0.1, 0.25, 1.0)
    sweep_methods: tuple = ("BASE", "ESMM")
    n_boot: int = 200
    workers: int = 2
    label: str = "full"


def quick_config():
    """A configuration small enough for the test suite (tens of seconds); its numbers are not the table's."""
    return ExperimentConfig(n_impressions=40_000, seeds=(0,), world_seeds=(0, 1, 2),
                            arch=dict(embed_dim=4, tower_units=(16,), dtype="float32"),
                            train=fair_effort(eval_every=50, patience=3, min_steps=300,
                                              max_steps=5000, batch_size=256, lr=3e-3,
                                              half_life=150,
                                              min_val_positives=MIN_VAL_POSITIVES),
                            aman_rate=(0.1, 1.0), oversampling_k=(2, 10),
                            sweep_fractions=(0.25, 1.0), n_boot=50, label="quick")


def paper_config():
    """The "paper" preset's run: Ali-CCP-like worlds (CVR given click 0.8%).

    Conversions are rare (about 1 in 3,000 impressions), so the worlds are
    larger and a quarter of the training impressions validate: about 30
    conversions expected per validation set, above :data:`MIN_VAL_POSITIVES`.
    Its networks keep points within the first few hundred steps, so the
    effort rule is shorter than the default's (floor 600 steps, patience 3,
    learning rate halving every 300 steps), and one training seed in each of
    five worlds spends the time on worlds, which the intervals are over.
    The sweep has one share below all of the data, a quarter: a smaller share
    leaves some worlds too few training conversions to run (the checks drop
    it), and even at a quarter the validation sets hold too few conversions
    to choose, so its networks train the fixed budget of the floor and say so.
    """
    return ExperimentConfig(n_impressions=500_000, preset="paper", validation_fraction=0.25,
                            world_seeds=(0, 1, 2, 3, 4), seeds=(0,),
                            train=fair_effort(patience=3, min_steps=600, half_life=300,
                                              min_val_positives=MIN_VAL_POSITIVES),
                            sweep_fractions=(0.25, 1.0))


def demo_config():
    """The ``esmm-np demo`` configuration: every method in the default run's four worlds, one seed.

    The worlds are those of the documented default table (world seeds 0-3, 300,000
    impressions each), so its intervals are, like the tables', over worlds and cover
    the world-to-world spread; it trains one seed a world instead of two and fixes
    AMAN's rate and OVERSAMPLING's k instead of choosing them on validation, so its
    numbers are not the documented table's. About a minute on an idle 2-core machine.
    """
    return ExperimentConfig(world_seeds=(0, 1, 2, 3), seeds=(0,), sweep_fractions=(),
                            n_boot=100, aman_rate=(0.3,), oversampling_k=(5,), label="demo")


CONFIGS = {"default": ExperimentConfig, "paper": paper_config, "quick": quick_config}


def world_seeds(cfg):
    """The world seeds a run of ``cfg`` trains in: ``cfg.world_seeds``, else ``(cfg.world_seed,)``."""
    return tuple(cfg.world_seeds) if cfg.world_seeds else (cfg.world_seed,)


def make_world(cfg, world_seed=None):
    """Simulate a world of ``cfg`` and split it; returns (train, test).

    ``world_seed`` seeds the world and its split (default ``cfg.world_seed``).
    """
    seed = cfg.world_seed if world_seed is None else world_seed
    data = simulate(cfg.n_impressions, seed=seed, preset=cfg.preset, **cfg.world)
    return data.split(cfg.test_fraction, seed=seed)


def effort_for(train, n_rows):
    """The effort rule of a run whose training set (validation rows removed) has ``n_rows``.

    ``min_steps`` is at most two epochs of that set, so a small world is not
    held to a floor that would overfit it many times over; every network of
    the run gets the same rule. At the documented sizes (two epochs are more
    than ``min_steps``) the rule is unchanged.
    """
    if train.get("fixed_effort"):            # set on purpose (the ten-times check): as given
        return dict(train)
    two_epochs = 2 * -(-int(n_rows) // int(train["batch_size"]))
    floor = int(train.get("min_steps", 0))
    out = {**train, "min_steps": min(floor, two_epochs)}
    if train.get("half_life") and floor > two_epochs:   # the decay keeps its ratio to the floor
        out["half_life"] = max(1, round(train["half_life"] * two_epochs / floor))
    return out


def model_arch(cfg):
    """The architecture options of ``cfg`` with ``dtype`` as a numpy dtype (what the models take)."""
    arch = dict(cfg.arch)
    arch["dtype"] = np.dtype(arch.get("dtype", "float64"))
    return arch


