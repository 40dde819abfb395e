"""Confidence intervals of an evaluation's figures, and whether they meet a target.

An evaluation counts a few hundred comets and a handful of false positives, so its figures are
uncertain: 3 false positives in 100 frames is a rate of 0.03 per frame, but a rate anywhere from
0.006 to 0.09 gives 3 that often.  ``tails evaluate`` reports each headline figure with its
two-sided :data:`CONFIDENCE` interval, and judges a target met or missed only when the whole
interval lies on one side of it (:func:`verdict`):

* a **recall** ``k`` of ``n`` comets is a binomial proportion: the Clopper-Pearson interval
  (:func:`binomial_interval`; Clopper & Pearson 1934, Biometrika 26, 404), which is exact and
  never narrower than the truth needs;
* a count of **false positives** in ``n`` frames is a Poisson count: Garwood's exact interval,
  through the chi-square distribution (:func:`poisson_interval`; Garwood 1936, Biometrika 28, 437);
* the **localisation RMSE** has no closed form: the percentile bootstrap over the recalled comets
  (:func:`bootstrap_rmse_interval`; Efron & Tibshirani 1993, ch. 13), with a fixed seed so that a
  report is always the same.

The functions are pure and take counts, so that a model card's figures can be checked by hand.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "BOOTSTRAP_RESAMPLES",
    "binomial_interval",
    "poisson_interval",
    "bootstrap_rmse_interval",
    "verdict",
]

#: Confidence level of every interval of a report: two-sided, so a target is judged at 97.5 % on
#: the side that decides it.
CONFIDENCE = 0.95
#: Resamples of the bootstrap: the 2.5th and 97.5th percentiles of 2000 resamples move by about
#: 1 % of the RMSE between seeds (Efron & Tibshirani 1993 ask for 1000 or more for percentiles).
BOOTSTRAP_RESAMPLES = 2000


def _alpha(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must lie between 0 and 1, not {level!r}")
    return (1.0 - level) / 2.0


def binomial_interval(k: int, n: int, level: float = CONFIDENCE) -> tuple[float, float] | None:
    """Clopper-Pearson interval of a proportion ``k / n``.

    Parameters
    ----------
    k, n : int
        Successes (comets recalled) and trials (comets), ``0 <= k <= n``.
    level : float
        Two-sided confidence level.

    Returns
    -------
    (float, float) or None
        The lower and upper bound, between 0 and 1; None if ``n`` is 0.

    Raises
    ------
    ValueError
        If ``k`` is not between 0 and ``n``.
    """
    a = _alpha(level)
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n, not k={k}, n={n}")
    if n == 0:
        return None
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return low, high


def poisson_interval(k: int, exposure: float, level: float = CONFIDENCE) -> tuple[float, float] | None:
    """Garwood's interval of a Poisson rate: ``k`` events over ``exposure`` (frames, tiles).

    Parameters
    ----------
    k : int
        Events counted (false positives), ``k >= 0``.
    exposure : float
        What they were counted over; the interval is of the rate per unit of it.
    level : float
        Two-sided confidence level.

    Returns
    -------
    (float, float) or None
        The lower and upper bound of the rate; None if ``exposure`` is 0.  With no event the
        upper bound is ``-ln((1 - level) / 2) / exposure`` (3.69 / exposure at 95 %).

    Raises
    ------
    ValueError
        If ``k`` is negative.
    """
    a = _alpha(level)
    k = int(k)
    if k < 0:
        raise ValueError(f"a count cannot be negative: {k}")
    if not exposure > 0:
        return None
    low = 0.0 if k == 0 else float(stats.chi2.ppf(a, 2 * k)) / 2.0
    high = float(stats.chi2.ppf(1 - a, 2 * k + 2)) / 2.0
    return low / exposure, high / exposure


def bootstrap_rmse_interval(
    offsets: Sequence[float], level: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the root mean square of ``offsets``.

    Parameters
    ----------
    offsets : sequence of float
        Offsets in px; NaNs are left out.
    level : float
        Two-sided confidence level.
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling, so that the same offsets always give the same interval.

    Returns
    -------
    (float, float) or None
        None if there is no finite offset.
    """
    a = _alpha(level)
    d = np.asarray(offsets, dtype=float).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, d.size, size=(int(resamples), d.size))
    rmse = np.sqrt(np.mean(d[draws] ** 2, axis=1))
    low, high = np.quantile(rmse, [a, 1 - a])
    return float(low), float(high)


def verdict(interval: tuple[float, float] | None, target: float, at_least: bool) -> str:
    """Whether a measured figure meets its target, as far as its interval can tell.

    Parameters
    ----------
    interval : (float, float) or None
        The figure's confidence interval.
    target : float
        The target.
    at_least : bool
        True if the figure must be at least the target (a recall), False if at most (a false
        positive rate, a position error).

    Returns
    -------
    str
        ``"met"`` if the whole interval lies on the target's good side (the bound itself
        counts), ``"missed"`` if it lies wholly on the other side, ``"undecided"`` if the
        target lies inside it (more frames are needed to tell), ``"unmeasured"`` without an
        interval.
    """
    if interval is None or not all(math.isfinite(v) for v in interval):
        return "unmeasured"
    low, high = interval
    if at_least:
        return "met" if low >= target else "missed" if high < target else "undecided"
    return "met" if high <= target else "missed" if low > target else "undecided"
