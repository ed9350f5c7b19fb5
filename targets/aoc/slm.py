"""The AOC's spatial light modulators: sign split, measured response, inversion and grey-level quantisation.

Model: a pixel driven at normalised level u = grey / (2^bits - 1) in [0, 1] transmits
T(u) = a u^2 + b u + c (the target's ``slm.response`` [a, b, c]). The darkness c leaks even at u = 0 and is
subtracted (differential detection and the darkness correction remove it), and full scale is a + b, so the
weight a pixel realises is w(u) = (T(u) - c) / (a + b) = (a u^2 + b u) / (a + b), with w(0) = 0, w(1) = 1.

Requires: a response that is strictly increasing on [0, 1] (checked; otherwise AdmcError).
Guarantees: ``realised_weight(drive_for_weight(w)) == w`` to rounding for w in [0, 1]; ``quantise`` picks for
each entry the grey level whose realised weight is nearest, so its error is at most half the local step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from admc.core.errors import AdmcError

Response = Sequence[float]


def _coefficients(response: Response) -> tuple[float, float, float]:
    values = [float(value) for value in response]
    if len(values) != 3:
        raise AdmcError(f"SLM response: expected [a, b, c], got {len(values)} values")
    return values[0], values[1], values[2]


def check_response(response: Response) -> None:
    """Raise AdmcError unless T(u) = a u^2 + b u + c is strictly increasing on [0, 1]."""
    a, b, _ = _coefficients(response)
    # T'(u) = 2 a u + b is linear in u, so it is positive on [0, 1] iff it is positive at both ends.
    if not (b > 0 and 2 * a + b > 0):
        raise AdmcError(
            f"SLM response [a, b, c] = {list(response)} is not increasing on [0, 1] "
            f"(slope {b:g} at u=0, {2 * a + b:g} at u=1)"
        )


def sign_split(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split W into non-negative parts with disjoint support: W = positive - negative."""
    weights = np.asarray(weights, dtype=np.float64)
    return np.maximum(weights, 0.0), np.maximum(-weights, 0.0)


def realised_weight(drive_u: np.ndarray | float, response: Response) -> np.ndarray:
    """Weight realised at normalised drive u in [0, 1]: (T(u) - c) / (a + b), so 0 at u = 0 and 1 at u = 1."""
    a, b, _ = _coefficients(response)
    drive = np.asarray(drive_u, dtype=np.float64)
    return (a * drive * drive + b * drive) / (a + b)


def drive_for_weight(weight: np.ndarray | float, response: Response) -> np.ndarray:
    """Normalised drive u in [0, 1] realising ``weight`` in [0, 1] (inverse of :func:`realised_weight`)."""
    check_response(response)
    a, b, _ = _coefficients(response)
    target = np.asarray(weight, dtype=np.float64)
    if np.any(~np.isfinite(target)) or np.any(target < 0) or np.any(target > 1):
        raise AdmcError("SLM drive: weights must lie in [0, 1] (sign-split and scaled before quantisation)")
    scaled = target * (a + b)
    if abs(a) < 1e-12 * abs(b):
        return scaled / b
    # Root of a u^2 + b u - scaled = 0 written as 2 s / (b + sqrt(b^2 + 4 a s)): no cancellation when a -> 0,
    # and it picks the root in [0, 1] because the response is increasing there.
    discriminant = np.maximum(b * b + 4.0 * a * scaled, 0.0)
    return np.clip(2.0 * scaled / (b + np.sqrt(discriminant)), 0.0, 1.0)


def grey_level_weights(response: Response, bit_depth: int) -> np.ndarray:
    """Realised weight of every grey level 0 .. 2^bits - 1 (increasing)."""
    if not 1 <= int(bit_depth) <= 16:
        raise AdmcError(f"SLM bit depth must be in [1, 16], got {bit_depth}")
    check_response(response)
    top = (1 << int(bit_depth)) - 1
    return realised_weight(np.arange(top + 1, dtype=np.float64) / top, response)


def quantise(
    weights_in_0_1: np.ndarray, response: Response, bit_depth: int, float_weights: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """Map weights in [0, 1] to (grey levels, realised weights) through the measured response.

    Each entry gets the grey level whose realised weight is nearest (ties go to the lower level), so the
    realised error is at most half the local grey-level step in weight space. Grey levels are uint8 for
    bit depths up to 8 and uint16 above. With ``float_weights`` (an ideal SLM) nothing is quantised: the
    grey levels are None and the weights come back unchanged.
    """
    weights = np.asarray(weights_in_0_1, dtype=np.float64)
    if np.any(~np.isfinite(weights)) or np.any(weights < 0) or np.any(weights > 1):
        raise AdmcError("SLM quantisation: weights must lie in [0, 1] (sign-split and scaled first)")
    if float_weights:
        return None, weights.copy()
    levels = grey_level_weights(response, bit_depth)
    # The level weights are sorted, so the nearest is one of the two neighbours of the insertion point.
    upper = np.clip(np.searchsorted(levels, weights, side="left"), 1, len(levels) - 1)
    lower = upper - 1
    choose_upper = (levels[upper] - weights) < (weights - levels[lower])
    grey = np.where(choose_upper, upper, lower)
    dtype = np.uint8 if bit_depth <= 8 else np.uint16
    return grey.astype(dtype), levels[grey]
