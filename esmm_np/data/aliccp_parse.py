"""The raw Ali-CCP format: its files, and reading their lines into arrays.

Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., SIGIR 2018)
stores each split as two files:

- ``sample_skeleton_{train,test}.csv``: one line per impression,
  ``sample_id,click,buy,common_feature_index,feature_num,feature_list``;
- ``common_features_{train,test}.csv``: one line per user request, shared by
  all the impressions of that request,
  ``common_feature_index,feature_num,feature_list``.

A feature list is ``feature_num`` features joined by ``\\x01``, each
``field\\x02feature_id\\x03value``.

Two parsers turn a block of lines into the same arrays:

- :func:`parse_lines`, the plain form: split every line at its commas and
  separators and convert the tokens with NumPy. It is the one to read, and
  the one that says what is wrong with a malformed line.
- :func:`parse_block`, the fast form: it finds the separators of the whole
  block at once in a ``uint8`` view and converts the digits of every id with
  a few whole-array operations, eight digits per 64-bit word. It takes only
  blocks it can check completely; for any other block it returns None and
  the plain form reads it (and raises, for a malformed line). Both give the
  same arrays (tests/test_aliccp_parse.py checks that they do).
"""

import sys
import time

import numpy as np

SPLITS = ("train", "test")
SKELETON = "sample_skeleton_{}.csv"
COMMON = "common_features_{}.csv"

#: Field code and raw id share one int64 key: field * 2**ID_BITS + raw id.
ID_BITS = 40
MAX_FIELDS = 1024
#: Bytes read from a raw file at once (whole lines; a longer line is read whole).
CHUNK_BYTES = 1 << 22

#: Every byte but the three separators, deleted to see the separators' order.
_NOT_SEPARATOR = bytes(b for b in range(256) if b not in (1, 2, 3))


class MalformedLine(ValueError):
    """A raw line that does not follow the format; the message names the file and line."""


class BadLine(Exception):
    """A block of lines failed the checks of :func:`parse_lines` (it says which check)."""


class FieldCodes:
    """Field names (bytes, e.g. ``b"109_14"``) and their small integer codes.

    ``codes`` serves the plain parser (a dict from the name); ``lookup``
    serves the fast one (each name packed into a 64-bit word, found by
    binary search among the names seen so far).
    """

    def __init__(self):
        self.code, self.names = {}, []
        self.words = np.zeros(0, dtype=np.uint64)      # sorted packed names
        self.word_codes = np.zeros(0, dtype=np.int16)

    def _add(self, t):
        if not all(part.isdigit() for part in t.split(b"_")):
            raise BadLine(f"field {t[:20]!r} is not a field id like 210 or 109_14")
        if len(self.names) >= MAX_FIELDS:
            raise BadLine(f"more than {MAX_FIELDS} distinct fields")
        self.code[t] = len(self.names)
        self.names.append(t)

    def codes(self, tokens):
        """Codes of a list of field names, new names added in order of appearance."""
        get = self.code.get
        out = [get(t, -1) for t in tokens]
        if -1 in out:
            for t in dict.fromkeys(tokens):        # first appearance order
                if t not in self.code:
                    self._add(t)
            out = [get(t) for t in tokens]
        return np.array(out, dtype=np.int16)

    def lookup(self, words, token_of):
        """Codes of packed names ``words`` (uint64); ``token_of(i)`` gives name ``i``'s bytes.

        Returns None when a new name is not a field id (the plain parser then
        names the line).
        """
        at = np.minimum(np.searchsorted(self.words, words), max(len(self.words) - 1, 0))
        known = (self.words[at] == words) if len(self.words) else np.zeros(len(words), bool)
        if not known.all():
            new, first = np.unique(words[~known], return_index=True)
            where = np.flatnonzero(~known)[first]
            for i in np.sort(where):               # first appearance order, as codes() does
                t = token_of(int(i))
                if t not in self.code:
                    try:
                        self._add(t)
                    except BadLine:
                        return None
                self._remember(words[i], self.code[t])
            at = np.searchsorted(self.words, words)
        return self.word_codes[at]

    def _remember(self, word, code):
        i = int(np.searchsorted(self.words, word))
        self.words = np.insert(self.words, i, word)
        self.word_codes = np.insert(self.word_codes, i, code)


# ------------------------------------------------------------ the plain form

def parse_features(lists, counts, fields):
    """Parse the feature lists of many lines at once (the plain form).

    Parameters
    ----------
    lists : list of bytes, one feature list per line
    counts : ndarray of int64, the lines' ``feature_num``
    fields : FieldCodes

    Returns
    -------
    field (N,) int16, raw id (N,) int64, value (N,) float32, the features of
    all lines in order (line i owns the next ``counts[i]``). Raises BadLine on
    anything malformed.
    """
    for lst, c in zip(lists, counts):
        if (lst.count(b"\x01") + 1 if lst else 0) != c:
            raise BadLine("feature_num does not match the number of features")
    flat = b"\x01".join(lst for lst in lists if lst)
    total = int(counts.sum())
    # The separators alone, in order, must read \x02 \x03 \x01 per feature: equal
    # totals are not enough (one feature's missing \x03 and another's extra one).
    if flat.translate(None, _NOT_SEPARATOR) != (b"\x02\x03\x01" * total)[:-1]:
        raise BadLine("a feature is not field\\x02id\\x03value")
    tokens = []
    if total:
        tokens = flat.replace(b"\x02", b"\x01").replace(b"\x03", b"\x01").split(b"\x01")
    if len(tokens) != 3 * total:
        raise BadLine("a feature is not field\\x02id\\x03value")
    field = fields.codes(tokens[0::3])
    try:
        raw = np.array(tokens[1::3], dtype=np.bytes_).astype(np.int64)
        text = np.array(tokens[2::3], dtype=np.bytes_)
        value = np.ones(len(text))
        other = np.flatnonzero(text != b"1")     # most values are 1: parse only the others
        value[other] = text[other].astype(np.float64)
    except ValueError as e:
        raise BadLine(f"a feature id or value is not a number ({e})") from None
    except OverflowError:
        raise BadLine(f"a feature id is negative or not below 2**{ID_BITS}") from None
    if total and (raw.min() < 0 or raw.max() >= 1 << ID_BITS):
        raise BadLine(f"a feature id is negative or not below 2**{ID_BITS}")
    if not np.isfinite(value).all():
        raise BadLine("a feature value is NaN or infinite")
    return field, raw, value.astype(np.float32)


def parse_lines(lines, kind, fields):
    """Parse skeleton (``kind="skeleton"``) or common-feature lines; raises BadLine.

    Returns ``(labels, counts, features)``: for the skeleton ``labels`` is
    ``(click int8, buy int8, common_feature_index as a bytes array)``, for the
    common features the index alone; ``counts`` the lines' ``feature_num``;
    ``features`` what :func:`parse_features` returns.
    """
    ncol = 6 if kind == "skeleton" else 3
    if any(b"\x00" in ln for ln in lines):
        raise BadLine("a line holds a NUL byte (the file is binary, UTF-16 or compressed, "
                      "not Ali-CCP text)")
    parts = [ln.rstrip(b"\r\n").split(b",", ncol - 1) for ln in lines]
    if any(len(p) != ncol for p in parts):
        raise BadLine(f"a line does not have {ncol} comma-separated columns")
    try:
        counts = np.array([p[-2] for p in parts], dtype=np.bytes_).astype(np.int64)
    except ValueError:
        raise BadLine("feature_num is not an integer") from None
    if (counts < 0).any():
        raise BadLine("feature_num is negative")
    feats = parse_features([p[-1] for p in parts], counts, fields)
    if kind == "common":
        return np.array([p[0] for p in parts], dtype=np.bytes_), counts, feats
    try:
        click = np.array([p[1] for p in parts], dtype=np.bytes_).astype(np.int64)
        buy = np.array([p[2] for p in parts], dtype=np.bytes_).astype(np.int64)
    except ValueError:
        raise BadLine("click or buy is not 0 or 1") from None
    if not (np.isin(click, (0, 1)).all() and np.isin(buy, (0, 1)).all()):
        raise BadLine("click or buy is not 0 or 1")
    keys = np.array([p[3] for p in parts], dtype=np.bytes_)
    return (click.astype(np.int8), buy.astype(np.int8), keys), counts, feats


# ------------------------------------------------------------- the fast form

#: Byte classes: 1, 2, 3 the separators, 4 a comma, 5 a newline, 6 a byte the fast form
#: leaves to the plain one (NUL, carriage return), 0 anything else.
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[[1, 2, 3]] = [1, 2, 3]
_CLASS[ord(",")], _CLASS[ord("\n")], _CLASS[0], _CLASS[ord("\r")] = 4, 5, 6, 6
_ZEROS = np.uint64(0x3030303030303030)                   # eight ASCII "0"
_HIGH = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIX = np.uint64(0x0606060606060606)


def _words(data):
    """Every 8-byte window of ``data`` as a little-endian uint64: ``w[i]`` is bytes ``i..i+7``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    return np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


#: _MASKS[k] keeps the last k bytes of an 8-byte window (k = 0 .. 8).
_MASKS = np.array([0] + [~((1 << (8 * (8 - k))) - 1) & (2**64 - 1) for k in range(1, 9)],
                  dtype=np.uint64)


def _top_mask(length):
    """Masks keeping the last ``length`` (1 to 8) bytes of an 8-byte window."""
    return _MASKS[length]


def _top_bytes(w, length):
    """Keep the last ``length`` (1 to 8) bytes of each window, zero the others."""
    return w & _top_mask(length)


def _eight_digits(w, length):
    """The numbers written by the last ``length`` (1 to 8) bytes of each window, or None
    when one of those bytes is not a digit.

    The other bytes are cleared, so a number of fewer digits reads as an 8-digit
    number with leading zeros. In memory order the first digit is the window's
    lowest byte: pairs of digits, then fours, then all eight are combined with one
    multiply each (multiplication wraps modulo 2**64; the masks keep what is exact).
    """
    mask = _top_mask(length)
    x = w & mask
    zeros = _ZEROS & mask
    # A digit is 0x30..0x39: high nibble 3, and adding 6 to the low nibble does not carry.
    high = x & _HIGH
    if not np.array_equal(high, zeros):
        return None
    x += _SIX
    x &= _HIGH
    if not np.array_equal(x, zeros):
        return None
    x = w & mask
    x &= np.uint64(0x0F0F0F0F0F0F0F0F)                           # (m,) one digit per byte
    x *= np.uint64(2561)                                          # 10 * 2**8 + 1
    x >>= np.uint64(8)
    x &= np.uint64(0x00FF00FF00FF00FF)                           # two digits per 16 bits
    x *= np.uint64(6553601)                                       # 100 * 2**16 + 1
    x >>= np.uint64(16)
    x &= np.uint64(0x0000FFFF0000FFFF)                           # four digits per 32 bits
    x *= np.uint64(42949672960001)                                # 10000 * 2**32 + 1
    x >>= np.uint64(32)
    return x.view(np.int64)


def _numbers(words, end, length, max_digits=16):
    """The non-negative integers written in bytes ``end - length .. end - 1``, or None."""
    if len(end) == 0:
        return np.zeros(0, dtype=np.int64)
    if length.min() < 1 or length.max() > max_digits:
        return None
    low = _eight_digits(words[end - 8], np.minimum(length, 8) if length.max() > 8 else length)
    if low is None:
        return None
    long = np.flatnonzero(length > 8)
    if long.size:
        high = _eight_digits(words[end[long] - 16], length[long] - 8)
        if high is None:
            return None
        low[long] += high * 10**8
    return low


def _strings(buf, start, length):
    """Bytes ``start .. start + length - 1`` of each token as a NumPy bytes array."""
    width = max(int(length.max(initial=0)), 1)
    cols = np.arange(width)
    keep = cols < length[:, None]                                 # (m, width)
    mat = np.zeros((len(start), width), dtype=np.uint8)
    mat[keep] = buf[(start[:, None] + cols)[keep]]
    return mat.view(f"S{width}").ravel()


#: _LOW_MASKS[k] keeps the first k bytes of an 8-byte window (k = 0 .. 8).
_LOW_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


def _short_strings(buf, words, start, length):
    """:func:`_strings` for tokens of up to 24 bytes, read as three 8-byte windows.

    A window read from ``words`` holds its bytes in memory order; stored back
    as little-endian words they are the token's bytes again, zero-padded.
    """
    if len(start) == 0 or length.max() > 24:
        return _strings(buf, start, length)
    width = -(-int(length.max()) // 8) if length.max() > 0 else 1
    out = np.zeros((len(start), width), dtype="<u8")                 # (m, width)
    for k in range(width):
        keep = np.clip(length - 8 * k, 0, 8)
        out[:, k] = words[np.minimum(start + 8 * k, len(words) - 1)] & _LOW_MASKS[keep]
    return out.view(f"S{8 * width}").ravel()


def _decimals(buf, words, start, length):
    """The values of decimal tokens (``123``, ``0.693147``), as float64.

    A token of at most 15 digits with at most one ``.`` is ``N / 10**k`` with
    ``N`` below 2**53 and ``10**k`` exact, so the one division is correctly
    rounded: the same float64 as the plain form's ``astype(np.float64)``. Any
    other token (a sign, an exponent, "nan", more digits) is read by that
    plain conversion; one it cannot read gives NaN (the block is then left to
    the plain form, which names the line).
    """
    value = np.full(len(start), np.nan)
    dots = np.flatnonzero(buf == ord("."))
    at = np.minimum(np.searchsorted(dots, start), max(len(dots) - 1, 0))
    dot = dots[at] if len(dots) else np.full(len(start), -1)
    stop = start + length
    has_dot = (dot >= start) & (dot < stop)
    if len(dots):                                    # a second dot in the token: not decimal
        nxt = dots[np.minimum(at + 1, len(dots) - 1)]
        two = has_dot & (at + 1 < len(dots)) & (nxt < stop)
    else:
        two = np.zeros(len(start), dtype=bool)
    int_len = np.where(has_dot, dot - start, length)
    frac_len = np.where(has_dot, stop - dot - 1, 0)
    simple = ~two & (int_len >= 1) & (int_len + frac_len <= 15) & (~has_dot | (frac_len >= 1))
    i = np.flatnonzero(simple)
    if i.size:
        whole = _numbers(words, np.where(has_dot[i], dot[i], stop[i]), int_len[i], 15)
        frac_i = np.flatnonzero(has_dot[i])
        frac = _numbers(words, stop[i][frac_i], frac_len[i][frac_i], 15)
        if whole is not None and frac is not None:
            k = frac_len[i][frac_i]
            numer = whole.astype(np.float64)
            numer[frac_i] = (whole[frac_i] * 10**k + frac).astype(np.float64)   # exact < 2**53
            numer[frac_i] /= 10.0**k
            value[i] = numer
        else:
            simple[:] = False
    rest = np.flatnonzero(~simple)
    if rest.size:
        try:
            value[rest] = _strings(buf, start[rest], length[rest]).astype(np.float64)
        except ValueError:
            pass                                     # stays NaN: the plain form names it
    return value


#: What :func:`parse_block` puts before a block: room for the 16-byte window of its first token.
PAD = b"0" * 16


def parse_block(block, kind, fields, padded=False):
    """Parse a block of whole lines (each ending in ``\\n``) at once; None: use :func:`parse_lines`.

    Returns what :func:`parse_lines` returns for ``block.split(b"\\n")[:-1]``.
    Only blocks whose every line has at least one feature are taken.
    ``padded``: ``block`` already starts with :data:`PAD` (saves a copy).
    """
    ncol = 6 if kind == "skeleton" else 3
    data = block if padded else PAD + block
    buf = np.frombuffer(data, dtype=np.uint8)                     # (B,)
    words = _words(data)
    # Every byte the format gives a meaning to is below 45 (","); digits, letters, "." and
    # "_" are above. The few bytes below 45 are then classified.
    at = np.flatnonzero(buf < 45)                                 # (S,) special bytes, in order
    what = _CLASS[buf[at]]                                        # (S,)
    if (what == 6).any() or (what == 0).any():
        return None
    is_comma = what == 4
    nl = at[what == 5]                                            # (n,) line ends
    n = len(nl)
    comma = at[is_comma]
    if n == 0 or len(comma) != (ncol - 1) * n:
        return None
    comma = comma.reshape(n, ncol - 1)                            # (n, ncol - 1)
    begin = np.concatenate([[16], nl[:-1] + 1])                   # (n,) line starts
    # Sorted commas, (ncol - 1) per line in all, each row inside its line: then every
    # line has exactly its own ncol - 1 commas.
    if not ((comma[:, 0] >= begin) & (comma[:, -1] < nl)).all():
        return None
    counts = _numbers(words, comma[:, -1], comma[:, -1] - comma[:, -2] - 1, 8)
    if counts is None or counts.min() < 1:
        return None
    total = int(counts.sum())
    # Without the commas, a line of k features reads (2 3 1) k times with its last 1 a
    # newline: k rows of (\x02, \x03, end of the value) once reshaped.
    sep = at[~is_comma]                                           # (3 * total,)
    kinds = what[~is_comma]
    if len(sep) != 3 * total:
        return None
    kinds, sep = kinds.reshape(total, 3), sep.reshape(total, 3)   # (total, 3)
    last = np.cumsum(counts) - 1                                  # (n,) last feature of each line
    is_last = kinds[:, 2] == 5                                    # (total,)
    if not ((kinds[:, 0] == 2).all() and (kinds[:, 1] == 3).all()
            and (is_last | (kinds[:, 2] == 1)).all() and is_last[last].all()
            and int(is_last.sum()) == n):
        return None
    p2, p3, end = sep[:, 0], sep[:, 1], sep[:, 2]                 # (total,) each
    start = np.empty(total, dtype=np.int64)                       # (total,) field token starts
    start[1:] = end[:-1] + 1
    start[last - counts + 1] = comma[:, -1] + 1                   # a line's first feature
    field_len = p2 - start
    if total and (field_len.min() < 1 or field_len.max() > 8):
        return None
    field = fields.lookup(_top_bytes(words[p2 - 8], field_len),
                          lambda i: bytes(buf[start[i]:p2[i]]))
    if field is None:
        return None
    raw = _numbers(words, p3, p3 - p2 - 1)
    if raw is None or (total and raw.max() >= 1 << ID_BITS):
        return None
    value_len = end - p3 - 1
    one = (value_len == 1) & (buf[p3 + 1] == ord("1"))
    value = np.ones(total)
    other = np.flatnonzero(~one)
    if other.size:
        value[other] = _decimals(buf, words, p3[other] + 1, value_len[other])
        if not np.isfinite(value[other]).all():
            return None
    feats = field.astype(np.int16), raw, value.astype(np.float32)
    key_at = comma[:, 2] if kind == "skeleton" else begin - 1
    key_end = comma[:, 3] if kind == "skeleton" else comma[:, 0]
    keys = _short_strings(buf, words, key_at + 1, key_end - key_at - 1)
    if kind == "common":
        return keys, counts, feats
    labels = []
    for c in (0, 1):                      # click between commas 0 and 1, buy between 1 and 2
        if not (comma[:, c + 1] - comma[:, c] == 2).all():
            return None
        digit = buf[comma[:, c] + 1]
        if not ((digit == ord("0")) | (digit == ord("1"))).all():
            return None
        labels.append((digit - ord("0")).astype(np.int8))
    return (labels[0], labels[1], keys), counts, feats


# ------------------------------------------------------------- the reader

def _blocks_of_lines(fh):
    """Blocks of about CHUNK_BYTES of whole lines, each ending in ``\\n``, each
    after :data:`PAD` (a memoryview: the block is not copied again)."""
    rest = b""
    while True:
        data = fh.read(CHUNK_BYTES)
        if not data:
            if rest:
                yield memoryview(PAD + rest + b"\n")   # a last line without its newline
            return
        data = b"".join((PAD, rest, data))
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data[len(PAD):]                 # one long line: read on
            continue
        rest = data[cut:]
        yield memoryview(data)[:cut]


def read_chunks(path, kind, fields, skip_malformed, stats, progress, fast=True):
    """Yield parsed blocks of a raw file; malformed lines raise or are counted and skipped.

    ``fast=False`` reads every block with the plain form only.
    """
    size = max(path.stat().st_size, 1)
    start = last = time.perf_counter()
    line_no = 0
    with open(path, "rb") as fh:
        for padded in _blocks_of_lines(fh):
            first = line_no + 1
            parsed = parse_block(padded, kind, fields, padded=True) if fast else None
            block = None if parsed is not None else bytes(padded[len(PAD):])
            n = len(parsed[1]) if parsed is not None else block.count(b"\n")
            line_no += n
            stats["lines_read"] += n
            if parsed is not None:
                yield parsed
            else:
                lines = block.split(b"\n")[:-1]
                try:
                    yield parse_lines(lines, kind, fields)
                except BadLine:
                    good = []
                    for i, ln in enumerate(lines):
                        try:
                            parse_lines([ln], kind, fields)
                            good.append(ln)
                        except BadLine as e:
                            if not skip_malformed:
                                raise MalformedLine(f"{path}:{first + i}: {e}") from None
                            stats["malformed_lines"] += 1
                    if good:
                        yield parse_lines(good, kind, fields)
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
