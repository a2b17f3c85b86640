"""Any impression log in CSV form, one row per impression, as a Dataset.

Many public copies of Ali-CCP, and most exports of a click log, are already
flat: a header, then ``click,purchase,<categorical columns>,<numeric
columns>``. :func:`read_csv` reads such a file with the checks and the
report of :func:`esmm_np.aliccp.convert`: categories (integer codes or raw
strings alike) get per-column vocabularies with an out-of-vocabulary id,
rows with a conversion but no click are dropped and counted, and a
malformed line stops the reading with its line number unless
``skip_malformed`` counts and skips it.
"""

import csv
import math
from pathlib import Path

import numpy as np

from .dataset import Dataset
from ..validate import check_bool, check_int

_CHUNK = 65536


def _what_it_is(path):
    """A guess, from the first bytes, at what a file that is not UTF-8 text holds."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == b"\x1f\x8b":
        return "a gzip-compressed file (decompress it first, e.g. gunzip)"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head[1:200:2].count(0) > 50:
        return "UTF-16 text (save it as UTF-8)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (extract the CSV first)"
    if head.count(0):
        return "a binary file, not CSV text"
    return "not UTF-8 text (Latin-1 or another encoding? save it as UTF-8)"


def _first_bad_utf8_line(path):
    """The number of the first line that is not valid UTF-8 (1 for the first line)."""
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                return line_no
    return line_no


def _text_lines(fh, path):
    """The lines of ``fh`` for the csv reader; a NUL byte or a byte that is not UTF-8
    stops the reading with a sentence naming the file, the line and what it looks like."""
    line_no = 0
    try:
        for line in fh:
            line_no += 1
            if "\x00" in line:
                raise ValueError(f"{path}:{line_no}: the line holds a NUL byte; the file is "
                                 f"{_what_it_is(path)}")
            yield line
    except UnicodeDecodeError:
        raise ValueError(f"{path}:{_first_bad_utf8_line(path)}: the file is "
                         f"{_what_it_is(path)}") from None


def read_csv(path, click="click", conversion="conversion", sparse=None, dense=(), *,
             min_count=1, skip_malformed=False, delimiter=","):
    """Read a flat impression log.

    Parameters
    ----------
    path : path of a UTF-8 CSV file with a header line (a byte-order mark is skipped);
        a file in another encoding, compressed, or holding NUL bytes is refused
        with its line number
    click, conversion : str
        Names of the 0/1 label columns (flattened Ali-CCP calls the second
        ``purchase``).
    sparse : list of str, optional
        Categorical columns. Default: every column that is not a label or dense.
    dense : list of str
        Numeric columns, read as float64; they must be finite.
    min_count : int >= 1
        Values seen in fewer rows share the column's out-of-vocabulary id 0,
        as does an empty cell.
    skip_malformed : bool
        False (default): a malformed line (wrong number of cells, a label
        other than 0/1, a dense value that is not a finite number) raises
        ``ValueError`` naming the file and line. True: count and skip it.
    delimiter : str

    Returns
    -------
    Dataset
        ``X`` holds the vocabulary ids (1, 2, ... in the sorted order of the
        values; 0 out of vocabulary), ``field_names`` the sparse columns,
        ``dense`` the numeric ones. ``info["report"]``: lines read, rows kept,
        invalid rows (click = 0 and conversion = 1, dropped), malformed lines
        skipped, per-column vocabulary sizes before and after ``min_count``;
        ``info["vocabularies"]``: per column, the value of each id from 1 on.
    """
    path = Path(path)
    min_count = check_int(min_count, "min_count", low=1)
    skip_malformed = check_bool(skip_malformed, "skip_malformed")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise TypeError(f"delimiter must be one character, got {delimiter!r}")
    for option, name in (("click", click), ("conversion", conversion)):
        if not isinstance(name, str):
            raise TypeError(f"{option} must be a column name (a str), got {name!r}")
    for option, names in (("sparse", sparse), ("dense", dense)):
        # A string would be read letter by letter as column names.
        if isinstance(names, (str, bytes)) or (names is None and option == "dense"):
            raise TypeError(f"{option} must be a list of column names, got {names!r}")
    with open(path, newline="", encoding="utf-8-sig") as fh:      # UTF-8 whatever the locale
        reader = csv.reader(_text_lines(fh, path), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path} is empty (a header line is needed)") from None
        if click == conversion:     # else the default sparse columns would include the label
            raise ValueError(f"{path}: column(s) {[click]} are given two roles")
        columns = {name: i for i, name in enumerate(header)}
        if len(columns) != len(header):
            raise ValueError(f"{path}: the header repeats a column name: {header}")
        dense = list(dense)
        if sparse is None:
            sparse = [c for c in header if c not in (click, conversion, *dense)]
        sparse = list(sparse)
        missing = [c for c in (click, conversion, *sparse, *dense) if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the header has {header}")
        if not sparse:
            raise ValueError(f"{path}: no categorical (sparse) column to embed")
        overlap = set(sparse) & set(dense) | ({click, conversion} & set(sparse + dense))
        if overlap:
            raise ValueError(f"{path}: column(s) {sorted(overlap)} are given two roles")
        i_click, i_conv = columns[click], columns[conversion]
        i_sparse = [columns[c] for c in sparse]
        i_dense = [columns[c] for c in dense]
        # Provisional ids in order of first appearance; remapped to sorted order at the end.
        seen = [{} for _ in sparse]
        labels, codes, numbers = [], [], []
        report = {"lines_read": 0, "rows_kept": 0, "invalid_rows": 0, "malformed_lines": 0}
        rows = []

        def flush():
            if not rows:
                return
            lab = np.array([r[0] for r in rows], dtype=np.int8)              # (m, 2)
            labels.append(lab.reshape(-1, 2))
            codes.append(np.array([r[1] for r in rows], dtype=np.int64).reshape(len(rows), -1))
            if dense:
                numbers.append(np.array([r[2] for r in rows], dtype=np.float64))
            rows.clear()

        for line_no, cells in enumerate(reader, start=2):
            report["lines_read"] += 1
            problem = None
            if len(cells) != len(header):
                problem = f"{len(cells)} cells, the header has {len(header)}"
            elif cells[i_click] not in ("0", "1") or cells[i_conv] not in ("0", "1"):
                problem = (f"{click} and {conversion} must be 0 or 1, got "
                           f"{cells[i_click]!r} and {cells[i_conv]!r}")
            else:
                try:
                    nums = [float(cells[i]) for i in i_dense]
                except ValueError:
                    nums = None
                if nums is None or not all(math.isfinite(x) for x in nums):
                    problem = f"a dense value is not a finite number: {[cells[i] for i in i_dense]}"
            if problem is not None:
                if not skip_malformed:
                    raise ValueError(f"{path}:{line_no}: {problem}")
                report["malformed_lines"] += 1
                continue
            c, v = cells[i_click] == "1", cells[i_conv] == "1"
            if v and not c:
                report["invalid_rows"] += 1
                continue
            ids = []
            for s, i in zip(seen, i_sparse):
                value = cells[i]
                ids.append(s.setdefault(value, len(s)) if value != "" else -1)
            rows.append(((c, v), ids, nums))
            if len(rows) >= _CHUNK:
                flush()
        flush()
    if not labels:
        raise ValueError(f"{path}: no valid rows ({report})")
    lab = np.concatenate(labels)                                              # (n, 2)
    prov = np.concatenate(codes)                                              # (n, F) provisional
    report["rows_kept"] = int(lab.shape[0])
    X = np.zeros(prov.shape, dtype=np.int32)
    vocab, sizes = {}, []
    for f, name in enumerate(sparse):
        values = list(seen[f])                                                # first-appearance order
        col = prov[:, f]
        present = col >= 0
        counts = np.bincount(col[present], minlength=len(values))
        order = sorted(range(len(values)), key=lambda j: values[j])
        kept = [j for j in order if counts[j] >= int(min_count)]
        new = np.zeros(len(values) + 1, dtype=np.int32)                       # last slot: empty cell
        new[kept] = np.arange(1, len(kept) + 1)
        X[:, f] = new[col]                                                    # col -1 -> slot -1 -> 0
        vocab[name] = [values[j] for j in kept]
        sizes.append(len(kept) + 1)
        report.setdefault("vocabulary", {})[name] = {
            "distinct_values": len(values), "kept_values": len(kept), "size": len(kept) + 1}
    ds = Dataset(X=X, click=lab[:, 0], conversion=lab[:, 1], field_dims=tuple(sizes),
                 field_names=tuple(sparse),
                 dense=np.concatenate(numbers) if dense else None,
                 info={"source": str(path), "report": report, "vocabularies": vocab,
                       "dense_names": dense})
    return ds
