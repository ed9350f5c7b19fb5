"""The RRAM digital twin: the bundle's program integrated as a stochastic differential equation.

Requires: a verified RRAM bundle and noise x_0 [B, d]. Guarantees: the trajectory [T + 1, B, d] at the
schedule's grid points, the same for the same bundle, noise and seed (the seed fixes the chip's static
draws and the run's noise). Effects (each switchable in the target's ``nonidealities``):
- programming error: every device's conductance + N(0, (relative_std · G_max)²), static per chip;
- drift: G · (t / t0)^-ν at the stated time after programming;
- read noise: each device's current fluctuates by relative_std (white, band-limited at the layer bandwidth
  B); a column's output noise has std relative_std · sqrt(Σ_j (s G_j a_j)²) and, averaged over a twin step of
  physical length Δ, enters with std · sqrt(1 / (2 B Δ)): white current noise into the integrator (hidden
  layers' noise propagates through the layers after them);
- finite bandwidth: a chain of first-order low passes delays slow signals by the sum of its time constants,
  so the layers see the state and the DAC time inputs that long ago (first order in the settling margin);
- integrator leak: dx/dt gains −x · T / τ_leak (T = seconds per unit model time);
- DAC: start values and time inputs at the DAC's resolution, time inputs held between DAC updates;
- ADC: readouts at the grid points rounded to the ADC's grid over its range;
- activation offsets: a static offset per channel, std × the channel's full scale, before σ.
The state's drift is integrated by Heun's method with one noise draw per step (stochastic Heun); the twin
takes min(twin.steps, 2 B T) steps per unit model time (at least 16), so a step spans at least one noise
correlation time 1 / (2B).
"""

from __future__ import annotations

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.ir.adm import is_activation
from admc.runtime.continuous import ProgramVelocity
from admc.targets.rram.bundle_reader import block_shapes, conductances, read_program, section
from admc.targets.rram.conductance import variance_blocks
from admc.targets.rram.converters import dac_values, quantise_adc, quantise_dac
from admc.targets.rram.description import RramTarget

# Start values are driven by the DAC over ± this many standard deviations of the Gaussian start noise.
START_RANGE = 5.0
MINIMUM_STEPS = 16
EFFECTS = ("programming_noise", "read_noise", "drift", "bandwidth", "leakage", "dac_quantisation",
           "adc_quantisation", "relu_offset")


class RramTwin:
    def __init__(self, bundle: Bundle, seed: int | None = None):
        self.target = RramTarget.from_mapping(bundle.manifest["target"], f"{bundle.path}/manifest.json")
        self.effects = effects = self.target.nonidealities
        self.seed = effects.seed if seed is None else int(seed)
        data = section(bundle)
        chip = np.random.default_rng([self.seed, 1])
        positive, negative, column_scale = conductances(bundle)
        if effects.programming_noise.enabled:
            std = effects.programming_noise.relative_std * self.target.conductance.g_max_us
            positive = np.maximum(positive + chip.normal(0.0, std, positive.shape), 0.0)
            negative = np.maximum(negative + chip.normal(0.0, std, negative.shape), 0.0)
        if effects.drift.enabled:
            drift = effects.drift
            elapsed = max(drift.time_after_programming_s, drift.reference_time_s)
            factor = (elapsed / drift.reference_time_s) ** (-drift.exponent)
            positive, negative = positive * factor, negative * factor
        self.program, self.schedule, _ = read_program(bundle, positive, negative)
        self.velocity = ProgramVelocity(self.program)
        variances = variance_blocks(block_shapes(bundle), data["tiles"], positive, negative, column_scale)
        self.variance_incoming: dict[str, list[tuple[str, np.ndarray]]] = {name: [] for name in
                                                                           self.velocity.groups}
        for block, matrix in zip(self.program.blocks, variances, strict=True):
            if block.scale_class != "feedback":
                self.variance_incoming[block.row_group].append((block.column_group, matrix.T))
        timing = data["timing"]
        self.seconds_per_unit = float(timing["seconds_per_unit_model_time"])
        self.delay = (float(timing["layers_in_series"]) * float(timing["layer_time_constant_s"])
                      / self.seconds_per_unit) if effects.bandwidth.enabled else 0.0
        bandwidth_time = 2.0 * self.target.timing.layer_bandwidth_hz * self.seconds_per_unit
        self.steps_per_unit = max(MINIMUM_STEPS, min(self.target.twin.steps, int(bandwidth_time)))
        self.noise_factor = float(np.sqrt(self.steps_per_unit / bandwidth_time))
        self.leak = (self.seconds_per_unit / self.target.integrator.leakage_time_constant_s
                     if effects.leakage.enabled else 0.0)
        full_scale = {entry["group"]: float(entry["full_scale"]) for entry in data["periphery"]}
        self.offsets = {name: chip.normal(0.0, effects.relu_offset.std * full_scale[name], group.size)
                        for name, group in self.velocity.groups.items()
                        if effects.relu_offset.enabled and is_activation(group.activation)}
        dac = data["dac"]
        self.dac_bits = int(dac["bits"])
        self.dac_times = bundle.array(dac["times"])
        self.dac_channels = bundle.array(dac["channels"])
        self.dac_levels = dac_values(bundle.array(dac["codes"]), bundle.array(dac["full_scale"]), self.dac_bits)
        self.adc_bits, self.adc_range = int(data["adc"]["bits"]), float(data["adc"]["range"])

    # -- one evaluation of the layers ----------------------------------------------------------------
    def _drive(self, batch: int, time: float) -> np.ndarray:
        if not self.effects.dac_quantisation.enabled:
            return np.broadcast_to(self.velocity.static(time), (batch, self.program.size)).copy()
        index = int(np.clip(np.searchsorted(self.dac_times, time, side="right") - 1, 0, self.dac_times.size - 1))
        drive = np.zeros((batch, self.program.size))
        drive[:, self.dac_channels] = self.dac_levels[index]
        return drive

    def _activated(self, name: str, voltage: np.ndarray) -> np.ndarray:
        offset = self.offsets.get(name)
        return self.velocity.activated(name, voltage if offset is None else voltage + offset)

    def _row(self, name: str, voltages: dict, drive: np.ndarray, noise_std: float,
             generator: np.random.Generator) -> np.ndarray:
        group = self.velocity.groups[name]
        total = drive[:, group.offset:group.stop].copy()
        variance = np.zeros_like(total)
        for (column, matrix_transposed), (_, variance_transposed) in zip(
                self.velocity.incoming[name], self.variance_incoming[name], strict=True):
            activated = self._activated(column, voltages[column])
            total += activated @ matrix_transposed
            if noise_std:
                variance += (activated ** 2) @ variance_transposed
        if noise_std:
            total += noise_std * np.sqrt(variance) * generator.standard_normal(total.shape)
        return total

    def velocity_sample(self, x: np.ndarray, time: float, generator: np.random.Generator) -> np.ndarray:
        """The layers' output for state x at time t: one noisy evaluation averaged over a twin step."""
        noise_std = (self.effects.read_noise.relative_std * self.noise_factor
                     if self.effects.read_noise.enabled else 0.0)
        drive = self._drive(x.shape[0], time)
        for name, matrix_transposed in self.velocity.feedback_injections:
            group = self.velocity.groups[name]
            drive[:, group.offset:group.stop] += x @ matrix_transposed
        voltages = {name: group.voltage_scale * x for name, group in self.velocity.groups.items() if group.held}
        for name in self.velocity.order:
            voltages[name] = self._row(name, voltages, drive, noise_std, generator)
        readout = self.program.readout_group
        group = self.velocity.groups[readout]
        rows = self._row(readout, voltages, drive, noise_std, generator) if group.held else voltages[readout]
        return rows / group.voltage_scale - self.leak * x

    # -- the run -----------------------------------------------------------------------------------
    def run(self, noise: np.ndarray, progress=None) -> np.ndarray:
        x = np.asarray(noise, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.program.state_dimension:
            raise AdmcError(f"noise has shape {x.shape}, the bundle's state has {self.program.state_dimension} "
                            "features")
        generator = np.random.default_rng([self.seed, 2])
        if self.effects.dac_quantisation.enabled:
            x = quantise_dac(x, START_RANGE, self.dac_bits)
        grid = self.schedule.grid
        trajectory = np.empty((grid.size, *x.shape))
        trajectory[0] = x
        previous_slope = np.zeros_like(x)
        for index in range(grid.size - 1):
            start, stop = float(grid[index]), float(grid[index + 1])
            count = max(1, int(np.ceil((stop - start) * self.steps_per_unit - 1e-9)))
            step = (stop - start) / count
            for substep in range(count):
                time = start + substep * step
                # The layers see the state and the time inputs ``delay`` ago (first-order lag of the chain).
                delayed = x - self.delay * previous_slope
                slope = self.velocity_sample(delayed, time - self.delay, generator)
                predictor = x + step * slope
                corrected = self.velocity_sample(predictor - self.delay * slope, time + step - self.delay,
                                                 generator)
                previous_slope = 0.5 * (slope + corrected)
                x = x + step * previous_slope
                if not np.all(np.isfinite(x)):
                    raise AdmcError(f"twin diverged at t = {time:.4g} (step {index})")
            trajectory[index + 1] = (quantise_adc(x, self.adc_range, self.adc_bits)
                                     if self.effects.adc_quantisation.enabled else x)
            if progress is not None:
                progress(index + 1, grid.size - 1)
        return trajectory

    def summary(self) -> dict:
        return {"seed": self.seed, "steps_per_unit_time": self.steps_per_unit,
                "delay_model_time": self.delay, "noise_averaging_factor": self.noise_factor,
                "effects": [name for name in EFFECTS if getattr(self.effects, name).enabled]}


def simulate_twin(bundle: Bundle, noise: np.ndarray, options) -> tuple[np.ndarray, str]:
    """Final samples and a one-line account of the run; ``options``: ``admc.runtime.simulate.SimulateOptions``."""
    if options.precision != "float64":
        raise AdmcError(f"precision {options.precision}: the rram twin runs in float64 only")
    twin = RramTwin(bundle, seed=options.seed)
    trajectory = twin.run(noise)
    return trajectory[-1], (f"twin (rram, seed {twin.seed}): {len(twin.schedule.grid) - 1} readouts, "
                            f"{twin.steps_per_unit} steps per unit model time, effects "
                            f"{', '.join(twin.summary()['effects']) or 'none'}")
