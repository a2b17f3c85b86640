"""The default world's lessons (docs/experiments.md, "What the measurements say"), asserted
at the size the test suite runs, with the tables' own star rule.

The run is :func:`esmm_np.experiments.quick_config` (small worlds, a small network, one
training seed a world) in six worlds, with only the methods the lessons compare; each
difference's interval is the Student t interval over the six worlds and a lesson holds
only when :func:`~esmm_np.experiments.report.resolved` against the pair's noise floor.

Asserted (each starred in world seeds 0-5, 6-11 and 12-17 when tried): ESMM ahead of
BASE on the entire-space CVR AUC (0/1 labels; the documented default run stars that
column), DIVISION behind ESMM on the soft entire-space CVR AUC, and ESCM²-DR behind ESMM
on the soft CTR AUC (the price of its counterfactual CVR loss, which the documented run
stars too). Not asserted: ESCM²'s lead on the soft CVR AUCs (starred in the documented
run on the clicked rows, not in every seed set at this size).
"""

import pytest

import esmm_np.experiments as E
from esmm_np.experiments import report as R

WORLD_SEEDS = (0, 1, 2, 3, 4, 5)
LESSONS = [("cvr_auc_entire", "BASE"), ("cvr_soft_auc_entire", "DIVISION"),
           ("ctr_soft_auc", "ESCM2-DR")]


@pytest.fixture(scope="module")
def default_run():
    cfg = E.quick_config()
    cfg.world_seeds, cfg.workers = WORLD_SEEDS, 1
    cfg.methods = ("BASE", "ESMM", "ESCM2-DR", "DIVISION")
    result, _ = E.run_all(cfg, progress=None, sweep=False)
    return result


def test_the_run_is_over_six_default_worlds(default_run):
    assert default_run["config"]["preset"] == "default"
    assert default_run["interval_construction"] == E.scoring.ACROSS_WORLDS
    for metric, name in LESSONS:
        assert len(default_run["intervals"][metric][name]["per_world"]) == len(WORLD_SEEDS)


@pytest.mark.parametrize("metric,behind", LESSONS)
def test_the_documented_default_lesson_is_starred(default_run, metric, behind):
    entry = default_run["intervals"][metric][behind]
    floor = R.noise_floors(default_run)[behind]
    text = R.format_interval(entry, floor)
    assert entry["diff"] < 0, f"{behind} − ESMM on {metric}: {text}"
    assert R.resolved(entry, floor), f"{behind} − ESMM on {metric} not starred: {text}"
