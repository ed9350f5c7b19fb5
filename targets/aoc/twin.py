"""The AOC digital twin: executes an AOC bundle — its images, gains, α, routing and phases — with the
hardware's non-idealities (docs/design.md §6).

Requires: a verified AOC ``Bundle`` and a ``NonIdealities`` (default: the bundle target's own section).
Guarantees:
- Per loop iteration, per channel i: z_i ← α_i z_i + Σ_ports β·s_class·(1+gain error)·g + (1 − α_i)·clip(v_i)
  + offsets + read noise, with g the photodetector signal of ``physics.optical_outputs`` for the LED drives
  σ(σ-gain·z) routed to each module's input ports. Everything between the LED drives and the summed
  channel inputs is linear, so it is folded once per distinct phase scaling into its realised operator
  (``operator`` = "blocks": dense matrices only for the (row group, column group) pairs that hold weights,
  plus a sparse remainder such as crosstalk across tile borders; "modules": one batched 48 × 48 product
  per placed module; "auto" picks the cheaper). Never an n × n matrix.
- Every non-ideality off: equals the ideal executor of the same bundle (to rounding, float64); a channel whose
  program asks for the algebraic sigmoid gets it then (with the nonlinearity on, the machine's s is it).
- A bundle that compensated its target's σ shape (``aoc.sigma_compensation``, ``sigma_shape.py``): the optics
  act on the loaded transmissions T·k; with the nonlinearity on, the drive is the machine's s, else tanh/k
  (what the images were compiled for), so either way the loop equals the program up to the σ-shape residual.
- Discrete mode iterates closed phases for a loop budget (or to convergence when the run is noise-free)
  and reads out the average over the readout window of the iterations, over ``repeats`` independent noise
  realisations; continuous mode integrates τ dz/dt = −z + F(z) + noise with exponential Euler, τ from the
  bandwidth, and averages the sampled waveform over the readout window and repeats (the paper's readout).
- A loop that diverges or does not settle raises ``ConvergenceError`` naming the step, phase and residual.
- Same bundle, non-idealities and seed: identical results. Runs on CPU or GPU (``device``), in float64
  (default) or float32 (``dtype``). Read noise is drawn in float32 and added in ``dtype``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from admc.bundle.program_io import read_program
from admc.bundle.store import Bundle
from admc.core.errors import ConvergenceError
from admc.ir.adm import activate, is_activation, sigmoid_exponent
from admc.ir.program import CLOSED, INJECT, SCALE_CLASSES, Phase, block_scale, phase_vectors
from admc.targets.aoc.bundle_reader import (
    input_port_channels,
    realised_blocks,
    realised_transmissions,
    tile_channels,
)
from admc.targets.aoc.calibration import Calibration
from admc.targets.aoc.loop_operator import LoopOperator, PathOperators, block_form, module_form
from admc.targets.aoc.machine_chain import MachineChain
from admc.targets.aoc.measured_device import measured_nonidealities, measured_static_errors
from admc.targets.aoc.physics import (
    NonIdealities,
    activation,
    activation_,
    clip_injection,
    module_matrices,
    sample_static_errors,
)
from admc.targets.aoc.sigma_shape import port_scales

DEFAULT_LOOP_ITERATIONS = 300  # ≈ 9.5 µs at τ = 31.8 ns: inside the paper's 10–15 µs per diffusion step
SETTLE_TOLERANCE = 2e-2  # relative drift of the windowed readout between the window's two halves
NOISE_FREE_TOLERANCE = 1e-13  # float64; float32 runs use NOISE_FREE_EPSILONS × its machine epsilon
NOISE_FREE_EPSILONS = 64
NOISE_FREE_MAX_ITERATIONS = 100_000
DIVERGENCE_RESIDUAL = 1e12
# A settled noisy loop changes per iteration by a few read-noise standard deviations; a loop still changing by
# more than this many at the end of its budget (e.g. oscillating between the rails) has not settled.
UNSETTLED_NOISE_MULTIPLE = 40.0
OPERATORS = ("auto", "blocks", "modules")


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
                 record_residuals: bool = False, operator: str = "auto", calibration: Calibration | None = None,
                 switch_on_calibrated: bool = True):
        """``calibration``: a measured machine (calibrations/FIELDS.md format): the loop runs the measured chain in the
        machine's units (``machine_chain``) with its per-port figures, and, unless ``switch_on_calibrated``
        is False (the given switches are then used as they are), every calibrated effect switched on."""
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
        self.bundle = bundle
        manifest = bundle.manifest
        target = manifest["target"]
        self.nonidealities = nonidealities_of(bundle) if nonidealities is None else nonidealities
        self.calibration = calibration
        if calibration is not None:
            if switch_on_calibrated:
                self.nonidealities = measured_nonidealities(calibration, self.nonidealities)
            compiled_for = manifest.get("calibration", {}).get("sha256")
            if compiled_for and compiled_for != calibration.sha256:
                warnings.warn(f"{bundle.path}: compiled for calibration {compiled_for[:12]}…, running with "
                              f"{calibration.path} ({calibration.sha256[:12]}…): its compensation does not "
                              "match this machine", stacklevel=2)
        self.mode = mode
        self.operator = operator
        self.loop_iterations = loop_iterations or DEFAULT_LOOP_ITERATIONS
        self.repeats = repeats or int(target["timing"]["repeats"])
        self.window = tuple(target["timing"]["readout_window"])
        self.time_constant = float(target["timing"]["loop_iteration_s"])
        self.sample_period = 1.0 / float(target["timing"]["sample_rate_hz"])
        self.seed = self.nonidealities.seed if seed is None else seed
        self.device, self.dtype = torch.device(device), dtype
        self.record_residuals = record_residuals
        self.tolerance = max(NOISE_FREE_TOLERANCE, NOISE_FREE_EPSILONS * torch.finfo(dtype).eps)
        program, self.schedule, alpha = read_program(bundle, realised_blocks(bundle))
        self.program = program
        self._layout(program, alpha)
        self._optics(manifest)
        self._operators: dict[tuple[float, ...], LoopOperator] = {}
        self._buffers: dict[tuple, torch.Tensor] = {}
        self.extra_drive: Callable[[Phase], np.ndarray] | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def _layout(self, program, alpha: np.ndarray) -> None:
        size = program.size
        self.size = size
        self.alpha = self._tensor(alpha)
        gains = np.ones(size)
        tanh = np.zeros(size, dtype=bool)
        group_index = np.zeros(size, dtype=np.int64)
        for index, group in enumerate(program.groups):
            gains[group.offset:group.stop] = group.sigma_gain
            tanh[group.offset:group.stop] = is_activation(group.activation)  # the machine's σ drives them
            group_index[group.offset:group.stop] = index
        self.sigma_gain, self.tanh_channels = self._tensor(gains), torch.as_tensor(tanh, device=self.device)
        self.all_tanh = bool(tanh.all())
        # Groups whose program asks for the algebraic sigmoid itself: with the nonlinearity on the machine's s
        # is theirs exactly (canonicalisation admits only the declared exponent); with it off they get it too.
        self.program_sigmoids = [(slice(group.offset, group.stop), group.activation) for group in program.groups
                                 if sigmoid_exponent(group.activation) is not None]
        self.group_slices = [slice(group.offset, group.stop) for group in program.groups]
        self.group_index = torch.as_tensor(group_index, device=self.device)
        self.held = [(slice(group.offset, group.stop), group.voltage_scale)
                     for group in program.groups if group.held]
        self.initialised = [(slice(group.offset, group.stop), group.voltage_scale)
                            for group in program.groups if group.role in ("state", "readout")]
        open_alpha = np.asarray(alpha, dtype=np.float64).copy()
        for channels, _ in self.held:
            open_alpha[channels] = 0.0
        self.open_alpha = self._tensor(open_alpha)
        # An open phase runs its held rows unrelaxed (α = 0, as the program's semantics say): the machine sets
        # those rows' gain to β/(1 − α) for the phase, so the twin undoes the (1 − α) share the images and
        # the drive carry for them.
        alpha_vector = np.asarray(alpha, dtype=np.float64)
        self.open_rescale = [(channels, self._tensor(1.0 / (1.0 - alpha_vector[channels])))
                             for channels, _ in self.held if np.any(alpha_vector[channels] > 0)]
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
        input_channel = input_port_channels(self.bundle, modules, ports, unused=self.size)  # `size` reads a zero
        output_channel = np.full((modules, ports), self.size, dtype=np.int64)
        port_class = np.zeros((modules, ports), dtype=np.int64)
        for tile in section["tiles"]:
            module = tile["module"]
            outputs = slice(tile["output_port_start"],
                            tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            output_channel[module, outputs] = tile_channels(self.bundle, tile)
            port_class[module, outputs] = SCALE_CLASSES.index(tile["scale_class"])
        self.input_channel = torch.as_tensor(input_channel, device=self.device)  # [M, P]
        compensation = section.get("sigma_compensation") if self.calibration is None else None
        per_port = None
        if compensation:
            # The images hold T·k for the σ shape they were compiled for (sigma_shape.py) and the stored
            # transmissions are T, what the program means: the device effects act on what is loaded, T·k.
            per_port = self._tensor(port_scales(self.bundle.array(compensation["output_scale"]), input_channel))
            self.positive, self.negative = (self.positive * per_port[:, None, :],
                                            self.negative * per_port[:, None, :])
        self.output_channel = torch.as_tensor(output_channel, device=self.device)
        self.port_class = torch.as_tensor(port_class, device=self.device)
        generator = torch.Generator().manual_seed(self.seed)
        if self.calibration is None:
            self.static_errors = sample_static_errors(self.nonidealities, modules, ports, generator, self.dtype)
        else:
            self.static_errors = measured_static_errors(self.calibration, self.nonidealities, modules, ports,
                                                        generator, self.dtype)
        self.static_errors = type(self.static_errors)(**{
            name: value.to(self.device) for name, value in vars(self.static_errors).items()})
        # The optics of every module as one signed matrix [M, P_out, P_in], every path effect folded in.
        self.optics = module_matrices(self.positive, self.negative, self.nonidealities, self.static_errors)
        if per_port is not None and not self.nonidealities.nonlinearity.enabled:
            # σ = tanh: the drive the images were compiled for is tanh/k (k·s ≈ tanh); linear in the drive,
            # so it scales the optics' columns. Every effect off, this is the ideal program again.
            self.optics = self.optics / per_port[:, None, :]
        self.chain = None
        if self.calibration is not None:
            self.chain = MachineChain.of(self.bundle, self.calibration, self.nonidealities)

    # -- the realised loop operator of a phase -----------------------------------------------------
    def _phase_factors(self, phase: Phase) -> tuple[float, ...]:
        return tuple(block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES)

    def loop_operator(self, phase: Phase) -> LoopOperator:
        """The phase's linear part, built once per distinct class scaling (cached).

        Guarantees: ``accumulate`` adds Σ_ports gain·(optics · σ routed to the ports) per channel, with
        gain = β · s_class · (1 + gain error); ``constant`` is the offsets summed per channel.
        """
        factors = self._phase_factors(phase)
        if factors not in self._operators:
            self._operators[factors] = self._build_operator(factors)
        return self._operators[factors]

    def _build_operator(self, factors: tuple[float, ...]) -> LoopOperator | PathOperators:
        if self.chain is not None:
            return self._build_chain_operator(factors)
        gain = self.beta * self._tensor(factors)[self.port_class]  # [M, P_out]
        if self.nonidealities.gain_error.enabled:
            gain = gain * self.static_errors.gain_factor
        scaled = gain.unsqueeze(-1) * self.optics  # [M, P_out, P_in]
        constant = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device)
        if self.nonidealities.offsets.enabled:
            constant.index_add_(0, self.output_channel.reshape(-1), self.static_errors.offsets.reshape(-1))
        constant = constant[:-1]
        return self._form(scaled, constant)

    def _form(self, scaled: torch.Tensor, constant: torch.Tensor) -> LoopOperator:
        blocks = block_form(scaled, constant, self.input_channel, self.output_channel, self.group_slices,
                            self.group_index)
        modules = module_form(scaled, constant, self.input_channel, self.output_channel)
        if self.operator == "blocks" or (self.operator == "auto" and blocks.cost <= modules.cost):
            return blocks
        return modules

    def _per_channel(self, per_port: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(self.size + 1, dtype=self.dtype, device=self.device)
        total.index_add_(0, self.output_channel.reshape(-1), per_port.reshape(-1))
        return total[:-1]

    def _build_chain_operator(self, factors: tuple[float, ...]) -> PathOperators:
        """The measured chain at this phase's gains: settings s·factor per port (chain.py)."""
        class_factor = np.asarray(factors)[self.port_class.cpu().numpy()]
        matrices, constant = self.chain.at(class_factor)
        positive = self._form(self._tensor(matrices.positive), torch.zeros(self.size, dtype=self.dtype,
                                                                           device=self.device))
        negative = self._form(self._tensor(matrices.negative), positive.constant)
        return PathOperators(positive, negative, self._per_channel(self._tensor(constant)))

    # -- one loop application --------------------------------------------------------------------
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
        """Per-phase constant input of every iteration: clip((1 − α) v) + offsets, [B, n]."""
        drive = self._static_vector(phase).expand(inject.shape[0], -1).clone()
        if self.extra_drive is not None:  # per-sample injections (conditioning interface), per repeat
            drive += self._tensor(self.extra_drive(phase)).repeat(self.repeats, 1)
        for rows, matrix, kind in self.injections:
            source = inject if (kind == INJECT or phase.loop == CLOSED) else hold
            drive[:, rows] += source @ matrix
        drive = (1.0 - self.alpha) * drive
        if self.chain is not None and self.chain.cancellation is not None:
            class_factor = np.asarray(self._phase_factors(phase))[self.port_class.cpu().numpy()]
            drive = drive + self._per_channel(self._tensor(self.chain.cancellation_at(class_factor)))
        # The machine adds clip(v) after the relaxation's (1 − α) share (calibrations/FIELDS.md §1, step 12).
        return clip_injection(drive, self.nonidealities) + self.loop_operator(phase).constant

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A reusable work tensor shaped like ``like`` (large allocations cost page faults every iteration)."""
        key = (name, tuple(like.shape), like.dtype, like.device)
        if key not in self._buffers:
            if len(self._buffers) > 16:  # batch shapes changed: drop the old ones
                self._buffers.clear()
            self._buffers[key] = torch.empty_like(like)
        return self._buffers[key]

    def _activate(self, state: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """σ(σ-gain · z) on tanh channels, σ-gain · z on the others; the result lives in a work buffer that
        the next call overwrites. Measured chain: each path's LED light P±(S(z)) at the machine's own input
        gain (the program's σ gain is what the compiler assumed; the machine has only a)."""
        if self.chain is not None:
            light = self.chain.light(state)
            return light["positive"], light["negative"]
        scaled = torch.mul(state, self.sigma_gain, out=self._buffer("activated", state))
        if self.program_sigmoids and not self.nonidealities.nonlinearity.enabled:
            activated = torch.where(self.tanh_channels, torch.tanh(scaled), scaled)
            for channels, name in self.program_sigmoids:
                activated[:, channels] = activate(name, scaled[:, channels])
            return activated
        if not self.all_tanh:
            return torch.where(self.tanh_channels, activation(scaled, self.nonidealities), scaled)
        return activation_(scaled, self.nonidealities, self._buffer("activation work", state))

    def _operator(self, state: torch.Tensor, operator: LoopOperator, drive: torch.Tensor, closed: bool,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-free right-hand side F(z) = α z + S σ(σ-gain z) + drive of one iteration (held channels
        unrelaxed in open phases); written into ``out`` when given (it must not alias ``state``)."""
        activated = self._activate(state)
        alpha = self.alpha if closed else self.open_alpha
        result = torch.addcmul(drive, alpha, state) if out is None else torch.addcmul(drive, alpha, state, out=out)
        result = operator.accumulate(activated, result)
        if not closed:
            for channels, factor in self.open_rescale:
                result[:, channels] *= factor
        return result

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def _noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor | float:
        """White read noise N(0, std²) for one iteration (drawn in float32), or 0.0 when it is off."""
        if not self.noisy:
            return 0.0
        sample = torch.randn(shape, generator=generator, dtype=torch.float32, device=self.device)
        return sample.mul_(self.nonidealities.read_noise.std).to(self.dtype)

    def _add_noise(self, target: torch.Tensor, buffer: torch.Tensor | None,
                   generator: torch.Generator) -> torch.Tensor:
        """target += read noise, drawn into the float32 ``buffer``; the same draws as :meth:`_noise`."""
        if self.noisy and buffer is not None:
            buffer.normal_(generator=generator)
            target.add_(buffer, alpha=self.nonidealities.read_noise.std)
        return target

    def _saturate(self, state: torch.Tensor) -> torch.Tensor:
        """``apply_saturation`` in place."""
        settings = self.nonidealities.saturation
        return state.clamp_(settings.low, settings.high) if settings.enabled else state

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

    def _budget(self, closed: bool, exact_open: bool) -> int:
        budget = self.open_iterations if (exact_open and not self.noisy) else self.loop_iterations
        if not self.noisy and not exact_open:
            budget = max(budget, NOISE_FREE_MAX_ITERATIONS)  # a noise-free run is taken to convergence
        if exact_open and self.noisy:
            budget = max(self.loop_iterations // 4, self.open_iterations)
        return budget

    def _readout(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, self.readout] / self.readout_scale

    @staticmethod
    def _change(updated: torch.Tensor, state: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
        """Per batch row max |updated − state| / max(1, max |updated|) (NaN or inf when not finite)."""
        scale = torch.abs(updated, out=scratch).amax(dim=1).clamp_min_(1.0)
        return torch.sub(updated, state, out=scratch).abs_().amax(dim=1).div_(scale)

    def _iterate(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                 hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        operator = self.loop_operator(phase)
        closed = phase.loop == CLOSED
        exact_open = not closed and not bool(torch.any(self.open_alpha > 0))
        budget = self._budget(closed, exact_open)
        window = self._window(budget)
        readouts, history = [], []
        residual = float("inf")
        state = state.clone()
        spare, scratch = torch.empty_like(state), torch.empty_like(state)
        noise = torch.empty(state.shape, dtype=torch.float32, device=self.device) if self.noisy else None
        for count in range(1, budget + 1):
            if not closed:
                state = self._hold(state, hold)
            updated = self._operator(state, operator, drive, closed, out=spare)
            updated = self._saturate(self._add_noise(updated, noise, generator))
            readout = self._readout(updated)  # before an open phase re-holds the held channels
            if not closed:
                updated = self._hold(updated, hold)  # the next iteration holds them anyway: compare like with like
            change = self._change(updated, state, scratch)
            residual = float(change.max()) if change.numel() else 0.0
            if not math.isfinite(residual) or residual > DIVERGENCE_RESIDUAL:
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged after "
                                       f"{count} iterations (relative change {residual:.3e})")
            if self.record_residuals and step == 0 and closed:
                history.append(change.cpu().numpy())
            spare, state = state, updated
            if count - 1 in window:
                readouts.append(readout)
            if not self.noisy and (closed and residual <= self.tolerance or not closed and (
                    count >= self.open_iterations and (exact_open or residual <= self.tolerance))):
                readouts = [readout]
                break
        else:
            if not self.noisy and closed:
                raise ConvergenceError(f"twin: step {step}, phase {index} (closed loop) not settled after "
                                       f"{budget} iterations (relative change {residual:.3e})")
            limit = max(SETTLE_TOLERANCE, UNSETTLED_NOISE_MULTIPLE * self.nonidealities.read_noise.std)
            if self.noisy and residual > limit:
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle within "
                                       f"{budget} iterations: still changing by {residual:.3e} (relative) per "
                                       f"iteration, beyond read noise (oscillating?)")
        if history:
            self._history.append(np.stack(history))
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle within "
                                   f"{budget} iterations: the windowed readout drifts by {settle:.3e} (relative)")
        return state, torch.stack(readouts).mean(dim=0), count, settle

    def _settle_residual(self, readouts: list[torch.Tensor]) -> float:
        """Drift of the repeat-averaged windowed readout between the window's halves, beyond what read noise
        explains.

        The noise allowance is six standard errors of that drift. The window's samples are not independent
        (α low-pass filters the noise: with α = 0.9 its correlation time is ~10 iterations), so their own
        spread understates the error of a half-window mean; the repeats are independent realisations, so
        the spread of the drift across repeats (pooled over the batch, per channel) measures it. A loop that
        has not settled drifts alike in every repeat and is still caught. The within-window estimate (as if
        the samples were independent) is kept as a floor, and is all there is with one repeat.
        """
        if len(readouts) < 4:
            return 0.0
        samples = torch.stack(readouts)  # [window, repeats · batch, d]
        half = len(readouts) // 2
        first, second = samples[:half].mean(0), samples[half:].mean(0)
        repeats = self.repeats
        per_repeat = (second - first).reshape(repeats, -1, samples.shape[-1])
        drift = per_repeat.mean(0)
        within = (6.0 * samples.std(dim=0) / np.sqrt(half)).reshape(repeats, -1, samples.shape[-1])
        allowance = within.pow(2).mean(0).sqrt() / np.sqrt(repeats)
        if repeats > 1:
            pooled = per_repeat.var(dim=0).mean(dim=0, keepdim=True)  # [1, d]
            allowance = torch.maximum(allowance, 6.0 * (pooled / repeats).sqrt())
        excess = (drift.abs() - allowance).clamp_min(0.0)
        scale = second.reshape(repeats, -1, samples.shape[-1]).mean(0).abs().amax(dim=1, keepdim=True)
        return float((excess / scale.clamp_min(1.0)).max())

    def _continuous(self, step: int, index: int, phase: Phase, state: torch.Tensor, drive: torch.Tensor,
                    hold: torch.Tensor | None, generator: torch.Generator) -> PhaseOutcome:
        """τ dz/dt = −z + F(z) + n(t): exponential Euler at τ/2 sub-steps; noise held per sample period."""
        operator = self.loop_operator(phase)
        closed = phase.loop == CLOSED
        duration = self.loop_iterations * self.time_constant
        substep = self.time_constant / 2
        count = int(np.ceil(duration / substep))
        decay = float(np.exp(-substep / self.time_constant))
        samples_per_period = max(1, int(round(self.sample_period / substep)))
        readouts = []
        noise = self._noise(state.shape, generator)
        window = self._window(count)
        state = state.clone()
        for index_substep in range(count):
            if not closed:
                state = self._hold(state, hold)
            if index_substep % samples_per_period == 0:
                noise = self._noise(state.shape, generator)
                if index_substep in window or (index_substep + samples_per_period - 1) in window:
                    readouts.append(self._readout(state))
            target = self._operator(state, operator, drive, closed).add_(noise)
            state = self._saturate(target.add_(state.sub_(target), alpha=decay))  # target + decay (z − target)
            if not torch.isfinite(state).all():
                raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) diverged in "
                                       f"continuous time after {index_substep + 1} sub-steps")
        readouts.append(self._readout(state))
        settle = self._settle_residual(readouts)
        if settle > SETTLE_TOLERANCE:
            raise ConvergenceError(f"twin: step {step}, phase {index} ({phase.loop} loop) did not settle in "
                                   f"{duration * 1e6:.2f} µs: the windowed readout drifts by {settle:.3e}")
        return state, torch.stack(readouts).mean(dim=0), count, settle

    # -- whole run -------------------------------------------------------------------------------
    def run(self, noise: np.ndarray, progress: Callable[[int, int], None] | None = None,
            extra_drive: Callable[[Phase], np.ndarray] | None = None) -> TwinResult:
        """Run every step on ``noise`` [B, d]; ``progress(step, steps)`` is called after each step;
        ``extra_drive(phase)`` is a per-sample [B, n] injection added to each phase's (conditions)."""
        self.extra_drive = extra_drive
        generator = self._generator()
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
            if progress is not None and step:
                progress(step, len(self.schedule.steps))
            outputs = {"x": x}
            counts, settles = [], []
            for index, phase in enumerate(phases):
                inject, hold, initial = phase_vectors(phase, outputs)
                if initial is not None:
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
