"""The runner's stopping rule: the criterion, the learning-rate decay, the minimum of positives."""

import numpy as np
import pytest

import esmm_np
from esmm_np.experiments import baselines as B, stopping as S
from esmm_np.experiments.config import fair_effort
from esmm_np.metrics import log_loss

ARCH = dict(embed_dim=4, tower_units=(8,), dtype=np.float32)


@pytest.fixture(scope="module")
def data():
    return esmm_np.simulate(20_000, seed=3, n_users=300, n_items=200)


def test_two_tower_criterion_is_the_ctcvr_log_loss_and_the_rate_decays(data):
    model = esmm_np.ESMM(data.field_dims, seed=0, **ARCH)
    opt = esmm_np.Adam(lr=0.01)
    crit = S.Criterion("two-tower", opt, half_life=100)
    opt.t = 300                                  # as if 300 steps were taken
    value = crit(model, data.X, data.click, data.conversion)
    p = model.predict(data.X)["p_ctcvr"]
    assert value == pytest.approx(log_loss(data.click * data.conversion, p), rel=1e-12)
    assert opt.lr == pytest.approx(0.01 * 0.5 ** 3)


def test_a_validation_set_with_too_few_positives_does_not_choose(data):
    """Below the minimum the network trains the fixed budget of min_steps and says so."""
    train = fair_effort(eval_every=20, patience=2, min_steps=60, max_steps=400, batch_size=256,
                        lr=3e-3, min_val_positives=10 ** 6)
    out = B.train_methods(data, ("BASE", "ESMM"), arch=ARCH, train=train, seed=0)
    for name in ("BASE", "ESMM"):
        (rec,) = out[name].networks.values()
        assert rec["stopped"] == "budget" and rec["steps"] == 60 == rec["kept"]
        assert rec["val_positives"] < 10 ** 6


def test_esmm_keeps_the_validation_point_with_the_lowest_ctcvr_loss(data, monkeypatch):
    train = fair_effort(eval_every=20, patience=3, min_steps=40, max_steps=400, batch_size=256,
                        lr=3e-3)
    ctx = B.make_context(data, arch=ARCH, train=train, seed=0)
    losses = []

    class Recording(S.Criterion):
        def __call__(self, model, X, *labels, **kw):
            losses.append(super().__call__(model, X, *labels, **kw))
            return losses[-1]

    monkeypatch.setattr(B, "Criterion", Recording)
    rec = B.train_esmm(ctx).networks["ESMM net"]
    assert rec["criterion"] == S.CRITERIA["two-tower"]
    assert rec["val_steps"][int(np.argmin(losses))] == rec["kept"]


def test_adjacent_noise_is_the_mean_change_next_to_the_kept_point():
    assert S.adjacent_noise([10, 20, 30], [0.70, 0.72, 0.69], 20) == pytest.approx(0.025)
    assert S.adjacent_noise([10, 20, 30], [0.70, 0.72, 0.69], 30) == pytest.approx(0.03)
    assert S.adjacent_noise([10], [0.7], 10) is None and S.adjacent_noise([], [], 5) is None


def test_the_probe_scores_against_the_true_cvr(data):
    _, test = data.split(0.25, seed=0)
    probe = S.make_probe(test, tower=False, n_rows=3000)
    model = esmm_np.ESMM(data.field_dims, seed=0, **ARCH)
    assert 0.0 <= probe(model) <= 1.0
