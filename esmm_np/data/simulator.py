"""Simulate an entire-space impression log whose ground truth is known.

ESMM's claims (Ma et al., SIGIR 2018) are about impressions nobody clicked:
a CVR model trained only on clicked impressions is applied to all of them.
A real log cannot show how wrong that is, because an unclicked impression
never reveals whether it would have converted. This simulator can: every
impression carries its true click probability, its true conversion
probability given a click, and the conversion it would have had if clicked.

The generative story, with every knob, is in docs/simulator.md; in short:

1. Users belong to segments and items to categories. Each user (item) has
   latent vectors made of its segment's (category's) vector plus its own
   deviation, so rare ids still share information through their group.
2. Impressions pick a user and an item independently with Zipf-like
   popularity, so a few ids get most impressions and most ids are rare.
3. A click score is read out of one pair of latent vectors (user, item) and
   a private conversion score out of a second pair; the private score is
   cleaned, on a calibration sample, of anything that predicts clicking.
   The conversion score is ``rho * click score + sqrt(1 - rho**2) *
   private score``, so ``rho`` alone turns "clicked" into a biased sample
   for CVR: at ``rho = 0`` clicked and unclicked impressions have the same
   mean true CVR.
4. Logits are an intercept plus ``signal`` times the score, plus
   ``confounder`` times an unobserved per-impression shock shared by both.
   Intercepts are solved for so that the mean CTR and CVR hit targets.
5. Click and the potential conversion are Bernoulli draws; the observed
   conversion is ``click * conversion_if_clicked``.

Randomness: everything derives from ``seed`` through
``numpy.random.SeedSequence`` with a fixed ``spawn_key`` per purpose and per
block of ``_BLOCK`` impressions. So the same seed gives the same arrays bit
for bit, the first ``m`` impressions of a longer run equal a run of ``m``,
and turning one knob (say ``rho``) leaves the users, items and random draws
of the other parts of the world unchanged.
"""

import numpy as np
from numpy.polynomial.hermite import hermgauss

from .dataset import Dataset
from .knobs import BLOCK, N_CALIBRATION, TooLarge, check_knobs, memory_needed, physical_memory

#: Field order of ``X``. The user-side group (segment) comes last so that
#: the first three columns are the familiar user / item / category triple.
FIELD_NAMES = ("user_id", "item_id", "item_category", "user_segment")

_BLOCK = BLOCK            # impressions per random-stream block (also the memory unit)
_N_CALIBRATION = N_CALIBRATION  # impressions drawn once to fit the score map and intercepts
_INTERCEPT_BOUND = 30.0   # intercepts searched in [-30, 30] on the logit scale
_MAX_SOLVER_STEPS = 200   # safeguarded secant; typically converges in under 10
_TINY = 1e-12             # a score spread below this counts as a constant score
_N_QUADRATURE = 32        # Gauss-Hermite nodes for averaging over the confounder

# First element of every spawn_key: one independent stream family per purpose.
_STREAM_WORLD, _STREAM_CALIBRATION, _STREAM_BLOCK = 0, 1, 2
# Second element inside the world family: one stream per ingredient, so
# adding dense features (say) does not change the users or items.
_W_USERS, _W_ITEMS, _W_READOUT, _W_DENSE, _W_POPULARITY, _W_ATTRIBUTES = range(6)
# Last element inside a calibration or impression block.
_R_IDS, _R_DENSE, _R_CONFOUNDER, _R_OUTCOME = range(4)


def _rng(seed, *key):
    """A Generator for one purpose, independent of every other ``key``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _sigmoid(x):
    """Logistic function; exp overflow for very negative ``x`` correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------ the world

def _popularity_cdf(rng, n, skew):
    """Cumulative impression probabilities over ids, Zipf-like in a random id order.

    Rank ``r`` (0 = most popular) gets weight ``(r + 1) ** -skew``; the ranks are
    shuffled over ids so that an id's number says nothing about its popularity.

    Returns
    -------
    ndarray of shape (n,), float64, increasing, last entry exactly 1
    """
    rank_weight = (np.arange(n) + 1.0) ** -skew                        # (n,)
    weight = rank_weight[rng.permutation(n)]                           # (n,) weight of id
    cdf = np.cumsum(weight) / weight.sum()                             # (n,)
    cdf[-1] = 1.0  # so a uniform draw in [0, 1) always lands on an id
    return cdf


def _grouped_latents(rng, n, n_groups, dim, group_share):
    """Group ids and two latent vectors per member: group vector + own deviation.

    Both parts are standard normal and mixed with weights whose squares sum
    to one, so every latent vector is standard normal whatever ``group_share``.

    Returns
    -------
    group : ndarray of shape (n,), int64
    latent : ndarray of shape (n, 2, dim)
        ``latent[:, 0]`` drives clicks (and, through rho, conversions);
        ``latent[:, 1]`` drives only the private part of conversions.
    """
    group = rng.integers(0, n_groups, size=n)                          # (n,)
    group_vec = rng.standard_normal((n_groups, 2, dim))                # (G, 2, d)
    own = rng.standard_normal((n, 2, dim))                             # (n, 2, d)
    latent = np.sqrt(group_share) * group_vec[group] + np.sqrt(1.0 - group_share) * own
    return group, latent                                               # (n,), (n, 2, d)


def _make_world(seed, n_users, n_items, n_categories, n_segments, popularity_skew,
                group_share, latent_dim, n_dense):
    """Draw everything that is fixed across impressions.

    The raw score of task ``k`` (0 = click, 1 = private conversion) for user
    ``u`` and item ``i`` is

        raw_k = a_k . p_uk + b_k . q_ik + c_k . (p_uk * q_ik) + w_k . x

    with readouts ``a_k, b_k, c_k ~ N(0, I / d)`` and dense weights
    ``w_k ~ N(0, I / n_dense)``: a user effect, an item effect, a user-item
    affinity of rank ``latent_dim`` and a dense-feature effect. The products
    with the readouts are precomputed per user and per item here.
    """
    d = latent_dim
    segment, p = _grouped_latents(_rng(seed, _STREAM_WORLD, _W_USERS),
                                  n_users, n_segments, d, group_share)  # (U,), (U, 2, d)
    category, q = _grouped_latents(_rng(seed, _STREAM_WORLD, _W_ITEMS),
                                   n_items, n_categories, d, group_share)  # (I,), (I, 2, d)
    r = _rng(seed, _STREAM_WORLD, _W_READOUT)
    a, b, c = r.standard_normal((3, 2, d)) / np.sqrt(d)                # each (2, d)
    world = {
        "segment": segment,                                            # (U,)
        "category": category,                                          # (I,)
        "user_main": np.einsum("ukd,kd->uk", p, a),                    # (U, 2)
        "item_main": np.einsum("ikd,kd->ik", q, b),                    # (I, 2)
        "user_inter": p * c,                                           # (U, 2, d) c_k * p_uk
        "item_latent": q,                                              # (I, 2, d)
        "dense_weight": (_rng(seed, _STREAM_WORLD, _W_DENSE).standard_normal((n_dense, 2))
                         / np.sqrt(max(n_dense, 1))),                  # (n_dense, 2)
    }
    pop = _rng(seed, _STREAM_WORLD, _W_POPULARITY)
    world["user_cdf"] = _popularity_cdf(pop, n_users, popularity_skew)  # (U,)
    world["item_cdf"] = _popularity_cdf(pop, n_items, popularity_skew)  # (I,)
    return world


def _attributes(seed, n_fields, n_users, n_items, skew):
    """The attribute fields, each an attribute of the item (even f) or of the user (odd f).

    Returns
    -------
    list of (side, value, size): side "item" or "user", value an ndarray of
    int64 of shape (n_items,) or (n_users,) giving each id's attribute value
    in ``0 .. size - 1``.
    """
    rng = _rng(seed, _STREAM_WORLD, _W_ATTRIBUTES)
    out = []
    for f in range(int(n_fields)):
        side, n_ids = ("item", n_items) if f % 2 == 0 else ("user", n_users)
        size = max(2, n_ids // (5 * 2 ** (f // 2)))
        cdf = _popularity_cdf(rng, size, skew)                         # (size,)
        value = np.searchsorted(cdf, rng.random(n_ids), side="right")  # (n_ids,)
        out.append((side, value, size))
    return out


def _draw_impressions(world, m, n_dense, rng_ids, rng_dense):
    """Pick a user and an item per impression by popularity; draw dense features.

    Returns
    -------
    users : ndarray of shape (m,), int64
    items : ndarray of shape (m,), int64
    dense : ndarray of shape (m, n_dense), float32, or None when n_dense == 0
    """
    # Shape (m, 2), not (2, m): row j then uses draws 2j and 2j + 1 whatever m
    # is, so a shorter last block draws a prefix of what a full one would.
    u = rng_ids.random((m, 2))                                         # (m, 2)
    users = np.searchsorted(world["user_cdf"], u[:, 0], side="right")  # (m,)
    items = np.searchsorted(world["item_cdf"], u[:, 1], side="right")  # (m,)
    dense = rng_dense.standard_normal((m, n_dense), dtype=np.float32) if n_dense else None
    return users, items, dense


def _raw_scores(world, users, items, dense):
    """Raw click and private-conversion scores (see :func:`_make_world`).

    Returns
    -------
    ndarray of shape (m, 2): column 0 click, column 1 private conversion
    """
    raw = world["user_main"][users] + world["item_main"][items]       # (m, 2)
    raw += np.einsum("mkd,mkd->mk", world["user_inter"][users],
                     world["item_latent"][items])                      # (m, 2)
    if dense is not None:
        raw += dense @ world["dense_weight"]                           # (m, 2)
    return raw


def _fit_score_map(raw, ctr, cvr, signal):
    """Fit, on the calibration sample, the map from raw scores to the two scores.

    Click score: ``z1 = (raw_0 - m1) / s1``, mean 0 and variance 1.

    Private conversion score ``z2``, also mean 0 and variance 1, must carry
    no information about clicking, so that ``rho`` alone sets the selection
    bias. Being uncorrelated with ``z1`` is not enough in a finite world: the
    clicks concentrate on a few popular, high-score users and items, and
    their private scores are whatever they happen to be. So with the nominal
    click probability ``p0 = sigmoid(a0 + signal z1)`` (``a0`` calibrated to
    ``ctr`` without confounder):

    - ``r`` = ``raw_1`` minus its least-squares fit on (1, z1, p0);
    - ``q`` = ``p0`` minus its least-squares fit on (1, z1);
    - ``z2 = cos(phi) r / sd(r) + sin(phi) q / sd(q)``, where the angle
      ``phi`` (usually a few degrees) is solved for so that, at ``rho = 0``,
      clicked and unclicked impressions have the same expected mean CVR.

    ``r`` and ``q`` are uncorrelated with each other and with ``z1``, so
    ``z2`` has variance 1 and ``rho z1 + sqrt(1 - rho**2) z2`` has
    correlation exactly ``rho`` with ``z1`` on the calibration sample.

    Parameters
    ----------
    raw : ndarray of shape (m, 2)
        Raw click and private conversion scores of the calibration sample.
    ctr, cvr, signal : float
        As in :func:`simulate`.

    Returns
    -------
    dict of the constants :func:`_scores` needs
    """
    m = raw.shape[0]
    m1, inv_s1 = raw[:, 0].mean(), _inverse_spread(raw[:, 0])
    z1 = (raw[:, 0] - m1) * inv_s1                                     # (m,)
    a0 = _solve_intercept(signal * z1[:, None], np.full(1, 1.0 / m), ctr)
    p0 = _sigmoid(a0 + signal * z1)                                    # (m,)
    basis = np.column_stack([np.ones(m), z1, p0])                      # (m, 3)
    coef_q = np.linalg.lstsq(basis[:, :2], p0, rcond=None)[0]          # (2,)
    q = p0 - basis[:, :2] @ coef_q                                     # (m,)
    coef_r = np.linalg.lstsq(basis, raw[:, 1], rcond=None)[0]          # (3,)
    r = raw[:, 1] - basis @ coef_r                                     # (m,)
    smap = dict(m1=m1, inv_s1=inv_s1, a0=a0, signal=signal, coef_q=coef_q,
                inv_sq=_inverse_spread(q), coef_r=coef_r, inv_sr=_inverse_spread(r), phi=0.0)
    r_hat, q_hat = r * smap["inv_sr"], q * smap["inv_sq"]              # (m,), (m,)
    clicked_w = p0 / p0.sum()                                          # (m,) expected clicks
    unclicked_w = (1.0 - p0) / (1.0 - p0).sum()                        # (m,)

    last_intercept = [None]  # successive angles are close, so each solve starts from the last

    def selection_gap(phi):
        """Mean CVR of clicked minus unclicked at rho = 0, for angle phi."""
        z2 = np.cos(phi) * r_hat + np.sin(phi) * q_hat                 # (m,)
        # 1e-7 is plenty here: phi only has to make a gap small next to sampling error.
        a = _solve_intercept(signal * z2[:, None], clicked_w[:, None], cvr, last_intercept[0],
                             rtol=1e-7)
        last_intercept[0] = a
        p_cvr = _sigmoid(a + signal * z2)                              # (m,)
        return clicked_w @ p_cvr - unclicked_w @ p_cvr

    smap["phi"] = _solve_increasing(selection_gap, -np.pi / 2, np.pi / 2, 0.0, 0.05,
                                    tol=1e-7 * cvr, what="the neutralising angle phi")
    return smap


def _inverse_spread(x):
    """``1 / std(x)``, or 0 when ``x`` is (nearly) constant, so a constant score stays 0.

    That happens in degenerate worlds, e.g. one category, one segment and
    ``group_share = 1``, where every impression has the same score.
    """
    s = x.std()
    return 1.0 / s if s > _TINY else 0.0


def _scores(raw, smap, rho):
    """Click score and conversion score, each mean 0 and variance 1, correlation ``rho``.

    Parameters
    ----------
    raw : ndarray of shape (m, 2)
    smap : dict from :func:`_fit_score_map`
    rho : float

    Returns
    -------
    s_ctr, s_cvr : ndarray of shape (m,)
    """
    z1 = (raw[:, 0] - smap["m1"]) * smap["inv_s1"]                     # (m,)
    p0 = _sigmoid(smap["a0"] + smap["signal"] * z1)                    # (m,)
    cq, cr = smap["coef_q"], smap["coef_r"]
    q_hat = (p0 - cq[0] - cq[1] * z1) * smap["inv_sq"]                 # (m,)
    r_hat = (raw[:, 1] - cr[0] - cr[1] * z1 - cr[2] * p0) * smap["inv_sr"]  # (m,)
    z2 = np.cos(smap["phi"]) * r_hat + np.sin(smap["phi"]) * q_hat     # (m,)
    return z1, rho * z1 + np.sqrt(1.0 - rho * rho) * z2


# ------------------------------------------------------------- probabilities

def _quadrature(confounder):
    """Shifts and weights with sum_j w_j f(l + shift_j) = E_e[f(l + kappa e)], e ~ N(0, 1).

    Gauss-Hermite quadrature; without a confounder there is one node at 0
    with weight 1, so the same code serves both cases.

    Returns
    -------
    shift, w : ndarray of shape (J,)
    """
    if confounder == 0:
        return np.zeros(1), np.ones(1)
    t, w = hermgauss(_N_QUADRATURE)
    return confounder * np.sqrt(2.0) * t, w / np.sqrt(np.pi)           # (J,), (J,)


def _true_probabilities(logit_ctr, logit_cvr, confounder):
    """P(click | x) and P(conversion | click, x), the confounder integrated out.

    With an unobserved shock ``e ~ N(0, 1)`` added as ``kappa * e`` to both
    logits, a model that sees only ``x`` can at best learn

        true_ctr = E_e[ sigmoid(l_ctr + kappa e) ]
        true_cvr = E_e[ sigmoid(l_ctr + kappa e) sigmoid(l_cvr + kappa e) ] / true_ctr

    (a ratio, because among clicked impressions ``e`` is tilted upwards).
    With ``kappa = 0`` these are plain sigmoids.

    Parameters
    ----------
    logit_ctr, logit_cvr : ndarray of shape (m,)
    confounder : float

    Returns
    -------
    true_ctr, true_cvr : ndarray of shape (m,), float64
    """
    if confounder == 0:
        return _sigmoid(logit_ctr), _sigmoid(logit_cvr)
    shift, w = _quadrature(confounder)                                 # (J,), (J,)
    pc = _sigmoid(logit_ctr[:, None] + shift)                          # (m, J)
    pv = _sigmoid(logit_cvr[:, None] + shift)                          # (m, J)
    true_ctr = pc @ w                                                  # (m,)
    return true_ctr, ((pc * pv) @ w) / true_ctr


def _solve_increasing(f, lo, hi, x0, x1, tol, what):
    """Root of an increasing function ``f`` on ``[lo, hi]``.

    Secant steps starting from ``x0, x1``; every evaluation also shrinks the
    bracket known to hold the root, and a step that would leave the bracket
    is replaced by bisection, so it cannot diverge. Stops when ``|f| <= tol``.
    """
    x_prev, f_prev = x0, f(x0)
    if abs(f_prev) <= tol:
        return x0
    lo, hi = (x0, hi) if f_prev < 0 else (lo, x0)
    x = x1 if lo < x1 < hi else 2 * x0 - x1  # x1 on the wrong side: step the other way
    x = x if lo < x < hi else 0.5 * (lo + hi)
    for _ in range(_MAX_SOLVER_STEPS):
        fx = f(x)
        if abs(fx) <= tol:
            return x
        lo, hi = (x, hi) if fx < 0 else (lo, x)
        if hi - lo <= 1e-12 * max(1.0, abs(x)):
            break  # the bracket has collapsed without |f| <= tol: no root inside
        step = x - fx * (x - x_prev) / (fx - f_prev) if fx != f_prev else np.inf
        x_prev, f_prev = x, fx
        x = step if lo < step < hi else 0.5 * (lo + hi)
    raise ValueError(f"could not solve for {what} (no root in [{lo}, {hi}]); "
                     "try a smaller signal or confounder")


def _solve_intercept(x, weight, target, guess=None, rtol=1e-10):
    """The intercept ``a`` with ``sum(weight * sigmoid(a + x)) = target``.

    The left side increases in ``a`` from 0 to ``sum(weight) = 1``, so the
    root is unique.

    Parameters
    ----------
    x : ndarray of shape (m, J)
        Logit without the intercept, at each impression and quadrature node.
    weight : ndarray of shape (m, J), or broadcastable to it, >= 0, summing to 1
    target : float in (0, 1)
    guess : float, optional
        A nearby answer (from a similar problem) to start from.
    rtol : float
        Stop when the rate is within ``rtol * target`` of the target.
    """
    if guess is None:
        x0 = np.log(target / (1.0 - target))  # the answer when x is 0 everywhere
        x1 = x0 - 1.0  # spread in x raises a small rate, so the answer is lower
    else:
        x0, x1 = guess, guess + 0.01
    return _solve_increasing(lambda a: np.sum(weight * _sigmoid(a + x)) - target,
                             -_INTERCEPT_BOUND, _INTERCEPT_BOUND, x0, x1,
                             tol=rtol * target, what=f"an intercept giving rate {target}")


def _calibrate_intercepts(s_ctr, s_cvr, ctr, cvr, signal, confounder, guess=None):
    """Intercepts that put the mean CTR at ``ctr`` and the CVR given click at ``cvr``.

    On the calibration sample of ``m`` impressions, ``a_ctr`` solves
    ``mean(true_ctr) = ctr``, and then ``a_cvr`` solves
    ``sum(true_ctr * true_cvr) / sum(true_ctr) = cvr`` (expected conversions
    over expected clicks). Written out with the quadrature over the
    confounder, both are "a weighted mean of sigmoid(a + x) equals the
    target": the CTR weights are ``w_j / m``, the CVR weights are the click
    probabilities ``w_j * sigmoid(l_ctr + shift_j)``, normalised. ``guess``
    is a nearby CTR intercept (the confounder-free one) to start from.
    """
    shift, w = _quadrature(confounder)                                 # (J,), (J,)
    m = s_ctr.shape[0]
    x_ctr = signal * s_ctr[:, None] + shift                            # (m, J)
    a_ctr = _solve_intercept(x_ctr, w / m, ctr, guess=guess)
    click_weight = _sigmoid(a_ctr + x_ctr) * w                         # (m, J)
    click_weight /= click_weight.sum()
    a_cvr = _solve_intercept(signal * s_cvr[:, None] + shift, click_weight, cvr)  # (m, J) inside
    return a_ctr, a_cvr


# ------------------------------------------------------------------ simulate

#: Named worlds for :func:`simulate` (``preset=``); a knob passed explicitly wins.
#: "default" is the world every earlier version simulated. "paper" is closer to
#: the ESMM paper's public data (Ali-CCP: CTR about 4%, CVR given click about
#: 0.5%): rare conversions, more and rarer ids, four extra attribute fields, and
#: clicks and conversions driven mostly by the same structure (rho = 0.9).
PRESETS = {
    "default": dict(ctr=0.04, cvr=0.10, rho=0.6, confounder=0.0, n_users=4000, n_items=3000,
                    n_categories=40, n_segments=8, popularity_skew=1.0, group_share=0.5,
                    latent_dim=8, n_dense=0, signal=1.5, n_attribute_fields=0),
    "paper": dict(ctr=0.04, cvr=0.008, rho=0.9, confounder=0.0, n_users=20000, n_items=20000,
                  n_categories=100, n_segments=20, popularity_skew=1.1, group_share=0.5,
                  latent_dim=8, n_dense=0, signal=1.0, n_attribute_fields=4),
}


def simulate(n_impressions, *, seed=0, preset="default", ctr=None, cvr=None, rho=None,
             confounder=None, n_users=None, n_items=None, n_categories=None, n_segments=None,
             popularity_skew=None, group_share=None, latent_dim=None, n_dense=None,
             signal=None, n_attribute_fields=None):
    """Simulate ``n_impressions`` impressions with full ground truth.

    Every knob left as None takes its value from ``preset`` (:data:`PRESETS`);
    the values below are those of the "default" preset.

    Parameters
    ----------
    n_impressions : int
        Rows to generate. Cost is linear: generated in blocks of 65,536.
    seed : int >= 0
        Same seed and knobs, same arrays bit for bit.
    preset : {"default", "paper"}
        The world the knobs start from. "default" (CTR 4%, CVR given click
        10%, rho 0.6, 4,000 users, 3,000 items, four fields) is the world of
        earlier versions, bit for bit. "paper": CTR 4%, CVR given click 0.8%,
        rho 0.9, signal 1.0 (best possible CVR AUC on clicked impressions
        about 73, near the paper's 68.6), 20,000 users and 20,000 items with
        a longer tail (popularity_skew 1.1), 100 categories, 20 segments and
        four attribute fields, eight fields in all.
    ctr : float in (0, 1)
        Target mean click probability over impressions (calibrated, so the
        realised mean of ``true_ctr`` is close to it).
    cvr : float in (0, 1)
        Target conversion rate given click: expected conversions / expected
        clicks. Unclicked impressions may have a different mean CVR; that
        difference is the point.
    rho : float in [-1, 1]
        Correlation between click score and conversion score. Positive: what
        gets clicked also converts more, so clicked impressions have higher
        true CVR than unclicked ones and a clicked-only CVR model overshoots
        on the unclicked. 0: the scores carry no information about each
        other; without a confounder the two groups then have the same mean
        true CVR up to sampling error (with one, see ``confounder``).
        Negative: "clickbait", the unclicked would convert more.
    confounder : float >= 0
        Weight ``kappa`` of an unobserved per-impression shock ``e ~ N(0, 1)``
        added to both logits. It makes data missing not at random: given the
        features, clicked impressions are the ones with high ``e``, so they
        convert more than the unclicked would, and no model of the features
        can see it. ``true_ctr`` and ``true_cvr`` integrate ``e`` out.
    n_users, n_items : int
        Number of distinct users and items. More ids at the same number of
        impressions means fewer impressions per id (sparser data).
    n_categories : int
        Item categories. Items of a category share a latent vector, so fewer
        categories means more items pooled per category.
    n_segments : int
        User segments, the user-side counterpart of categories.
    popularity_skew : float >= 0
        Zipf exponent of user and item popularity: id of popularity rank r
        is picked with probability proportional to ``(r + 1) ** -skew``.
        0 is uniform; 1 (default) gives a long tail of rarely seen ids.
    group_share : float in [0, 1]
        Share of a user's (item's) latent variance that comes from its
        segment (category). 1: ids within a group are interchangeable;
        0: groups carry no information.
    latent_dim : int
        Dimension ``d`` of the latent vectors, the rank of the user-item
        affinity term. Larger is harder to learn from few impressions.
    n_dense : int
        Standard-normal numeric features per impression, each with a random
        effect on both the click and the conversion score. 0 means none
        (``dense`` is None).
    signal : float >= 0
        Standard deviation of the score part of each logit. 0: every
        impression has the same CTR and CVR; larger: more spread, higher
        attainable AUC, and stronger selection bias when ``rho != 0``.
    n_attribute_fields : int >= 0
        Extra categorical fields, attributes of the item (even fields: say,
        brand or shop) and of the user (odd fields: say, city). Attribute
        field ``f`` has ``max(2, n // (5 * 2 ** (f // 2)))`` values (``n`` the
        number of items or users) and each item or user gets one value by
        Zipf-like popularity, so a few values are common and most rare. They
        carry no signal of their own (the probabilities do not use them):
        like many fields of a real log, a model has to learn that they help
        little. 0 (default): ``X`` has the four columns above.

    Returns
    -------
    Dataset
        ``X`` int32 of shape (n, 4), columns :data:`FIELD_NAMES` =
        (user_id, item_id, item_category, user_segment), ``field_dims =
        (n_users, n_items, n_categories, n_segments)``; ``click``,
        ``conversion`` and ``conversion_if_clicked`` int8 of shape (n,);
        ``true_ctr`` and ``true_cvr`` float32 of shape (n,); ``dense``
        float32 of shape (n, n_dense) or None; ``info`` holds the knobs, the
        seed, the calibrated intercepts ``intercept_ctr``, ``intercept_cvr``
        and the ``neutralising_angle`` phi (docs/simulator.md).

    Notes
    -----
    Per impression, with click score ``s_c`` and conversion score ``s_v``
    (both standardised, correlation ``rho``) and intercepts ``a_c, a_v``::

        e                      ~ N(0, 1), unobserved
        click                  ~ Bernoulli(sigmoid(a_c + signal s_c + kappa e))
        conversion_if_clicked  ~ Bernoulli(sigmoid(a_v + signal s_v + kappa e))
        conversion             = click * conversion_if_clicked

    With ``confounder = 0``, ``click ~ Bernoulli(true_ctr)`` and
    ``conversion_if_clicked ~ Bernoulli(true_cvr)`` independently. With
    ``confounder > 0``, ``true_cvr`` is still exactly P(conversion = 1 |
    click = 1, x), but the potential outcome of an unclicked impression
    converts less often than its ``true_cvr`` says (see docs/simulator.md).
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}"
                         + ("" if isinstance(preset, str) else f" (a {type(preset).__name__})"))
    knobs = dict(PRESETS[preset])
    given = dict(ctr=ctr, cvr=cvr, rho=rho, confounder=confounder, n_users=n_users,
                 n_items=n_items, n_categories=n_categories, n_segments=n_segments,
                 popularity_skew=popularity_skew, group_share=group_share,
                 latent_dim=latent_dim, n_dense=n_dense, signal=signal,
                 n_attribute_fields=n_attribute_fields)
    knobs.update({k: v for k, v in given.items() if v is not None})
    (ctr, cvr, rho, confounder, n_users, n_items, n_categories, n_segments, popularity_skew,
     group_share, latent_dim, n_dense, signal, n_attribute_fields) = (knobs[k] for k in given)
    check_knobs(n_impressions, seed, ctr, cvr, rho, confounder, n_users, n_items,
                 n_categories, n_segments, popularity_skew, group_share, latent_dim,
                 n_dense, signal)
    if (not isinstance(n_attribute_fields, (int, np.integer)) or isinstance(n_attribute_fields, bool)
            or n_attribute_fields < 0):
        raise ValueError(f"n_attribute_fields must be a non-negative integer, got "
                         f"{n_attribute_fields!r}")
    need, biggest = memory_needed(int(n_impressions), int(n_users), int(n_items),
                                  int(n_categories), int(n_segments), int(latent_dim),
                                  int(n_dense), int(n_attribute_fields))
    have = physical_memory()
    if have is not None and need > have:
        raise TooLarge(f"simulate would need about {need / 2**30:,.1f} GiB of memory, mostly "
                          f"for {biggest}, and this machine has {have / 2**30:,.1f} GiB; "
                          "lower those knobs")
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_categories", n_categories),
                    ("n_segments", n_segments)):
        if v > np.iinfo(np.int32).max:
            raise ValueError(f"{name}={v} does not fit the int32 ids of a Dataset "
                             "(at most 2**31 - 1)")
    n, seed = int(n_impressions), int(seed)
    world = _make_world(seed, n_users, n_items, n_categories, n_segments, popularity_skew,
                        group_share, latent_dim, n_dense)

    # Calibration: one fixed sample, independent of n, so a longer run starts
    # with exactly the impressions of a shorter one.
    users, items, dense = _draw_impressions(world, _N_CALIBRATION, n_dense,
                                            _rng(seed, _STREAM_CALIBRATION, _R_IDS),
                                            _rng(seed, _STREAM_CALIBRATION, _R_DENSE))
    raw = _raw_scores(world, users, items, dense)                      # (M, 2)
    smap = _fit_score_map(raw, ctr, cvr, signal)
    s_ctr, s_cvr = _scores(raw, smap, rho)                             # (M,), (M,)
    a_ctr, a_cvr = _calibrate_intercepts(s_ctr, s_cvr, ctr, cvr, signal, confounder,
                                         guess=smap["a0"])

    attributes = _attributes(seed, n_attribute_fields, n_users, n_items, popularity_skew)
    X = np.empty((n, len(FIELD_NAMES) + len(attributes)), dtype=np.int32)  # (n, 4 + A)
    click = np.empty(n, dtype=np.int8)                                 # (n,)
    conversion_if_clicked = np.empty(n, dtype=np.int8)                 # (n,)
    true_ctr = np.empty(n, dtype=np.float32)                           # (n,)
    true_cvr = np.empty(n, dtype=np.float32)                           # (n,)
    dense_all = np.empty((n, n_dense), dtype=np.float32) if n_dense else None  # (n, n_dense)

    for block, start in enumerate(range(0, n, _BLOCK)):
        stop = min(start + _BLOCK, n)
        m = stop - start
        users, items, dense = _draw_impressions(world, m, n_dense,
                                                _rng(seed, _STREAM_BLOCK, block, _R_IDS),
                                                _rng(seed, _STREAM_BLOCK, block, _R_DENSE))
        s_ctr, s_cvr = _scores(_raw_scores(world, users, items, dense), smap, rho)
        logit_ctr = a_ctr + signal * s_ctr                             # (m,)
        logit_cvr = a_cvr + signal * s_cvr                             # (m,)
        p_ctr, p_cvr = _true_probabilities(logit_ctr, logit_cvr, confounder)  # (m,), (m,)
        if confounder == 0:
            p_click, p_convert = p_ctr, p_cvr
        else:
            # The outcomes of this impression see its own shock e, which the
            # true probabilities above have averaged away.
            e = confounder * _rng(seed, _STREAM_BLOCK, block, _R_CONFOUNDER).standard_normal(m)
            p_click, p_convert = _sigmoid(logit_ctr + e), _sigmoid(logit_cvr + e)  # (m,)
        u = _rng(seed, _STREAM_BLOCK, block, _R_OUTCOME).random((m, 2))  # (m, 2), as above

        X[start:stop, 0] = users
        X[start:stop, 1] = items
        X[start:stop, 2] = world["category"][items]
        X[start:stop, 3] = world["segment"][users]
        for f, (side, value, _) in enumerate(attributes):
            X[start:stop, 4 + f] = value[items if side == "item" else users]
        click[start:stop] = u[:, 0] < p_click
        conversion_if_clicked[start:stop] = u[:, 1] < p_convert
        true_ctr[start:stop] = p_ctr
        true_cvr[start:stop] = p_cvr
        if n_dense:
            dense_all[start:stop] = dense

    info = dict(generator="esmm_np.data.simulator.simulate", n_impressions=n, seed=seed, ctr=ctr,
                cvr=cvr, rho=rho, confounder=confounder, n_users=n_users, n_items=n_items,
                n_categories=n_categories, n_segments=n_segments,
                popularity_skew=popularity_skew, group_share=group_share,
                latent_dim=latent_dim, n_dense=n_dense, signal=signal, preset=preset,
                n_attribute_fields=n_attribute_fields, intercept_ctr=float(a_ctr), intercept_cvr=float(a_cvr),
                neutralising_angle=float(smap["phi"]))
    return Dataset(X=X, click=click, conversion=click * conversion_if_clicked,
                   field_dims=(n_users, n_items, n_categories, n_segments)
                   + tuple(size for _, _, size in attributes),
                   field_names=FIELD_NAMES + tuple(f"{side}_attribute_{f}"
                                                   for f, (side, _, _) in enumerate(attributes)),
                   dense=dense_all, true_ctr=true_ctr,
                   true_cvr=true_cvr, conversion_if_clicked=conversion_if_clicked, info=info)
