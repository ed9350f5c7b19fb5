"""Error and distribution metrics for comparing a run (IR, bundle, twin, hardware) with the reference.

Requires: float arrays; sample sets are [N, d] with N ≥ 2 for MMD.
Guarantees (all in float64, deterministic):
- ``nrmse(estimate, reference)`` = RMS(estimate − reference) / RMS(reference), RMS over all entries. A zero
  reference gives 0 when the estimate is zero too and +inf otherwise (there is no scale to be relative to).
- ``per_step_nrmse`` applies it to each step of trajectories [T + 1, B, d].
- ``mmd`` is the unbiased estimate of the squared MMD (it can be slightly negative) with the kernel
  k(x, y) = Σ_s exp(−‖x − y‖² / (2 s²)) summed over bandwidths s; the default bandwidths are the median
  pairwise distance of the pooled samples × {0.25, 0.5, 1, 2, 4}, the median taken over an evenly spaced
  subset of at most 500 points of each set, so the result is symmetric in its arguments.
- ``wasserstein2`` is the exact W2 distance between the two empirical measures (uniform weights, squared
  Euclidean cost, POT's network simplex); a solve that does not finish raises ``ConvergenceError``.
- ``gaussian_baseline`` draws samples from the Gaussian with the reference's mean and covariance: the score
  a sampler that only learned two moments would get.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from admc.core.errors import AdmcError, ConvergenceError

_MEDIAN_SUBSET = 500
_BLOCK_ELEMENTS = 4_000_000
_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if estimate.shape != reference.shape:
        raise AdmcError(f"cannot compare arrays of shapes {estimate.shape} and {reference.shape}")
    return estimate, reference


def nrmse(estimate: np.ndarray, reference: np.ndarray) -> float:
    """RMS(estimate − reference) / RMS(reference); 0 for two zero arrays, inf for a zero reference only."""
    estimate, reference = _pair(estimate, reference)
    error = math.sqrt(float(np.mean((estimate - reference) ** 2)))
    scale = math.sqrt(float(np.mean(reference**2)))
    if scale == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / scale


def per_step_nrmse(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """NRMSE of each step of two trajectories [T + 1, ...]: entry n compares estimate[n] with reference[n]."""
    estimate, reference = _pair(estimate, reference)
    return np.array([nrmse(estimate[step], reference[step]) for step in range(reference.shape[0])])


def max_abs_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute entry-wise difference."""
    estimate, reference = _pair(estimate, reference)
    return float(np.max(np.abs(estimate - reference), initial=0.0))


def _samples(values: np.ndarray, name: str, minimum: int = 1) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] < minimum:
        raise AdmcError(
            f"{name}: expected at least {minimum} samples as an [N, d] array, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise AdmcError(f"{name}: samples contain NaN or Inf")
    return values


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Direct differences rather than |a|² + |b|² − 2ab, which cancels badly for nearby points.
    return np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _evenly_spaced(values: np.ndarray, count: int) -> np.ndarray:
    if values.shape[0] <= count:
        return values
    return values[np.linspace(0, values.shape[0] - 1, count).round().astype(np.int64)]


def median_bandwidth(samples_a: np.ndarray, samples_b: np.ndarray) -> float:
    """Median pairwise Euclidean distance (distinct pairs) of the pooled subsets; 1 if all points coincide."""
    pooled = np.concatenate(
        [_evenly_spaced(samples_a, _MEDIAN_SUBSET), _evenly_spaced(samples_b, _MEDIAN_SUBSET)]
    )
    distances = np.sqrt(_squared_distances(pooled, pooled)[np.triu_indices(pooled.shape[0], k=1)])
    median = float(np.median(distances))
    return median if median > 0.0 else 1.0


def _kernel_sum(a: np.ndarray, b: np.ndarray, bandwidths: np.ndarray) -> float:
    """Σ_ij k(a_i, b_j), in row blocks of about ``_BLOCK_ELEMENTS`` entries to bound memory."""
    total = 0.0
    coefficients = -0.5 / bandwidths**2
    rows = max(1, _BLOCK_ELEMENTS // (b.shape[0] * max(bandwidths.size, b.shape[1])))
    for start in range(0, a.shape[0], rows):
        squared = _squared_distances(a[start : start + rows], b)
        total += float(np.sum(np.exp(squared[..., None] * coefficients)))
    return total


def mmd(samples_a: np.ndarray, samples_b: np.ndarray, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased squared MMD between two sample sets with a mixture of RBF kernels (see module docstring)."""
    a = _samples(samples_a, "mmd samples_a", minimum=2)
    b = _samples(samples_b, "mmd samples_b", minimum=2)
    if a.shape[1] != b.shape[1]:
        raise AdmcError(f"mmd: samples have {a.shape[1]} and {b.shape[1]} features")
    if bandwidths is None:
        scales = median_bandwidth(a, b) * np.array(_BANDWIDTH_FACTORS)
    else:
        scales = np.asarray(bandwidths, dtype=np.float64).reshape(-1)
        if scales.size == 0 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise AdmcError(f"mmd: bandwidths must be positive and finite, got {list(scales)}")
    count_a, count_b = a.shape[0], b.shape[0]
    kernels = scales.size
    # Each diagonal term k(x, x) equals the number of kernels; the unbiased estimator leaves them out.
    within_a = (_kernel_sum(a, a, scales) - count_a * kernels) / (count_a * (count_a - 1))
    within_b = (_kernel_sum(b, b, scales) - count_b * kernels) / (count_b * (count_b - 1))
    across = _kernel_sum(a, b, scales) / (count_a * count_b)
    return within_a + within_b - 2.0 * across


def wasserstein2(samples_a: np.ndarray, samples_b: np.ndarray) -> float:
    """Exact W2 between the empirical measures of two sample sets (uniform weights)."""
    a = _samples(samples_a, "wasserstein2 samples_a")
    b = _samples(samples_b, "wasserstein2 samples_b")
    if a.shape[1] != b.shape[1]:
        raise AdmcError(f"wasserstein2: samples have {a.shape[1]} and {b.shape[1]} features")
    import ot  # POT imports scikit-learn and SciPy's statistics (~1 s): only W2 needs it, not every build

    cost = ot.dist(a, b, metric="sqeuclidean")
    weights_a = np.full(a.shape[0], 1.0 / a.shape[0])
    weights_b = np.full(b.shape[0], 1.0 / b.shape[0])
    value, log = ot.emd2(weights_a, weights_b, cost, numItermax=100_000_000, log=True)
    if log.get("warning"):
        raise ConvergenceError(f"wasserstein2: optimal transport solve did not finish: {log['warning']}")
    # Rounding can leave a tiny negative cost for identical sets.
    return math.sqrt(max(float(value), 0.0))


def gaussian_baseline(reference_samples: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` samples from N(mean, covariance) of ``reference_samples``, drawn with ``seed``."""
    reference = _samples(reference_samples, "gaussian_baseline reference", minimum=2)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise AdmcError(f"gaussian_baseline: count must be a positive integer, got {count!r}")
    mean = reference.mean(axis=0)
    covariance = np.atleast_2d(np.cov(reference, rowvar=False))
    generator = np.random.default_rng(seed)
    # SVD factorisation accepts singular (degenerate) covariances, unlike Cholesky.
    return generator.multivariate_normal(mean, covariance, size=int(count), method="svd")
