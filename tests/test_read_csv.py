"""esmm_np.read_csv: a flat impression log (one row per impression) as a Dataset."""

import numpy as np
import pytest

import esmm_np


def _write_world(path, n=600, seed=0):
    """A simulated world as a flattened Ali-CCP-style CSV with string categories."""
    world = esmm_np.simulate(n, seed=seed, ctr=0.3, cvr=0.3)
    rng = np.random.default_rng(seed)
    price = np.round(rng.uniform(1, 100, size=n), 2)
    buy = world.conversion.copy()
    buy[np.flatnonzero(world.click == 0)[:2]] = 1                 # two invalid rows
    with open(path, "w") as fh:
        fh.write("click,purchase,user,item,price\n")
        for i in range(n):
            fh.write(f"{world.click[i]},{buy[i]},u{world.X[i, 0]},item-{world.X[i, 1]},{price[i]}\n")
    return world, buy, price


def test_round_trip_of_a_simulated_log(tmp_path):
    world, buy, price = _write_world(tmp_path / "log.csv")
    ds = esmm_np.read_csv(tmp_path / "log.csv", conversion="purchase", sparse=["user", "item"],
                          dense=["price"])
    rep = ds.info["report"]
    assert (rep["lines_read"], rep["invalid_rows"], rep["rows_kept"]) == (600, 2, 598)
    valid = ~((world.click == 0) & (buy == 1))
    np.testing.assert_array_equal(ds.click, world.click[valid])
    np.testing.assert_array_equal(ds.conversion, buy[valid])
    np.testing.assert_array_equal(ds.dense[:, 0], price[valid])
    users = np.array(ds.info["vocabularies"]["user"])[ds.X[:, 0] - 1]
    np.testing.assert_array_equal(users, [f"u{u}" for u in world.X[valid, 0]])
    assert ds.field_dims[1] == len(np.unique(world.X[valid, 1])) + 1     # + the OOV id 0
    assert rep["vocabulary"]["item"]["distinct_values"] == len(np.unique(world.X[valid, 1]))
    model = esmm_np.ESMM(ds.field_dims, embed_dim=3, tower_units=(4,), n_dense=1)
    esmm_np.fit(model, ds.X, ds.click, ds.conversion, dense=ds.dense, verbose=False)


def test_min_count_and_empty_cells_map_to_zero(tmp_path):
    (tmp_path / "a.csv").write_text("click,conversion,c\n1,0,x\n0,0,x\n1,1,y\n0,0,\n")
    ds = esmm_np.read_csv(tmp_path / "a.csv", min_count=2)
    assert list(ds.X[:, 0]) == [1, 1, 0, 0]                      # y is rare, the last cell empty
    assert ds.info["vocabularies"]["c"] == ["x"]
    assert ds.info["report"]["vocabulary"]["c"] == {"distinct_values": 2, "kept_values": 1,
                                                    "size": 2}


@pytest.mark.parametrize("line, message", [
    ("1,0", "2 cells, the header has 4"),
    ("2,0,a,1.0", "must be 0 or 1, got '2'"),
    ("1,0,a,abc", "not a finite number"),
    ("1,0,a,nan", "not a finite number"),
])
def test_malformed_lines_name_the_line(tmp_path, line, message):
    (tmp_path / "b.csv").write_text(f"click,conversion,c,d\n1,0,a,0.5\n{line}\n0,0,b,1\n")
    with pytest.raises(ValueError, match="b.csv:3: .*" + message):
        esmm_np.read_csv(tmp_path / "b.csv", dense=["d"])
    ds = esmm_np.read_csv(tmp_path / "b.csv", dense=["d"], skip_malformed=True)
    assert ds.info["report"]["malformed_lines"] == 1 and len(ds) == 2


def test_column_problems_are_named(tmp_path):
    (tmp_path / "c.csv").write_text("click,buy,c\n1,0,a\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['conversion'\]"):
        esmm_np.read_csv(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="two roles"):
        esmm_np.read_csv(tmp_path / "c.csv", conversion="buy", sparse=["c"], dense=["c"])


@pytest.mark.parametrize("min_count", [1.5, True, "3", float("nan")])
def test_min_count_must_be_an_integer(min_count, tmp_path):
    (tmp_path / "a.csv").write_text("click,conversion,user\n1,0,a\n")
    with pytest.raises(TypeError, match="min_count must be an integer"):
        esmm_np.read_csv(tmp_path / "a.csv", min_count=min_count)


def test_the_same_column_cannot_be_both_labels(tmp_path):
    (tmp_path / "a.csv").write_text("click,conversion,u\n1,0,a\n")
    with pytest.raises(ValueError, match="two roles"):
        esmm_np.read_csv(tmp_path / "a.csv", click="conversion", conversion="conversion")


def test_a_utf8_file_with_a_byte_order_mark_is_read_under_any_locale(tmp_path):
    # Spreadsheet exports start with a BOM; the header's first name must still be "click".
    (tmp_path / "a.csv").write_bytes("\ufeffclick,conversion,u\n1,0,é\n".encode("utf-8"))
    ds = esmm_np.read_csv(tmp_path / "a.csv")
    assert ds.field_names == ("u",) and ds.info["vocabularies"]["u"] == ["é"]


@pytest.mark.parametrize("option", ["sparse", "dense"])
def test_column_lists_given_as_one_string_are_refused(option, tmp_path):
    (tmp_path / "a.csv").write_text("click,conversion,user,price\n1,0,a,1.5\n")
    with pytest.raises(TypeError, match=f"{option} must be a list of column names"):
        esmm_np.read_csv(tmp_path / "a.csv", **{option: "price" if option == "dense" else "user"})
