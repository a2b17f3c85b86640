"""The Ali-CCP reader: round trip from a simulated world, every error, atomic caches.

Fixtures are written by esmm_np.aliccp.write_raw (simulated world -> raw
Ali-CCP files) or by hand below; nothing is downloaded.
"""

import json

import numpy as np
import pytest

import esmm_np
from esmm_np.data import aliccp as A   # the module itself: the tests patch its internals


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("aliccp")
    expected = A.write_raw(root / "raw", 1500, 500, seed=3, n_invalid=4)
    report = A.convert(root / "raw", root / "cache", min_count=1, progress=False)
    return root, expected, report


def _decode(cache, field, codes):
    """Raw Ali-CCP ids of the codes (code 0, out of vocabulary, stays -1)."""
    vocab = A.vocabulary(cache, field)
    return np.where(codes > 0, vocab[np.maximum(codes, 1) - 1], -1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trip_gives_back_every_label_id_and_bag(converted, split):
    root, expected, report = converted
    exp = expected[split]
    ds = A.load(root / "cache", split)
    assert isinstance(ds.X, np.memmap)
    assert report["splits"][split]["invalid_rows"] == exp["invalid"] == 4
    assert report["splits"][split]["rows_kept"] == len(ds) == len(exp["click"])
    np.testing.assert_array_equal(ds.click, exp["click"])
    np.testing.assert_array_equal(ds.conversion, exp["conversion"])
    assert ds.field_names == ("101", "121", "205", "206")
    for f, name in enumerate(ds.field_names):
        got = _decode(root / "cache", name, np.asarray(ds.X[:, f]))
        if split == "train":                          # every training id is in the vocabulary
            np.testing.assert_array_equal(got, exp["single"][name])
        else:                                         # test ids unseen in training become 0
            seen = np.isin(exp["single"][name], A.vocabulary(root / "cache", name))
            np.testing.assert_array_equal(got[seen], exp["single"][name][seen])
            assert (got[~seen] == -1).all()
    assert set(ds.bags) == {"109_14", "110_14", "210"}
    n_empty = 0
    for f, (offsets, ids, weights) in ds.bags.items():
        e_off, e_raw, e_val = exp["bags"][f]
        np.testing.assert_array_equal(offsets, e_off)
        got = _decode(root / "cache", f, np.asarray(ids))
        seen = got >= 0
        np.testing.assert_array_equal(got[seen], e_raw[seen])
        if split == "train":
            assert seen.all()
        np.testing.assert_array_equal(weights, e_val)          # values exactly, as float32
        n_empty += int((np.diff(offsets) == 0).sum())
    assert n_empty > 0                                         # empty bags did occur


def test_report_counts_and_vocabulary_sizes(converted):
    root, expected, report = converted
    on_disk = json.loads((root / "cache" / "report.json").read_text())
    assert on_disk == report
    train = expected["train"]
    for name, ids in train["single"].items():
        assert report["vocabulary"][name]["distinct_ids"] == len(np.unique(ids))
        assert report["vocabulary"][name]["size"] == len(np.unique(ids)) + 1   # + OOV id 0
    assert report["splits"]["train"]["skeleton_lines_read"] == 1500
    assert report["splits"]["train"]["malformed_lines"] == 0


def test_min_count_maps_rare_ids_to_the_out_of_vocabulary_id(converted, tmp_path):
    root, expected, _ = converted
    report = A.convert(root / "raw", tmp_path / "c5", min_count=5, progress=False)
    ds = A.load(tmp_path / "c5")
    ids = expected["train"]["single"]["205"]                   # item ids, one per kept row
    u, counts = np.unique(ids, return_counts=True)
    frequent = u[counts >= 5]
    assert report["vocabulary"]["205"] == {"distinct_ids": len(u), "kept_ids": len(frequent),
                                           "size": len(frequent) + 1}
    col = np.asarray(ds.X[:, ds.field_names.index("205")])
    rare = ~np.isin(ids, frequent)
    assert rare.any() and (col[rare] == 0).all() and (col[~rare] > 0).all()
    # Bag ids are counted per kept row too: a user's categories once per impression.
    offsets, raw, _ = expected["train"]["bags"]["109_14"]
    u, counts = np.unique(raw, return_counts=True)
    assert report["vocabulary"]["109_14"]["kept_ids"] == int((counts >= 5).sum())


def test_a_model_trains_on_the_loaded_cache(converted):
    root, _, _ = converted
    ds = A.load(root / "cache")
    model = esmm_np.ESMM(ds.field_dims, embed_dim=4, tower_units=(8,), bag_dims=ds.bag_dims,
                         bag_pooling="mean", dtype=np.float32)
    h = esmm_np.fit(model, ds.X, ds.click, ds.conversion, bags=ds.bags, epochs=2,
                    batch_size=128, verbose=False, optimizer=esmm_np.Adam(lr=3e-3))
    assert h["loss"][1] < h["loss"][0]
    test = A.load(root / "cache", "test")
    out = model.predict(test.X, bags=test.bags)
    assert out["p_ctcvr"].shape == (len(test),) and np.isfinite(out["p_ctcvr"]).all()


def test_an_interrupted_conversion_leaves_nothing_load_accepts(converted, tmp_path, monkeypatch):
    root, _, _ = converted
    real = A._encode_split

    def crash(*args):
        real(*args)                                  # the train arrays are written ...
        raise KeyboardInterrupt                      # ... then the run is stopped

    monkeypatch.setattr(A, "_encode_split", crash)
    with pytest.raises(KeyboardInterrupt):
        A.convert(root / "raw", tmp_path / "cache", min_count=1, progress=False)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        A.load(tmp_path / "cache")
    monkeypatch.setattr(A, "_encode_split", real)    # a rerun cleans up and succeeds
    A.convert(root / "raw", tmp_path / "cache", min_count=1, progress=False)
    assert len(A.load(tmp_path / "cache")) > 0 and not (tmp_path / "cache.partial").exists()


def test_a_damaged_cache_is_refused(converted, tmp_path):
    root, _, _ = converted
    import shutil
    shutil.copytree(root / "cache", tmp_path / "c")
    np.save(tmp_path / "c" / "train" / "click.npy", np.zeros(3, dtype=np.int8))
    with pytest.raises(ValueError, match="click.npy has shape"):
        A.load(tmp_path / "c")
    text = (tmp_path / "c" / "manifest.json").read_text()
    (tmp_path / "c" / "manifest.json").write_text(text[:len(text) // 2])     # cut short
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        A.load(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        A.load(tmp_path / "c")
    with pytest.raises(FileExistsError):
        A.convert(root / "raw", root / "cache", progress=False)


# ----------------------------------------------------- hand-written raw files

COMMON_OK = "u1,2,101\x0211\x031.0\x01109_14\x02500\x032.5\n"
LINES_OK = ["1,1,0,u1,2,205\x0277\x031\x01210\x0290\x031",
            "2,0,0,u1,1,205\x0278\x031"]


def _write(tmp_path, skeleton_lines, common=COMMON_OK):
    src = tmp_path / "raw"
    src.mkdir()
    (src / A.SKELETON.format("train")).write_text("\n".join(skeleton_lines) + "\n")
    (src / A.COMMON.format("train")).write_text(common)
    return src


BAD_LINES = {
    "too few columns": ("3,1,0,u1,205\x0277\x031", "6 comma-separated columns"),
    "click not 0/1": ("3,2,0,u1,1,205\x0277\x031", "click or buy is not 0 or 1"),
    "feature_num wrong": ("3,1,0,u1,3,205\x0277\x031", "feature_num does not match"),
    "feature_num not a number": ("3,1,0,u1,x,205\x0277\x031", "feature_num is not an integer"),
    "feature without value": ("3,1,0,u1,1,205\x0277", "not field\\\\x02id\\\\x03value"),
    "id not a number": ("3,1,0,u1,1,205\x02abc\x031", "id or value is not a number"),
    "value NaN": ("3,1,0,u1,1,205\x0277\x03nan", "NaN or infinite"),
    "negative id": ("3,1,0,u1,1,205\x02-4\x031", "negative"),
    "bad field name": ("3,1,0,u1,1,ab\x0277\x031", "not a field id"),
    # One feature lacks its \x03, the next has two: the totals still match.
    "separators misplaced": ("3,1,0,u1,2,205\x0277\x01206\x0278\x031\x031",
                             "not field\\\\x02id\\\\x03value"),
    "field with an empty part": ("3,1,0,u1,1,_205\x0277\x031", "not a field id"),
    "id beyond int64": ("3,1,0,u1,1,205\x0299999999999999999999\x031", "not below 2\\*\\*40"),
    "separators swapped": ("3,1,0,u1,1,205\x031\x0277", "not field\\\\x02id\\\\x03value"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_malformed_line_stops_with_file_and_line_number(case, tmp_path):
    line, message = BAD_LINES[case]
    src = _write(tmp_path, LINES_OK + [line] + LINES_OK)
    with pytest.raises(A.MalformedLine, match=r"sample_skeleton_train.csv:3: .*" + message):
        A.convert(src, tmp_path / "out", min_count=1, progress=False)
    assert not (tmp_path / "out").exists()
    report = A.convert(src, tmp_path / "out", min_count=1, progress=False, skip_malformed=True)
    assert report["splits"]["train"]["malformed_lines"] == 1
    assert report["splits"]["train"]["rows_kept"] == 4


def test_malformed_common_features_and_duplicate_index(tmp_path):
    src = _write(tmp_path, LINES_OK, common=COMMON_OK + "u2,1,101\x0212\n")
    with pytest.raises(A.MalformedLine, match="common_features_train.csv:2: "):
        A.convert(src, tmp_path / "out", progress=False)
    (src / A.COMMON.format("train")).write_text(COMMON_OK + "u1,1,101\x0299\x031\n"
                                                 + "u2,1,101\x0212\x031\n")
    with pytest.raises(A.MalformedLine, match=":2: common_feature_index 'u1' occurs twice"):
        A.convert(src, tmp_path / "out", progress=False)
    # Skipped, the duplicate is counted and the first line with the index is used.
    report = A.convert(src, tmp_path / "out", min_count=1, progress=False, skip_malformed=True)
    assert report["splits"]["train"]["duplicate_common_index_lines"] == 1
    assert list(A.vocabulary(tmp_path / "out", "101")) == [11]


def test_invalid_rows_and_missing_common_index_are_dropped_and_counted(tmp_path):
    src = _write(tmp_path, LINES_OK + ["3,0,1,u1,1,205\x0277\x031",      # buy without click
                                       "4,1,1,nope,1,205\x0277\x031"])   # unknown request
    report = A.convert(src, tmp_path / "out", min_count=1, progress=False)
    s = report["splits"]["train"]
    assert (s["invalid_rows"], s["missing_common_index_rows"], s["rows_kept"]) == (1, 1, 2)
    ds = A.load(tmp_path / "out")
    assert ds.field_names == ("101", "205") and list(ds.bags) == ["109_14", "210"]
    o, ids, w = ds.bags["210"]
    assert list(o) == [0, 1, 1] and list(w) == [1.0]            # row 2 has an empty bag
    assert list(ds.bags["109_14"][2]) == [2.5, 2.5]             # shared by both rows


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample_skeleton_train.csv"):
        A.convert(tmp_path, tmp_path / "out", progress=False)


def test_the_command_line_simulates_and_converts(tmp_path, capsys):
    from esmm_np.cli import main
    assert main(["aliccp", "simulate", str(tmp_path / "raw"), "--train", "400", "--test", "100"]) == 0
    assert main(["aliccp", "convert", str(tmp_path / "raw"), str(tmp_path / "out"),
                 "--min-count", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train: 400 lines read, 397 rows kept, 3 invalid" in out
    assert len(A.load(tmp_path / "out", "test")) == 97
    with open(tmp_path / "raw" / A.SKELETON.format("train"), "a") as fh:
        fh.write("401,1,0,train000000000000,1,205\x0277\n")
    assert main(["aliccp", "convert", str(tmp_path / "raw"), str(tmp_path / "out2"), "--quiet"]) == 2
    assert "sample_skeleton_train.csv:401:" in capsys.readouterr().err


def test_experiment_runs_on_a_converted_fixture(converted, tmp_path, capsys):
    """`esmm-np experiment --data DIR --seeds 0`: every method trains on the bags; the
    metrics that need the true CVR are reported as not available, never as numbers."""
    from esmm_np.cli import main
    root, expected, _ = converted
    out = tmp_path / "results"
    assert main(["experiment", "--data", str(root / "cache"), "--seeds", "0", "--quick",
                 "--no-sweep", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ESMM |" in printed and "n/a" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["world"]["n_train"] == len(expected["train"]["click"])
    assert result["world"]["n_test"] == len(expected["test"]["click"])
    for method, runs in result["runs"].items():
        scores = runs[0]
        for needs_truth in ("cvr_auc_entire", "cvr_soft_auc_entire", "cvr_soft_auc_clicked",
                            "pcvr_bias_unclicked"):
            assert scores[needs_truth] is None, (method, needs_truth)
        assert scores["ctcvr_auc"] is not None and 0 < scores["ctcvr_auc"] < 1
    assert 0 < result["runs"]["ESMM"][0]["cvr_auc_clicked"] < 1


def test_small_join_blocks_give_the_same_cache(converted, tmp_path, monkeypatch):
    """Blocks of a few rows, or of fewer ids than one long row holds, change nothing."""
    root, _, _ = converted
    monkeypatch.setattr(A, "_JOIN_ROWS", 7)
    monkeypatch.setattr(A, "_JOIN_IDS", 20)
    A.convert(root / "raw", tmp_path / "small", min_count=1, progress=False)
    for split in ("train", "test"):
        a, b = A.load(root / "cache", split), A.load(tmp_path / "small", split)
        np.testing.assert_array_equal(a.X, b.X)
        for f in a.bags:
            for x, y in zip(a.bags[f], b.bags[f]):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("min_count", [1.5, True, "3", float("nan")])
def test_min_count_must_be_an_integer(min_count, tmp_path):
    src = _write(tmp_path, LINES_OK)
    with pytest.raises(TypeError, match="min_count must be an integer"):
        A.convert(src, tmp_path / "out", min_count=min_count, progress=False)
    assert not (tmp_path / "out.partial").exists()


def test_overwrite_replaces_only_a_cache(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    src = _write(data, LINES_OK)                          # data/raw holds the raw files
    with pytest.raises(ValueError, match="holds the source files"):
        A.convert(src, data, min_count=1, progress=False, overwrite=True)
    with pytest.raises(ValueError, match="holds the source files"):
        A.convert(src, src, min_count=1, progress=False, overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    (tmp_path / "afile").write_text("keep me")
    for target in ("notes", "afile"):
        with pytest.raises(ValueError, match="not an esmm_np Ali-CCP cache"):
            A.convert(src, tmp_path / target, min_count=1, progress=False, overwrite=True)
    assert (src / A.SKELETON.format("train")).exists()
    assert (tmp_path / "notes" / "mine.txt").read_text() == (tmp_path / "afile").read_text()
    assert not (tmp_path / "notes.partial").exists() and not (data.with_name("data.partial")).exists()
    A.convert(src, tmp_path / "cache", min_count=1, progress=False)
    A.convert(src, tmp_path / "cache", min_count=1, progress=False, overwrite=True)   # a cache: fine


@pytest.mark.parametrize("lines, message", [
    (["3,0,1,u1,1,205\x0277\x031"], "no rows kept"),                   # only an invalid row
    (["3,1,0,zz,1,205\x0277\x031"], "no rows kept"),                   # common index missing
    (["3,1,0,u1,2,205\x0277\x031\x01205\x0278\x031"], "no single-valued field"),
])
def test_a_conversion_that_would_give_an_unloadable_cache_stops(lines, message, tmp_path):
    common = "u1,2,109_14\x0211\x031.0\x01109_14\x02500\x032.5\n"   # a bag field only
    src = _write(tmp_path, lines, common)
    with pytest.raises(ValueError, match=message):
        A.convert(src, tmp_path / "out", min_count=1, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()



def test_lines_without_any_feature_are_not_a_crash(tmp_path):
    # No field seen in the first chunk (counting per-field ids reshaped by 0 fields).
    src = _write(tmp_path, ["1,1,0,u2,0,", "2,0,0,u2,0,"], common="u2,0,\n")
    with pytest.raises(ValueError, match="no single-valued field"):
        A.convert(src, tmp_path / "out", min_count=1, progress=False)


def test_min_count_counts_occurrences_not_rows(tmp_path):
    # Field 301's id 7 is in one row only, twice in its bag: with min_count=2 it is kept.
    src = _write(tmp_path, ["1,1,0,u1,3,205\x0277\x031\x01301\x027\x031\x01301\x027\x031",
                            "2,0,0,u1,2,205\x0277\x031\x01301\x028\x031"])
    A.convert(src, tmp_path / "out", min_count=2, progress=False)
    assert A.vocabulary(tmp_path / "out", "301").tolist() == [7]
    assert A.load(tmp_path / "out").bags["301"][1].tolist() == [1, 1, 0]
