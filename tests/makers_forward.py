"""An independent transcription of the AOC makers' published forward pass (microsoft/aoc, the equations of
its cell as the field guide targets/aoc/calibrations/FIELDS.md §1-2 states them), written from the equations
for use as a second implementation in
tests. It reads the calibration YAML itself (no admc code) and evaluates one loop term, in numpy float64.

``gradient_term(z, weights, beta, calibration_path)`` is the cell's output with α, x and bias absent:
  sigmoid → LED cubic per path → fan-in efficiency → SLM distortion of W±/max|W| per column → product
  → output gain η → (48 ports: PBS leak, then PD crosstalk; 16 ports: PD crosstalk, then PBS polynomials)
  → × β/N → y⁺ − y⁻ → 48 ports: (g + r(δ + β λ)) κ.
Every switch of the cell is on, and every port is lit, as the cell lights it: a port no program channel
drives reads the voltage it is held at (0 V in an admc bundle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def load(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _vector(node) -> np.ndarray:
    return np.asarray(node, dtype=np.float64)


def gradient_term(z: np.ndarray, weights: np.ndarray, beta: np.ndarray, calibration: dict) -> np.ndarray:
    """z [B, N] (volts per port), weights [N, N] signed (source i, detector j), beta [N] (per detector)."""
    n = z.shape[-1]
    coefficients = list(calibration["tanh_sigmoid_coeffs"]) + [0.0] * (6 - len(calibration["tanh_sigmoid_coeffs"]))
    a, b, c, d, f, g = coefficients
    u = a * z + b
    drive = d * u / (1.0 + np.abs(u) ** c) ** (1.0 / c) + f + g * z
    light = {"p": np.polyval(calibration["led_poly_coeffs_pos"], drive),
             "n": np.polyval(calibration["led_poly_coeffs_neg"], drive)}
    rows = calibration["row_profiles"]
    fan_in = {"p": light["p"] * _vector(rows["positive_row12"]), "n": light["n"] * _vector(rows["negative_row12"])}
    largest = np.abs(weights).max()
    normalised = {"p": np.maximum(weights, 0.0) / largest, "n": np.maximum(-weights, 0.0) / largest}
    table = calibration["column_wise_weights_distortion"]
    distortion = {"p": _vector(table["positive_row12"]), "n": _vector(table["negative_row12"])}
    realised = {key: distortion[key][:, 0] * normalised[key] ** 2 + distortion[key][:, 1] * normalised[key]
                + distortion[key][:, 2] for key in ("p", "n")}
    detected = {key: fan_in[key] @ realised[key] for key in ("p", "n")}
    is_48 = "output_correction" in calibration
    if is_48:
        eta = {"p": _vector(calibration["output_correction"]["positive"]),
               "n": _vector(calibration["output_correction"]["negative"])}
    else:
        eta = {"p": np.full(n, 0.65), "n": np.full(n, 1.0)}
    detected = {key: detected[key] * eta[key] for key in ("p", "n")}

    def photodiode_spill(values: dict) -> dict:
        spill = calibration["pd_crosstalk"]
        result = {}
        for key, name in (("p", "positive"), ("n", "negative")):
            to_earlier = _vector(spill[f"ratio_to_earlier_{name}_row12"])
            to_later = _vector(spill[f"ratio_to_later_{name}_row12"])
            less_dark = values[key] - distortion[key][:, 2]
            from_above = np.zeros_like(values[key])
            from_above[:, :-1] = (to_earlier * less_dark)[:, 1:]
            from_below = np.zeros_like(values[key])
            from_below[:, 1:] = (to_later * less_dark)[:, :-1]
            result[key] = values[key] + from_above + from_below
        return result

    if is_48:
        leak = calibration["pbs_crosstalk"]
        detected["p"] = detected["p"] + fan_in["p"] * eta["p"] * _vector(leak["negative_to_positive"])
        detected["n"] = detected["n"] + fan_in["n"] * eta["n"] * _vector(leak["positive_to_negative"])
        detected = photodiode_spill(detected)
    else:
        detected = photodiode_spill(detected)
        polynomials = calibration["pbs_crosstalk"]
        into_negative = _vector(polynomials["poly_coeffs_negative_row12"])  # rows [A, B, C]
        into_positive = _vector(polynomials["poly_coeffs_positive_row12"])
        for detector in range(1, n):
            column, row = n - detector, n - 1 - detector
            weight_p, weight_n = normalised["p"][:, column], normalised["n"][:, column]
            q = np.sqrt(2.0) * (into_negative[row, 0] * weight_p ** 2 + into_negative[row, 1] * weight_p
                                + into_negative[row, 2])
            r = np.sqrt(2.0) * (into_positive[row, 0] * weight_n ** 2 + into_positive[row, 1] * weight_n
                                + into_positive[row, 2])
            detected["n"][:, detector] += fan_in["p"] @ q / 0.06
            detected["p"][:, detector] -= fan_in["n"] @ r / 0.04
    difference = detected["p"] * beta / n - detected["n"] * beta / n
    if is_48:
        loop = calibration["close_loop_offset_and_scale"]
        ratio = float(loop["solution_to_adc_ratio"])
        offset = ratio * (_vector(loop["dc_offset"]) + beta * _vector(loop["linear_offset"]))
        difference = (difference + offset) * _vector(loop["scaling"])
    return difference
