"""Evaluation metrics, hand-written in NumPy.

- :func:`auc`: area under the ROC curve from ranks (Mann-Whitney U).
- :func:`log_loss`: mean binary cross-entropy.
- :func:`calibration` and :func:`expected_calibration_error`: does a
  predicted 0.1 happen one time in ten?
- :func:`evaluate_esmm`: the numbers the ESMM paper reports (CVR AUC on
  clicked impressions, CTCVR AUC on all) plus what only a simulator can
  give: CVR AUC and pCVR bias on the entire space, unclicked included.
"""

import numpy as np

from .validate import check_binary, check_float, check_int, check_seed


def _as_float_vector(x, name, finite=False):
    """Return ``x`` as a non-empty 1-d float64 array without NaN (booleans become 0/1).

    ``finite=True`` refuses inf as well."""
    x = np.asarray(x)
    if x.dtype == bool:
        x = x.astype(np.int8)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    x = x.astype(np.float64, copy=False)
    nan = np.isnan(x)
    if nan.any():
        raise ValueError(f"{name} has {int(nan.sum())} NaN value(s), first at row "
                         f"{int(np.argmax(nan))}")
    inf = np.isinf(x) if finite else nan
    if inf.any():
        raise ValueError(f"{name} has {int(inf.sum())} infinite value(s), first at row "
                         f"{int(np.argmax(inf))}")
    return x


def _check_level(level):
    """A coverage level: a number in (0, 1); a sentence for anything else (a string too)."""
    return check_float(level, "level", 0, 1, low_open=True, high_open=True)


def _check_same_length(a, b, name_a, name_b):
    if np.shape(a)[:1] != np.shape(b)[:1]:
        raise ValueError(f"{name_a} has length {np.shape(a)[0]} but {name_b} has "
                         f"length {np.shape(b)[0]}")


def _check_labels_and_scores(y, score, y_name="y", score_name="score"):
    """Return 0/1 labels (int8) and scores (float64) of one common length."""
    score = _as_float_vector(score, score_name)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{y_name} must be 1-d, got shape {y.shape}")
    _check_same_length(y, score, y_name, score_name)
    return check_binary(y, y.shape[0], y_name), score


def _check_probability(p, name):
    """Raise unless every value of ``p`` (float64) lies in [0, 1]."""
    bad = (p < 0) | (p > 1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise ValueError(f"{name} must be probabilities in [0, 1]; {len(rows)} value(s) are "
                         f"not, e.g. row {int(rows[0])} = {p[rows[0]]!r}")


def average_ranks(x):
    """Ranks 1..n of ``x``, tied values sharing the mean of their ranks.

    Parameters
    ----------
    x : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,), float64
    """
    order = np.argsort(x, kind="stable")                               # (n,)
    xs = x[order]                                                      # (n,) sorted
    # A tie group is a run of equal sorted values; it spans positions
    # first..last (0-based) and every member gets rank (first + last) / 2 + 1.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])            # (g,) first of each run
    ends = np.r_[starts[1:], xs.shape[0]] - 1                          # (g,) last of each run
    group_rank = 0.5 * (starts + ends) + 1.0                           # (g,)
    ranks = np.empty(x.shape[0], dtype=np.float64)                     # (n,)
    ranks[order] = np.repeat(group_rank, ends - starts + 1)
    return ranks


def auc(y, score):
    """Area under the ROC curve, the probability a positive outranks a negative.

    Parameters
    ----------
    y : array_like of 0/1, shape (n,)
    score : array_like of float, shape (n,)
        Any real scores (only their order matters); NaN is refused.

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    With ``P`` positives and ``N`` negatives and ``R`` the sum of the
    positives' ranks among all scores (ties get their average rank),

        AUC = (R - P (P + 1) / 2) / (P N),

    which counts every (positive, negative) pair once: 1 if the positive
    scores higher, 1/2 if tied. Sorting makes it O(n log n) instead of the
    O(P N) pair count.
    """
    raw = np.asarray(score)
    y, score = _check_labels_and_scores(y, score)
    if np.issubdtype(raw.dtype, np.integer):
        # Rank integer scores as they are: float64 would merge integers above
        # 2**53 (2**53 and 2**53 + 1 become one value) into false ties.
        score = raw
    n_pos = int(y.sum(dtype=np.int64))
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC is undefined when y has only one class: got {n_pos} "
                         f"positive(s) and {n_neg} negative(s)")
    rank_sum = average_ranks(score)[y == 1].sum()
    return float((rank_sum - 0.5 * n_pos * (n_pos + 1)) / (n_pos * n_neg))


def log_loss(y, p, eps=1e-12):
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``.

    Parameters
    ----------
    y : array_like of 0/1, shape (n,)
    p : array_like of float in [0, 1], shape (n,)
        Predicted probability of ``y = 1``.
    eps : float
        ``p`` is clipped to ``[eps, 1 - eps]`` so a confident mistake costs
        ``-log(eps)`` (about 27.6 for the default) instead of infinity.

    Returns
    -------
    float
    """
    y, p = _check_labels_and_scores(y, p, score_name="p")
    _check_probability(p, "p")
    eps = check_float(eps, "eps", 0, 0.5, low_open=True, high_open=True)
    p = np.clip(p, eps, 1.0 - eps)                                     # (n,)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def calibration(y_or_true_prob, p, n_bins=10, strategy="uniform"):
    """Reliability table: per bin of predictions, mean predicted vs mean observed.

    Parameters
    ----------
    y_or_true_prob : array_like of float in [0, 1], shape (n,)
        Observed 0/1 outcomes, or (in a simulation) true probabilities,
        which give the same expected table with far less noise.
    p : array_like of float in [0, 1], shape (n,)
        Predicted probabilities.
    n_bins : int
    strategy : {"uniform", "quantile"}
        "uniform": equal-width bins on [0, 1]. "quantile": edges at
        quantiles of ``p``, so each bin holds about n / n_bins predictions;
        better for small rates like CTR, where uniform bins put almost
        everything in the first bin.

    Returns
    -------
    dict with
        ``edges`` : ndarray of shape (n_bins + 1,)
        ``mean_pred``, ``mean_obs`` : ndarray of shape (n_bins,), NaN for empty bins
        ``count`` : ndarray of shape (n_bins,), int64

    Notes
    -----
    Bin ``b`` holds ``edges[b] <= p < edges[b + 1]``; the last bin also
    holds ``p == edges[-1]``.
    """
    target = _as_float_vector(y_or_true_prob, "y_or_true_prob")         # (n,)
    p = _as_float_vector(p, "p")                                       # (n,)
    _check_same_length(target, p, "y_or_true_prob", "p")
    _check_probability(target, "y_or_true_prob")
    _check_probability(p, "p")
    n_bins = check_int(n_bins, "n_bins", low=1)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)                      # (B + 1,)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))      # (B + 1,)
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    # Searching the inner edges gives 0..B-1 directly, and p equal to the top edge
    # falls in the last bin rather than past it.
    bin_of = np.searchsorted(edges[1:-1], p, side="right")             # (n,)
    count = np.bincount(bin_of, minlength=n_bins).astype(np.int64)     # (B,)
    sum_pred = np.bincount(bin_of, weights=p, minlength=n_bins)        # (B,)
    sum_obs = np.bincount(bin_of, weights=target, minlength=n_bins)    # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN on purpose
        mean_pred = np.where(count > 0, sum_pred / count, np.nan)      # (B,)
        mean_obs = np.where(count > 0, sum_obs / count, np.nan)        # (B,)
    return {"edges": edges, "mean_pred": mean_pred, "mean_obs": mean_obs, "count": count}


def expected_calibration_error(y_or_true_prob, p, n_bins=10, strategy="uniform"):
    """Count-weighted mean gap between predicted and observed rate over bins.

    ``ECE = sum_b (count_b / n) |mean_obs_b - mean_pred_b|`` over the bins of
    :func:`calibration` (empty bins contribute nothing).

    Returns
    -------
    float in [0, 1]
    """
    table = calibration(y_or_true_prob, p, n_bins=n_bins, strategy=strategy)
    filled = table["count"] > 0
    gap = np.abs(table["mean_obs"][filled] - table["mean_pred"][filled])
    return float(np.sum(table["count"][filled] * gap) / table["count"].sum())


_PRED_KEYS = ("p_ctr", "p_cvr", "p_ctcvr")


def _auc_or_nan(y, score):
    """AUC, or NaN where it is undefined (one class, or no rows)."""
    if y.shape[0] == 0 or y.min() == y.max():
        return float("nan")
    return auc(y, score)


def _mean_gap(p, truth, mask):
    """mean(p[mask]) - mean(truth[mask]), NaN for an empty mask."""
    if not mask.any():
        return float("nan")
    return float(p[mask].mean() - truth[mask].mean(dtype=np.float64))


def evaluate_esmm(pred, dataset):
    """Score ESMM-style predictions on a Dataset, in the paper's terms and beyond.

    Parameters
    ----------
    pred : dict
        Any of ``"p_ctr"``, ``"p_cvr"``, ``"p_ctcvr"``, each an ndarray of
        shape (n,) of probabilities, as returned by ``ESMM.predict``. A
        clicked-only CVR model gives just ``{"p_cvr": ...}``; metrics that
        need a missing key are NaN.
    dataset : Dataset
        The impressions the predictions are for (n rows).

    Returns
    -------
    dict of float (NaN where undefined: a missing prediction, no ground
    truth, an empty group, or only one class)
        ``ctr_auc`` : AUC of p_ctr against click, all impressions.
        ``cvr_auc_clicked`` : AUC of p_cvr against conversion on clicked
            impressions only, the paper's CVR protocol.
        ``ctcvr_auc`` : AUC of p_ctcvr against click * conversion, all impressions.
        ``cvr_auc_entire`` : AUC of p_cvr against conversion_if_clicked over
            all impressions (ground truth needed): how well pCVR ranks the
            space it is actually used on.
        ``pcvr_bias_clicked``, ``pcvr_bias_unclicked``, ``pcvr_bias_entire`` :
            mean p_cvr minus mean true_cvr on each group (ground truth
            needed). A clicked-only model under positive ``rho`` shows a
            positive bias on the unclicked: it learned the CVR of the kind
            of impression that gets clicked.
        ``pcvr_bias_potential_clicked``, ``pcvr_bias_potential_unclicked`` :
            mean p_cvr minus the mean of ``conversion_if_clicked``, the
            potential outcome (:func:`potential_outcome_bias`). Under a hidden
            confounder this differs from the bias against true_cvr on the
            unclicked: it sees what no model of the features can.
    """
    if not isinstance(pred, dict):
        raise TypeError(f"pred must be a dict with keys among {_PRED_KEYS}, got "
                        f"{type(pred).__name__}")
    unknown = sorted(set(pred) - set(_PRED_KEYS) - {"p_cvr_raw"})   # DIVISION's, AITM's raw ratio
    if unknown:
        raise ValueError(f"pred has unknown key(s) {unknown}; expected keys among {_PRED_KEYS}")
    if not pred:
        raise ValueError(f"pred is empty; give at least one of {_PRED_KEYS}")
    n = len(dataset)
    p = {}
    for key in _PRED_KEYS:
        if key in pred:
            p[key] = _as_float_vector(pred[key], key)                  # (n,)
            if p[key].shape[0] != n:
                raise ValueError(f"{key} has length {p[key].shape[0]} but the dataset has "
                                 f"{n} rows")
            _check_probability(p[key], key)
    nan = float("nan")
    clicked = dataset.click == 1                                       # (n,)
    out = dict.fromkeys(("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "cvr_auc_entire",
                         "pcvr_bias_clicked", "pcvr_bias_unclicked", "pcvr_bias_entire",
                         "pcvr_bias_potential_clicked", "pcvr_bias_potential_unclicked"), nan)
    if "p_ctr" in p:
        out["ctr_auc"] = _auc_or_nan(dataset.click, p["p_ctr"])
    if "p_ctcvr" in p:
        out["ctcvr_auc"] = _auc_or_nan(dataset.click * dataset.conversion, p["p_ctcvr"])
    if "p_cvr" in p:
        out["cvr_auc_clicked"] = _auc_or_nan(dataset.conversion[clicked], p["p_cvr"][clicked])
        if dataset.conversion_if_clicked is not None:
            out["cvr_auc_entire"] = _auc_or_nan(dataset.conversion_if_clicked, p["p_cvr"])
        if dataset.true_cvr is not None:
            for group, mask in (("clicked", clicked), ("unclicked", ~clicked),
                                ("entire", np.ones(n, dtype=bool))):
                out[f"pcvr_bias_{group}"] = _mean_gap(p["p_cvr"], dataset.true_cvr, mask)
        if dataset.conversion_if_clicked is not None:
            for group, mask in (("clicked", clicked), ("unclicked", ~clicked)):
                out[f"pcvr_bias_potential_{group}"] = potential_outcome_bias(
                    p["p_cvr"], dataset.conversion_if_clicked, mask)["bias"]
    return out


# ------------------------------------------- bias against the potential outcome

def potential_outcome_bias(p_cvr, conversion_if_clicked, mask=None, level=0.95):
    """Mean pCVR minus mean potential conversion, with a normal-approximation interval.

    The potential outcome ``conversion_if_clicked`` is what each impression
    would have done if clicked (a simulator knows it for unclicked rows too).
    On unclicked impressions it is the target of a CVR model used for
    ranking, and, unlike ``true_cvr``, it carries the effect of a hidden
    confounder: with one, unclicked impressions convert less often than any
    function of their features predicts, so a bias against ``true_cvr`` of 0
    can be a positive bias against the potential outcome.

    Parameters
    ----------
    p_cvr : array_like of float in [0, 1], shape (n,)
    conversion_if_clicked : array_like of 0/1, shape (n,)
    mask : array_like of bool, shape (n,), optional
        The group (say ``click == 0``); default all rows.
    level : float in (0, 1)
        Coverage of the interval.

    Returns
    -------
    dict: see :func:`gap_interval`
    """
    y, p = _check_labels_and_scores(conversion_if_clicked, p_cvr, "conversion_if_clicked", "p_cvr")
    return gap_interval(p, y, mask, level)


def gap_interval(p, target, mask=None, level=0.95):
    """Mean ``p - target`` over a group of rows, with a normal-approximation interval.

    Parameters
    ----------
    p, target : array_like of float in [0, 1], shape (n,)
        Predictions and what they are compared with (0/1 outcomes or true probabilities).
    mask : array_like of bool, shape (n,), optional
    level : float in (0, 1)

    Returns
    -------
    dict with ``bias``, ``se``, ``low``, ``high`` (float) and ``n`` (rows).
    By design, not by accident: all four are NaN for an empty group, and
    ``se``, ``low``, ``high`` for a group of one row (no spread to measure).

    Notes
    -----
    With ``d_j = p_j - target_j`` over the ``m`` rows of the group, the bias is
    ``mean(d)`` and its standard error ``std(d) / sqrt(m)``; the interval is
    ``bias -+ z * se`` with ``z`` the normal quantile for ``level`` (1.96 for
    95%). It covers the test impressions' sampling noise for a fixed model;
    training noise is seen by repeating over seeds (:func:`seed_interval`).
    """
    p = _as_float_vector(p, "p")
    target = _as_float_vector(target, "target")
    _check_same_length(p, target, "p", "target")
    _check_probability(p, "p")
    _check_probability(target, "target")
    _check_level(level)
    if mask is None:
        mask = np.ones(p.shape[0], dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != p.shape:
        raise ValueError(f"mask must be a boolean array of shape {p.shape}, got "
                         f"{mask.dtype} of shape {mask.shape}")
    m = int(mask.sum())
    nan = float("nan")
    if m == 0:
        return {"bias": nan, "se": nan, "low": nan, "high": nan, "n": 0}
    d = p[mask] - target[mask]                                         # (m,)
    bias = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(m)) if m > 1 else nan
    z = _normal_quantile(0.5 + level / 2)
    return {"bias": bias, "se": se, "low": bias - z * se, "high": bias + z * se, "n": m}


def _normal_quantile(u):
    """Standard normal quantile by bisection on the erf-based CDF (NumPy only, 1e-12)."""
    from math import erf, sqrt
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + erf(mid / sqrt(2))) < u:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def seed_interval(values, row_se=None, level=0.95):
    """Mean over training seeds with an interval that counts seeds and test rows.

    A bias measured on one test set varies for two reasons: the trained
    network (seed to seed) and the test impressions. With ``S`` seeds'
    values ``v_s`` and, optionally, each seed's test-row standard error, the
    half-width is

        sqrt( (t · sd(v) / sqrt(S))² + (z · mean(row_se))² )

    with ``t`` the Student quantile at ``S - 1`` degrees of freedom and ``z``
    the normal one. The test-row part is not divided by ``sqrt(S)``: every
    seed is scored on the same test rows, so their noise does not average out.
    For a difference between two methods on the same rows (paired), pass the
    per-seed differences and no ``row_se``: a shared target cancels.

    Parameters
    ----------
    values : sequence of finite floats, at least 2
    row_se : sequence of finite floats >= 0, or None
    level : float in (0, 1)

    Returns
    -------
    dict with ``mean``, ``low``, ``high``, ``n`` (seeds); all finite (values so
    large that the mean or the spread overflows float64 are refused)
    """
    v = _as_float_vector(values, "values", finite=True)
    if v.shape[0] < 2:
        raise ValueError(f"an interval over seeds needs at least 2 values, got {v.shape[0]}")
    u = 0.5 + _check_level(level) / 2
    se = None
    if row_se is not None:
        se = _as_float_vector(row_se, "row_se", finite=True)
        _check_same_length(v, se, "values", "row_se")
        if (se < 0).any():
            raise ValueError(f"row_se are standard errors, >= 0; {int((se < 0).sum())} "
                             f"negative value(s), first at row {int(np.argmax(se < 0))}")
    with np.errstate(over="ignore", invalid="ignore"):     # checked just below
        seeds = _t_quantile(u, v.shape[0] - 1) * v.std(ddof=1) / np.sqrt(v.shape[0])
        rows = 0.0 if se is None else _normal_quantile(u) * float(se.mean())
        half = float(np.hypot(seeds, rows))
        mean = float(v.mean())
        low, high = mean - half, mean + half
    if not np.isfinite([mean, low, high]).all():
        raise ValueError("the interval overflows float64: values (largest magnitude "
                         f"{float(np.max(np.abs(v))):.3g}) or row_se are too large to average")
    return {"mean": mean, "low": low, "high": high, "n": int(v.shape[0])}


def _t_quantile(u, df):
    """Student-t quantile (u > 1/2) by bisection on the CDF, integrated numerically (NumPy only)."""
    from math import lgamma, pi
    log_c = lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * np.log(df * pi)

    def cdf(x):
        # 1/2 + integral_0^x of the density; Simpson's rule on a fine grid (error ~1e-12)
        t = np.linspace(0.0, x, 20001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
        h = t[1] - t[0]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < u:                       # bracket: heavy tails at df = 1 need room
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < u:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def binned_gap(p, target, by, n_bins=10):
    """Mean ``p - target`` within quantile bins of ``by``: where a bias sits.

    Parameters
    ----------
    p, target, by : ndarray of shape (n,)
        Say pCVR, the potential conversion, and the true CTR of the same rows.
    n_bins : int
        Bins hold about ``n / n_bins`` rows each (edges at quantiles of ``by``).

    Returns
    -------
    dict with ``edges`` (n_bins + 1,), ``mid`` (median of ``by`` per bin),
    ``gap`` and ``se`` (mean of ``p - target`` per bin and its standard error; NaN, with
    ``mid``, for a bin of fewer than 2 rows), ``count``
    """
    p = _as_float_vector(p, "p")
    target = _as_float_vector(target, "target")
    by = _as_float_vector(by, "by")
    _check_same_length(p, target, "p", "target")
    _check_same_length(p, by, "p", "by")
    n_bins = check_int(n_bins, "n_bins", low=1)
    edges = np.quantile(by, np.linspace(0.0, 1.0, n_bins + 1))         # (B + 1,)
    bin_of = np.clip(np.searchsorted(edges[1:-1], by, side="right"), 0, n_bins - 1)  # (n,)
    d = p - target                                                     # (n,)
    gap, se, mid, count = (np.full(n_bins, np.nan) for _ in range(4))
    for b in range(n_bins):
        m = bin_of == b
        count[b] = m.sum()
        if m.sum() > 1:
            gap[b], se[b] = d[m].mean(), d[m].std(ddof=1) / np.sqrt(m.sum())
            mid[b] = np.median(by[m])
    return {"edges": edges, "mid": mid, "gap": gap, "se": se, "count": count.astype(np.int64)}


# ------------------------------------------------- soft AUC and the bootstrap

def _tie_groups(score):
    """Each row's tie group, groups numbered 0..g-1 in ascending order of score.

    Returns
    -------
    group : ndarray of int64, shape (n,)
    n_groups : int
    """
    values, group = np.unique(score, return_inverse=True)              # (g,), (n,)
    return group.reshape(-1), values.shape[0]


def _pair_auc(pos, weight, group, n_groups, self_pairs):
    """AUC from per-row positive weights ``pos`` and row weights ``weight``.

    A row of weight ``w`` and positive weight ``pos`` counts as ``pos``
    positives and ``w - pos`` negatives. Sums ``pos_i neg_j`` over pairs of
    distinct rows with ``score_i > score_j`` (half for ties) and divides by
    the sum over all pairs of distinct rows; ``self_pairs`` is the total
    weight of the pairs of a row with itself, which the tie count of a
    group would otherwise include. With the rows' tie groups precomputed
    (:func:`_tie_groups`) this costs O(n) and no sort, which is what makes
    a bootstrap of many replicates affordable.
    """
    pos_g = np.bincount(group, weights=pos, minlength=n_groups)        # (g,) per tie group
    neg_g = np.bincount(group, weights=weight, minlength=n_groups) - pos_g  # (g,)
    neg_below = np.cumsum(neg_g) - neg_g                               # (g,) in lower groups
    num = float(pos_g @ (neg_below + 0.5 * neg_g)) - 0.5 * self_pairs
    den = float(pos_g.sum()) * float(neg_g.sum()) - self_pairs
    return num / den if den > 0 else float("nan")


def soft_auc(p_true, score):
    """The AUC expected when row ``i`` is positive with probability ``p_true[i]``.

    Parameters
    ----------
    p_true : array_like of float in [0, 1], shape (n,)
        Each row's probability of being positive; 0/1 labels give the plain
        :func:`auc`. On simulated data, ``true_cvr``.
    score : array_like of float, shape (n,)

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Every ordered pair of distinct rows (i, j) is weighted by the chance
    ``p_i (1 - p_j)`` that i is a positive and j a negative:

        soft AUC = sum_{i != j} p_i (1 - p_j) K(s_i, s_j) / sum_{i != j} p_i (1 - p_j),

    with ``K = 1`` if ``s_i > s_j``, 1/2 if tied, 0 otherwise. Numerator and
    denominator are the expected pair counts of the AUC over label sets
    drawn from ``p_true``, so for large ``n`` it is the mean AUC over such
    draws, without their sampling noise: a scorer is judged against the
    truth, not against one coin toss per row.
    """
    p = _as_float_vector(p_true, "p_true")                             # (n,)
    score = _as_float_vector(score, "score")                           # (n,)
    _check_same_length(p, score, "p_true", "score")
    _check_probability(p, "p_true")
    # Row i with itself would be a "pair" of weight p_i (1 - p_i); it is not one.
    out = _pair_auc(p, np.ones_like(p), *_tie_groups(score), float(p @ (1.0 - p)))
    if np.isnan(out):
        raise ValueError("soft AUC is undefined: p_true gives no pair with a positive and a "
                         "negative (all 0 or all 1)")
    return out


def paired_bootstrap(target, scores, reference, n_boot=200, seed=0, level=0.95):
    """Bootstrap over rows of each scorer's AUC and its difference to ``reference``.

    Every replicate draws ``n`` rows with replacement, the same rows for every
    scorer (paired), and computes every scorer's (soft) AUC on them. The
    spread of the differences is what says whether two methods can be told
    apart on this test set; it is far smaller than the spread of each AUC,
    because both are scored on the same hard and easy rows.

    Parameters
    ----------
    target : array_like of float in [0, 1], shape (n,)
        0/1 labels (plain AUC) or probabilities (:func:`soft_auc`).
    scores : dict name -> array of shape (n,) or (k, n)
        ``k`` rows (say, training seeds) are averaged: the scorer's value is
        the mean AUC of its ``k`` score vectors.
    reference : str
        The key of ``scores`` every other scorer is compared with.
    n_boot : int
    seed : int, None or numpy.random.Generator
    level : float in (0, 1)
        Coverage of the percentile interval.

    Returns
    -------
    dict name -> dict with
        ``value``: the AUC on the full test set (mean over its ``k`` vectors),
        ``low``, ``high``: percentile interval of the AUC,
        ``diff``: value minus the reference's value,
        ``diff_low``, ``diff_high``: percentile interval of the difference,
        ``diff_se``: bootstrap standard error of the difference.

    A target without a positive and a negative (all 0, all 1, one row) has no
    AUC and is refused. A replicate that happens to draw no such pair (possible
    only with very few positives or negatives) has no AUC either; it is drawn
    again, so the interval is that of replicates that can be scored. Every
    returned number is finite.
    """
    y = _as_float_vector(target, "target")                             # (n,)
    _check_probability(y, "target")
    if not isinstance(scores, dict):
        raise TypeError(f"scores must be a dict name -> score array, got "
                        f"{type(scores).__name__}")
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the scores {sorted(scores)}")
    if (isinstance(n_boot, (bool, np.bool_))
            or not isinstance(n_boot, (int, float, np.integer, np.floating))
            or int(n_boot) != n_boot or n_boot < 2):
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    _check_level(level)
    seed = check_seed(seed)
    n = y.shape[0]
    sorted_scores = {}
    for name, s in scores.items():
        try:
            s = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"scores[{name!r}] must be numeric, got "
                            f"{type(scores[name]).__name__}") from None
        s = s[None, :] if s.ndim == 1 else s                           # (k, n)
        if s.ndim != 2 or s.shape[1] != n:
            raise ValueError(f"scores[{name!r}] must have shape (n,) or (k, n) with n = {n}, "
                             f"got {np.shape(scores[name])}")
        if np.isnan(s).any():
            raise ValueError(f"scores[{name!r}] has NaN values")
        sorted_scores[name] = [_tie_groups(row) for row in s]

    y_var = y * (1.0 - y)                                              # (n,) 0 for 0/1 labels

    def values(weight):
        # A row drawn c times is c distinct rows: c self-pairs to leave out, and the
        # c (c - 1) pairs between its copies are real pairs (ties, counted as 1/2).
        pos, self_pairs = weight * y, float(weight @ y_var)            # (n,), scalar
        return {name: float(np.mean([_pair_auc(pos, weight, g, k, self_pairs)
                                     for g, k in groups]))
                for name, groups in sorted_scores.items()}

    full = values(np.ones(n))
    if any(np.isnan(v) for v in full.values()):
        raise ValueError(f"the AUC is undefined on this target: its {n} row(s) give no pair of "
                         "a positive and a negative (all 0, all 1, or a single row), so there "
                         "is nothing to bootstrap")
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(int(n_boot)) for name in scores}
    redrawn = 0
    for b in range(int(n_boot)):
        while True:
            weight = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
            replicate = values(weight)
            if not any(np.isnan(v) for v in replicate.values()):
                break
            # No positive-negative pair among the rows drawn: no AUC; draw again. That
            # happens with probability <= 1/2 (two rows), so the cap only stops a loop.
            redrawn += 1
            if redrawn > 10 * int(n_boot):
                raise ValueError(f"{redrawn} replicates drew no positive-negative pair")
        for name, v in replicate.items():
            draws[name][b] = v
    tail = 100 * (1 - level) / 2
    out = {}
    for name in scores:
        diff = draws[name] - draws[reference]
        out[name] = {"value": full[name],
                     "low": float(np.percentile(draws[name], tail)),
                     "high": float(np.percentile(draws[name], 100 - tail)),
                     "diff": full[name] - full[reference],
                     "diff_low": float(np.percentile(diff, tail)),
                     "diff_high": float(np.percentile(diff, 100 - tail)),
                     "diff_se": float(np.std(diff, ddof=1))}
    return out
