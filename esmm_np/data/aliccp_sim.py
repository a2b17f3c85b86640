"""Raw Ali-CCP files written from a simulated world, for tests and benchmarks.

This project never downloads the real data: :func:`write_raw` writes files
in the raw format (:mod:`esmm_np.data.aliccp_parse`) whose every label, id
and bag is known, so that a conversion can be checked end to end.

A folder is written as a whole or not at all, and only what esmm_np wrote is
ever replaced: next to the raw files :func:`write_raw` leaves a marker,
``esmm_np_simulated.json``, and it replaces earlier raw files only when asked
to (``replace=True``) and only when that marker says esmm_np wrote them.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .aliccp_parse import COMMON, SKELETON, SPLITS
from .bags import take_bags
from .simulator import simulate
from ..validate import check_bool, check_int

#: The file that marks a folder of raw files as written by :func:`write_raw`.
MARK = "esmm_np_simulated.json"


def _raw_names():
    return [f.format(s) for s in SPLITS for f in (SKELETON, COMMON)]


def _check_target(src, replace):
    """Raise unless :func:`write_raw` may write its files in ``src``; return the earlier ones."""
    if src.exists() and not src.is_dir():
        raise NotADirectoryError(f"{src} exists and is not a folder")
    earlier = [name for name in _raw_names() if (src / name).exists()]
    if earlier and not replace:
        raise FileExistsError(f"{src} already holds raw files of an earlier run ({', '.join(earlier)}); "
                              "pass replace=True (--replace) to replace all of them, or write "
                              "to an empty folder")
    if earlier and not (src / MARK).is_file():
        raise FileExistsError(f"{src} holds {', '.join(earlier)} that esmm_np did not write "
                              f"(no {MARK} beside them); esmm_np replaces only files it wrote")
    return earlier


def write_raw(src_dir, n_train, n_test=0, *, seed=0, n_invalid=3, ctr=0.2, cvr=0.3,
              user_bag_len=(0, 6), ad_bag_len=(0, 3), n_user_bag_fields=2, request_size=(1, 4),
              n_extra_fields=0, replace=False):
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

    ``replace``: a folder already holding raw files is refused unless
    ``replace=True``, and then only when esmm_np wrote them (its marker file
    is there); all of them are replaced, so the folder never mixes two
    worlds. The new files are written under temporary names and renamed
    when all are complete.

    Returns
    -------
    expected : dict split -> dict with ``click``, ``conversion`` (valid rows
    only, file order), ``invalid`` (their count), ``single`` (field ->
    raw id per valid row) and ``bags`` (field -> (offsets, raw ids, values))
    """
    n_train = check_int(n_train, "n_train", low=0)
    n_test = check_int(n_test, "n_test", low=0)
    if n_train + n_test == 0:
        raise ValueError("n_train and n_test are both 0: there is nothing to write")
    seed = check_int(seed, "seed", low=0)
    n_invalid = check_int(n_invalid, "n_invalid", low=0)
    n_user_bag_fields = check_int(n_user_bag_fields, "n_user_bag_fields", low=0, high=4)
    n_extra_fields = check_int(n_extra_fields, "n_extra_fields", low=0, high=7)
    for name, pair, low in (("user_bag_len", user_bag_len, 0), ("ad_bag_len", ad_bag_len, 0),
                            ("request_size", request_size, 1)):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                           for v in pair) or not low <= pair[0] <= pair[1]):
            raise ValueError(f"{name} must be a pair (lo, hi) of integers with "
                             f"{low} <= lo <= hi, got {pair!r}")
    replace = check_bool(replace, "replace")
    src = Path(src_dir)
    earlier = _check_target(src, replace)
    src.mkdir(parents=True, exist_ok=True)
    written = {}                                  # final name -> temporary path
    try:
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

            with _temporary(src, COMMON.format(split), written) as fh:
                for q in range(len(sizes)):
                    r = first_row[q]
                    items = [(f, single[f][r], 1.0) for f in ["101", "121"] + user_extra]
                    for f, (o, raw, val) in req_bags.items():
                        items += [(f, raw[j], val[j]) for j in range(o[q], o[q + 1])]
                    fh.write(f"{split}{q:012x},{len(items)},{feats(items)}\n")
            with _temporary(src, SKELETON.format(split), written) as fh:
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
    except BaseException:                        # nothing half-written stays
        for tmp in written.values():
            os.unlink(tmp)
        raise
    # Every new file is complete: the earlier run's files go, the new ones take their names.
    for name in earlier:
        if name not in written:
            (src / name).unlink()
    for name, tmp in written.items():
        os.replace(tmp, src / name)
    (src / MARK).write_text(json.dumps({"written_by": "esmm_np.aliccp.write_raw", "seed": seed,
                                        "n_train": n_train, "n_test": n_test,
                                        "files": sorted(written)}, indent=2) + "\n")
    return expected


def _temporary(src, name, written):
    """A new text file in ``src`` with a unique temporary name, recorded in ``written``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=src)
    written[name] = tmp
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)                  # as a plain open() would have made it
    return os.fdopen(fd, "w")
