"""Ali-CCP, the dataset the ESMM paper released, read into esmm_np.

The raw files (:mod:`esmm_np.data.aliccp_parse` describes their format)
hold one line per impression and one line per user request, shared by the
impressions of that request. A field may occur several times in one line
(a user's recent categories, an ad's intention nodes): such fields become
bags of ids (:mod:`esmm_np.data.bags`), the others one id per row.

:func:`convert` reads the raw files once, streaming, and writes a cache of
``.npy`` arrays plus ``manifest.json`` and ``report.json``; :func:`load`
checks every file of the cache against the manifest and memory-maps it as a
:class:`~esmm_np.data.Dataset`.

The cache keeps the raw format's sharing, as XDL's common-feature table
does: the bags that come from a request's common features are stored once
per request (``table_<field>_*.npy``), each impression holds the number of
its request (``common.npy``), and the bag layer gathers a batch's bags from
the table when the batch is drawn (:class:`~esmm_np.data.bags.SharedBag`).
Ids and values a skeleton line carries itself stay per impression
(``bag_<field>_*.npy``). docs/data.md describes the cache and the measured
speed. :func:`write_raw` (:mod:`esmm_np.data.aliccp_sim`) writes raw files
from a simulated world, for tests and benchmarks; this project never
downloads the real data.
"""

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .aliccp_parse import (COMMON, ID_BITS, MAX_FIELDS, SKELETON, SPLITS, FieldCodes,
                           MalformedLine, read_chunks)
from .aliccp_sim import write_raw
from .bags import SharedBag
from .columns import Column, IdTable, NpyWriter
from .dataset import Dataset
from ..validate import check_bool, check_int

#: Version 2 stores the common features' bags once per request (version 1 copied them
#: into every impression).
FORMAT = "esmm_np.aliccp/2"
#: The file that marks ``OUT.partial`` as esmm_np's own work folder.
PARTIAL_MARK = ".esmm_np_partial"
_JOIN_ROWS = 32768        # at most this many rows (or common lines) are joined at once ...
_JOIN_IDS = 1 << 20       # ... and at most about this many ids (a row can carry hundreds)
_NAME = re.compile(r"[A-Za-z0-9_]+")     # a cache file's name: no folder, no "..", no "/"


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


class KeyIndex:
    """The common-feature lines of a split, found by their ``common_feature_index``.

    ``add`` the keys (bytes arrays) of each block in file order, ``finish``
    once, then ``lookup`` gives each key's line (the first line with that
    key), or -1.
    """

    def __init__(self):
        self.parts, self.keys, self.line = [], None, None

    def add(self, keys):
        self.parts.append(keys)

    def finish(self):
        """Sort the keys; return the lines (ascending) that repeat an earlier line's key."""
        keys = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype="S1")
        self.parts = [keys]
        order = np.argsort(keys, kind="stable")                     # equal keys: file order
        ordered = keys[order]
        repeat = np.zeros(len(keys), dtype=bool)
        repeat[1:] = ordered[1:] == ordered[:-1]
        self.keys, self.line = ordered[~repeat], order[~repeat]
        return np.sort(order[repeat])

    def key_of(self, line):
        return bytes(self.parts[0][line])

    def lookup(self, keys):
        if len(self.keys) == 0 or len(keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        # The impressions of a request are consecutive lines: look up each run once.
        new_run = np.ones(len(keys), dtype=bool)
        new_run[1:] = keys[1:] != keys[:-1]
        first = keys[new_run]
        at = np.minimum(np.searchsorted(self.keys, first), len(self.keys) - 1)
        line = np.where(self.keys[at] == first, self.line[at], -1).astype(np.int64)
        return line[np.cumsum(new_run) - 1]


# ------------------------------------------------------------------ pass 1

def _read_split(src, split, tmp, fields, table, skip_malformed, progress, stats):
    """Parse one split's two files into temporary columns (valid rows only).

    Returns a dict of columns and per-field counts; ``stats`` gets the line
    counts of the report. Features are stored as ids of ``table`` (an
    :class:`~esmm_np.data.columns.IdTable` of ``field << ID_BITS | raw id``
    keys); the training split's occurrences are counted there.
    """
    cols = {}
    # Common features: one entry per request, looked up by its index string.
    index = KeyIndex()
    def column(name, dtype):
        return Column(tmp / f"{split}.{name}", dtype)

    c_len, c_field = column("c_len", np.int32), column("c_field", np.int16)
    c_pid, c_val = column("c_pid", np.int32), column("c_val", np.float32)
    cstats = {"lines_read": 0, "malformed_lines": 0}
    ones_c = np.zeros(MAX_FIELDS, dtype=np.int64)   # common lines with exactly one id of a field
    not_one_value = np.zeros(MAX_FIELDS, dtype=bool)
    for keys, counts, (field, raw, value) in read_chunks(src / COMMON.format(split), "common",
                                                         fields, skip_malformed, cstats, progress):
        index.add(keys)
        c_len.append(counts)
        c_field.append(field)
        c_pid.append(table.ids_of(field.astype(np.int64) << ID_BITS | raw, count=False))
        c_val.append(value)
        nf = len(fields.names)
        line = np.repeat(np.arange(len(counts)), counts)
        per = np.bincount(line * nf + field, minlength=len(counts) * nf)       # (lines * nf,)
        ones_c[:nf] += (per.reshape(len(counts), nf) == 1).sum(axis=0)
        not_one_value[np.unique(field[value != 1])] = True
    n_common = c_len.n
    duplicates = index.finish()
    if len(duplicates) and not skip_malformed:   # then no line was skipped: row + 1 is its line
        row = int(duplicates[0])
        key = index.key_of(row).decode(errors="replace")
        raise MalformedLine(f"{src / COMMON.format(split)}:{row + 1}: common_feature_index "
                            f"{key!r} occurs twice")

    s_click, s_buy = column("click", np.int8), column("buy", np.int8)
    s_common, s_len = column("common", np.int64), column("s_len", np.int32)
    s_field, s_pid = column("s_field", np.int16), column("s_pid", np.int32)
    s_val = column("s_val", np.float32)
    sstats = {"lines_read": 0, "malformed_lines": 0}
    refcount = np.zeros(n_common, dtype=np.int64)
    ones_s = np.zeros(MAX_FIELDS, dtype=np.int64)   # kept rows with exactly one id of a field
    nnz_s = np.zeros(MAX_FIELDS, dtype=np.int64)
    invalid = missing = 0
    for (click, buy, ckeys), counts, (field, raw, value) in read_chunks(
            src / SKELETON.format(split), "skeleton", fields, skip_malformed, sstats, progress):
        code = index.lookup(ckeys)                 # (lines,) common line, or -1
        bad = (click == 0) & (buy == 1)            # a conversion without a click
        gone = code < 0                            # no common features for this row
        invalid += int(bad.sum())
        missing += int((gone & ~bad).sum())
        keep = ~bad & ~gone
        line = np.repeat(np.arange(len(counts)), counts)
        if not keep.all():                         # usually every line is kept
            fkeep = keep[line]
            field, raw, value, line = field[fkeep], raw[fkeep], value[fkeep], line[fkeep]
        s_click.append(click[keep])
        s_buy.append(buy[keep])
        s_common.append(code[keep])
        s_len.append(counts[keep])
        s_field.append(field)
        s_pid.append(table.ids_of(field.astype(np.int64) << ID_BITS | raw,
                                  count=split == "train"))
        s_val.append(value)
        refcount += np.bincount(code[keep], minlength=n_common)
        rows = np.cumsum(keep) - 1                 # kept-row number of each line
        nf = len(fields.names)
        per = np.bincount(rows[line] * nf + field, minlength=int(keep.sum()) * nf)
        if nf:                                     # no field seen yet: nothing to count
            ones_s[:nf] += (per.reshape(-1, nf) == 1).sum(axis=0)
        nnz_s += np.bincount(field, minlength=MAX_FIELDS)
        not_one_value[np.unique(field[value != 1])] = True
    cols.update(c_len=c_len.read(), c_field=c_field.read(), c_pid=c_pid.read(),
                c_val=c_val.read(), click=s_click.read(), buy=s_buy.read(),
                common=s_common.read(), s_len=s_len.read(), s_field=s_field.read(),
                s_pid=s_pid.read(), s_val=s_val.read())
    n_rows = len(cols["click"])
    # Each common feature occurs once in every kept row of its request; walk the
    # common lines in blocks so that no array spans all their features.
    nnz_c = np.zeros(MAX_FIELDS, dtype=np.int64)
    table_nnz = np.zeros(MAX_FIELDS, dtype=np.int64)  # ids of a field over all common lines
    c_pos = 0
    for q0, q1 in _blocks(lambda a, b: cols["c_len"][a:b], n_common):
        lens = np.asarray(cols["c_len"][q0:q1], dtype=np.int64)
        w = np.repeat(refcount[q0:q1], lens)                              # (features,)
        f = np.asarray(cols["c_field"][c_pos:c_pos + len(w)])
        nnz_c += np.bincount(f, weights=w, minlength=MAX_FIELDS).astype(np.int64)
        table_nnz += np.bincount(f, minlength=MAX_FIELDS)
        if split == "train":
            table.add(cols["c_pid"][c_pos:c_pos + len(w)], weights=w)
        c_pos += len(w)
    stats[split] = {
        "skeleton_lines_read": sstats["lines_read"], "common_lines_read": cstats["lines_read"],
        "rows_kept": n_rows, "invalid_rows": invalid, "missing_common_index_rows": missing,
        "malformed_lines": sstats["malformed_lines"] + cstats["malformed_lines"],
        "duplicate_common_index_lines": len(duplicates),
    }
    in_skeleton, in_common = nnz_s > 0, table_nnz > 0
    # A field is single-valued when every row has exactly one id of it with value 1.
    single = np.zeros(MAX_FIELDS, dtype=bool)
    single |= in_skeleton & ~in_common & (ones_s == n_rows)
    single |= in_common & ~in_skeleton & (ones_c == n_common)
    single &= ~not_one_value
    return cols, {"nnz": nnz_s + nnz_c, "nnz_skeleton": nnz_s, "nnz_table": table_nnz,
                  "single": single}


# ------------------------------------------------------------------ pass 2

def _sort_common(cols, schema, tmp, split):
    """Encode every common feature once, and order each line's features by field.

    Returns the line lengths (in memory: one number per request), readers of
    the codes and values in the new order, and a reader of each line's
    field starts: entry ``line * (nf + 1) + f`` is where field ``f``'s run
    begins within the line (``nf`` fields; entry ``nf`` is the line length).
    """
    nf = len(schema["names"])
    c_lens = cols["c_len"].all().astype(np.int64)                    # (common lines,)
    codes = Column(tmp / f"{split}.cs_code", np.int32)
    values = Column(tmp / f"{split}.cs_val", np.float32)
    starts = Column(tmp / f"{split}.cs_start", np.int32)
    pos = 0
    for q0, q1 in _blocks(lambda a, b: c_lens[a:b], len(c_lens)):
        lens = c_lens[q0:q1]
        total = int(lens.sum())
        line = np.repeat(np.arange(len(lens)), lens)                  # (features,)
        field = cols["c_field"][pos:pos + total].astype(np.int64)
        order = np.lexsort((field, line))                             # by line, then field; stable
        codes.append(schema["code_of_id"][cols["c_pid"][pos:pos + total][order]])
        values.append(cols["c_val"][pos:pos + total][order])
        counts = np.bincount(line * nf + field, minlength=len(lens) * nf).reshape(len(lens), nf)
        first = np.zeros((len(lens), nf + 1), dtype=np.int32)
        np.cumsum(counts, axis=1, out=first[:, 1:])
        starts.append(first.ravel())
        pos += total
    return c_lens, codes.read(), values.read(), starts.read()


def _encode_split(cols, out, schema, stats, tmp):
    """Encode one split's kept rows and write its arrays; return the manifest's file list.

    Single-valued fields go to ``X`` (a skeleton id wins over a common one).
    A bag field's ids from the skeleton lines are written per row
    (``bag_<field>_*``), those from the common lines once per common line
    (``table_<field>_*``, rows referring to their line through ``common``):
    a row's bag is its own ids, then its request's, each in file order.
    """
    n = len(cols["click"])
    nf = len(schema["names"])
    single, bag = schema["single"], schema["bag"]          # lists of field codes
    code_of_id = schema["code_of_id"]
    nnz_s, nnz_t = schema["nnz_skeleton"], schema["nnz_table"]
    shared = [f for f in bag if nnz_t[f] > 0]              # in this split's common lines
    own = [f for f in bag if nnz_s[f] > 0 or nnz_t[f] == 0]
    out.mkdir()
    files = {"X": ((n, len(single)), np.int32), "click": ((n,), np.int8),
             "conversion": ((n,), np.int8)}
    if shared:
        files["common"] = ((n,), np.int32)
    c_lens, cs_code, cs_val, cs_start = _sort_common(cols, schema, tmp, out.name)
    m = len(c_lens)
    for f in own:
        name = schema["names"][f]
        files.update({f"bag_{name}_offsets": ((n + 1,), np.int64),
                      f"bag_{name}_ids": ((int(nnz_s[f]),), np.int32),
                      f"bag_{name}_weights": ((int(nnz_s[f]),), np.float32)})
    for f in shared:
        name = schema["names"][f]
        files.update({f"table_{name}_offsets": ((m + 1,), np.int64),
                      f"table_{name}_ids": ((int(nnz_t[f]),), np.int32),
                      f"table_{name}_weights": ((int(nnz_t[f]),), np.float32)})
    w = {k: NpyWriter(out / f"{k}.npy", dt, shape) for k, (shape, dt) in files.items()}
    for k in w:
        if k.endswith("_offsets"):
            w[k].append(np.zeros(1))
    c_start = np.cumsum(c_lens) - c_lens                                 # (m,) line starts

    # Each common line once: its runs of the bag fields go to the tables; its single-valued
    # fields' codes and counts are kept (one small row per request) for the rows below.
    known = np.zeros(nf, dtype=bool)
    known[single + bag] = True
    # Only the single-valued fields the common lines hold (C of the S): a few numbers a request.
    c_single = [j for j, f in enumerate(single) if nnz_t[f] > 0]         # columns of X
    line_x = np.zeros((m, len(c_single)), dtype=np.int32)               # (m, C) 0: none
    line_n = np.zeros((m, len(c_single)), dtype=np.int32)               # (m, C) ids per field
    line_unknown = np.zeros(m, dtype=np.int64)                          # (m,)
    pos = {f: 0 for f in shared}
    for q0, q1 in _blocks(lambda a, b: c_lens[a:b], m):
        rel = cs_start[q0 * (nf + 1):q1 * (nf + 1)].reshape(q1 - q0, nf + 1).astype(np.int64)
        n_field = rel[:, 1:] - rel[:, :-1]                                # (mq, nf)
        base = c_start[q0:q1]                                             # (mq,)
        for c, j in enumerate(c_single):
            f = single[j]
            has = n_field[:, f] > 0
            line_x[q0:q1][has, c] = cs_code[base[has] + rel[has, f]]      # the line's first id
        line_n[q0:q1] = n_field[:, [single[j] for j in c_single]]
        line_unknown[q0:q1] = n_field[:, ~known].sum(axis=1)
        for f in shared:
            name = schema["names"][f]
            cnt = n_field[:, f]                                           # (mq,) ids per line
            rank = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            src = np.repeat(base + rel[:, f], cnt) + rank                 # (ids,)
            w[f"table_{name}_offsets"].append(pos[f] + np.cumsum(cnt))
            w[f"table_{name}_ids"].append(cs_code[src])
            w[f"table_{name}_weights"].append(cs_val[src])
            pos[f] += len(src)

    # The rows: X, the labels, the common line of each row, the skeleton's own bags.
    column_of = np.full(nf, -1, dtype=np.int64)
    column_of[single] = np.arange(len(single))
    pos = {f: 0 for f in own}
    b = 0                                          # skeleton features read so far
    single_missing = single_extra = unknown = 0
    for r0, r1 in _blocks(lambda a, b: cols["s_len"][a:b], n):
        m_rows = r1 - r0
        w["click"].append(cols["click"][r0:r1])
        w["conversion"].append(cols["buy"][r0:r1])
        s_len = cols["s_len"][r0:r1].astype(np.int64)
        a, b = b, b + int(s_len.sum())
        code = cols["common"][r0:r1]                                      # (m,) request of each row
        if shared:
            w["common"].append(code)
        x_chunk = np.zeros((m_rows, len(single)), dtype=np.int32)        # (m, S) 0: missing
        x_chunk[:, c_single] = line_x[code]                               # the common ids
        total = np.zeros((m_rows, len(single)), dtype=np.int64)          # (m, S) ids per field
        total[:, c_single] = line_n[code]
        unknown += int(line_unknown[code].sum())
        s_row = np.repeat(np.arange(m_rows), s_len)
        s_field = cols["s_field"][a:b]                                    # int16
        s_code = code_of_id[cols["s_pid"][a:b]]
        s_val = cols["s_val"][a:b]
        # By field, then row: rows are in order already, and a stable sort of int16 is a
        # radix sort (np.lexsort((s_row, s_field)) gives the same order, slower).
        order = np.argsort(s_field, kind="stable")
        s_row, s_field, s_code, s_val = s_row[order], s_field[order], s_code[order], s_val[order]
        s_bounds = np.searchsorted(s_field, np.arange(nf + 1))
        unknown += int((~known[s_field]).sum())
        col = column_of[s_field]                                          # (k,) -1: not single
        one = col >= 0
        r, c, sc = s_row[one], col[one], s_code[one]
        first = np.ones(len(r), dtype=bool)                               # first id of its
        first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])                 # (row, field)
        x_chunk[r[first], c[first]] = sc[first]                           # a skeleton id wins
        total += np.bincount(r * len(single) + c,
                             minlength=m_rows * len(single)).reshape(m_rows, len(single))
        single_missing += int((total == 0).sum())
        single_extra += int(np.maximum(total - 1, 0).sum())
        w["X"].append(x_chunk)
        for f in own:
            name = schema["names"][f]
            lo, hi = s_bounds[f], s_bounds[f + 1]
            n_s = np.bincount(s_row[lo:hi], minlength=m_rows)             # (m,) rows sorted
            w[f"bag_{name}_offsets"].append(pos[f] + np.cumsum(n_s))
            w[f"bag_{name}_ids"].append(s_code[lo:hi])
            w[f"bag_{name}_weights"].append(s_val[lo:hi])
            pos[f] += hi - lo
    for writer in w.values():
        writer.close()
    stats.update(single_field_missing=single_missing, single_field_extra_ids=single_extra,
                 unknown_field_ids=unknown)
    bags = {schema["names"][f]: {"own": f in own, "shared": f in shared} for f in bag}
    return {k: {"shape": list(shape), "dtype": np.dtype(dt).name}
            for k, (shape, dt) in files.items()}, bags


# -------------------------------------------------------------- public API

def _is_cache(path):
    """True when ``path`` is a folder holding an esmm_np Ali-CCP manifest (of any version)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("esmm_np.aliccp/")


def _is_empty_folder(path):
    return path.is_dir() and not any(path.iterdir())


def _make_partial(out):
    """Create ``OUT.partial``, esmm_np's work folder, marked as ours; clear an earlier one of ours."""
    partial = out.with_name(out.name + ".partial")
    if partial.exists() or partial.is_symlink():
        if not (partial.is_dir() and not partial.is_symlink() and (partial / PARTIAL_MARK).is_file()):
            raise FileExistsError(f"{partial} exists and esmm_np did not make it (no {PARTIAL_MARK} "
                                  "in it); convert writes its work there, so move it away or "
                                  "choose another output folder")
        shutil.rmtree(partial)                   # debris of an interrupted run of ours
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARK).write_text("esmm_np.aliccp.convert works here; the folder is "
                                        "renamed to its final name when the cache is complete\n")
    return partial


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
        Replace an existing ``out_dir`` that is an earlier cache. An empty
        folder is taken without it; any other folder, a file, or a folder
        holding ``src_dir`` is refused before any work. The work folder
        ``out_dir.partial`` carries a marker file: one that lacks it (not
        made by esmm_np) is refused, never deleted.

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
    skip_malformed = check_bool(skip_malformed, "skip_malformed")
    progress = check_bool(progress, "progress")
    overwrite = check_bool(overwrite, "overwrite")
    splits = [s for s in SPLITS if (src / SKELETON.format(s)).exists()]
    for s in splits:
        if not (src / COMMON.format(s)).exists():
            raise FileNotFoundError(f"{src / SKELETON.format(s)} has no {COMMON.format(s)} "
                                    "beside it")
    if "train" not in splits:
        raise FileNotFoundError(f"no {SKELETON.format('train')} in {src} (the vocabularies "
                                "are built on the training split)")
    empty = _is_empty_folder(out)
    if out.exists() and not empty and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise ValueError(f"{out} holds the source files {src}; the cache needs a folder of its own")
    if out.exists() and not empty and not (out.is_dir() and _is_cache(out)):
        # overwrite deletes the folder: only an earlier cache (or an empty folder) goes
        raise ValueError(f"{out} is not an esmm_np Ali-CCP cache (no manifest.json); "
                         "overwrite replaces only a cache or an empty folder")
    partial = _make_partial(out)
    tmp = partial / "tmp"
    tmp.mkdir()
    fields, table, stats, cols, per = FieldCodes(), IdTable(), {}, {}, {}
    n_train_ids = 0
    for s in splits:
        if progress:
            print(f"reading the {s} split", file=sys.stderr, flush=True)
        cols[s], per[s] = _read_split(src, s, tmp, fields, table, skip_malformed, progress,
                                      stats)
        if s == "train":
            n_train_ids = len(table)              # ids from here on are seen in test only
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
    in_train = table.ids < n_train_ids                               # (K,) sorted keys
    keys, ids = table.keys[in_train], table.ids[in_train]
    counts = table.counts[ids]
    kept, kept_ids = keys[counts >= int(min_count)], ids[counts >= int(min_count)]
    kept_field = kept >> ID_BITS
    vcodes = np.zeros(len(kept), dtype=np.int64)
    vocab = {}
    for f in seen:
        lo, hi = np.searchsorted(kept_field, [f, f + 1])
        vcodes[lo:hi] = np.arange(1, hi - lo + 1)
        distinct = int(np.count_nonzero((keys >> ID_BITS) == f))
        vocab[names[f]] = {"distinct_ids": distinct, "kept_ids": int(hi - lo),
                           "size": int(hi - lo) + 1}
        np.save(partial / f"vocab_{names[f]}.npy", kept[lo:hi] & ((1 << ID_BITS) - 1))
    code_of_id = np.zeros(len(table), dtype=np.int32)                  # out of vocabulary: 0
    code_of_id[kept_ids] = vcodes
    schema = {"single": single, "bag": bag, "names": names, "code_of_id": code_of_id}
    manifest = {"format": FORMAT, "min_count": int(min_count), "splits": {},
                "single_fields": [names[f] for f in single], "bag_fields": [names[f] for f in bag],
                "vocabulary_sizes": {names[f]: vocab[names[f]]["size"] for f in seen}}
    for s in splits:
        schema.update(nnz_skeleton=per[s]["nnz_skeleton"], nnz_table=per[s]["nnz_table"])
        files, bags = _encode_split(cols[s], partial / s, schema, stats[s], tmp)
        manifest["splits"][s] = {"rows": len(cols[s]["click"]), "files": files, "bags": bags}
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
    (partial / PARTIAL_MARK).unlink()
    if _is_empty_folder(out):
        out.rmdir()
    elif out.exists():
        if not _is_cache(out):               # it changed while we worked: leave it alone
            raise FileExistsError(f"{out} is no longer an esmm_np cache; the new cache is in "
                                  f"{partial}")
        shutil.rmtree(out)
    os.replace(partial, out)
    return report


def _manifest(out):
    """Read and check ``out/manifest.json``; every problem is named in one sentence."""
    path = out / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{out} is not a finished esmm_np Ali-CCP cache (no manifest.json)"
                                + ("; a conversion was interrupted there"
                                   if out.with_name(out.name + ".partial").exists() else ""))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); convert again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not an esmm_np Ali-CCP manifest")
    fmt = manifest.get("format")
    if isinstance(fmt, str) and fmt.startswith("esmm_np.aliccp/") and fmt != FORMAT:
        raise ValueError(f"{path} has format {fmt!r}, written by another esmm_np version; this "
                         f"one reads {FORMAT!r} (it stores the common features once per "
                         "request): convert the raw files again (esmm-np aliccp convert SRC OUT "
                         "--overwrite)")
    if fmt != FORMAT:
        raise ValueError(f"{path} has format {fmt!r}, expected {FORMAT!r}")

    def need(d, key, kind, where):
        if not isinstance(d, dict) or key not in d:
            raise ValueError(f"{path} has no {key!r} in {where}; the manifest is damaged, "
                             "convert again")
        if not isinstance(d[key], kind) or isinstance(d[key], bool):
            raise ValueError(f"{path}: {where}[{key!r}] is {type(d[key]).__name__}, expected "
                             f"{kind.__name__ if isinstance(kind, type) else kind[0].__name__}; "
                             "the manifest is damaged, convert again")
        return d[key]

    for key, kind in (("min_count", int), ("splits", dict), ("single_fields", list),
                      ("bag_fields", list), ("vocabulary_sizes", dict)):
        need(manifest, key, kind, "the manifest")
    for f in manifest["single_fields"] + manifest["bag_fields"]:
        need(manifest["vocabulary_sizes"], f, int, "vocabulary_sizes")
    for split, spec in manifest["splits"].items():
        where = f"splits[{split!r}]"
        if split not in SPLITS:
            raise ValueError(f"{path} names a split {split!r}; a cache has only {SPLITS}")
        need(spec, "rows", int, where)
        files = need(spec, "files", dict, where)
        bags = need(spec, "bags", dict, where)
        for name, f in files.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"{path} names a file {name!r} that is not a plain cache file "
                                 "name (a path outside the cache is never opened); convert again")
            need(f, "shape", list, f"{where}['files'][{name!r}]")
            need(f, "dtype", str, f"{where}['files'][{name!r}]")
        for field in manifest["bag_fields"]:
            parts = need(bags, field, dict, f"{where}['bags']")
            for part in ("own", "shared"):
                if not isinstance(parts.get(part), bool):
                    raise ValueError(f"{path}: {where}['bags'][{field!r}] has no {part!r} flag; "
                                     "the manifest is damaged, convert again")
    return manifest


def _open_checked(out, split, name, spec):
    """Memory-map ``out/split/name.npy`` once its header and size match the manifest's entry."""
    root = out.resolve()
    path = out / split / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the cache")
    if root not in path.resolve().parents:
        raise ValueError(f"{path} leads outside the cache {out} (a link?); it is not opened")
    try:
        shape = tuple(int(d) for d in spec["shape"])
        dtype = np.dtype(spec["dtype"])
    except (TypeError, ValueError):
        raise ValueError(f"{out / 'manifest.json'} gives {name} an invalid shape or dtype "
                         f"({spec['shape']!r}, {spec['dtype']!r}); convert again") from None
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            got_shape, fortran, got_dtype = read_header(fh)
            header = fh.tell()
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a .npy file ({err}); convert again") from None
    if got_shape != shape or got_dtype != dtype or fortran:
        raise ValueError(f"{path} has shape {got_shape} and dtype {got_dtype}; the manifest "
                         f"says {shape} and {dtype}")
    want = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size != want:
        raise ValueError(f"{path} is {size:,} bytes, but its shape {shape} and dtype {dtype} "
                         f"need {want:,}: the file was cut short or changed; convert again")
    return np.load(path, mmap_mode="r", allow_pickle=False)


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
    ones in ``bags`` (keyed by field id, e.g. ``"210"``; a field that comes
    from the common features is a :class:`~esmm_np.data.bags.SharedBag`),
    ``click``, ``conversion`` (Ali-CCP's ``buy``), rows in file order, and
    the manifest in ``info``. The arrays are memory-mapped read-only, after
    every file's header and size were checked against the manifest.
    """
    out = Path(out_dir)
    manifest = _manifest(out)
    if split not in manifest["splits"]:
        raise ValueError(f"{out} has no {split!r} split; it has {sorted(manifest['splits'])}")
    spec = manifest["splits"][split]
    rows, single = spec["rows"], manifest["single_fields"]
    expect = {"X": [rows, len(single)], "click": [rows], "conversion": [rows]}
    for f in manifest["bag_fields"]:
        if spec["bags"][f]["own"]:
            expect[f"bag_{f}_offsets"] = [rows + 1]
            expect[f"bag_{f}_ids"] = expect[f"bag_{f}_weights"] = None
        if spec["bags"][f]["shared"]:
            expect["common"] = [rows]
            expect[f"table_{f}_offsets"] = None
            expect[f"table_{f}_ids"] = expect[f"table_{f}_weights"] = None
    for name, shape in expect.items():
        if name not in spec["files"]:
            raise ValueError(f"{out / 'manifest.json'} lists no file {name!r} for the {split} "
                             "split; the manifest is damaged, convert again")
        if shape is not None and spec["files"][name]["shape"] != shape:
            raise ValueError(f"{out / 'manifest.json'} gives {name} the shape "
                             f"{spec['files'][name]['shape']}, but the split has {rows} rows")
    arrays = {name: _open_checked(out, split, name, spec["files"][name]) for name in expect}
    sizes = manifest["vocabulary_sizes"]
    bags = {}
    for f in manifest["bag_fields"]:
        own = (tuple(arrays[f"bag_{f}_{p}"] for p in ("offsets", "ids", "weights"))
               if spec["bags"][f]["own"] else None)
        if spec["bags"][f]["shared"]:
            table = tuple(arrays[f"table_{f}_{p}"] for p in ("offsets", "ids", "weights"))
            bags[f] = SharedBag(arrays["common"], table, own)
        else:
            bags[f] = own
    return Dataset(X=arrays["X"], click=arrays["click"], conversion=arrays["conversion"],
                   field_dims=tuple(sizes[f] for f in single), field_names=tuple(single),
                   bags=bags or None, bag_dims={f: sizes[f] for f in bags} or None,
                   info={"source": "aliccp", "split": split, "cache": str(out),
                         "min_count": manifest["min_count"]})


def vocabulary(out_dir, field):
    """The raw Ali-CCP feature ids of a field's codes: code ``c >= 1`` is ``vocab[c - 1]``."""
    if not isinstance(field, str) or not _NAME.fullmatch(field):
        raise ValueError(f"field must be an Ali-CCP field id such as '205' or '109_14', "
                         f"got {field!r}")
    path = Path(out_dir) / f"vocab_{field}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {out_dir} has no field {field!r}")
    return np.load(path, allow_pickle=False)
