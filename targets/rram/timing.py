"""Physical time of an RRAM program: how long one unit of model time takes so the layers keep up.

Requires: the spine ``BlockProgram`` (time terms tabulated), its grid and the target. Guarantees:
``calibrate`` runs the program's velocity (ideal, float64) along explicit-Euler paths from seeded noise and
returns per-group peaks and λ, the largest spectral norm of the velocity's Jacobian met (central finite
differences): the state's fastest rate, per unit of model time. ``choose_time_scale`` then sets the
physical seconds per unit of model time T = margin · τ_chain · λ (τ_chain = layers in series × one layer's
time constant 1/(2π·bandwidth)), within the integrator's time-constant range, and reports the achieved
margin T / (τ_chain · λ): how much faster the layers settle than the state moves. A T above the
integrator's range is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.program import BlockProgram
from admc.runtime.continuous import ProgramVelocity

CALIBRATION_SAMPLES = 64
CALIBRATION_STEPS = 32
CALIBRATION_SEED = 0
JACOBIAN_SAMPLES = 8
# λ below this (a nearly constant velocity) would ask for no time at all; one unit of rate is the floor.
MINIMUM_RATE = 1.0


@dataclass(frozen=True)
class Calibration:
    input_peaks: dict[str, float]  # per group: peak |σ(voltage)| (what drives crossbar rows)
    output_peaks: dict[str, float]  # per group: peak |row voltage| (what the column amplifiers output)
    state_peak: float  # peak |x| over the run
    final_peak: float  # peak |x| at the last grid point
    rate: float  # λ: largest ‖∂f/∂x‖₂ met


@dataclass(frozen=True)
class TimeScale:
    seconds_per_unit: float
    layer_time_constant_s: float
    layers_in_series: int
    rate: float
    margin: float
    clamped: str  # "" or why T was raised to the integrator's minimum

    def to_dict(self) -> dict:
        return {"seconds_per_unit_model_time": self.seconds_per_unit,
                "layer_time_constant_s": self.layer_time_constant_s,
                "layers_in_series": self.layers_in_series, "state_rate_per_unit_time": self.rate,
                "settling_margin": self.margin, "clamped": self.clamped}


def _jacobian_norm(velocity: ProgramVelocity, x: np.ndarray, time: float) -> float:
    dimension = x.shape[1]
    columns = []
    for feature in range(dimension):
        step = 1e-6 * np.maximum(1.0, np.abs(x[:, feature]))
        forward, backward = x.copy(), x.copy()
        forward[:, feature] += step
        backward[:, feature] -= step
        columns.append((velocity(forward, np.array([time])) - velocity(backward, np.array([time])))
                       / (2 * step[:, None]))
    jacobians = np.stack(columns, axis=2)  # [B, d (output), d (input)]
    return float(np.max(np.linalg.norm(jacobians, ord=2, axis=(1, 2)), initial=0.0))


def calibrate(program: BlockProgram, grid: np.ndarray) -> Calibration:
    velocity = ProgramVelocity(program)
    x = np.random.default_rng(CALIBRATION_SEED).standard_normal((CALIBRATION_SAMPLES, program.state_dimension))
    times = np.linspace(float(grid[0]), float(grid[-1]), CALIBRATION_STEPS + 1)
    input_peaks = {name: 0.0 for name in velocity.groups}
    output_peaks = {name: 0.0 for name in velocity.groups}
    state_peak, rate = float(np.max(np.abs(x))), 0.0
    for index, time in enumerate(times[:-1]):
        voltages, drive = velocity.layer_inputs(x, float(time))
        for name in velocity.order:
            voltages[name] = velocity.row_voltage(name, voltages, drive)
        readout = velocity.program.readout_group
        slope = velocity(x, np.array([time]))
        for name, voltage in voltages.items():
            input_peaks[name] = max(input_peaks[name], float(np.max(np.abs(velocity.activated(name, voltage)))))
            output_peaks[name] = max(output_peaks[name], float(np.max(np.abs(voltage))))
        output_peaks[readout] = max(output_peaks[readout], float(np.max(np.abs(slope))))
        if index % 4 == 0:
            rate = max(rate, _jacobian_norm(velocity, x[:JACOBIAN_SAMPLES], float(time)))
        x = x + (times[index + 1] - time) * slope
        state_peak = max(state_peak, float(np.max(np.abs(x))))
    return Calibration(input_peaks, output_peaks, state_peak, float(np.max(np.abs(x))), rate)


def choose_time_scale(calibration: Calibration, layers_in_series: int, target) -> TimeScale:
    tau_layer = 1.0 / (2.0 * math.pi * target.timing.layer_bandwidth_hz)
    rate = max(calibration.rate, MINIMUM_RATE)
    chain = layers_in_series * tau_layer
    seconds = target.timing.settling_margin * chain * rate
    clamped = ""
    if seconds < target.integrator.time_constant_min_s:
        clamped = (f"raised from {seconds:.3g} s to the integrator's smallest time constant "
                   f"{target.integrator.time_constant_min_s:.3g} s")
        seconds = target.integrator.time_constant_min_s
    if seconds > target.integrator.time_constant_max_s:
        raise AdmcError(
            f"target '{target.name}': the state moves at rate {rate:.3g} per unit model time and {layers_in_series} "
            f"layers settle in {chain:.3g} s, so one unit of model time needs {seconds:.3g} s for a settling margin "
            f"of {target.timing.settling_margin:g}; above integrator.time_constant_max_s "
            f"{target.integrator.time_constant_max_s:.3g} s")
    return TimeScale(seconds, tau_layer, layers_in_series, rate, seconds / (chain * rate), clamped)
