"""Ali-CCP, the dataset the ESMM paper released, read into esmm_np.

Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., SIGIR 2018)
stores each split as two files:

- ``sample_skeleton_{train,test}.csv``: one line per impression,
  ``sample_id,click,buy,common_feature_index,feature_num,feature_list``;
- ``common_features_{train,test}.csv``: one line per user request, shared by
  all the impressions of that request,
  ``common_feature_index,feature_num,feature_list``.

A feature list is ``feature_num`` features joined by ``\\x01``, each
``field\\x02feature_id\\x03value``. A field may occur several times in one
line (a user's recent categories, an ad's intention nodes): such fields
become bags of ids (:mod:`esmm_np.data.bags`), the others one id per row.

:func:`convert` reads the raw files once, streaming, and writes a cache of
``.npy`` arrays plus ``manifest.json`` and ``report.json``; :func:`load`
memory-maps the cache as a :class:`~esmm_np.data.Dataset`. :func:`write_raw`
writes files in the raw format from a simulated world, for tests and
benchmarks (this project never downloads the real data). docs/data.md
describes the cache and the measured speed.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .bags import take_bags
from .dataset import Dataset
from ..validate import check_int

SPLITS = ("train", "test")
SKELETON = "sample_skeleton_{}.csv"
COMMON = "common_features_{}.csv"
FORMAT = "esmm_np.aliccp/1"

#: Field code and raw id share one int64 key: field * 2**40 + raw id.
_ID_BITS = 40
_MAX_FIELDS = 1024
_CHUNK_LINES = 32768      # raw lines parsed at once
_JOIN_ROWS = 8192         # at most this many rows (or common lines) are joined at once ...
_JOIN_IDS = 1 << 20       # ... and at most about this many ids (a row can carry hundreds)


def _blocks(lengths_of, n):
    """Consecutive ranges ``(start, stop)`` of ``n`` lines or rows, each of at most
    ``_JOIN_ROWS`` of them and, past the first, at most ``_JOIN_IDS`` ids in all.

    ``lengths_of(start, stop)`` gives the number of ids of each line in the range.
    This keeps the memory of a join step constant, however long the lines are.
    """
    start = 0
    while start < n:
        lens = np.asarray(lengths_of(start, min(start + _JOIN_ROWS, n)), dtype=np.int64)
        fits = int(np.searchsorted(np.cumsum(lens), _JOIN_IDS, side="right"))
        stop = start + max(fits, 1)
        yield start, stop
        start = stop


#: Every byte but the three separators, deleted to see the separators' order.
_NOT_SEPARATOR = bytes(b for b in range(256) if b not in (1, 2, 3))


class MalformedLine(ValueError):
    """A raw line that does not follow the format; the message names the file and line."""


class _Bad(Exception):
    """Internal: a chunk failed the fast checks; re-read it line by line."""


# ------------------------------------------------------------------ parsing

class _Fields:
    """Field names (bytes, e.g. ``b"109_14"``) and their small integer codes."""

    def __init__(self):
        self.code, self.names = {}, []

    def codes(self, tokens):
        get = self.code.get
        out = [get(t, -1) for t in tokens]
        if -1 in out:
            for t in dict.fromkeys(tokens):        # first appearance order
                if t not in self.code:
                    if not all(part.isdigit() for part in t.split(b"_")):
                        raise _Bad(f"field {t[:20]!r} is not a field id like 210 or 109_14")
                    if len(self.names) >= _MAX_FIELDS:
                        raise _Bad(f"more than {_MAX_FIELDS} distinct fields")
                    self.code[t] = len(self.names)
                    self.names.append(t)
            out = [get(t) for t in tokens]
        return np.array(out, dtype=np.int16)


def _parse_features(lists, counts, fields):
    """Parse the feature lists of many lines at once.

    Parameters
    ----------
    lists : list of bytes, one feature list per line
    counts : ndarray of int64, the lines' ``feature_num``
    fields : _Fields

    Returns
    -------
    field (N,) int16, raw id (N,) int64, value (N,) float32, the features of
    all lines in order (line i owns the next ``counts[i]``). Raises _Bad on
    anything malformed.
    """
    for lst, c in zip(lists, counts):
        if (lst.count(b"\x01") + 1 if lst else 0) != c:
            raise _Bad("feature_num does not match the number of features")
    flat = b"\x01".join(lst for lst in lists if lst)
    total = int(counts.sum())
    # The separators alone, in order, must read \x02 \x03 \x01 per feature: equal
    # totals are not enough (one feature's missing \x03 and another's extra one).
    if flat.translate(None, _NOT_SEPARATOR) != (b"\x02\x03\x01" * total)[:-1]:
        raise _Bad("a feature is not field\\x02id\\x03value")
    tokens = []
    if total:
        tokens = flat.replace(b"\x02", b"\x01").replace(b"\x03", b"\x01").split(b"\x01")
    if len(tokens) != 3 * total:
        raise _Bad("a feature is not field\\x02id\\x03value")
    field = fields.codes(tokens[0::3])
    try:
        raw = np.array(tokens[1::3], dtype=np.bytes_).astype(np.int64)
        text = np.array(tokens[2::3], dtype=np.bytes_)
        value = np.ones(len(text))
        other = np.flatnonzero(text != b"1")     # most values are 1: parse only the others
        value[other] = text[other].astype(np.float64)
    except ValueError as e:
        raise _Bad(f"a feature id or value is not a number ({e})") from None
    except OverflowError:
        raise _Bad(f"a feature id is negative or not below 2**{_ID_BITS}") from None
    if total and (raw.min() < 0 or raw.max() >= 1 << _ID_BITS):
        raise _Bad(f"a feature id is negative or not below 2**{_ID_BITS}")
    if not np.isfinite(value).all():
        raise _Bad("a feature value is NaN or infinite")
    return field, raw, value.astype(np.float32)


def _parse_chunk(lines, kind, fields):
    """Parse skeleton (``kind="skeleton"``) or common-feature lines; raises _Bad."""
    ncol = 6 if kind == "skeleton" else 3
    parts = [ln.rstrip(b"\r\n").split(b",", ncol - 1) for ln in lines]
    if any(len(p) != ncol for p in parts):
        raise _Bad(f"a line does not have {ncol} comma-separated columns")
    try:
        counts = np.array([p[-2] for p in parts], dtype=np.bytes_).astype(np.int64)
    except ValueError:
        raise _Bad("feature_num is not an integer") from None
    if (counts < 0).any():
        raise _Bad("feature_num is negative")
    feats = _parse_features([p[-1] for p in parts], counts, fields)
    if kind == "common":
        return [p[0] for p in parts], counts, feats
    try:
        click = np.array([p[1] for p in parts], dtype=np.bytes_).astype(np.int64)
        buy = np.array([p[2] for p in parts], dtype=np.bytes_).astype(np.int64)
    except ValueError:
        raise _Bad("click or buy is not 0 or 1") from None
    if not (np.isin(click, (0, 1)).all() and np.isin(buy, (0, 1)).all()):
        raise _Bad("click or buy is not 0 or 1")
    return (click.astype(np.int8), buy.astype(np.int8), [p[3] for p in parts]), counts, feats


def _read_chunks(path, kind, fields, skip_malformed, stats, progress):
    """Yield parsed chunks of a raw file; malformed lines raise or are counted and skipped."""
    size = max(path.stat().st_size, 1)
    start = last = time.perf_counter()
    line_no = 0
    with open(path, "rb") as fh:
        while True:
            lines = fh.readlines(_CHUNK_LINES * 64)
            if not lines:
                break
            first = line_no + 1
            line_no += len(lines)
            stats["lines_read"] += len(lines)
            try:
                yield _parse_chunk(lines, kind, fields)
            except _Bad:
                good = []
                for i, ln in enumerate(lines):
                    try:
                        _parse_chunk([ln], kind, fields)
                        good.append(ln)
                    except _Bad as e:
                        if not skip_malformed:
                            raise MalformedLine(f"{path}:{first + i}: {e}") from None
                        stats["malformed_lines"] += 1
                if good:
                    yield _parse_chunk(good, kind, fields)
            now = time.perf_counter()
            if progress and now - last > 1.0:
                last = now
                print(f"\r  {path.name}: {line_no:,} lines, {100 * fh.tell() / size:.0f}%, "
                      f"{line_no / (now - start):,.0f} lines/s", end="", file=sys.stderr,
                      flush=True)
    if progress:
        elapsed = time.perf_counter() - start
        print(f"\r  {path.name}: {line_no:,} lines in {elapsed:.1f} s "
              f"({line_no / max(elapsed, 1e-9):,.0f} lines/s)      ", file=sys.stderr, flush=True)


# ---------------------------------------------------- temporary columns

class _Column:
    """An array written in pieces to a raw binary file, read back memory-mapped."""

    def __init__(self, path, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.fh = open(path, "wb")

    def append(self, a):
        np.ascontiguousarray(a, dtype=self.dtype).tofile(self.fh)
        self.n += len(a)

    def read(self):
        """Finish writing; return a reader (slices and index arrays give ndarrays)."""
        self.fh.close()
        return _ColumnReader(self.path, self.dtype, self.n)


class _ColumnReader:
    """Reads a :class:`_Column` back: a slice with a plain file read (so its pages do
    not stay resident), an index array through a read-only memory map."""

    def __init__(self, path, dtype, n):
        self.path, self.dtype, self.n, self.map = path, dtype, n, None

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.n)
            count = max(stop - start, 0)
            if count == 0:
                return np.zeros(0, dtype=self.dtype)
            return np.fromfile(self.path, dtype=self.dtype, count=count,
                               offset=start * self.dtype.itemsize)
        if self.n == 0:
            return np.zeros(np.shape(key), dtype=self.dtype)
        if self.map is None:
            self.map = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n,))
        return self.map[key]

    def all(self):
        return self[0:self.n]


class _NpyWriter:
    """A ``.npy`` file of known shape written front to back in pieces.

    Plain file writes rather than a writable memory map, so the written
    pages do not stay in the process's resident memory.
    """

    def __init__(self, path, dtype, shape):
        self.dtype, self.shape = np.dtype(dtype), tuple(int(d) for d in shape)
        self.left = int(np.prod(self.shape))
        self.fh = open(path, "wb")
        np.lib.format.write_array_header_1_0(
            self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": self.shape})

    def append(self, a):
        a = np.ascontiguousarray(a, dtype=self.dtype)
        self.left -= a.size
        a.tofile(self.fh)

    def close(self):
        self.fh.close()
        if self.left != 0:
            raise RuntimeError(f"{self.fh.name}: {self.left} values short of shape {self.shape}")


class _Counter:
    """Occurrences of each int64 key, merged chunk by chunk; memory grows with distinct keys."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending, self.n_pending = [], 0

    def add(self, keys, weights=None):
        if len(keys) == 0:
            return
        u, inv = np.unique(keys, return_inverse=True)
        c = np.bincount(inv, weights=weights, minlength=len(u)).astype(np.int64)
        self.pending.append((u, c))
        self.n_pending += len(u)
        if self.n_pending > max(len(self.keys), 1 << 18):   # merge when the pending part is large
            self._merge()

    def _merge(self):
        if not self.pending:
            return
        keys = np.concatenate([self.keys] + [u for u, _ in self.pending])
        counts = np.concatenate([self.counts] + [c for _, c in self.pending])
        self.keys, inv = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inv, weights=counts, minlength=len(self.keys)).astype(np.int64)
        self.pending, self.n_pending = [], 0

    def result(self):
        self._merge()
        return self.keys, self.counts


# ------------------------------------------------------------------ pass 1

def _read_split(src, split, tmp, fields, skip_malformed, progress, stats):
    """Parse one split's two files into temporary columns (valid rows only).

    Returns a dict of columns and per-field counts; ``stats`` gets the line
    counts of the report.
    """
    cols = {}
    # Common features: one entry per request, looked up by its index string.
    index = {}
    def column(name, dtype):
        return _Column(tmp / f"{split}.{name}", dtype)

    c_len, c_field = column("c_len", np.int32), column("c_field", np.int16)
    c_raw, c_val = column("c_raw", np.int64), column("c_val", np.float32)
    cstats = {"lines_read": 0, "malformed_lines": 0}
    ones_c = np.zeros(_MAX_FIELDS, dtype=np.int64)   # common lines with exactly one id of a field
    not_one_value = np.zeros(_MAX_FIELDS, dtype=bool)
    for keys, counts, (field, raw, value) in _read_chunks(src / COMMON.format(split), "common",
                                                         fields, skip_malformed, cstats, progress):
        for i, k in enumerate(keys):
            if k in index:
                if not skip_malformed:        # then no line was skipped: c_len.n + i is its line
                    raise MalformedLine(f"{src / COMMON.format(split)}:{c_len.n + i + 1}: "
                                        f"common_feature_index {k.decode(errors='replace')!r} "
                                        "occurs twice")
                cstats["duplicate_common_index"] = cstats.get("duplicate_common_index", 0) + 1
            else:                             # the first line with an index is the one used
                index[k] = c_len.n + i
        c_len.append(counts)
        c_field.append(field)
        c_raw.append(raw)
        c_val.append(value)
        nf = len(fields.names)
        line = np.repeat(np.arange(len(counts)), counts)
        per = np.bincount(line * nf + field, minlength=len(counts) * nf)       # (lines * nf,)
        ones_c[:nf] += (per.reshape(len(counts), nf) == 1).sum(axis=0)
        not_one_value[np.unique(field[value != 1])] = True
    n_common = c_len.n

    s_click, s_buy = column("click", np.int8), column("buy", np.int8)
    s_common, s_len = column("common", np.int64), column("s_len", np.int32)
    s_field, s_raw = column("s_field", np.int16), column("s_raw", np.int64)
    s_val = column("s_val", np.float32)
    sstats = {"lines_read": 0, "malformed_lines": 0}
    refcount = np.zeros(n_common, dtype=np.int64)
    ones_s = np.zeros(_MAX_FIELDS, dtype=np.int64)   # kept rows with exactly one id of a field
    nnz_s = np.zeros(_MAX_FIELDS, dtype=np.int64)
    counter = _Counter()
    invalid = missing = 0
    for (click, buy, ckeys), counts, (field, raw, value) in _read_chunks(
            src / SKELETON.format(split), "skeleton", fields, skip_malformed, sstats, progress):
        code = np.array([index.get(k, -1) for k in ckeys], dtype=np.int64)
        bad = (click == 0) & (buy == 1)            # a conversion without a click
        gone = code < 0                            # no common features for this row
        invalid += int(bad.sum())
        missing += int((gone & ~bad).sum())
        keep = ~bad & ~gone
        line = np.repeat(np.arange(len(counts)), counts)
        fkeep = keep[line]
        field, raw, value, line = field[fkeep], raw[fkeep], value[fkeep], line[fkeep]
        s_click.append(click[keep])
        s_buy.append(buy[keep])
        s_common.append(code[keep])
        s_len.append(counts[keep])
        s_field.append(field)
        s_raw.append(raw)
        s_val.append(value)
        refcount += np.bincount(code[keep], minlength=n_common)
        rows = np.cumsum(keep) - 1                 # kept-row number of each line
        nf = len(fields.names)
        per = np.bincount(rows[line] * nf + field, minlength=int(keep.sum()) * nf)
        if nf:                                     # no field seen yet: nothing to count
            ones_s[:nf] += (per.reshape(-1, nf) == 1).sum(axis=0)
        nnz_s += np.bincount(field, minlength=_MAX_FIELDS)
        not_one_value[np.unique(field[value != 1])] = True
        if split == "train":
            counter.add(field.astype(np.int64) << _ID_BITS | raw)
    cols.update(c_len=c_len.read(), c_field=c_field.read(), c_raw=c_raw.read(),
                c_val=c_val.read(), click=s_click.read(), buy=s_buy.read(),
                common=s_common.read(), s_len=s_len.read(), s_field=s_field.read(),
                s_raw=s_raw.read(), s_val=s_val.read())
    n_rows = len(cols["click"])
    # Each common feature occurs once in every kept row of its request; walk the
    # common lines in blocks so that no array spans all their features.
    nnz_c = np.zeros(_MAX_FIELDS, dtype=np.int64)
    in_common = np.zeros(_MAX_FIELDS, dtype=bool)
    c_pos = 0
    for q0, q1 in _blocks(lambda a, b: cols["c_len"][a:b], n_common):
        lens = np.asarray(cols["c_len"][q0:q1], dtype=np.int64)
        w = np.repeat(refcount[q0:q1], lens)                              # (features,)
        f = np.asarray(cols["c_field"][c_pos:c_pos + len(w)])
        nnz_c += np.bincount(f, weights=w, minlength=_MAX_FIELDS).astype(np.int64)
        in_common |= np.bincount(f, minlength=_MAX_FIELDS) > 0
        if split == "train":
            counter.add(f.astype(np.int64) << _ID_BITS | cols["c_raw"][c_pos:c_pos + len(w)],
                        weights=w)
        c_pos += len(w)
    stats[split] = {
        "skeleton_lines_read": sstats["lines_read"], "common_lines_read": cstats["lines_read"],
        "rows_kept": n_rows, "invalid_rows": invalid, "missing_common_index_rows": missing,
        "malformed_lines": sstats["malformed_lines"] + cstats["malformed_lines"],
        "duplicate_common_index_lines": cstats.get("duplicate_common_index", 0),
    }
    in_skeleton = nnz_s > 0
    # A field is single-valued when every row has exactly one id of it with value 1.
    single = np.zeros(_MAX_FIELDS, dtype=bool)
    single |= in_skeleton & ~in_common & (ones_s == n_rows)
    single |= in_common & ~in_skeleton & (ones_c == n_common)
    single &= ~not_one_value
    return cols, {"nnz": nnz_s + nnz_c, "single": single, "counter": counter}


# ------------------------------------------------------------------ pass 2

def _encode(keys, vkeys, vcodes):
    """Vocabulary codes of int64 keys (``field << 40 | raw id``); 0 when out of vocabulary."""
    if len(vkeys) == 0:
        return np.zeros(len(keys), dtype=np.int32)
    at = np.minimum(np.searchsorted(vkeys, keys), len(vkeys) - 1)
    return np.where(vkeys[at] == keys, vcodes[at], 0).astype(np.int32)


def _sort_common(cols, schema, tmp, split):
    """Encode every common feature once, and order each line's features by field.

    Returns the line lengths (in memory: one number per request), readers of
    the codes and values in the new order, and a reader of each line's
    field starts: entry ``line * (nf + 1) + f`` is where field ``f``'s run
    begins within the line (``nf`` fields; entry ``nf`` is the line length).
    """
    nf = len(schema["names"])
    c_lens = cols["c_len"].all().astype(np.int64)                    # (common lines,)
    codes = _Column(tmp / f"{split}.cs_code", np.int32)
    values = _Column(tmp / f"{split}.cs_val", np.float32)
    starts = _Column(tmp / f"{split}.cs_start", np.int32)
    pos = 0
    for q0, q1 in _blocks(lambda a, b: c_lens[a:b], len(c_lens)):
        lens = c_lens[q0:q1]
        total = int(lens.sum())
        line = np.repeat(np.arange(len(lens)), lens)                  # (features,)
        field = cols["c_field"][pos:pos + total].astype(np.int64)
        order = np.lexsort((field, line))                             # by line, then field; stable
        keys = field[order] << _ID_BITS | cols["c_raw"][pos:pos + total][order]
        codes.append(_encode(keys, schema["vkeys"], schema["vcodes"]))
        values.append(cols["c_val"][pos:pos + total][order])
        counts = np.bincount(line * nf + field, minlength=len(lens) * nf).reshape(len(lens), nf)
        first = np.zeros((len(lens), nf + 1), dtype=np.int32)
        np.cumsum(counts, axis=1, out=first[:, 1:])
        starts.append(first.ravel())
        pos += total
    return c_lens, codes.read(), values.read(), starts.read()


def _encode_split(cols, out, schema, stats, tmp):
    """Join each kept row with its common features and write the encoded arrays.

    Each row's bag of a field is its skeleton ids of that field, then its
    request's, each in file order. Common features were encoded once per
    request (:func:`_sort_common`), so the join only gathers runs of codes.
    """
    n = len(cols["click"])
    nf = len(schema["names"])
    single, bag = schema["single"], schema["bag"]          # lists of field codes
    vkeys, vcodes = schema["vkeys"], schema["vcodes"]
    out.mkdir()
    X = _NpyWriter(out / "X.npy", np.int32, (n, len(single)))
    click = _NpyWriter(out / "click.npy", np.int8, (n,))
    conversion = _NpyWriter(out / "conversion.npy", np.int8, (n,))
    nnz = schema["nnz"]
    bag_out = {}
    for f in bag:
        name = schema["names"][f]
        parts = (("offsets", np.int64, n + 1), ("ids", np.int32, nnz[f]),
                 ("weights", np.float32, nnz[f]))
        bag_out[f] = [_NpyWriter(out / f"bag_{name}_{part}.npy", dt, (shape,))
                      for part, dt, shape in parts]
        bag_out[f][0].append(np.zeros(1))
    known = np.zeros(nf, dtype=bool)
    known[single + bag] = True
    c_lens, cs_code, cs_val, cs_start = _sort_common(cols, schema, tmp, out.name)
    c_start = np.cumsum(c_lens) - c_lens                                 # (common lines,)
    pos = {f: 0 for f in bag}
    b = 0                                          # skeleton features read so far
    single_missing = single_extra = unknown = 0
    def joined_lengths(a, b):
        return cols["s_len"][a:b].astype(np.int64) + c_lens[cols["common"][a:b]]

    for r0, r1 in _blocks(joined_lengths, n):
        m = r1 - r0
        click.append(cols["click"][r0:r1])
        conversion.append(cols["buy"][r0:r1])
        s_len = cols["s_len"][r0:r1].astype(np.int64)
        a, b = b, b + int(s_len.sum())
        code = cols["common"][r0:r1]                                      # (m,) request of each row
        rel = cs_start[(code[:, None] * (nf + 1) + np.arange(nf + 1)).ravel()]
        rel = rel.reshape(m, nf + 1).astype(np.int64)                     # (m, nf + 1)
        n_common = rel[:, 1:] - rel[:, :-1]                               # (m, nf) ids per field
        base = c_start[code]                                              # (m,) line start
        s_row = np.repeat(np.arange(m), s_len)
        s_field = cols["s_field"][a:b].astype(np.int64)
        s_code = _encode(s_field << _ID_BITS | cols["s_raw"][a:b], vkeys, vcodes)
        s_val = cols["s_val"][a:b]
        order = np.lexsort((s_row, s_field))                              # by field, then row
        s_row, s_field, s_code, s_val = s_row[order], s_field[order], s_code[order], s_val[order]
        s_bounds = np.searchsorted(s_field, np.arange(nf + 1))
        unknown += int((~known[s_field]).sum()) + int(n_common[:, ~known].sum())
        x_chunk = np.zeros((m, len(single)), dtype=np.int32)             # missing: id 0
        for j, f in enumerate(single):
            lo, hi = s_bounds[f], s_bounds[f + 1]
            r = s_row[lo:hi]
            has_c = n_common[:, f] > 0
            x_chunk[has_c, j] = cs_code[base[has_c] + rel[has_c, f]]
            first = np.ones(hi - lo, dtype=bool)
            first[1:] = r[1:] != r[:-1]
            x_chunk[r[first], j] = s_code[lo:hi][first]                   # a skeleton id wins
            total = np.bincount(r, minlength=m) + n_common[:, f]
            single_missing += int((total == 0).sum())
            single_extra += int(np.maximum(total - 1, 0).sum())
        for f in bag:
            lo, hi = s_bounds[f], s_bounds[f + 1]
            r = s_row[lo:hi]
            n_s, n_c = np.bincount(r, minlength=m), n_common[:, f]        # (m,), (m,)
            n_out = n_s + n_c
            out_start = np.cumsum(n_out) - n_out
            ids = np.empty(int(n_out.sum()), dtype=np.int32)
            weights = np.empty(len(ids), dtype=np.float32)
            # Skeleton ids first in each row's bag ...
            at = out_start[r] + np.arange(hi - lo) - (np.cumsum(n_s) - n_s)[r]
            ids[at], weights[at] = s_code[lo:hi], s_val[lo:hi]
            # ... then the request's, gathered as one run per row.
            rank = np.arange(int(n_c.sum())) - np.repeat(np.cumsum(n_c) - n_c, n_c)
            src = np.repeat(base + rel[:, f], n_c) + rank
            at = np.repeat(out_start + n_s, n_c) + rank
            ids[at], weights[at] = cs_code[src], cs_val[src]
            w_off, w_ids, w_weights = bag_out[f]
            w_off.append(pos[f] + np.cumsum(n_out))
            w_ids.append(ids)
            w_weights.append(weights)
            pos[f] += len(ids)
        X.append(x_chunk)
    for writer in [X, click, conversion] + [a for v in bag_out.values() for a in v]:
        writer.close()
    stats.update(single_field_missing=single_missing, single_field_extra_ids=single_extra,
                 unknown_field_ids=unknown)
    files = {"X": {"shape": [n, len(single)], "dtype": "int32"},
             "click": {"shape": [n], "dtype": "int8"},
             "conversion": {"shape": [n], "dtype": "int8"}}
    for f in bag:
        name = schema["names"][f]
        files[f"bag_{name}_offsets"] = {"shape": [n + 1], "dtype": "int64"}
        files[f"bag_{name}_ids"] = {"shape": [int(nnz[f])], "dtype": "int32"}
        files[f"bag_{name}_weights"] = {"shape": [int(nnz[f])], "dtype": "float32"}
    return files


# -------------------------------------------------------------- public API

def convert(src_dir, out_dir, min_count=10, *, skip_malformed=False, progress=True,
            overwrite=False):
    """Convert raw Ali-CCP files into an esmm_np cache.

    Parameters
    ----------
    src_dir : path
        Folder with ``sample_skeleton_train.csv`` and ``common_features_train.csv``,
        and optionally the two ``_test`` files.
    out_dir : path
        The cache to create. It appears only when the conversion has
        finished (everything is written to ``out_dir.partial`` and renamed),
        so an interrupted run leaves nothing :func:`load` accepts.
    min_count : int >= 1
        Ids of a field seen fewer than ``min_count`` times in the kept
        training rows (counted occurrence by occurrence, as docs/data.md
        says: an id twice in one bag counts twice) share the field's
        out-of-vocabulary id 0 (so does a single-valued
        field missing from a row). The vocabularies come from the training
        split only.
    skip_malformed : bool
        False (default): a malformed line stops the conversion with its file
        and line number (:class:`MalformedLine`). True: count and skip it.
    progress : bool
        Print lines read and lines per second to stderr while reading.
    overwrite : bool
        Replace an existing ``out_dir`` that is an earlier cache (or an
        empty folder); any other folder, a file, or a folder holding
        ``src_dir`` is refused before any work.

    Returns
    -------
    report : dict, also written to ``out_dir/report.json``: lines read, rows
    kept, invalid rows (click = 0 and buy = 1, dropped), rows whose
    common_feature_index is missing from the common-features file (dropped),
    malformed lines, per-field vocabulary sizes before and after ``min_count``,
    which fields are single- and multi-valued, and the time taken.
    """
    start = time.perf_counter()
    src, out = Path(src_dir), Path(out_dir)
    min_count = check_int(min_count, "min_count", low=1)
    splits = [s for s in SPLITS if (src / SKELETON.format(s)).exists()]
    for s in splits:
        if not (src / COMMON.format(s)).exists():
            raise FileNotFoundError(f"{src / SKELETON.format(s)} has no {COMMON.format(s)} "
                                    "beside it")
    if "train" not in splits:
        raise FileNotFoundError(f"no {SKELETON.format('train')} in {src} (the vocabularies "
                                "are built on the training split)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise ValueError(f"{out} holds the source files {src}; the cache needs a folder of its own")
    if out.exists() and not (out.is_dir() and ((out / "manifest.json").exists()
                                               or not any(out.iterdir()))):
        # overwrite deletes the folder: only an earlier cache (or an empty folder) goes
        raise ValueError(f"{out} is not an esmm_np Ali-CCP cache (no manifest.json); "
                         "overwrite replaces only a cache or an empty folder")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)                   # debris of an interrupted run
    partial.mkdir(parents=True)
    tmp = partial / "tmp"
    tmp.mkdir()
    fields, stats, cols, per = _Fields(), {}, {}, {}
    for s in splits:
        if progress:
            print(f"reading the {s} split", file=sys.stderr, flush=True)
        cols[s], per[s] = _read_split(src, s, tmp, fields, skip_malformed, progress, stats)
    train = per["train"]
    names = [f.decode() for f in fields.names]
    # Fields in the order of their ids (101, 109_14, 110_14, 121, ...), whatever the files' order.
    seen = sorted(np.flatnonzero(train["nnz"][:len(names)] > 0),
                  key=lambda f: tuple(int(p) for p in names[f].split("_")))
    single = [int(f) for f in seen if train["single"][f]]
    bag = [int(f) for f in seen if not train["single"][f]]
    problem = ("no rows kept" if stats["train"]["rows_kept"] == 0 else
               "no single-valued field (esmm_np's models need one)" if not single else None)
    if problem:                  # the cache could not be loaded: stop, leaving nothing
        shutil.rmtree(partial)
        raise ValueError(f"{src / SKELETON.format('train')}: {problem}; report {stats['train']}")
    # Vocabularies: per field, the kept raw ids in ascending order get codes 1, 2, ...
    keys, counts = train["counter"].result()
    kept = keys[counts >= int(min_count)]
    kept_field = kept >> _ID_BITS
    vcodes = np.zeros(len(kept), dtype=np.int64)
    vocab = {}
    for f in seen:
        lo, hi = np.searchsorted(kept_field, [f, f + 1])
        vcodes[lo:hi] = np.arange(1, hi - lo + 1)
        distinct = int(np.count_nonzero((keys >> _ID_BITS) == f))
        vocab[names[f]] = {"distinct_ids": distinct, "kept_ids": int(hi - lo),
                           "size": int(hi - lo) + 1}
        np.save(partial / f"vocab_{names[f]}.npy", kept[lo:hi] & ((1 << _ID_BITS) - 1))
    schema = {"single": single, "bag": bag, "names": names, "vkeys": kept, "vcodes": vcodes}
    manifest = {"format": FORMAT, "min_count": int(min_count), "splits": {},
                "single_fields": [names[f] for f in single], "bag_fields": [names[f] for f in bag],
                "vocabulary_sizes": {names[f]: vocab[names[f]]["size"] for f in seen}}
    for s in splits:
        schema["nnz"] = per[s]["nnz"]
        files = _encode_split(cols[s], partial / s, schema, stats[s], tmp)
        manifest["splits"][s] = {"rows": len(cols[s]["click"]), "files": files}
        cols[s] = None
    shutil.rmtree(tmp)
    elapsed = time.perf_counter() - start
    lines = sum(stats[s]["skeleton_lines_read"] for s in splits)
    report = {"source": str(src), "min_count": int(min_count), "splits": stats,
              "single_fields": manifest["single_fields"], "bag_fields": manifest["bag_fields"],
              "vocabulary": vocab, "seconds": round(elapsed, 3),
              "skeleton_lines_per_second": round(lines / max(elapsed, 1e-9))}
    (partial / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # The manifest is written last: a cache without it is never accepted.
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return report


def load(out_dir, split="train"):
    """Memory-map one split of a converted cache as a :class:`~esmm_np.data.Dataset`.

    Parameters
    ----------
    out_dir : path, a folder written by :func:`convert`
    split : {"train", "test"}

    Returns
    -------
    Dataset with the single-valued fields in ``X`` (``field_names`` are the
    Ali-CCP field ids, ``field_dims`` the vocabulary sizes), the multi-valued
    ones in ``bags`` (keyed by field id, e.g. ``"210"``), ``click``,
    ``conversion`` (Ali-CCP's ``buy``), rows in file order, and the
    manifest in ``info``. The arrays are memory-mapped read-only.
    """
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{out} is not a finished esmm_np Ali-CCP cache (no manifest.json)"
                                + ("; a conversion was interrupted there"
                                   if out.with_name(out.name + ".partial").exists() else ""))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{manifest_path} is not valid JSON ({err}); convert again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path} is not an esmm_np Ali-CCP manifest")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    if split not in manifest["splits"]:
        raise ValueError(f"{out} has no {split!r} split; it has {sorted(manifest['splits'])}")
    arrays = {}
    for name, spec in manifest["splits"][split]["files"].items():
        path = out / split / f"{name}.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the cache")
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(a.shape) != spec["shape"] or a.dtype != np.dtype(spec["dtype"]):
            raise ValueError(f"{path} has shape {a.shape} and dtype {a.dtype}; the manifest "
                             f"says {tuple(spec['shape'])} and {spec['dtype']}")
        arrays[name] = a
    sizes = manifest["vocabulary_sizes"]
    bags = {f: tuple(arrays[f"bag_{f}_{p}"] for p in ("offsets", "ids", "weights"))
            for f in manifest["bag_fields"]}
    return Dataset(X=arrays["X"], click=arrays["click"], conversion=arrays["conversion"],
                   field_dims=tuple(sizes[f] for f in manifest["single_fields"]),
                   field_names=tuple(manifest["single_fields"]),
                   bags=bags or None, bag_dims={f: sizes[f] for f in bags} or None,
                   info={"source": "aliccp", "split": split, "cache": str(out),
                         "min_count": manifest["min_count"]})


def vocabulary(out_dir, field):
    """The raw Ali-CCP feature ids of a field's codes: code ``c >= 1`` is ``vocab[c - 1]``."""
    return np.load(Path(out_dir) / f"vocab_{field}.npy", allow_pickle=False)


# ------------------------------------------------------------- the writer

def write_raw(src_dir, n_train, n_test=0, *, seed=0, n_invalid=3, ctr=0.2, cvr=0.3,
              user_bag_len=(0, 6), ad_bag_len=(0, 3), n_user_bag_fields=2, request_size=(1, 4),
              n_extra_fields=0):
    """Write raw Ali-CCP files from a simulated world; return what a reader should find.

    The labels, the user and the item of each impression come from
    :func:`esmm_np.simulate`; impressions are grouped into requests of
    ``request_size`` consecutive rows that share one user and one
    common-features line. Fields (ids in the style of Ali-CCP):

    - common (per request): ``101`` user id and ``121`` user segment (single),
      and ``n_user_bag_fields`` bags ``109_14``, ``110_14``, ... of the user's
      recent categories etc., with values, lengths drawn from ``user_bag_len``
      (0 gives an empty bag, written as no feature at all);
    - skeleton (per impression): ``205`` item id and ``206`` item category
      (single), and bag ``210`` of intention nodes, lengths from ``ad_bag_len``.

    ``n_extra_fields`` (0 to 7) adds that many more single-valued fields on
    each side (user: ``122``, ``124``, ...; ad: ``207``, ``216``, ...), derived
    from the user and the item, to give lines the width of the real files.
    ``n_invalid`` rows per split get click = 0 and buy = 1. Raw feature ids
    are large global numbers, as in the real files; values are written with
    six significant digits, so float32 reads them exactly as ``expected``
    holds them.

    Returns
    -------
    expected : dict split -> dict with ``click``, ``conversion`` (valid rows
    only, file order), ``invalid`` (their count), ``single`` (field ->
    raw id per valid row) and ``bags`` (field -> (offsets, raw ids, values))
    """
    from .simulator import simulate

    src = Path(src_dir)
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    user_bags = ["109_14", "110_14", "127_14", "150_14"][:n_user_bag_fields]
    expected = {}
    for split, n in (("train", n_train), ("test", n_test)):
        if n == 0:
            continue
        world = simulate(n, seed=seed + (split == "test"), ctr=ctr, cvr=cvr)
        click = world.click.astype(np.int8).copy()
        buy = world.conversion.astype(np.int8).copy()
        bad = rng.choice(np.flatnonzero(click == 0), size=min(n_invalid, int((click == 0).sum())),
                         replace=False)
        buy[bad] = 1
        sizes = []
        while sum(sizes) < n:
            sizes.append(int(rng.integers(request_size[0], request_size[1] + 1)))
        sizes[-1] -= sum(sizes) - n
        request = np.repeat(np.arange(len(sizes)), sizes)               # (n,)
        first_row = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        user = world.X[first_row[request], 0]                           # one user per request
        segment = world.X[first_row[request], 3]
        single = {"101": 7_000_000 + 13 * user.astype(np.int64),
                  "121": 9_100 + segment.astype(np.int64),
                  "205": 50_000_000 + 7 * world.X[:, 1].astype(np.int64),
                  "206": 8_000 + world.X[:, 2].astype(np.int64)}
        user_extra = ["122", "124", "125", "126", "127", "128", "129"][:n_extra_fields]
        ad_extra = ["207", "216", "301", "508", "509", "702", "853"][:n_extra_fields]
        for i, f in enumerate(user_extra):
            single[f] = 1_000_000 * (i + 20) + (user.astype(np.int64) * (i + 3)) % (50 * (i + 1))
        for i, f in enumerate(ad_extra):
            single[f] = 1_000_000 * (i + 40) + (world.X[:, 1].astype(np.int64) * (i + 5)) % (400 * (i + 1))

        def draw_bags(m, lengths_range, vocab, base, weighted):
            lengths = rng.integers(lengths_range[0], lengths_range[1] + 1, size=m)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            raw = base + 3 * rng.integers(0, vocab, size=offsets[-1]).astype(np.int64)
            values = (np.round(rng.uniform(0.1, 5.0, size=offsets[-1]), 4) if weighted
                      else np.ones(offsets[-1]))
            return offsets, raw, values

        req_bags = {f: draw_bags(len(sizes), user_bag_len, 60, 400_000 + 100_000 * i, True)
                    for i, f in enumerate(user_bags)}
        ad_bag = draw_bags(n, ad_bag_len, 25, 300_000, False)

        def feats(items):
            return "\x01".join(f"{f}\x02{r}\x03{v:.6g}" for f, r, v in items)

        with open(src / COMMON.format(split), "w") as fh:
            for q in range(len(sizes)):
                r = first_row[q]
                items = [(f, single[f][r], 1.0) for f in ["101", "121"] + user_extra]
                for f, (o, raw, val) in req_bags.items():
                    items += [(f, raw[j], val[j]) for j in range(o[q], o[q + 1])]
                fh.write(f"{split}{q:012x},{len(items)},{feats(items)}\n")
        with open(src / SKELETON.format(split), "w") as fh:
            o, raw, val = ad_bag
            for i in range(n):
                items = [(f, single[f][i], 1.0) for f in ["205", "206"] + ad_extra]
                items += [("210", raw[j], val[j]) for j in range(o[i], o[i + 1])]
                fh.write(f"{i + 1},{click[i]},{buy[i]},{split}{request[i]:012x},{len(items)},"
                         f"{feats(items)}\n")
        valid = np.flatnonzero(~((click == 0) & (buy == 1)))
        bags = {f: take_bags({f: (o, raw, val)}, request[valid])[f]
                for f, (o, raw, val) in req_bags.items()}
        bags["210"] = take_bags({"210": ad_bag}, valid)["210"]
        expected[split] = {"click": click[valid], "conversion": buy[valid], "invalid": len(bad),
                           "single": {f: v[valid] for f, v in single.items()},
                           "bags": {f: (o, r, np.float32(v)) for f, (o, r, v) in bags.items()}}
    return expected
