"""Bags of ids through the models, the training loop, the Dataset and the checks.

Whole-model tolerance 1e-6 relative error per tensor, as in tests/test_model.py
(which explains the number); the bag layer is linear in the table, so it adds
no kink and the checks land near 1e-10.
"""

import numpy as np
import pytest

import esmm_np
from esmm_np.data import bags as B
from esmm_np import gradcheck as G

MODEL_TOL = 1e-6
FIELD_DIMS = [5, 4]
BAG_DIMS = {"210": 6, "109_14": 4}


def _random_bags(rng, n, bag_dims, max_len=4, weighted=True):
    out = {}
    for f, dim in bag_dims.items():
        lengths = rng.integers(0, max_len + 1, size=n)
        lengths[0] = 0                                   # an empty bag in every batch
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ids = rng.integers(0, dim, size=offsets[-1])
        w = rng.uniform(0.2, 3.0, size=offsets[-1]) if weighted else None
        out[f] = (offsets, ids, w)
    return out


def _batch(rng, n=16):
    X = np.stack([rng.integers(0, d, size=n) for d in FIELD_DIMS], axis=1)
    click = rng.integers(0, 2, size=n)
    click[:2] = (0, 1)
    conversion = click * rng.integers(0, 2, size=n)
    conversion[1] = 1
    return X, click, conversion, _random_bags(rng, n, BAG_DIMS)


def _perturb(model, rng):
    for w in model.params.values():
        w += 0.1 * rng.standard_normal(w.shape)


@pytest.mark.parametrize("cfg", [
    dict(bag_pooling="sum"),
    dict(bag_pooling="mean"),
    dict(bag_pooling="sum", share_embedding=False),
    dict(bag_pooling="mean", activation="prelu", dropout=0.2, batch_norm=True,
         l2_reg_embedding=0.01, n_dense=2),
], ids=["sum", "mean", "ESMM-NS", "mean, everything on"])
def test_esmm_with_bags_passes_the_whole_model_check(cfg):
    rng = np.random.default_rng(3)
    X, click, conversion, bags = _batch(rng)
    dense = rng.standard_normal((16, 2)) if cfg.get("n_dense") else None
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS, **cfg)
    _perturb(model, rng)
    rows = G.check_model(model, X, click, conversion, dense=dense, bags=bags)
    # A zero-gradient tensor (a bias before batch norm) is ok by gradcheck's ATOL rule.
    bad = [r for r in rows if not (r["zero_gradient"] or r["rel_error"] <= MODEL_TOL)]
    assert not bad, G.format_table(rows)
    # The bag fields' rows do receive gradient (the check is not vacuous).
    _, grads = model.loss(X, click, conversion, dense=dense, seed=0, bags=bags)
    name = "embedding" if cfg.get("share_embedding", True) else "cvr.embedding"
    assert np.abs(grads[name][sum(FIELD_DIMS):]).max() > 1e-4


def test_tower_model_with_bags_passes_the_whole_model_check():
    rng = np.random.default_rng(4)
    X, click, _, bags = _batch(rng)
    model = esmm_np.TowerModel(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS)
    _perturb(model, rng)
    rows = G.check_model(model, X, click, bags=bags)
    assert all(r["rel_error"] <= MODEL_TOL for r in rows), G.format_table(rows)


def test_the_model_check_notices_a_broken_bag_backward(monkeypatch):
    """A backward that forgets the weights fails the whole-model check."""
    rng = np.random.default_rng(5)
    X, click, conversion, bags = _batch(rng)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS)
    _perturb(model, rng)
    real = esmm_np.layers.bag_backward
    monkeypatch.setattr(esmm_np.layers, "bag_backward",
                        lambda de, c: real(de, (c[0], c[1], np.ones_like(c[2]), c[3])))
    rows = {r["tensor"]: r for r in G.check_model(model, X, click, conversion, bags=bags)}
    assert rows["embedding"]["rel_error"] > 1e-3


def test_predict_in_chunks_equals_one_pass_and_subsets_agree():
    rng = np.random.default_rng(6)
    X, click, conversion, bags = _batch(rng, n=50)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS)
    whole = model.predict(X, bags=bags)
    chunked = model.predict(X, bags=bags, batch_size=7)
    for k in whole:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-13)
    idx = np.array([9, 3, 3, 40])
    part = model.predict(X[idx], bags=B.take_bags(bags, idx))
    np.testing.assert_allclose(part["p_ctcvr"], whole["p_ctcvr"][idx], rtol=1e-13)


def test_a_model_learns_a_signal_only_the_bags_carry():
    """Clicks depend only on whether a user's bag holds id 0: with bags the model finds it."""
    rng = np.random.default_rng(0)
    n = 6000
    bags = _random_bags(rng, n, {"cats": 8}, max_len=3, weighted=False)
    offsets, ids, _ = bags["cats"]
    has0 = np.zeros(n, dtype=bool)
    has0[np.repeat(np.arange(n), np.diff(offsets))[ids == 0]] = True
    click = (rng.random(n) < np.where(has0, 0.6, 0.1)).astype(np.int8)
    X = rng.integers(0, 3, size=(n, 1))                  # a field with no signal
    train, test = np.arange(4000), np.arange(4000, n)
    aucs = {}
    for with_bags in (True, False):
        kw = {"bag_dims": {"cats": 8}} if with_bags else {}
        m = esmm_np.TowerModel([3], embed_dim=4, tower_units=(8,), seed=0, **kw)
        esmm_np.fit(m, X[train], click[train], epochs=3, batch_size=128, verbose=False,
                    optimizer=esmm_np.Adam(lr=1e-2),
                    bags=B.take_bags(bags, train) if with_bags else None)
        p = m.predict(X[test], bags=B.take_bags(bags, test) if with_bags else None)["p"]
        aucs[with_bags] = esmm_np.metrics.auc(click[test], p)
    # The best possible score is has0 itself (AUC about 0.73 on these 2,000 rows);
    # the model with bags gets within 0.02 of it, the one without stays near a guess
    # (the AUC of a random score on 2,000 rows has a standard deviation of about 0.015).
    oracle = esmm_np.metrics.auc(click[test], has0[test].astype(float))
    assert aucs[True] > oracle - 0.02 and aucs[False] < oracle - 0.1, (aucs, oracle)


def test_fit_on_memory_mapped_data_shuffles_by_blocks(tmp_path, monkeypatch):
    """Memory-mapped inputs train block by block; the same run in memory gives the same model."""
    rng = np.random.default_rng(1)
    n = 3000
    X, click, conversion, bags = _batch(rng, n=n)
    monkeypatch.setattr(esmm_np.train, "SHUFFLE_BLOCK", 512)

    def mapped(name, a):
        np.save(tmp_path / f"{name}.npy", a)
        return np.load(tmp_path / f"{name}.npy", mmap_mode="r")

    Xm, cm, vm = mapped("X", X.astype(np.int32)), mapped("c", click.astype(np.int8)), \
        mapped("v", conversion.astype(np.int8))
    bm = {f: (mapped(f + "o", o), mapped(f + "i", i), mapped(f + "w", w))
          for f, (o, i, w) in bags.items()}
    models = []
    for args, b, shuffle in (((Xm, cm, vm), bm, "auto"), ((X, click, conversion), bags, "blocks")):
        m = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS, seed=0)
        h = esmm_np.fit(m, *args, bags=b, epochs=2, batch_size=100, verbose=False,
                        shuffle=shuffle)
        models.append(m)
    assert h["loss"][1] < h["loss"][0]
    for k in models[0].params:
        np.testing.assert_array_equal(models[0].params[k], models[1].params[k])
    # Block shuffling is a different order from a full permutation.
    m = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS, seed=0)
    esmm_np.fit(m, X, click, conversion, bags=bags, epochs=2, batch_size=100, verbose=False)
    assert not np.array_equal(m.params["embedding"], models[0].params["embedding"])


def test_bags_travel_with_subset_split_and_clean_dataset():
    rng = np.random.default_rng(2)
    X, click, conversion, bags = _batch(rng, n=40)
    ds = esmm_np.Dataset(X, click, conversion, FIELD_DIMS, bags=bags, bag_dims=BAG_DIMS)
    train, test = ds.split(0.25, seed=0)
    assert len(train) + len(test) == 40
    sub = ds.subset(np.array([5, 0, 5]))
    for f, (o, i, w) in sub.bags.items():
        o0, i0, w0 = bags[f]
        expect = np.concatenate([i0[o0[5]:o0[6]], i0[o0[0]:o0[1]], i0[o0[5]:o0[6]]])
        np.testing.assert_array_equal(i, expect)
        assert o[-1] == len(i) == len(w)
    conv = conversion.copy()
    conv[0] = 1                                          # row 0: click 0 and conversion 1
    assert click[0] == 0
    clean, report = esmm_np.clean_dataset(X, click, conv, field_dims=FIELD_DIMS, bags=bags,
                                          bag_dims=BAG_DIMS)
    assert report.n_invalid == 1 and len(clean) == 39
    o, i, _ = clean.bags["210"]
    o0, i0, _ = bags["210"]
    np.testing.assert_array_equal(i, i0[o0[1]:])        # row 0's bag is gone, the rest kept


def _valid():
    return {"210": (np.array([0, 2, 2, 3]), np.array([1, 5, 0]), np.array([1.0, 0.5, 2.0]))}


@pytest.mark.parametrize("change, message", [
    (lambda b: {"210": (np.array([0, 2, 3]), *b["210"][1:])}, "length n \\+ 1 = 4"),
    (lambda b: {"210": (np.array([0, 2, 1, 3]), *b["210"][1:])}, "non-decreasing"),
    (lambda b: {"210": (np.array([1, 2, 2, 3]), *b["210"][1:])}, "start at 0"),
    (lambda b: {"210": (np.array([0, 2, 2, 2]), *b["210"][1:])}, "end at len\\(ids\\) = 3"),
    (lambda b: {"210": (b["210"][0], np.array([1, 6, 0]), b["210"][2])}, "out of range \\[0, 6\\).*row 0"),
    (lambda b: {"210": (b["210"][0], np.array([1, 5, -1]), b["210"][2])}, "id -1 at position 2 \\(row 2\\)"),
    (lambda b: {"210": (*b["210"][:2], np.array([1.0, np.nan, 2.0]))}, "NaN or inf at position"),
    (lambda b: {"210": (*b["210"][:2], np.array([1.0, 2.0]))}, "shape of ids"),
    (lambda b: {"210": (b["210"][0], b["210"][1].astype(float), b["210"][2])}, "ids must be integers"),
    (lambda b: {"210": b["210"][:2]}, "triple"),
    (lambda b: {}, "missing \\['210'\\]"),
    (lambda b: {**b, "301": b["210"]}, "unknown \\['301'\\]"),
    (lambda b: None, "bags= .* is required"),
])
def test_bad_bags_get_a_clear_error(change, message):
    model = esmm_np.TowerModel([3], embed_dim=2, tower_units=(3,), bag_dims={"210": 6})
    X, y = np.zeros((3, 1), dtype=int), np.array([0, 1, 0])
    with pytest.raises((ValueError, TypeError), match=message):
        model.loss(X, y, bags=change(_valid()))
    model.loss(X, y, bags=_valid())                      # the unchanged bags are fine


def test_bags_given_to_a_model_without_bag_fields_are_refused():
    model = esmm_np.TowerModel([3], embed_dim=2, tower_units=(3,))
    with pytest.raises(ValueError, match="no multi-valued fields"):
        model.loss(np.zeros((3, 1), dtype=int), np.array([0, 1, 0]), bags=_valid())


def test_a_model_with_bags_saves_and_loads(tmp_path):
    rng = np.random.default_rng(8)
    X, click, conversion, bags = _batch(rng, n=30)
    model = esmm_np.ESMM(FIELD_DIMS, embed_dim=3, tower_units=(5,), bag_dims=BAG_DIMS,
                         bag_pooling="mean")
    _perturb(model, rng)
    model.save(tmp_path / "m.npz")
    again = esmm_np.load_model(tmp_path / "m.npz")
    assert again.bag_dims == BAG_DIMS and again.bag_pooling == "mean"
    a, b = model.predict(X, bags=bags), again.predict(X, bags=bags)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_datasets_bags_cannot_be_edited_in_place():
    ds = esmm_np.Dataset(np.zeros((3, 1), dtype=int), np.array([1, 0, 1]), np.array([0, 0, 1]),
                         (3,), bags=_valid(), bag_dims={"210": 6})
    for a in ds.bags["210"]:
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 10**6                                 # an id (or offset) out of range
    with pytest.raises(AttributeError, match="cannot be reassigned"):
        ds.bags = None
    assert _valid()["210"][1].flags.writeable            # the caller's arrays are untouched


@pytest.mark.parametrize("dim", [6.7, True, "6"])
def test_a_datasets_bag_dims_must_be_integers(dim):
    with pytest.raises(TypeError, match="bag_dims"):
        esmm_np.Dataset(np.zeros((3, 1), dtype=int), np.array([1, 0, 1]), np.array([0, 0, 1]),
                        (3,), bags=_valid(), bag_dims={"210": dim})


def test_bag_weights_that_overflow_the_models_float32_are_refused():
    model = esmm_np.TowerModel([3], embed_dim=2, tower_units=(3,), bag_dims={"210": 6},
                               dtype="float32")
    X, y = np.zeros((3, 1), dtype=int), np.array([0, 1, 0])
    bags = _valid()
    bags["210"][2][1] = 1e39                             # finite in float64, inf in float32
    with pytest.raises(ValueError, match="NaN or inf"):
        model.loss(X, y, bags=bags)
