"""model.save / esmm_np.load_model: bit-for-bit round trips, resumable training, no pickle."""

import json
import os
import re

import numpy as np
import pytest

import esmm_np
from esmm_np import persist


def _data(n=96, seed=0, dims=(7, 5, 3), n_dense=2):
    rng = np.random.default_rng(seed)
    X = np.stack([rng.integers(0, d, n) for d in dims], axis=1)
    click = (rng.random(n) < 0.5).astype(np.int8)
    conversion = click * (rng.random(n) < 0.5).astype(np.int8)
    dense = rng.standard_normal((n, n_dense)) if n_dense else None
    return X, click, conversion, dense


#: Every option of both classes, each switched away from its default somewhere.
ESMM_OPTIONS = [
    dict(),
    dict(embed_dim=3, tower_units=((6, 4), (5,)), activation="prelu", dropout=0.2,
         batch_norm=True, l2_reg_embedding=1e-3, l2_reg_dnn=1e-3, n_dense=2,
         loss_weights=(1.0, 0.7), bn_momentum=0.8, seed=4),
    dict(embed_dim=2, tower_units=(4,), activation="tanh", share_embedding=False,
         ctcvr_loss="naive", dtype=np.float32, seed=None),
    dict(embed_dim=2, tower_units=(3, 3), activation="sigmoid", n_dense=2, dtype="float32"),
]
TOWER_OPTIONS = [
    dict(),
    dict(embed_dim=3, tower_units=(6, 4), activation="prelu", dropout=0.1, batch_norm=True,
         l2_reg_embedding=1e-3, l2_reg_dnn=1e-3, n_dense=2, dtype=np.float32, bn_momentum=0.5,
         seed=7),
]


def _labels(model, c, v):
    return (c, v) if isinstance(model, esmm_np.ESMM) else (c,)


def _trained(cls, options):
    X, c, v, dense = _data(n_dense=options.get("n_dense", 0))
    model = cls([7, 5, 3], **options)
    esmm_np.fit(model, X, *_labels(model, c, v), dense=dense, batch_size=32, verbose=False)
    return model, X, dense


@pytest.mark.parametrize("cls, options", [(esmm_np.ESMM, o) for o in ESMM_OPTIONS]
                         + [(esmm_np.TowerModel, o) for o in TOWER_OPTIONS])
def test_round_trip_predicts_bit_for_bit(tmp_path, cls, options):
    model, X, dense = _trained(cls, options)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = esmm_np.load_model(path)
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    a, b = model.predict(X, dense=dense), loaded.predict(X, dense=dense)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    for part in ("params", "state"):
        for k, w in getattr(model, part).items():
            assert np.array_equal(w, getattr(loaded, part)[k]), k
    # The model's generator (used by loss() without a seed) continues where it was.
    assert loaded.rng.random() == model.rng.random()


@pytest.mark.parametrize("make_opt", [lambda: esmm_np.Adam(lr=5e-3),
                                      lambda: esmm_np.Adam(lr=5e-3, lazy=True),
                                      lambda: esmm_np.SGD(lr=0.05, momentum=0.9)])
def test_training_resumes_exactly(tmp_path, make_opt):
    X, c, v, dense = _data()
    options = dict(embed_dim=3, tower_units=(5,), batch_norm=True, dropout=0.1, n_dense=2)
    straight = esmm_np.ESMM([7, 5, 3], **options)
    opt = make_opt()
    esmm_np.fit(straight, X, c, v, dense=dense, optimizer=opt, batch_size=32, seed=0,
                verbose=False)
    straight.save(tmp_path / "ckpt.npz", optimizer=opt)
    esmm_np.fit(straight, X, c, v, dense=dense, optimizer=opt, batch_size=32, seed=1,
                verbose=False)

    resumed, ropt = esmm_np.load_model(tmp_path / "ckpt.npz", with_optimizer=True)
    assert type(ropt) is type(opt)
    esmm_np.fit(resumed, X, c, v, dense=dense, optimizer=ropt, batch_size=32, seed=1,
                verbose=False)
    for k in straight.params:
        assert np.array_equal(straight.params[k], resumed.params[k]), k
    for k in straight.state:
        assert np.array_equal(straight.state[k], resumed.state[k]), k


def test_without_optimizer_returns_none(tmp_path):
    model = esmm_np.ESMM([7, 5, 3], embed_dim=2, tower_units=(3,))
    model.save(tmp_path / "m.npz")
    loaded, opt = esmm_np.load_model(tmp_path / "m.npz", with_optimizer=True)
    assert opt is None


def test_save_refuses_another_models_optimizer(tmp_path):
    X, c, v, _ = _data(n_dense=0)
    a = esmm_np.ESMM([7, 5, 3], embed_dim=2, tower_units=(3,))
    opt = esmm_np.Adam()
    esmm_np.fit(a, X, c, v, optimizer=opt, verbose=False)
    b = esmm_np.ESMM([7, 5, 3], embed_dim=2, tower_units=(4,))
    with pytest.raises(ValueError, match="already serves"):
        b.save(tmp_path / "b.npz", optimizer=opt)
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------ hostile files

def _saved(tmp_path):
    model = esmm_np.ESMM([7, 5, 3], embed_dim=2, tower_units=(3,), batch_norm=True)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return path, arrays, json.loads(str(arrays["meta"]))


def _rewrite(path, arrays, meta=None, **kwargs):
    arrays = dict(arrays)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays, **kwargs)


def test_refuses_a_pickled_object_array(tmp_path):
    path, arrays, _ = _saved(tmp_path)
    arrays["param/embedding"] = np.array([{"evil": "payload"}], dtype=object)
    _rewrite(path, arrays)
    with pytest.raises(ValueError, match="holds Python objects"):
        esmm_np.load_model(path)


def test_refuses_a_newer_format(tmp_path):
    path, arrays, meta = _saved(tmp_path)
    meta["format_version"] = persist.FORMAT_VERSION + 1
    _rewrite(path, arrays, meta)
    with pytest.raises(ValueError, match="newer esmm_np"):
        esmm_np.load_model(path)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("param/ctr.W0"), r"missing \['param/ctr.W0'\]"),
    (lambda a: a.pop("state/cvr.bn_var0"), r"missing \['state/cvr.bn_var0'\]"),
    (lambda a: a.__setitem__("param/extra", np.zeros(2)), r"unexpected \['param/extra'\]"),
    (lambda a: a.__setitem__("param/ctr.b0", np.zeros(4)), r"param/ctr.b0 has shape \(4,\)"),
    (lambda a: a.__setitem__("param/ctr.b0", np.zeros(3, np.float32)), "dtype float32"),
    (lambda a: a.__setitem__("param/ctr.b0", np.array([0, np.nan, 0])), "NaN or inf"),
])
def test_refuses_arrays_that_do_not_fit(tmp_path, change, match):
    path, arrays, _ = _saved(tmp_path)
    change(arrays)
    _rewrite(path, arrays)
    with pytest.raises(ValueError, match=match):
        esmm_np.load_model(path)


def test_refuses_unknown_class_and_options(tmp_path):
    path, arrays, meta = _saved(tmp_path)
    _rewrite(path, arrays, dict(meta, **{"class": "os.system"}))
    with pytest.raises(ValueError, match="unknown model class 'os.system'"):
        esmm_np.load_model(path)
    meta["config"]["future_option"] = 1
    _rewrite(path, arrays, meta)
    with pytest.raises(ValueError, match="does not fit ESMM"):
        esmm_np.load_model(path)


def test_refuses_files_that_are_not_models(tmp_path):
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an esmm_np model file"):
        esmm_np.load_model(tmp_path / "t.txt")
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        esmm_np.load_model(tmp_path / "a.npy")
    np.savez(tmp_path / "z.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="no 'meta' text"):
        esmm_np.load_model(tmp_path / "z.npz")


@pytest.mark.parametrize("change, match", [
    (lambda m: m.__setitem__("format_version", True), "no format version"),
    (lambda m: m["config"].__setitem__("field_dims", [-7, 5, 3]), "does not fit ESMM.*positive"),
    (lambda m: m.__setitem__("rng_state", 5), "random generator state"),
    (lambda m: m["rng_state"].__setitem__("state", "x"), "random generator state"),
    (lambda m: m.__setitem__("optimizer", {"class": "Adam", "t": True}), "step count"),
    (lambda m: m.__setitem__("optimizer", {"class": "Adam", "lr": -1.0}), "do not fit Adam"),
])
def test_a_damaged_meta_is_refused_with_the_files_name(tmp_path, change, match):
    path, arrays, meta = _saved(tmp_path)
    change(meta)
    _rewrite(path, arrays, meta)
    with pytest.raises(ValueError, match=re.escape(str(path)) + f":? .*{match}"):
        esmm_np.load_model(path, with_optimizer=True)
