"""Checks made before the first training starts: is every split big enough to train on?

A run trains dozens of networks; a split that leaves a method without rows
(no clicked validation row for BASE, no conversion to learn from) would
fail minutes in. :func:`check_world` counts, for every training seed, the
clicks and conversions that each split of the run will hold, exactly as the
workers will split them, and refuses the table's world up front with a
sentence naming the split. A sparsity-sweep share too small for that is
dropped before training, with a note saying so, so that the rest of the
sweep still runs.
"""

from .baselines import make_context
from .workers import subset

#: The fewest clicks and conversions each split needs: split -> (clicks, conversions).
#: Training rows need conversions to learn from; validation rows need clicked rows
#: (BASE and the other click-space methods validate on them); test rows need
#: clicks and a conversion for the clicked CVR AUC to exist.
MINIMUM = {"training": (20, 5), "validation": (5, 0), "test": (5, 1)}


class TooSmall(ValueError):
    """A split of the run would be too small to train on (raised before any training)."""


def split_counts(train, test, seed, validation_fraction, frac=None):
    """split name -> (clicks, conversions) of one training seed (and sweep share ``frac``)."""
    data = subset(train, frac, seed)
    ctx = make_context(data, arch={}, train={}, seed=seed, validation_fraction=validation_fraction)
    out = {"training": ctx.part, "test": test}
    if ctx.val is not None:
        out["validation"] = ctx.val
    return {name: (int(d.click.sum()), int(d.conversion.sum())) for name, d in out.items()}


def problems(counts, minimum=MINIMUM):
    """Sentences for each split of ``counts`` below ``minimum`` ('' when there is none)."""
    out = []
    for name, (clicks, conversions) in counts.items():
        need_clicks, need_conversions = minimum[name]
        if clicks < need_clicks or conversions < need_conversions:
            out.append(f"the {name} rows hold {clicks} click(s) and {conversions} "
                       f"conversion(s) (at least {need_clicks} and {need_conversions} needed)")
    return out


def check_world(cfg, train, test, fractions=(), where="this world"):
    """Refuse a world too small for the table; return the sweep shares that can run.

    Parameters
    ----------
    cfg : ExperimentConfig
    train, test : Dataset
    fractions : sweep shares to check
    where : str, names the world in messages

    Returns
    -------
    (fractions that can run, list of notes on the ones dropped)

    Raises
    ------
    TooSmall (a ValueError)
        When a split of the table's training would be too small, naming it and the size.
    """
    if len(cfg.seeds) == 0:
        raise ValueError("no training seeds given")
    for seed in cfg.seeds:
        found = problems(split_counts(train, test, seed, cfg.validation_fraction))
        if found:
            raise TooSmall(
                f"{where} is too small to train on ({len(train):,} training and {len(test):,} "
                f"test impressions): with training seed {seed}, " + "; ".join(found)
                + ". Use more impressions (--n) or a larger cache.")
    keep, notes = [], []
    for frac in fractions:
        found = []
        for seed in cfg.seeds:
            found = problems(split_counts(train, test, seed, cfg.validation_fraction, frac))
            if found:
                break
        if found:
            notes.append(f"sweep share {frac:.0%} skipped in {where}: with training seed {seed}, "
                         + "; ".join(found) + ".")
        else:
            keep.append(frac)
    return tuple(keep), notes
