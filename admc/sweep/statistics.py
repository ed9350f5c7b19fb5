"""Statistics of a sweep: binomial confidence intervals of a yield, and Pareto fronts.

Guarantees:
- :func:`wilson_interval` is the Wilson score interval of ``passed`` successes in ``trials``: the two
  roots p of (p̂ − p)² = z² p (1 − p) / n, z the two-sided normal quantile of ``confidence``.
- :func:`clopper_pearson_interval` is the exact interval: the lower end solves P(X ≥ passed | p) = (1 − c)/2,
  the upper end P(X ≤ passed | p) = (1 − c)/2 (beta quantiles), with 0 and 1 at the extremes.
- :func:`pareto_front` returns the indices of the points no other point dominates (all objectives minimised;
  a point with a NaN objective is never on the front), in input order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from admc.core.errors import AdmcError


def _check(passed: int, trials: int, confidence: float) -> None:
    if trials < 1 or not 0 <= passed <= trials:
        raise AdmcError(f"yield interval: need 0 ≤ passed ≤ trials and trials ≥ 1, got {passed}/{trials}")
    if not 0 < confidence < 1:
        raise AdmcError(f"yield interval: confidence must lie in (0, 1), got {confidence}")


def wilson_interval(passed: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    _check(passed, trials, confidence)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    estimate = passed / trials
    denominator = 1 + z * z / trials
    centre = (estimate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(estimate * (1 - estimate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson_interval(passed: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    _check(passed, trials, confidence)
    tail = (1 - confidence) / 2
    lower = 0.0 if passed == 0 else float(stats.beta.ppf(tail, passed, trials - passed + 1))
    upper = 1.0 if passed == trials else float(stats.beta.ppf(1 - tail, passed + 1, trials - passed))
    return lower, upper


def pareto_front(objectives: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated rows of ``objectives`` (every column minimised)."""
    rows = [tuple(float(value) for value in row) for row in objectives]
    valid = [index for index, row in enumerate(rows) if all(math.isfinite(value) for value in row)]
    front = []
    for index in valid:
        row = rows[index]
        dominated = any(all(a <= b for a, b in zip(rows[other], row, strict=True)) and rows[other] != row
                        for other in valid)
        if not dominated:
            front.append(index)
    return front
