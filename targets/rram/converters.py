"""The RRAM chip's converters: DAC waveforms of the time-only inputs and the readout ADC.

Requires: a program whose bias parts hold the time terms (the spine), the physical seconds per unit of model
time and the target. Guarantees: ``dac_times`` are the DAC's update instants in model time, from t_0 to at
least t_T; ``dac_waveforms`` tabulates every channel's static drive (bias + time terms) there (the exact
values, used by the ideal executor) and its codes at the DAC's resolution, full scale per channel (the
twin holds each code until the next update). ``quantise_adc`` rounds a readout to the ADC's grid over ±range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.ir.program import FIXED, STEP, BlockProgram, StaticInjection, tabulate_static_injection


@dataclass
class DacWaveforms:
    table: StaticInjection  # exact drive at the DAC instants
    channels: np.ndarray  # channels the DAC drives (non-zero drive), [m]
    full_scale: np.ndarray  # per driven channel, [m]
    codes: np.ndarray  # [samples, m] signed integers


def dac_times(grid: np.ndarray, seconds_per_unit: float, rate_hz: float) -> np.ndarray:
    start, stop = float(grid[0]), float(grid[-1])
    interval = 1.0 / (rate_hz * seconds_per_unit)  # model time between DAC updates
    count = int(np.ceil((stop - start) / interval - 1e-9)) + 1
    return start + interval * np.arange(count)


def drive_matrix(table: StaticInjection) -> np.ndarray:
    """[samples, channels]: fixed and step drive at unit step scale (a continuous program's velocity rows)."""
    total = np.zeros((table.times.size, next(iter(table.constants.values())).size))
    for scale_class in (FIXED, STEP):
        total += table.constants.get(scale_class, 0.0)
        if scale_class in table.time_tables:
            total += table.time_tables[scale_class]
    return total


def dac_waveforms(program: BlockProgram, times: np.ndarray, bits: int) -> DacWaveforms:
    table = tabulate_static_injection(program, times)
    drive = drive_matrix(table)
    full_scale = np.max(np.abs(drive), axis=0)
    channels = np.flatnonzero(full_scale > 0)
    top = 2 ** (bits - 1) - 1
    codes = np.rint(drive[:, channels] / full_scale[channels] * top)
    dtype = np.int16 if bits <= 16 else np.int32
    return DacWaveforms(table, channels, full_scale[channels], codes.astype(dtype))


def dac_values(codes: np.ndarray, full_scale: np.ndarray, bits: int) -> np.ndarray:
    return codes.astype(np.float64) * (full_scale / (2 ** (bits - 1) - 1))


def quantise_adc(values: np.ndarray, full_range: float, bits: int) -> np.ndarray:
    step = 2.0 * full_range / (2 ** bits - 1)
    return np.clip(np.rint(values / step) * step, -full_range, full_range)


def quantise_dac(values: np.ndarray, full_range: float, bits: int) -> np.ndarray:
    top = 2 ** (bits - 1) - 1
    return np.clip(np.rint(values / full_range * top), -top, top) * (full_range / top)
