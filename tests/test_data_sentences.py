"""Bad input to the data layer gets one sentence naming the problem (issue 18).

Each probe here failed before with a bare traceback (TypeError from a
comparison, MemoryError from NumPy, UnicodeDecodeError without a line),
ran for minutes, or was silently taken as true.
"""

import gzip
import time

import numpy as np
import pytest

import esmm_np
from esmm_np.data import Dataset, describe
from esmm_np.data.simulator import TooLarge, memory_needed   # re-exported from esmm_np.data.knobs


@pytest.mark.parametrize("knob, value", [("ctr", "0.1"), ("rho", "0.5"), ("cvr", [0.1]),
                                         ("signal", np.array([1.0])), ("confounder", True),
                                         ("group_share", "half")])
def test_simulate_refuses_knobs_that_are_not_numbers(knob, value):
    with pytest.raises(TypeError, match=f"{knob} must be a number, got"):
        esmm_np.simulate(100, **{knob: value})


def test_simulate_refuses_a_preset_that_is_not_a_name():
    with pytest.raises(ValueError, match=r"preset must be one of .* \(a list\)"):
        esmm_np.simulate(100, preset=["paper"])


@pytest.mark.parametrize("knobs", [dict(latent_dim=10**7), dict(n_users=10**10),
                                   dict(n_items=2**31), dict(n_impressions=10**13)])
def test_a_world_too_large_for_memory_is_refused_up_front_with_its_size(knobs):
    n = knobs.pop("n_impressions", 100)
    start = time.perf_counter()
    with pytest.raises(TooLarge, match=r"would need about [\d,.]+ GiB of memory, mostly for"):
        esmm_np.simulate(n, **knobs)
    assert time.perf_counter() - start < 5      # refused before any work (was: minutes)


def test_the_memory_estimate_is_small_for_the_presets():
    for n_users, n_items in ((4000, 3000), (20000, 20000)):
        need, _ = memory_needed(10**6, n_users, n_items, 100, 20, 8, 0, 4)
        assert need < 2**30


def test_describe_counts_ids_of_a_huge_field_without_a_huge_table():
    ds = Dataset(X=np.array([[5], [2**31 - 2], [5]]), click=[1, 0, 0], conversion=[0, 0, 0],
                 field_dims=[2**31 - 1])
    assert describe(ds)["ids_seen"] == {"field_0": 2}


CSV = "click,conversion,user\n1,0,u1\n0,0,u2\n1,1,u1\n"


@pytest.mark.parametrize("encoding, what", [("utf-16", "UTF-16"), ("latin-1", "Latin-1")])
def test_read_csv_names_the_file_line_and_encoding(tmp_path, encoding, what):
    path = tmp_path / "log.csv"
    text = CSV + "0,0,Zürich\n" if encoding == "latin-1" else CSV
    path.write_bytes(text.encode(encoding))
    line = 5 if encoding == "latin-1" else 1
    with pytest.raises(ValueError, match=rf"log.csv:{line}: the file is .*{what}"):
        esmm_np.read_csv(path)


def test_read_csv_names_a_gzip_file(tmp_path):
    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    with pytest.raises(ValueError, match=r"log.csv.gz:1: the file is a gzip-compressed file"):
        esmm_np.read_csv(path)


def test_read_csv_names_a_binary_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"model.bin:\d+: the file is "):
        esmm_np.read_csv(path)


def test_read_csv_refuses_nul_bytes(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(CSV + "0,0,u\x003\n")            # was: read as the user 'u\x003'
    with pytest.raises(ValueError, match=r"log.csv:5: the line holds a NUL byte"):
        esmm_np.read_csv(path)


@pytest.mark.parametrize("option, value", [("skip_malformed", "no"), ("skip_malformed", 1),
                                           ("delimiter", ",,"), ("click", 0)])
def test_read_csv_refuses_options_of_the_wrong_type(tmp_path, option, value):
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    with pytest.raises(TypeError, match=option):
        esmm_np.read_csv(path, **{option: value})    # skip_malformed="no" was taken as true
