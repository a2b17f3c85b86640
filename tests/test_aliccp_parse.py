"""The fast block parse of raw Ali-CCP lines gives exactly what the plain parse gives.

The plain form (esmm_np.data.aliccp_parse.parse_lines) is the reference; the
fast form (parse_block) must either return the same arrays, or None (the
block then goes to the plain form, which names a malformed line).
"""

import numpy as np
import pytest

from esmm_np.data import aliccp as A
from esmm_np.data import aliccp_parse as P


def _flat(x):
    out = []
    for a in x:
        out += _flat(a) if isinstance(a, tuple) else [a]
    return out


def _same(block, kind):
    """Parse ``block`` both ways; True when the fast form took it (and agreed)."""
    fast_fields, plain_fields = P.FieldCodes(), P.FieldCodes()
    fast = P.parse_block(block, kind, fast_fields)
    if fast is None:
        return False
    plain = P.parse_lines(block.split(b"\n")[:-1], kind, plain_fields)
    for a, b in zip(_flat(fast), _flat(plain)):
        assert a.dtype == b.dtype or a.dtype.kind == b.dtype.kind == "S"
        np.testing.assert_array_equal(a, b)
    assert fast_fields.names == plain_fields.names
    return True


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    src = tmp_path_factory.mktemp("parse") / "raw"
    A.write_raw(src, 3000, 0, seed=2, user_bag_len=(1, 12), ad_bag_len=(0, 4),
                n_user_bag_fields=4, request_size=(1, 30), n_extra_fields=3)
    return src


@pytest.mark.parametrize("kind, name", [("skeleton", A.SKELETON), ("common", A.COMMON)])
def test_fast_and_plain_parse_agree_on_simulated_files(raw, kind, name):
    with open(raw / name.format("train"), "rb") as fh:
        blocks = [fh.read()]
    assert _same(blocks[0], kind)                   # the fast form took it, and agreed


def test_fast_and_plain_parse_agree_on_awkward_but_valid_tokens():
    values = [b"0.693147", b"12", b"1.0", b"0.000001", b"123456.789012", b"5", b"2.5"]
    ids = [b"0", b"7", b"007", b"12345678", b"123456789", b"1099511627775"]   # 2**40 - 1
    rng = np.random.default_rng(0)
    lines = []
    for i in range(400):
        k = int(rng.integers(1, 6))
        feats = [b"%s\x02%s\x03%s" % (rng.choice([b"205", b"109_14", b"1", b"853"]),
                                      rng.choice(ids), rng.choice(values)) for _ in range(k)]
        key = b"k" * int(rng.integers(1, 30))        # keys past 24 bytes take the plain gather
        lines.append(b"%d,%d,0,%s,%d,%s" % (i, i % 2, key, k, b"\x01".join(feats)))
    assert _same(b"\n".join(lines) + b"\n", "skeleton")


@pytest.mark.parametrize("value", [b"3.5e2", b"+4", b"-0.5", b".5", b"5.", b"1234567890123456.5"])
def test_values_the_fast_path_does_not_parse_itself_still_match(value):
    block = b"1,1,0,u,2,205\x0277\x031\x01109_14\x0278\x03" + value + b"\n"
    _same(block, "skeleton")                        # taken and equal, or left to the plain form
    (_, _, _), _, (_, _, got) = P.parse_lines(block.split(b"\n")[:-1], "skeleton",
                                              P.FieldCodes())
    assert got[1] == np.float32(float(value))


BAD = [b"3,1,0,u1,205\x0277\x031", b"3,2,0,u1,1,205\x0277\x031", b"3,1,0,u1,3,205\x0277\x031",
       b"3,1,0,u1,x,205\x0277\x031", b"3,1,0,u1,1,205\x0277", b"3,1,0,u1,1,205\x02abc\x031",
       b"3,1,0,u1,1,205\x0277\x03nan", b"3,1,0,u1,1,205\x02-4\x031", b"3,1,0,u1,1,ab\x0277\x031",
       b"3,1,0,u1,2,205\x0277\x01206\x0278\x031\x031", b"3,1,0,u1,1,_205\x0277\x031",
       b"3,1,0,u1,1,205\x0299999999999999999999\x031", b"3,1,0,u1,1,205\x031\x0277",
       b"3,1,0,u1,1,205\x0277\x031\r", b"3,1,0,u\x001,1,205\x0277\x031", b"", b"3,1,0,u1,0,"]


@pytest.mark.parametrize("line", BAD)
def test_the_fast_parse_leaves_every_malformed_line_to_the_plain_form(line):
    good = b"1,1,0,u1,1,205\x0277\x031\n"
    assert P.parse_block(good + line + b"\n" + good, "skeleton", P.FieldCodes()) is None


def test_a_conversion_by_the_plain_form_alone_gives_the_same_cache(raw, tmp_path, monkeypatch):
    A.convert(raw, tmp_path / "fast", min_count=2, progress=False)
    monkeypatch.setattr(P, "parse_block", lambda *args, **kw: None)
    A.convert(raw, tmp_path / "plain", min_count=2, progress=False)
    a, b = A.load(tmp_path / "fast"), A.load(tmp_path / "plain")
    np.testing.assert_array_equal(a.X, b.X)
    for f in a.bags:
        for x, y in zip(a.bags[f], b.bags[f]):
            np.testing.assert_array_equal(x, y)


def test_a_binary_or_utf16_file_is_a_malformed_line_with_its_number(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    (src / A.COMMON.format("train")).write_text("u1,1,101\x0211\x031\n")
    (src / A.SKELETON.format("train")).write_bytes(
        "1,1,0,u1,1,205\x0277\x031\n".encode("utf-16"))
    with pytest.raises(A.MalformedLine, match=r"sample_skeleton_train.csv:1: .*NUL byte"):
        A.convert(src, tmp_path / "out", min_count=1, progress=False)
