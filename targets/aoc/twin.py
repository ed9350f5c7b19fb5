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
- Samples run through the loops ``chunk`` at a time (default ``DEFAULT_CHUNK``) on one random stream, so a run's
  memory is bounded by the chunk; up to ``chunk`` samples a run is one pass. An iteration's element-wise work runs
  on one thread and its products on the caller's thread count (``twin_threads.py``).
- Same bundle, non-idealities and seed: identical results. Runs on CPU or GPU (``device``), in float64
  (default) or float32 (``dtype``). Read noise is drawn in float32 and added in ``dtype``.

Reading the bundle into tensors is ``twin_arrays.py``; running one phase (discrete or continuous) is
``twin_phases.py``; this module builds the realised loop operator and the drive of each phase and runs the steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from admc.bundle.program_io import read_program
from admc.bundle.store import Bundle
from admc.ir.program import CLOSED, INJECT, SCALE_CLASSES, Phase, block_scale, phase_vectors
from admc.targets.aoc.bundle_reader import realised_blocks
from admc.targets.aoc.calibration import Calibration
from admc.targets.aoc.loop_operator import LoopOperator, PathOperators, block_form, module_cost, module_form
from admc.targets.aoc.measured_device import measured_nonidealities
from admc.targets.aoc.nonidealities import NonIdealities
from admc.targets.aoc.physics import clip_injection
from admc.targets.aoc.twin_arrays import TwinArrays
from admc.targets.aoc.twin_phases import TwinPhases
from admc.targets.aoc.twin_threads import ELEMENTWISE_THREADS, threads

DEFAULT_LOOP_ITERATIONS = 300  # ≈ 9.5 µs at τ = 31.8 ns: inside the paper's 10–15 µs per diffusion step
NOISE_FREE_TOLERANCE = 1e-13  # float64; float32 runs use NOISE_FREE_EPSILONS × its machine epsilon
NOISE_FREE_EPSILONS = 64
# Samples per pass through the loops: bounds a run's memory (at 36M weights, 5 repeats: ~1 GB of state buffers
# in float64); ``verify`` and ``simulate`` of up to this many samples run in one pass.
DEFAULT_CHUNK = 256
OPERATORS = ("auto", "blocks", "modules")


def nonidealities_of(bundle: Bundle) -> NonIdealities:
    """The non-idealities the bundle's target declares (every effect as the target section switches it)."""
    return NonIdealities.from_mapping(bundle.manifest["target"]["nonidealities"])


def all_off(nonidealities: NonIdealities) -> NonIdealities:
    """The same parameters with every effect disabled (the twin then equals the ideal executor)."""
    changes = {name: replace(getattr(nonidealities, name), enabled=False)
               for name in nonidealities.__dataclass_fields__ if name != "seed"}
    return replace(nonidealities, **changes)


@dataclass
class TwinResult:
    """The states at the schedule's grid points, and per step and phase the iterations and settle residuals."""

    trajectory: np.ndarray  # [T + 1, B, d]
    iterations: list[list[int]] = field(default_factory=list)
    settle_residuals: list[list[float]] = field(default_factory=list)
    residual_history: list[np.ndarray] = field(default_factory=list)  # step 0 closed phases: [k, B]


class AocTwin(TwinArrays, TwinPhases):
    """The digital twin of one AOC bundle (see the module docstring); ``run(noise)`` gives a ``TwinResult``."""

    def __init__(self, bundle: Bundle, nonidealities: NonIdealities | None = None, *, mode: str = "discrete",
                 loop_iterations: int | None = None, repeats: int | None = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 record_residuals: bool = False, operator: str = "auto", calibration: Calibration | None = None,
                 switch_on_calibrated: bool = True, chunk: int = DEFAULT_CHUNK):
        """``calibration``: a measured machine (calibrations/FIELDS.md format): the loop runs the measured chain in the
        machine's units (``machine_chain``) with its per-port figures, and, unless ``switch_on_calibrated``
        is False (the given switches are then used as they are), every calibrated effect switched on.
        ``chunk``: samples per pass through the loops (``run``)."""
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
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of samples, got {chunk}")
        self.chunk = chunk
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
        self.product_threads = torch.get_num_threads()  # the loop operator's products (twin_threads.py)

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
            with threads(self.product_threads):
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
        """The operator form asked for ("auto": the cheaper); only the chosen form is built (each holds a copy
        of every weight: 285 MB apiece in float64 at 36M weights)."""
        if self.operator != "modules":
            blocks = block_form(scaled, constant, self.input_channel, self.output_channel, self.group_slices,
                                self.group_index)
            if self.operator == "blocks" or blocks.cost <= module_cost(scaled):
                return blocks
        return module_form(scaled, constant, self.input_channel, self.output_channel)

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

    # -- whole run -------------------------------------------------------------------------------
    def run(self, noise: np.ndarray, progress: Callable[[int, int], None] | None = None,
            extra_drive: Callable[[Phase], np.ndarray] | None = None) -> TwinResult:
        """Run every step on ``noise`` [B, d]; ``progress(step, steps)`` is called after each step;
        ``extra_drive(phase)`` is a per-sample [B, n] injection added to each phase's (conditions).

        The samples go through the loops ``chunk`` at a time, one random stream across the chunks, so the
        run's memory is bounded by the chunk; up to ``chunk`` samples it is one pass, as it always was. Per
        step and phase the result holds the most iterations and the largest settle residual of any chunk."""
        noise = np.asarray(noise)
        steps, starts = len(self.schedule.steps), range(0, max(len(noise), 1), self.chunk)
        self.product_threads = torch.get_num_threads()
        parts = []
        with threads(ELEMENTWISE_THREADS):  # the products get product_threads back (twin_phases._operator)
            generator = self._generator()
            for number, start in enumerate(starts):
                rows = slice(start, start + self.chunk)
                self.extra_drive = None if extra_drive is None else (
                    lambda phase, rows=rows: np.asarray(extra_drive(phase))[rows])
                report = None if progress is None else (
                    lambda step, _, number=number: progress(number * steps + step, len(starts) * steps))
                parts.append(self._run(noise[rows], report, generator))
        return parts[0] if len(parts) == 1 else merged(parts)

    def _run(self, noise: np.ndarray, progress: Callable[[int, int], None] | None,
             generator: torch.Generator) -> TwinResult:
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


def merged(parts: list[TwinResult]) -> TwinResult:
    """The result of chunks of one run, in sample order: per step and phase the most iterations and the largest
    settle residual; residual histories side by side, a chunk that settled sooner held at its last residual."""
    iterations = [[max(counts) for counts in zip(*steps, strict=True)]
                  for steps in zip(*(part.iterations for part in parts), strict=True)]
    settles = [[max(values) for values in zip(*steps, strict=True)]
               for steps in zip(*(part.settle_residuals for part in parts), strict=True)]
    histories = []
    for phase in zip(*(part.residual_history for part in parts), strict=True):
        length = max(len(history) for history in phase)
        histories.append(np.concatenate([np.pad(history, ((0, length - len(history)), (0, 0)), mode="edge")
                                         for history in phase], axis=1))
    return TwinResult(np.concatenate([part.trajectory for part in parts], axis=1), iterations, settles, histories)
