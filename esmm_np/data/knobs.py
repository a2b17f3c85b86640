"""The simulator's knobs, checked before any work.

:func:`check_knobs` refuses a knob of the wrong type or range with one
sentence; :func:`memory_needed` estimates the memory a world needs from the
largest arrays :func:`esmm_np.data.simulator.simulate` builds, and
``simulate`` refuses one that cannot fit (:class:`TooLarge`) before drawing
anything.
"""

import os

import numpy as np

#: Sizes the estimate needs (the simulator uses the same ones).
N_CALIBRATION = 200_000   # impressions drawn once to fit the score map and intercepts
BLOCK = 1 << 16           # impressions per random-stream block


class TooLarge(MemoryError, ValueError):
    """A world that cannot fit in this machine's memory, refused before any work."""


def check_number(v, name):
    """A knob that is a rate, a weight or a correlation: a plain real number."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {v!r} ({type(v).__name__})")


def memory_needed(n_impressions, n_users, n_items, n_categories, n_segments, latent_dim,
                  n_dense, n_attribute_fields):
    """Bytes :func:`simulate` needs at its peak, estimated from its largest arrays, and
    the part that dominates (a short phrase naming the knobs)."""
    d2 = 2 * latent_dim * 8                                            # one (2, d) float64 row
    parts = {
        "the latent vectors of the users and items (n_users, n_items x latent_dim)":
            d2 * (5 * n_users + 5 * n_items + n_categories + n_segments),
        "the latent vectors of the calibration and block impressions (latent_dim)":
            d2 * 2 * (N_CALIBRATION + BLOCK),
        "the popularity tables (n_users, n_items)": 8 * 3 * (n_users + n_items),
        "the impressions themselves (n_impressions, n_dense, n_attribute_fields)":
            n_impressions * (4 * (4 + n_attribute_fields) + 11 + 4 * n_dense)
            + 4 * n_dense * (N_CALIBRATION + BLOCK) + 8 * n_attribute_fields * (n_users + n_items),
    }
    return sum(parts.values()), max(parts, key=parts.get)


def physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_knobs(n_impressions, seed, ctr, cvr, rho, confounder, n_users, n_items,
                 n_categories, n_segments, popularity_skew, group_share, latent_dim,
                 n_dense, signal):
    for name, v in (("ctr", ctr), ("cvr", cvr), ("rho", rho), ("confounder", confounder),
                    ("popularity_skew", popularity_skew), ("group_share", group_share),
                    ("signal", signal)):
        check_number(v, name)
    for name, v in (("n_impressions", n_impressions), ("n_users", n_users),
                    ("n_items", n_items), ("n_categories", n_categories),
                    ("n_segments", n_segments), ("latent_dim", latent_dim)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(n_dense, (int, np.integer)) or isinstance(n_dense, bool) or n_dense < 0:
        raise ValueError(f"n_dense must be a non-negative integer, got {n_dense!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, v in (("ctr", ctr), ("cvr", cvr)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} is a target rate and must be in (0, 1), got {v!r}")
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho is a correlation and must be in [-1, 1], got {rho!r}")
    if not 0.0 <= group_share <= 1.0:
        raise ValueError(f"group_share must be in [0, 1], got {group_share!r}")
    for name, v in (("confounder", confounder), ("popularity_skew", popularity_skew),
                    ("signal", signal)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
