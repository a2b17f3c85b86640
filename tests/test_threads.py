"""esmm_np keeps BLAS to one thread in training, unless the user chose a thread count."""

import numpy as np
import pytest

import esmm_np
from esmm_np import threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def no_user_setting(monkeypatch):
    for var in threads._USER_SETTINGS:
        monkeypatch.delenv(var, raising=False)


def test_limit_applies_inside_and_is_undone_after(no_user_setting):
    if not _blas_threads():
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        outside = _blas_threads()
        with threads.limit_blas_threads():
            assert _blas_threads() == [1] * len(outside)
        assert _blas_threads() == outside


def test_a_user_setting_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        outside = _blas_threads()
        with threads.limit_blas_threads():
            assert _blas_threads() == outside


def test_fit_trains_with_one_blas_thread(no_user_setting, monkeypatch):
    if not _blas_threads():
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    model = esmm_np.TowerModel([4, 3], embed_dim=2, tower_units=(3,))
    seen = []
    real = model.train_loss

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "train_loss", spy)
    X = np.array([[0, 1], [3, 2], [1, 0], [2, 2]])
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        esmm_np.fit(model, X, np.array([0, 1, 1, 0]), batch_size=2, verbose=False)
    assert seen and all(s == [1] * len(s) for s in seen)


def test_hint_only_without_threadpoolctl(no_user_setting, monkeypatch):
    assert threads.hint() == ""
    monkeypatch.setattr(threads, "available", lambda: False)
    assert "OPENBLAS_NUM_THREADS=1" in threads.hint()
    with threads.limit_blas_threads():   # a no-op, not an error
        pass
