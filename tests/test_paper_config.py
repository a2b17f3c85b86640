"""The "paper" preset's run: enough validation conversions to choose, at least three worlds."""

from esmm_np.data.simulator import PRESETS
from esmm_np.experiments.config import effort_for, paper_config, world_seeds
from esmm_np.experiments.runner import len_part
from esmm_np.experiments.stopping import MIN_VAL_POSITIVES


def expected_validation_positives(cfg):
    """Conversions expected in one validation set, from the preset's CTR and CVR given click."""
    rates = PRESETS[cfg.preset]
    n_train = cfg.n_impressions * (1 - cfg.test_fraction)
    return cfg.validation_fraction * n_train * rates["ctr"] * rates["cvr"]


def test_the_paper_config_expects_enough_validation_positives_to_choose():
    cfg = paper_config()
    assert cfg.preset == "paper" and cfg.label == "full"
    assert expected_validation_positives(cfg) >= MIN_VAL_POSITIVES
    assert cfg.train["min_val_positives"] == MIN_VAL_POSITIVES


def test_the_paper_config_spends_its_time_on_worlds():
    cfg = paper_config()
    assert len(world_seeds(cfg)) >= 3
    assert len(world_seeds(cfg)) * len(cfg.seeds) >= 5
    assert 1.0 in cfg.sweep_fractions


def test_the_paper_effort_keeps_its_floor_and_half_life_at_its_size():
    cfg = paper_config()
    n_rows = round(len_part(cfg.n_impressions * (1 - cfg.test_fraction), cfg.validation_fraction))
    effort = effort_for(cfg.train, n_rows)
    assert effort["min_steps"] == cfg.train["min_steps"]
    assert effort["half_life"] == cfg.train["half_life"]
