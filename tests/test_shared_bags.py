"""SharedBag: bags stored once per shared row give exactly the plain CSR bags.

The plain triple of all rows (built by hand below) is the reference; take,
slice, the checks, a Dataset and a training run must see the same bags.
"""

import numpy as np
import pytest

import esmm_np
from esmm_np.data import Dataset
from esmm_np.data.bags import SharedBag, check_bags, slice_bags, take_bags


def _world(seed=0, n=300, m=40, with_own=True):
    rng = np.random.default_rng(seed)
    t_len = rng.integers(0, 6, size=m)
    t_off = np.concatenate([[0], np.cumsum(t_len)])
    t_ids = rng.integers(0, 30, size=t_off[-1]).astype(np.int32)
    t_w = rng.uniform(0.1, 3, size=t_off[-1]).astype(np.float32)
    ref = rng.integers(0, m, size=n).astype(np.int32)
    own = None
    if with_own:
        o_len = rng.integers(0, 3, size=n)
        o_off = np.concatenate([[0], np.cumsum(o_len)])
        own = (o_off, rng.integers(0, 30, size=o_off[-1]).astype(np.int32),
               rng.uniform(0.1, 3, size=o_off[-1]).astype(np.float32))
    # The plain triple, row by row: own ids first, then the shared row's.
    ids, ws, off = [], [], [0]
    for i in range(n):
        r = ref[i]
        part_i = list(t_ids[t_off[r]:t_off[r + 1]])
        part_w = list(t_w[t_off[r]:t_off[r + 1]])
        if own is not None:
            part_i = list(own[1][own[0][i]:own[0][i + 1]]) + part_i
            part_w = list(own[2][own[0][i]:own[0][i + 1]]) + part_w
        ids += part_i
        ws += part_w
        off.append(len(ids))
    plain = (np.array(off, dtype=np.int64), np.array(ids, dtype=np.int32),
             np.array(ws, dtype=np.float32))
    return SharedBag(ref, (t_off, t_ids, t_w), own), plain


def _equal(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("with_own", [True, False])
def test_a_shared_bag_expands_to_the_plain_triple(with_own):
    shared, plain = _world(with_own=with_own)
    _equal(shared.materialize(), plain)
    offsets, ids, weights = shared                  # unpacking gives the plain triple too
    _equal((offsets, ids, weights), plain)


@pytest.mark.parametrize("with_own", [True, False])
def test_take_and_slice_match_the_plain_bags(with_own):
    shared, plain = _world(1, with_own=with_own)
    idx = np.random.default_rng(3).integers(0, 300, size=77)           # any order, repeats
    _equal(take_bags({"f": shared}, idx)["f"], take_bags({"f": plain}, idx)["f"])
    part = slice_bags({"f": shared}, 50, 190)["f"]
    assert isinstance(part, SharedBag) and part.n == 140
    _equal(part.materialize(), slice_bags({"f": plain}, 50, 190)["f"])
    sub = np.arange(0, 140, 3)
    _equal(take_bags({"f": part}, sub)["f"], take_bags({"f": plain}, 50 + sub)["f"])


def test_a_reference_outside_the_table_is_refused():
    shared, _ = _world(2)
    bad = SharedBag(np.where(np.arange(300) == 7, 40, shared.ref), shared.table, shared.own)
    with pytest.raises(ValueError, match=r"ref must lie in \[0, 40\).*row 7 has 40"):
        check_bags({"f": bad}, {"f": 30}, 300)
    with pytest.raises(ValueError, match="one entry per row"):
        check_bags({"f": shared}, {"f": 30}, 299)
    with pytest.raises(ValueError, match=r"out of range \[0, 20\)"):
        check_bags({"f": shared}, {"f": 20}, 300)   # the table's ids are checked too


def test_training_on_shared_bags_is_bit_for_bit_training_on_plain_bags():
    shared, plain = _world(4)
    world = esmm_np.simulate(300, seed=4)
    runs = []
    for bags in ({"f": shared}, {"f": plain}):
        ds = Dataset(X=world.X, click=world.click, conversion=world.conversion,
                     field_dims=world.field_dims, bags=bags, bag_dims={"f": 30})
        model = esmm_np.ESMM(ds.field_dims, embed_dim=4, tower_units=(8,), bag_dims=ds.bag_dims,
                             bag_pooling="mean", seed=0)
        h = esmm_np.fit(model, ds.X, ds.click, ds.conversion, bags=ds.bags, epochs=2,
                        batch_size=64, verbose=False, shuffle="blocks")
        runs.append((h["batch_loss"], model.params))
    assert runs[0][0] == runs[1][0]
    for name in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name])


def test_a_dataset_subset_of_shared_bags_is_plain_and_equal():
    shared, plain = _world(5)
    world = esmm_np.simulate(300, seed=5)
    kw = dict(X=world.X, click=world.click, conversion=world.conversion,
              field_dims=world.field_dims)
    a = Dataset(**kw, bags={"f": shared})           # bag_dims inferred from the ids
    b = Dataset(**kw, bags={"f": plain})
    assert a.bag_dims == b.bag_dims
    idx = np.arange(0, 300, 7)
    _equal(a.subset(idx).bags["f"], b.subset(idx).bags["f"])
