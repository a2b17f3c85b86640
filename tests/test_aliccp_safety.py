"""Ali-CCP: esmm_np touches only what it made, and reads only what its cache holds.

Each test is one probe of issue 18: before, the call deleted, overwrote or
opened a file esmm_np did not make, or failed with a bare traceback.
"""

import json
import os
import shutil

import numpy as np
import pytest

from esmm_np.data import aliccp as A


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    A.write_raw(root / "raw", 300, 100, seed=5)
    A.convert(root / "raw", root / "cache", min_count=1, progress=False)
    return root


def _copy(cache, tmp_path):
    shutil.copytree(cache / "cache", tmp_path / "c")
    return tmp_path / "c"


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


# --------------------------------------------------------------- convert

def test_convert_never_deletes_a_user_folder_named_out_partial(cache, tmp_path):
    mine = tmp_path / "out.partial"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    with pytest.raises(FileExistsError, match="esmm_np did not make it"):
        A.convert(cache / "raw", tmp_path / "out", min_count=1, progress=False)
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert not (tmp_path / "out").exists()


def test_convert_clears_only_its_own_marked_work_folder(cache, tmp_path):
    ours = tmp_path / "out.partial"
    ours.mkdir()
    (ours / A.PARTIAL_MARK).write_text("")         # what an interrupted run leaves
    A.convert(cache / "raw", tmp_path / "out", min_count=1, progress=False)
    assert not ours.exists() and len(A.load(tmp_path / "out")) > 0
    assert not (tmp_path / "out" / A.PARTIAL_MARK).exists()


def test_convert_accepts_an_existing_empty_output_folder(cache, tmp_path):
    (tmp_path / "out").mkdir()                     # the user ran mkdir first
    A.convert(cache / "raw", tmp_path / "out", min_count=1, progress=False)
    assert len(A.load(tmp_path / "out")) > 0


def test_overwrite_refuses_a_folder_whose_manifest_is_not_ours(cache, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text('{"name": "my project"}')
    with pytest.raises(ValueError, match="not an esmm_np Ali-CCP cache"):
        A.convert(cache / "raw", tmp_path / "out", min_count=1, progress=False, overwrite=True)
    assert (tmp_path / "out" / "manifest.json").read_text() == '{"name": "my project"}'


@pytest.mark.parametrize("option", ["skip_malformed", "progress", "overwrite"])
def test_convert_refuses_options_given_as_strings(cache, tmp_path, option):
    with pytest.raises(TypeError, match=f"{option} must be True or False"):
        A.convert(cache / "raw", tmp_path / "out", **{option: "no"})
    assert not (tmp_path / "out.partial").exists()


# --------------------------------------------------------------- load

def test_a_manifest_path_outside_the_cache_is_never_opened(cache, tmp_path):
    c = _copy(cache, tmp_path)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((3, 4), dtype=np.int32))

    def escape(m):
        files = m["splits"]["train"]["files"]
        files["../../secret"] = files.pop("X")
    _edit_manifest(c, escape)
    with pytest.raises(ValueError, match="not a plain cache file name"):
        A.load(c)


def test_a_cache_file_linked_outside_the_cache_is_refused(cache, tmp_path):
    c = _copy(cache, tmp_path)
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(c / "train" / "click.npy", outside)
    (c / "train" / "click.npy").unlink()
    os.symlink(outside, c / "train" / "click.npy")
    with pytest.raises(ValueError, match="leads outside the cache"):
        A.load(c)


def test_a_truncated_cache_file_is_named_before_mapping(cache, tmp_path):
    c = _copy(cache, tmp_path)
    path = c / "train" / "X.npy"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 40])        # was: 'mmap length is greater than file size'
    with pytest.raises(ValueError, match=r"X.npy is .* bytes, but .* need .*cut short"):
        A.load(c)


@pytest.mark.parametrize("key", ["splits", "single_fields", "bag_fields", "vocabulary_sizes",
                                 "min_count"])
def test_a_manifest_missing_a_key_is_named(cache, tmp_path, key):
    c = _copy(cache, tmp_path)
    _edit_manifest(c, lambda m: m.pop(key))        # was: KeyError
    with pytest.raises(ValueError, match=f"has no '{key}'"):
        A.load(c)


def test_a_manifest_file_entry_missing_is_named(cache, tmp_path):
    c = _copy(cache, tmp_path)
    _edit_manifest(c, lambda m: m["splits"]["train"]["files"].pop("click"))
    with pytest.raises(ValueError, match="lists no file 'click'"):
        A.load(c)


def test_a_cache_of_the_old_format_asks_to_convert_again(cache, tmp_path):
    c = _copy(cache, tmp_path)
    _edit_manifest(c, lambda m: m.update(format="esmm_np.aliccp/1"))
    with pytest.raises(ValueError, match="convert the raw files again"):
        A.load(c)


def test_vocabulary_refuses_a_field_name_that_is_a_path(cache):
    with pytest.raises(ValueError, match="field must be an Ali-CCP field id"):
        A.vocabulary(cache / "cache", "../../etc/passwd")


# --------------------------------------------------------------- write_raw

def test_simulate_refuses_a_folder_with_earlier_files_then_replaces_all(tmp_path):
    src = tmp_path / "raw"
    A.write_raw(src, 200, 50, seed=1)
    before = (src / A.SKELETON.format("test")).read_bytes()
    with pytest.raises(FileExistsError, match="replace=True"):
        A.write_raw(src, 0, 80, seed=2)            # was: test files replaced, train files kept
    assert (src / A.SKELETON.format("test")).read_bytes() == before
    A.write_raw(src, 0, 80, seed=2, replace=True)
    assert not (src / A.SKELETON.format("train")).exists()       # no mix of two worlds
    assert not (src / A.COMMON.format("train")).exists()
    assert len((src / A.SKELETON.format("test")).read_text().splitlines()) == 80
    assert not [p for p in os.listdir(src) if p.endswith(".partial")]


def test_simulate_never_replaces_raw_files_it_did_not_write(tmp_path):
    src = tmp_path / "real"
    src.mkdir()
    (src / A.SKELETON.format("train")).write_text("a user's real download\n")
    with pytest.raises(FileExistsError, match="esmm_np did not write"):
        A.write_raw(src, 100, 0, replace=True)
    assert (src / A.SKELETON.format("train")).read_text() == "a user's real download\n"


def test_the_simulate_command_refuses_and_replaces(tmp_path, capsys):
    from esmm_np.cli import main
    src = str(tmp_path / "raw")
    assert main(["aliccp", "simulate", src, "--train", "100", "--test", "30"]) == 0
    assert main(["aliccp", "simulate", src, "--train", "0", "--test", "30"]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main(["aliccp", "simulate", src, "--train", "100", "--test", "0", "--replace"]) == 0
    assert not (tmp_path / "raw" / A.SKELETON.format("test")).exists()
