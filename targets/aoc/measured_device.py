"""A measured machine for the twin: static device errors taken from a calibration file, not drawn at random.

Requires: a ``Calibration`` (``calibration.read_calibration``: the makers' format, calibrations/FIELDS.md), the twin's
non-idealities, and the bundle's module count and ports. Guarantees: every module gets the calibrated
machine's per-channel figures — input efficiency (``row_profiles``, dead channels included), darkness floor
per column c/(a+b+c) (``column_wise_weights_distortion``), photodiode crosstalk ratios (mean of both paths),
PBS leakage (48-variable format), closed-loop offsets r(δ + sλ)κ and relative gains κ/mean κ, the sigmoid
exponent and the saturation rails — and those effects are switched on, together with the measured chain's
own effects (LED cubic, sigmoid offsets, SLM transfer, output gain η: ``chain.py``; PBS leakage in either
format). Where the bundle's module has a
different port count, each vector is replaced by its mean (the makers' loader does the same). What a
calibration cannot know (per-pixel weight error, read noise) keeps the target's settings and seeded draws.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from admc.targets.aoc.calibration import DEFAULT_SCALE, Calibration
from admc.targets.aoc.nonidealities import MEASURED_CHAIN_EFFECTS, NonIdealities
from admc.targets.aoc.static_errors import StaticErrors, sample_static_errors


def _per_port(vector: np.ndarray, modules: int, ports: int, dtype: torch.dtype) -> torch.Tensor:
    values = np.asarray(vector, dtype=np.float64)
    if values.size != ports:
        values = np.full(ports, values.mean())
    return torch.as_tensor(np.tile(values, (modules, 1)), dtype=dtype)


def _darkness(distortion: np.ndarray) -> np.ndarray:
    full_scale = distortion.sum(axis=1)
    return distortion[:, 2] / full_scale


def measured_nonidealities(calibration: Calibration, nonidealities: NonIdealities) -> NonIdealities:
    """The calibrated effects switched on, with the calibration's sigmoid exponent and saturation rails."""
    switched = {name: replace(getattr(nonidealities, name), enabled=True)
                for name in ("slm_darkness", "input_efficiency", "pd_crosstalk", "nonlinearity", "saturation",
                             *MEASURED_CHAIN_EFFECTS)}
    switched["nonlinearity"] = replace(switched["nonlinearity"], exponent=float(calibration.sigmoid_coefficients[2]))
    switched["saturation"] = replace(switched["saturation"], low=calibration.negative_saturation,
                                     high=calibration.positive_saturation)
    switched["pbs_crosstalk"] = replace(nonidealities.pbs_crosstalk, enabled=True)
    if calibration.closed_loop_scaling is not None:
        switched["offsets"] = replace(nonidealities.offsets, enabled=True)
        switched["gain_error"] = replace(nonidealities.gain_error, enabled=True)
    return replace(nonidealities, **switched)


def measured_static_errors(calibration: Calibration, nonidealities: NonIdealities, modules: int, ports: int,
                           generator: torch.Generator, dtype: torch.dtype = torch.float64) -> StaticErrors:
    drawn = sample_static_errors(nonidealities, modules, ports, generator, dtype)
    measured = {
        "darkness_positive": _per_port(_darkness(calibration.distortion_positive), modules, ports, dtype),
        "darkness_negative": _per_port(_darkness(calibration.distortion_negative), modules, ports, dtype),
        "input_efficiency_positive": _per_port(calibration.row_profiles_positive, modules, ports, dtype),
        "input_efficiency_negative": _per_port(calibration.row_profiles_negative, modules, ports, dtype),
        # The physics applies one set of neighbour ratios to the differential signal: the paths' mean.
        "crosstalk_to_earlier": _per_port((calibration.ratio_to_earlier_positive
                                           + calibration.ratio_to_earlier_negative) / 2, modules, ports, dtype),
        "crosstalk_to_later": _per_port((calibration.ratio_to_later_positive
                                         + calibration.ratio_to_later_negative) / 2, modules, ports, dtype),
    }
    if calibration.pbs_negative_to_positive is not None:
        # calibrations/FIELDS.md: the code pairs the positive path with the negative_to_positive list.
        measured["pbs_leakage_positive"] = _per_port(calibration.pbs_negative_to_positive, modules, ports, dtype)
        measured["pbs_leakage_negative"] = _per_port(calibration.pbs_positive_to_negative, modules, ports, dtype)
    if calibration.closed_loop_scaling is not None:
        kappa = calibration.closed_loop_scaling
        offset = calibration.solution_to_adc_ratio * (calibration.closed_loop_dc_offset
                                                      + DEFAULT_SCALE * calibration.closed_loop_linear_offset)
        measured["offsets"] = _per_port(offset * kappa, modules, ports, dtype)
        measured["gain_factor"] = _per_port(kappa / kappa.mean(), modules, ports, dtype)
    return drawn.with_values(**measured)
