"""Reader and summary of measured AOC calibrations (the microsoft/aoc YAML format, see calibrations/FIELDS.md).

Requires: a calibration YAML of either machine generation: the 48-variable format (per-channel PBS leakage,
output correction, closed-loop offset and scale) or the 16-variable format (PBS polynomials).
Guarantees: :func:`read_calibration` returns numpy arrays of checked shapes (N channels taken from the SLM
distortion table) or raises AdmcError naming the file and the key; :func:`summarise` returns the summary
figures the shipped presets are derived from (the presets' comments cite these keys), as plain floats/lists.
The makers' two published calibrations ship with the package (``calibrations/``, MIT, their notice beside them)
and are selected by name: :data:`SHIPPED_CALIBRATIONS`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import read_text
from admc.targets.description_schema import read_yaml_mapping

CALIBRATIONS_FOLDER = Path(__file__).parent / "calibrations"
SHIPPED_CALIBRATIONS = {
    "hw48": CALIBRATIONS_FOLDER / "hw48_April2025_corrected_pd_3.yaml",
    "hw16": CALIBRATIONS_FOLDER / "hw16_June2024_saturation_pieces_clip2p6.yaml",
}
"""The makers' published calibrations by name (microsoft/aoc, MIT: ``calibrations/LICENSE-microsoft-aoc.txt``)."""

DEFAULT_SCALE = 18.6
"""The calibration model's default gain scale (calibrations/FIELDS.md §2 'Gain'); the per-weight gain is scale / N."""

DEAD_EFFICIENCY = 1e-6
"""A source whose fan-in efficiency is below this on either path transmits nothing: a dead channel."""


@dataclass(frozen=True)
class Calibration:
    """One machine's calibration. Paths: ``_positive``/``_negative``. Absent in a format: None."""

    path: str
    channels: int
    sigmoid_coefficients: np.ndarray  # tanh_sigmoid_coeffs [a, b, c, d, f, g] (g = 0 when 5 are given)
    led_positive: np.ndarray  # led_poly_coeffs_pos, cubic, descending powers
    led_negative: np.ndarray
    row_profiles_positive: np.ndarray  # (N,)
    row_profiles_negative: np.ndarray
    distortion_positive: np.ndarray  # column_wise_weights_distortion (N, 3) rows [a, b, c]
    distortion_negative: np.ndarray
    ratio_to_earlier_positive: np.ndarray  # pd_crosstalk (N,)
    ratio_to_earlier_negative: np.ndarray
    ratio_to_later_positive: np.ndarray
    ratio_to_later_negative: np.ndarray
    input_clip: np.ndarray  # deq_input_min_max (2,)
    negative_saturation: float
    positive_saturation: float
    output_correction_positive: np.ndarray | None  # (N,), 48-variable format
    output_correction_negative: np.ndarray | None
    pbs_negative_to_positive: np.ndarray | None  # (N,), 48-variable format
    pbs_positive_to_negative: np.ndarray | None
    pbs_polynomial_positive: np.ndarray | None  # (N-1, 3), 16-variable format
    pbs_polynomial_negative: np.ndarray | None
    closed_loop_dc_offset: np.ndarray | None  # (N,), 48-variable format
    closed_loop_linear_offset: np.ndarray | None
    closed_loop_scaling: np.ndarray | None
    solution_to_adc_ratio: float | None
    sha256: str = ""  # of the file's bytes: a bundle compiled for this machine records it


class _Reader:
    """Looks up dotted keys in the parsed file and checks their shapes, naming file and key on failure."""

    def __init__(self, data: dict, label: str) -> None:
        self.data = data
        self.label = label

    def has(self, key: str) -> bool:
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def array(self, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise AdmcError(f"{self.label}: key '{key}': missing from the calibration")
            node = node[part]
        try:
            values = np.asarray(node, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise AdmcError(f"{self.label}: key '{key}': expected numbers of shape {_shape_text(shape)}") from error
        matches = values.ndim == len(shape) and all(
            wanted is None or wanted == actual for wanted, actual in zip(shape, values.shape, strict=True)
        )
        if not matches:
            raise AdmcError(
                f"{self.label}: key '{key}': expected shape {_shape_text(shape)}, got {_shape_text(values.shape)}"
            )
        if not np.all(np.isfinite(values)):
            raise AdmcError(f"{self.label}: key '{key}': contains a non-finite value")
        return values

    def scalar(self, key: str) -> float:
        return float(self.array(key, ()))


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("N" if size is None else str(size) for size in shape) + ")" if shape else "scalar"


def calibration_path(name_or_path: str | Path) -> Path:
    """A shipped calibration's file for its name (``hw48``, ``hw16``), else the path as given."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_CALIBRATIONS:
        return SHIPPED_CALIBRATIONS[name_or_path]
    return Path(name_or_path)


def _sigmoid_coefficients(read: _Reader, label: str) -> np.ndarray:
    """[a, b, c, d, f, g]; the 16-variable format omits the linear term g (calibrations/FIELDS.md)."""
    sigmoid = read.array("tanh_sigmoid_coeffs", (None,))
    if sigmoid.shape[0] not in (5, 6):
        raise AdmcError(f"{label}: key 'tanh_sigmoid_coeffs': expected 5 or 6 values, got {sigmoid.shape[0]}")
    return np.append(sigmoid, 0.0) if sigmoid.shape[0] == 5 else sigmoid


def read_calibration(path: str | Path) -> Calibration:
    """Read and check a calibration file (calibrations/FIELDS.md §2), or a shipped one by name (``hw48``, ``hw16``)."""
    path = calibration_path(path)
    label = str(path)
    text = read_text(path, limits.TEXT_FILE_BYTES, "calibration file")  # regular, bounded, UTF-8
    raw = text.encode("utf-8")  # the file's own bytes (valid UTF-8 round-trips), for its sha256
    read = _Reader(read_yaml_mapping(text, label), label)

    distortion_positive = read.array("column_wise_weights_distortion.positive_row12", (None, 3))
    channels = distortion_positive.shape[0]
    per_channel = (channels,)
    sigmoid = _sigmoid_coefficients(read, label)

    per_channel_pbs = read.has("pbs_crosstalk.negative_to_positive")
    if not per_channel_pbs and not read.has("pbs_crosstalk.poly_coeffs_positive_row12"):
        raise AdmcError(
            f"{label}: key 'pbs_crosstalk': missing 'negative_to_positive' (48-variable format) and "
            "'poly_coeffs_positive_row12' (16-variable format)"
        )

    def if_48(key: str) -> np.ndarray | None:
        return read.array(key, per_channel) if per_channel_pbs else None

    def if_16(key: str) -> np.ndarray | None:
        return None if per_channel_pbs else read.array(key, (channels - 1, 3))

    return Calibration(
        path=label,
        channels=channels,
        sigmoid_coefficients=sigmoid,
        led_positive=read.array("led_poly_coeffs_pos", (4,)),
        led_negative=read.array("led_poly_coeffs_neg", (4,)),
        row_profiles_positive=read.array("row_profiles.positive_row12", per_channel),
        row_profiles_negative=read.array("row_profiles.negative_row12", per_channel),
        distortion_positive=distortion_positive,
        distortion_negative=read.array("column_wise_weights_distortion.negative_row12", (channels, 3)),
        ratio_to_earlier_positive=read.array("pd_crosstalk.ratio_to_earlier_positive_row12", per_channel),
        ratio_to_earlier_negative=read.array("pd_crosstalk.ratio_to_earlier_negative_row12", per_channel),
        ratio_to_later_positive=read.array("pd_crosstalk.ratio_to_later_positive_row12", per_channel),
        ratio_to_later_negative=read.array("pd_crosstalk.ratio_to_later_negative_row12", per_channel),
        input_clip=read.array("deq_input_min_max", (2,)),
        negative_saturation=read.scalar("saturation.negative_saturation"),
        positive_saturation=read.scalar("saturation.positive_saturation"),
        output_correction_positive=if_48("output_correction.positive"),
        output_correction_negative=if_48("output_correction.negative"),
        pbs_negative_to_positive=if_48("pbs_crosstalk.negative_to_positive"),
        pbs_positive_to_negative=if_48("pbs_crosstalk.positive_to_negative"),
        pbs_polynomial_positive=if_16("pbs_crosstalk.poly_coeffs_positive_row12"),
        pbs_polynomial_negative=if_16("pbs_crosstalk.poly_coeffs_negative_row12"),
        closed_loop_dc_offset=if_48("close_loop_offset_and_scale.dc_offset"),
        closed_loop_linear_offset=if_48("close_loop_offset_and_scale.linear_offset"),
        closed_loop_scaling=if_48("close_loop_offset_and_scale.scaling"),
        solution_to_adc_ratio=read.scalar("close_loop_offset_and_scale.solution_to_adc_ratio")
        if per_channel_pbs
        else None,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _pd_crosstalk_figures(calibration: Calibration) -> dict:
    """Edge and middle spill: toward the nearer array end over the outer quarters, and all spills mid-array.

    The spill toward lower indices (ratio_to_earlier) is large near index 0 and the spill toward higher
    indices (ratio_to_later) near index N-1, so the edge figure pairs each with its own end; index 0 has
    no earlier neighbour (and N-1 no later one), so those structural zeros are left out.
    """
    channels = calibration.channels
    quarter = max(channels // 4, 2)
    earlier = (calibration.ratio_to_earlier_positive, calibration.ratio_to_earlier_negative)
    later = (calibration.ratio_to_later_positive, calibration.ratio_to_later_negative)
    edge = np.concatenate([ratio[1:quarter] for ratio in earlier] + [ratio[-quarter:-1] for ratio in later])
    middle = np.concatenate([ratio[quarter:channels - quarter] for ratio in (*earlier, *later)])
    everything = np.concatenate([*earlier, *later])
    return {
        "pd_crosstalk_edge_ratio": float(edge.mean()),
        "pd_crosstalk_middle_ratio": float(middle.mean()),
        "pd_crosstalk_range": [float(everything.min()), float(everything.max())],
    }


def summarise(calibration: Calibration) -> dict:
    """Summary figures used by the presets (plain floats and lists; None where the format lacks the data)."""
    positive, negative = calibration.distortion_positive, calibration.distortion_negative
    both = np.concatenate([positive, negative])
    full_scale_positive, full_scale_negative = positive.sum(axis=1), negative.sum(axis=1)
    floor_positive = positive[:, 2] / full_scale_positive
    floor_negative = negative[:, 2] / full_scale_negative
    efficiency = np.stack([calibration.row_profiles_positive, calibration.row_profiles_negative])
    dead = np.flatnonzero(np.any(efficiency < DEAD_EFFICIENCY, axis=0))
    live = np.delete(efficiency, dead, axis=1)
    summary = {
        "channels": calibration.channels,
        "response": [float(value) for value in both.mean(axis=0)],
        "response_positive": [float(value) for value in positive.mean(axis=0)],
        "response_negative": [float(value) for value in negative.mean(axis=0)],
        "darkness_floor_mean": float(np.concatenate([floor_positive, floor_negative]).mean()),
        "darkness_floor_positive_range": [float(floor_positive.min()), float(floor_positive.max())],
        "darkness_floor_negative_range": [float(floor_negative.min()), float(floor_negative.max())],
        "contrast_positive_range": [float((1 / floor_positive).min()), float((1 / floor_positive).max())],
        "contrast_negative_range": [float((1 / floor_negative).min()), float((1 / floor_negative).max())],
        "input_efficiency_range": [float(live.min()), float(live.max())],
        "dead_channels": [int(channel) for channel in dead],
        "sigmoid_exponent": float(calibration.sigmoid_coefficients[2]),
        "saturation_low": calibration.negative_saturation,
        "saturation_high": calibration.positive_saturation,
        "injection_clip": float(np.max(np.abs(calibration.input_clip))),
        "default_gain_per_weight": DEFAULT_SCALE / calibration.channels,
        **_pd_crosstalk_figures(calibration),
        "pbs_leakage_mean": None,
        "pbs_leakage_range": None,
        "kappa_range": None,
        "kappa_mean": None,
        "kappa_relative_std": None,
        "net_offset_range": None,
        "state_offset_std": None,
    }
    if calibration.pbs_negative_to_positive is not None:
        leakage = np.concatenate([calibration.pbs_negative_to_positive, calibration.pbs_positive_to_negative])
        summary["pbs_leakage_mean"] = float(leakage.mean())
        summary["pbs_leakage_range"] = [float(leakage.min()), float(leakage.max())]
    if calibration.closed_loop_scaling is not None:
        kappa = calibration.closed_loop_scaling
        # calibrations/FIELDS.md §2: g <- (g + r (δ + s λ)) κ at gain s; the offset the state sees is r (δ + s λ) κ.
        net_offset = calibration.solution_to_adc_ratio * (
            calibration.closed_loop_dc_offset + DEFAULT_SCALE * calibration.closed_loop_linear_offset
        )
        summary["kappa_range"] = [float(kappa.min()), float(kappa.max())]
        summary["kappa_mean"] = float(kappa.mean())
        summary["kappa_relative_std"] = float(kappa.std() / kappa.mean())
        summary["net_offset_range"] = [float(net_offset.min()), float(net_offset.max())]
        summary["state_offset_std"] = float((net_offset * kappa).std())
    return summary
