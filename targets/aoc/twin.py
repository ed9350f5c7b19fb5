"""The AOC digital twin: executes an AOC bundle — its images, gains, α, routing and phases — with the
hardware's non-idealities (DESIGN.md §6).

Requires: a verified AOC ``Bundle`` and a ``NonIdealities`` (default: the bundle target's own section).
Guarantees:
- Per loop iteration, per channel i: z_i ← α_i z_i + Σ_ports β·s_class·(1+gain error)·g + (1 − α_i)·clip(v_i)
  + offsets + read noise, with g the photodetector signal of ``physics.optical_outputs`` for the LED drives
  σ(σ-gain·z) routed to each module's input ports. Only the placed modules are computed (one batched
  product per module), never an n × n matrix.
- Every non-ideality off: equals the ideal executor of the same bundle (to rounding, float64).
- Discrete mode iterates closed phases for a loop budget (or to convergence when the run is noise-free)
  and reads out the average over the readout window of the iterations, over ``repeats`` independent noise
  realisations; continuous mode integrates τ dz/dt = −z + F(z) + noise with exponential Euler, τ from the
  bandwidth, and averages the sampled waveform over the readout window and repeats (the paper's readout).
- A loop that diverges or does not settle raises ``ConvergenceError`` naming the step, phase and residual.
- Same bundle, non-idealities and seed: identical results. Runs on CPU or GPU (``device``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from admc.bundle import Bundle
from admc.errors import ConvergenceError
from admc.ir.program import CLOSED, INJECT, SCALE_CLASSES, Phase, block_scale
from admc.program_io import read_program
from admc.targets.aoc.bundle_reader import realised_blocks, realised_transmissions, tile_channels
from admc.targets.aoc.physics import (
    NonIdealities,
    activation,
    apply_saturation,
    clip_injection,
    optical_outputs,
    sample_static_errors,
)

DEFAULT_LOOP_ITERATIONS = 300  # ≈ 9.5 µs at τ = 31.8 ns: inside the paper's 10–15 µs per diffusion step
SETTLE_TOLERANCE = 2e-2  # relative drift of the windowed readout between the window's two halves
NOISE_FREE_TOLERANCE = 1e-13
NOISE_FREE_MAX_ITERATIONS = 100_000


def nonidealities_of(bundle: Bundle) -> NonIdealities:
    return NonIdealities.from_mapping(bundle.manifest["target"]["nonidealities"])


def all_off(nonidealities: NonIdealities) -> NonIdealities:
    """The same parameters with every effect disabled (the twin then equals the ideal executor)."""
    changes = {name: replace(getattr(nonidealities, name), enabled=False)
               for name in nonidealities.__dataclass_fields__ if name != "seed"}
    return replace(nonidealities, **changes)


PhaseOutcome = tuple[torch.Tensor, torch.Tensor, int, float]  # final state, readout, iterations, settle


@dataclass
class TwinResult:
    trajectory: np.ndarray  # [T + 1, B, d]
    iterations: list[list[int]] = field(default_factory=list)
    settle_residuals: list[list[float]] = field(default_factory=list)
    residual_history: list[np.ndarray] = field(default_factory=list)  # step 0 closed phases: [k, B]


class AocTwin:
    def __init__(self, bundle: Bundle, nonidealities: NonIdealities | None = None, *, mode: str = "discrete",
                 loop_iterations: int | None = None, repeats: int | None = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 record_residuals: bool = False):
        self.bundle = bundle
        manifest = bundle.manifest
        target = manifest["target"]
        self.nonidealities = nonidealities_of(bundle) if nonidealities is None else nonidealities
        self.mode = mode
        self.loop_iterations = loop_iterations or DEFAULT_LOOP_ITERATIONS
        self.repeats = repeats or int(target["timing"]["repeats"])
        self.window = tuple(target["timing"]["readout_window"])
        self.time_constant = float(target["timing"]["loop_iteration_s"])
        self.sample_period = 1.0 / float(target["timing"]["sample_rate_hz"])
        self.seed = self.nonidealities.seed if seed is None else seed
        self.device, self.dtype = torch.device(device), dtype
        self.record_residuals = record_residuals
        program, self.schedule, alpha = read_program(bundle, realised_blocks(bundle))
        self.program = program
        self._layout(program, alpha)
        self._optics(manifest)

    # -- set-up ----------------------------------------------------------------------------------
    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _layout(self, program, alpha: np.ndarray) -> None:
        size = program.size
        self.size = size
        self.alpha = self._tensor(alpha)
        gains = np.ones(size)
        tanh = np.zeros(size, dtype=bool)
        for group in program.groups:
            gains[group.offset:group.stop] = group.sigma_gain
            tanh[group.offset:group.stop] = group.activation == "tanh"
        self.sigma_gain, self.tanh_channels = self._tensor(gains), torch.as_tensor(tanh, device=self.device)
        self.held = [(slice(group.offset, group.stop), group.voltage_scale)
                     for group in program.groups if group.held]
        self.initialised = [(slice(group.offset, group.stop), group.voltage_scale)
                            for group in program.groups if group.role in ("state", "readout")]
        open_alpha = np.asarray(alpha, dtype=np.float64).copy()
        for channels, _ in self.held:
            open_alpha[channels] = 0.0
        self.open_alpha = self._tensor(open_alpha)
        readout = program.group(program.readout_group)
        self.readout, self.readout_scale = slice(readout.offset, readout.stop), readout.voltage_scale
        self.injections = [(slice(program.group(part.group).offset, program.group(part.group).stop),
                            self._tensor(part.matrix.T), part.kind) for part in program.injections]
        table = program.static_table
        self.static_times = table.times
        self.static_constants = {name: self._tensor(vector) for name, vector in table.constants.items()}
        self.static_tables = {name: self._tensor(matrix) for name, matrix in table.time_tables.items()}
        self.open_iterations = program.open_iterations

    def _optics(self, manifest: dict) -> None:
        section = manifest["aoc"]
        transmissions = realised_transmissions(self.bundle)
        # Bundle images are [module, input port, output port]; the physics takes [module, output, input].
        self.positive = self._tensor(np.transpose(transmissions["positive"], (0, 2, 1)))
        self.negative = self._tensor(np.transpose(transmissions["negative"], (0, 2, 1)))
        modules, ports = self.positive.shape[0], self.positive.shape[1]
        self.modules, self.ports = modules, ports
        self.beta = self._tensor(self.bundle.array(section["beta"]))
        input_channel = np.full((modules, ports), self.size, dtype=np.int64)  # index `size` reads a zero
        output_channel = np.full((modules, ports), self.size, dtype=np.int64)
        port_class = np.zeros((modules, ports), dtype=np.int64)
        layout_blocks = manifest["layout"]["blocks"]
        groups = {group["name"]: group for group in manifest["layout"]["groups"]}
        for tile in section["tiles"]:
            module = tile["module"]
            block = layout_blocks[int(tile["block"].split("_")[1])]
            column_offset = groups[block["column_group"]]["offset"]
            columns = np.arange(column_offset + tile["column_start"], column_offset + tile["column_stop"])
            inputs = slice(tile["input_port_start"], tile["input_port_start"] + columns.size)
            outputs = slice(tile["output_port_start"],
                            tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            input_channel[module, inputs] = columns
            output_channel[module, outputs] = tile_channels(self.bundle, tile)
            port_class[module, outputs] = SCALE_CLASSES.index(tile["scale_class"])
        self.input_channel = torch.as_tensor(input_channel.reshape(-1), device=self.device)
        self.output_channel = torch.as_tensor(output_channel.reshape(-1), device=self.device)
        self.port_class = torch.as_tensor(port_class, device=self.device)
        self.static_errors = sample_static_errors(self.nonidealities, modules, ports,
                                                  torch.Generator().manual_seed(self.seed), self.dtype)
        self.static_errors = type(self.static_errors)(**{
            name: value.to(self.device) for name, value in vars(self.static_errors).items()})

    # -- one loop application --------------------------------------------------------------------
    def _phase_factors(self, phase: Phase) -> torch.Tensor:
        factors = [block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES]
        return self._tensor(factors)[self.port_class]  # [M, P]

    def _static_vector(self, phase: Phase) -> torch.Tensor:
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        matches = np.flatnonzero(self.static_times == phase.time)
        for name, constant in self.static_constants.items():
            factor = block_scale(name, phase.step_scale, phase.loop)
            if factor == 0.0:
                continue
            value = constant
            if name in self.static_tables:
                value = value + self.static_tables[name][int(matches[0])]
            total = total + factor * value
        return total

    def _drive(self, phase: Phase, inject: torch.Tensor, hold: torch.Tensor | None) -> torch.Tensor:
        drive = self._static_vector(phase).expand(inject.shape[0], -1).clone()
        for rows, matrix, kind in self.injections:
            source = inject if (kind == INJECT or phase.loop == CLOSED) else hold
            drive[:, rows] += source @ matrix
        # The machine adds clip(v) after the relaxation's (1 − α) share (FIELDS.md §1, step 12).
        return clip_injection((1.0 - self.alpha) * drive, self.nonidealities)

    def _operator(self, state: torch.Tensor, factors: torch.Tensor, drive: torch.Tensor,
                  closed: bool) -> torch.Tensor:
        """Noise-free right-hand side F(z) of one iteration (held channels unrelaxed in open phases)."""
        scaled = self.sigma_gain * state
        activated = torch.where(self.tanh_channels, activation(scaled, self.nonidealities), scaled)
        padded = torch.nn.functional.pad(activated, (0, 1))
        led = padded[:, self.input_channel].reshape(state.shape[0], self.modules, self.ports)
        signal = optical_outputs(led, self.positive, self.negative, self.nonidealities, self.static_errors)
        gain = self.beta * factors
        if self.nonidealities.gain_error.enabled:
            gain = gain * self.static_errors.gain_factor
        contribution = (signal * gain).reshape(state.shape[0], -1)
        if self.nonidealities.offsets.enabled:
            contribution = contribution + self.static_errors.offsets.reshape(-1)
        summed = torch.zeros(state.shape[0], self.size + 1, dtype=self.dtype, device=self.device)
        summed.index_add_(1, self.output_channel, contribution)
        alpha = self.alpha if closed else self.open_alpha
        return alpha * state + summed[:, :-1] + drive

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor | float:
        if not self.nonidealities.read_noise.enabled:
            return 0.0
        sample = torch.randn(shape, generator=generator, dtype=self.dtype).to(self.device)
        return self.nonidealities.read_noise.std * sample

    @property
    def noisy(self) -> bool:
        return self.nonidealities.read_noise.enabled

    # -- phases ----------------------------------------------------------------------------------
    def _hold(self, state: torch.Tensor, hold: torch.Tensor | None) -> torch.Tensor:
        for channels, scale in self.held:
            state[:, channels] = scale * hold
        return state

    def _window(self, count: int) -> range:
        start = min(int(np.floor(self.window[0] * count)), count - 1)
        stop = max(int(np.ceil(self.window[1] * count)), start + 1)
        return range(start, min(stop, count))

    def _iterate(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                 hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        factors = self._phase_factors(phase)
        closed = phase.loop == CLOSED
        exact_open = not closed and not bool(torch.any(self.open_alpha > 0))
        budget = self.open_iterations if (exact_open and not self.noisy) else self.loop_iterations
        if not self.noisy and not exact_open:
            budget = max(budget, NOISE_FREE_MAX_ITERATIONS)  # a noise-free run is taken to convergence
        if exact_open and self.noisy:
            budget = max(self.loop_iterations // 4, self.open_iterations)
        window = self._window(budget)
        readouts, history = [], []
        residual = float("inf")
        for count in range(1, budget + 1):
            if not closed:
                state = self._hold(state, hold)
            updated = apply_saturation(self._operator(state, factors, drive, closed)
                                       + self._noise(state.shape, generator), self.nonidealities)
            change = (updated - state).abs().amax(dim=1) / updated.abs().amax(dim=1).clamp_min(1.0)
            residual = float(change.max()) if change.numel() else 0.0
            if self.record_residuals and step == 0 and closed:
                history.append(change.cpu().numpy())
            readout = updated[:, self.readout] / self.readout_scale
            if not torch.isfinite(updated).all() or residual > 1e12:
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged after "
                                       f"{count} iterations (relative change {residual:.3e})")
            state = updated
            if count - 1 in window:
                readouts.append(readout)
            if not self.noisy and closed and residual <= NOISE_FREE_TOLERANCE:
                readouts = [readout]
                break
            if not self.noisy and not closed and count >= self.open_iterations and (
                    exact_open or residual <= NOISE_FREE_TOLERANCE):
                readouts = [readout]
                break
        else:
            if not self.noisy and closed:
                raise ConvergenceError(f"twin: step {step}, phase {index} (closed loop) not settled after "
                                       f"{budget} iterations (relative change {residual:.3e})")
        if history:
            self._history.append(np.stack(history))
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle within "
                                   f"{budget} iterations: the windowed readout drifts by {settle:.3e} (relative)")
        return state, torch.stack(readouts).mean(dim=0), count, settle

    @staticmethod
    def _settle_residual(readouts: list[torch.Tensor]) -> float:
        """Drift of the windowed readout between the window's halves, beyond what read noise explains.

        The noise allowance is six standard errors of the half-window means (estimated from the samples
        themselves, treated as independent), so a settled noisy loop scores ≈ 0 and a drifting one does not.
        """
        if len(readouts) < 4:
            return 0.0
        samples = torch.stack(readouts)
        half = len(readouts) // 2
        first, second = samples[:half].mean(0), samples[half:].mean(0)
        allowance = 6.0 * samples.std(dim=0) / np.sqrt(half)
        excess = ((second - first).abs() - allowance).clamp_min(0.0)
        scale = second.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        return float((excess / scale).max())

    def _continuous(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                    hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        """τ dz/dt = −z + F(z) + n(t): exponential Euler at τ/2 sub-steps; noise held per sample period."""
        factors = self._phase_factors(phase)
        duration = self.loop_iterations * self.time_constant
        substep = self.time_constant / 2
        count = int(np.ceil(duration / substep))
        decay = float(np.exp(-substep / self.time_constant))
        samples_per_period = max(1, int(round(self.sample_period / substep)))
        readouts = []
        noise = self._noise(state.shape, generator)
        window = self._window(count)
        for index_substep in range(count):
            if phase.loop != CLOSED:
                state = self._hold(state, hold)
            if index_substep % samples_per_period == 0:
                noise = self._noise(state.shape, generator)
                if index_substep in window or (index_substep + samples_per_period - 1) in window:
                    readouts.append(state[:, self.readout] / self.readout_scale)
            target = self._operator(state, factors, drive, phase.loop == CLOSED) + noise
            state = apply_saturation(target + (state - target) * decay, self.nonidealities)
            if not torch.isfinite(state).all():
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged in "
                                       f"continuous time after {index_substep + 1} sub-steps")
        readouts.append(state[:, self.readout] / self.readout_scale)
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle in "
                                   f"{duration * 1e6:.2f} µs: the windowed readout drifts by {settle:.3e}")
        return state, torch.stack(readouts).mean(dim=0), count, settle

    # -- whole run -------------------------------------------------------------------------------
    def run(self, noise: np.ndarray) -> TwinResult:
        generator = torch.Generator().manual_seed(self.seed + 1)
        x0 = self._tensor(noise)
        batch = x0.shape[0]
        # Repeats are independent noise realisations of the same experiment, averaged at each readout.
        x = x0.repeat(self.repeats, 1)
        state = torch.zeros(x.shape[0], self.size, dtype=self.dtype, device=self.device)
        for channels, scale in self.initialised:
            state[:, channels] = scale * x
        self._history: list[np.ndarray] = []
        result = TwinResult(np.empty((len(self.schedule.steps) + 1, *np.asarray(noise).shape)))
        result.trajectory[0] = np.asarray(noise, dtype=np.float64)
        iterate = self._continuous if self.mode == "continuous" else self._iterate
        for step, phases in enumerate(self.schedule.steps):
            outputs = {"x": x}
            counts, settles = [], []
            for index, phase in enumerate(phases):
                def combine(pairs, outputs=outputs):
                    return sum(coefficient * outputs[source] for source, coefficient in pairs)

                inject = combine(phase.inject)
                hold = combine(phase.hold) if phase.hold else None
                if phase.init:
                    initial = combine(phase.init)
                    for channels, scale in self.initialised:
                        state[:, channels] = scale * initial
                drive = self._drive(phase, inject, hold)
                state, readout, count, settle = iterate(step, index, phase, state, drive, hold, generator)
                averaged = readout.reshape(self.repeats, batch, -1).mean(dim=0)
                outputs[f"phase:{index}"] = averaged.repeat(self.repeats, 1)
                counts.append(count)
                settles.append(settle)
            x = outputs[f"phase:{len(phases) - 1}"]
            result.trajectory[step + 1] = x[:batch].cpu().numpy()
            result.iterations.append(counts)
            result.settle_residuals.append(settles)
        result.residual_history = self._history
        return result
