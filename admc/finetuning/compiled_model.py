"""A source model, the program the compiler made of it, and its target's differentiable twin: what fine-tuning
optimises.

Requires: a ``SourceModel`` (``admc.compiler.driver.load_source``), a target whose backend offers a
``differentiable_twin``, and build options (the calibration among them). Guarantees: the program is compiled
for the source's own weights and written to a private temporary bundle (removed by :meth:`close`); its
structure is then fixed until :meth:`rebuild` compiles the current weights afresh (what ``admc build`` of the
tuned file would make). ``parameters`` are the source's weights (float64 leaves, by graph constant name);
``velocity`` is the program's velocity through the twin of one chip (``chips`` twins with static errors drawn
from seeds ``seed``, ``seed + 1``, … for a nominal target; the one measured machine for a calibrated build),
``digital_velocity`` the source model's own (``teacher_velocity`` with its weights before fine-tuning);
``final_samples`` the program's final samples through the twin with the gradient through every step
(``samples`` without it), ``reference_samples`` the source's ideal samples with its weights before fine-tuning
(verify's reference executor on the first build);
``phase_points`` are the (time, step scale, static-table row) at
which the program evaluates the velocity, the times fine-tuning draws. A conditional model's calls take each
sample's ``conditions`` (condition input name → [B, ...]): the program's velocity adds the conditioning
interface's drive computed from the current weights (``ProgramMap.condition_drive``); with guidance W the program's
and the teacher's velocities are the guided one, (1 + W)·f(x, t, c) − W·f(x, t, ∅), as the build compiled it, and
the digital velocity is f(x, t, c), what a conditional model is trained to compute.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from admc.bundle.program import bundle_program, source_velocity
from admc.bundle.store import Bundle
from admc.compiler.driver import SourceModel, compile_source, emit_bundle
from admc.core.errors import AdmcError
from admc.finetuning.conditions_torch import with_null
from admc.finetuning.graph_torch import TorchGraph, condition_tensors, graph_velocity, trainable_names
from admc.finetuning.program_torch import ProgramMap
from admc.runtime.bundle_interface import read_interface
from admc.targets.backends import backend_of
from admc.verify.conditions import ConditionDraw, reference

# Training solves each phase (the velocity's, or every phase of the sampler for the samples objective) to this
# relative change (the twin's simulation to 1e-13): the objective and its gradient move by ~1e-9 of themselves,
# far below one Adam step, and a third of the loop's iterations go.
TRAINING_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PhasePoint:
    time: float
    step_scale: float
    row: int  # of the static injection table


class CompiledModel:
    """See the module docstring."""

    def __init__(self, source: SourceModel, target, options, *, seed: int = 0, chips: int = 1,
                 quantise: bool = True, writable: set[str] | None = None, hold_full_scale: bool = False):
        backend = backend_of(target)
        if backend is None or backend.differentiable_twin is None:
            raise AdmcError(f"target '{target.name}' has no differentiable twin to fine-tune through; use a "
                            "target with one (aoc-48, aoc-16)")
        names = [name for name in trainable_names(source.graph) if writable is None or name in writable]
        if not names:
            raise AdmcError(f"{source.name}: no weights to fine-tune (no floating constants the file stores)")
        self.parameters = {name: torch.nn.Parameter(torch.as_tensor(np.asarray(source.graph.constants[name]),
                                                                    dtype=torch.float64)) for name in names}
        self.initial = {name: value.detach().clone() for name, value in self.parameters.items()}
        self._setup = (backend, target, options, seed, chips, quantise, hold_full_scale)
        self._directory = tempfile.TemporaryDirectory(prefix="admc-finetune-")
        self.rebuilds = 0
        self._compile(source)
        # The source's ideal samples are verify's reference of the bundle compiled from the source's own weights.
        self._reference = (source_velocity(self.bundle), bundle_program(self.bundle)[1], read_interface(self.bundle),
                           self.compiled.condition_interface.guidance, self.compiled.null_conditions)

    def _compile(self, source: SourceModel) -> None:
        """Compile ``source`` (its weights equal to ``parameters``) and fix the structure fine-tuning runs through."""
        backend, target, options, seed, chips, quantise, hold_full_scale = self._setup
        self.source = source
        self.torch_graph = TorchGraph(source.graph)
        self.compiled = compile_source(source, target, options)
        self.bundle = Bundle(emit_bundle(self.compiled, Path(self._directory.name) / f"bundle-{self.rebuilds}"))
        with torch.no_grad():
            self.program_map = ProgramMap(self.compiled, self.parameters)
            self.base = [block.detach().clone() for block in self.program_map.arrays(self.parameters).blocks]
        shapes = [tuple(block.shape) for block in self.base]
        calibration = self.compiled.calibration
        count = 1 if calibration is not None else max(1, int(chips))
        self.twins = [backend.differentiable_twin(self.bundle, shapes, seed=seed + chip, quantise=quantise,
                                                  calibration=calibration, hold_full_scale=hold_full_scale)
                      for chip in range(count)]
        times = np.asarray(self.compiled.program.static_table.times)
        points = {(phase.time, phase.step_scale) for phases in self.compiled.schedule.steps for phase in phases}
        self.phase_points = [PhasePoint(time, scale, int(np.flatnonzero(times == time)[0]))
                             for time, scale in sorted(points)]

    def rebuild(self, source: SourceModel) -> None:
        """Recompile for ``source``: this model's graph with the current weights as the tuned file stores them
        (``model_writer.load_tuned``). ``parameters`` take those stored values (the same tensors, so an optimiser
        keeps its state), the structure (gains, α, compensation, operating points) is the new build's, and the
        teacher (``initial``) stays the source's."""
        kept = {name: value.detach().clone() for name, value in self.parameters.items()}
        previous = self.source, self.bundle.path
        with torch.no_grad():
            for name, value in self.parameters.items():
                value.copy_(torch.as_tensor(np.asarray(source.graph.constants[name]), dtype=torch.float64))
        self.rebuilds += 1
        try:
            self._compile(source)
        except Exception:  # the old structure stays whole: weights and program as they were
            with torch.no_grad():
                for name, value in self.parameters.items():
                    value.copy_(kept[name])
            self.rebuilds += 1
            self._compile(previous[0])
            raise
        shutil.rmtree(previous[1], ignore_errors=True)

    def close(self) -> None:
        """Remove the temporary bundle."""
        self._directory.cleanup()

    def program(self):
        """(program arrays, flat ΔW of the blocks) at the current weights, with their graph."""
        arrays = self.program_map.arrays(self.parameters)
        change = torch.cat([(block - base).reshape(-1) for block, base in zip(arrays.blocks, self.base,
                                                                               strict=True)])
        return arrays, change

    def _conditioned(self, arrays, times: torch.Tensor, conditions, table_rows) -> object:
        """``arrays`` with each sample's condition drive added to its static injection: ``static`` per class
        becomes [B, n] (``table_rows`` [B], each sample's row) or [S, B, n] (``table_rows`` None: every row)."""
        drive = self.program_map.condition_drive(self.parameters, arrays, times, conditions)
        if table_rows is not None:
            return replace(arrays, static={name: arrays.static[name][table_rows] + drive[name] for name in drive})
        count = len(self.program_map.times)
        return replace(arrays, static={name: arrays.static[name][:, None, :] + drive[name].reshape(
            count, -1, drive[name].shape[1]) for name in drive})

    def conditions_of(self, conditions, rows: int) -> dict[str, torch.Tensor]:
        """Per-sample condition arrays as the graph's condition input tensors ({} for an unconditional model)."""
        names = self.source.graph.condition_inputs
        if not names:
            return {}
        missing = [name for name in names if name not in (conditions or {})]
        if missing:
            raise AdmcError(f"{self.source.name}: a conditional model's velocity needs each sample's "
                            f"{', '.join(missing)}")
        return condition_tensors(self.source.graph, conditions, rows)

    def velocity(self, y: torch.Tensor, points: list[PhasePoint], chip: int = 0,
                 tolerance: float | None = TRAINING_TOLERANCE, conditions=None) -> torch.Tensor:
        """The program's velocity at each sample's state and phase point, through chip ``chip``'s twin, each
        phase solved to ``tolerance`` (None: the twin's own)."""
        arrays, change = self.program()
        twin = self.twins[chip % len(self.twins)]
        scales = np.array([point.step_scale for point in points])
        rows = torch.as_tensor([point.row for point in points])
        if self.source.graph.condition_inputs:  # each sample's own static row, its conditions' drive added
            times = torch.as_tensor([point.time for point in points], dtype=y.dtype)
            arrays = self._conditioned(arrays, times, self.conditions_of(conditions, len(points)), rows)
            rows = torch.arange(len(points))
        result = torch.zeros_like(y)
        iterations = 0
        for scale in np.unique(scales):
            chosen = torch.as_tensor(np.flatnonzero(scales == scale))
            value = twin.velocity(y[chosen], rows[chosen], float(scale), arrays, change, tolerance)
            result = result.index_copy(0, chosen, value)
            iterations += twin.iterations
        self.iterations = iterations
        return result

    def _source_velocity(self, parameters, y: torch.Tensor, points: list[PhasePoint], conditions,
                         guided: bool) -> torch.Tensor:
        """The source graph's velocity f(x, t[, c]); ``guided``: as the build combines it with guidance W,
        (1 + W)·f(x, t, c) − W·f(x, t, ∅)."""
        times = torch.as_tensor([point.time for point in points], dtype=y.dtype)
        given = self.conditions_of(conditions, len(points))
        velocity = graph_velocity(self.torch_graph, parameters, y, times, given)
        weight, null = self.compiled.condition_interface.guidance, self.compiled.null_conditions
        if weight is None or not guided:
            return velocity
        unconditional = graph_velocity(self.torch_graph, parameters, y, times, with_null(given, null, len(points)))
        return (1.0 + weight) * velocity - weight * unconditional

    def digital_velocity(self, y: torch.Tensor, points: list[PhasePoint], conditions=None) -> torch.Tensor:
        """The source model's velocity at each sample's state and time (torch, float64), as the model is trained:
        f(x, t, c) unguided (guidance combines two evaluations when sampling; the control trains the model)."""
        return self._source_velocity(self.parameters, y, points, conditions, guided=False)

    def teacher_velocity(self, y: torch.Tensor, points: list[PhasePoint], conditions=None) -> torch.Tensor:
        """The source model's velocity with its weights before fine-tuning, guided as the program computes it (the
        ``teacher`` objective's target)."""
        return self._source_velocity(self.initial, y, points, conditions, guided=True)

    def final_samples(self, noise: torch.Tensor, chip: int = 0, conditions=None,
                      tolerance: float | None = TRAINING_TOLERANCE) -> torch.Tensor:
        """The program's final samples [B, d] from ``noise`` on chip ``chip``'s twin (no read noise), with the
        gradient through every phase of every step (each fixed point's by implicit differentiation: the twin's
        ``run``, the same code path as :meth:`samples`), each phase solved to ``tolerance`` (None: the twin's
        own); ``conditions``: each sample's, for a conditional model."""
        arrays, change = self.program()
        if self.source.graph.condition_inputs:
            count, batch = len(self.program_map.times), len(noise)
            given = self.conditions_of(conditions, batch)
            times = torch.as_tensor(np.repeat(self.program_map.times, batch))
            arrays = self._conditioned(arrays, times, {name: value.repeat(count, *([1] * (value.dim() - 1)))
                                                       for name, value in given.items()}, None)
        twin = self.twins[chip % len(self.twins)]
        result = twin.run(noise, arrays, change, tolerance)[-1]
        self.iterations = twin.iterations
        return result

    def samples(self, noise: np.ndarray, chip: int = 0, conditions=None) -> np.ndarray:
        """:meth:`final_samples` without a gradient, as an array, each phase solved to the twin's own tolerance
        (what ``admc simulate`` runs)."""
        with torch.no_grad():
            return self.final_samples(torch.as_tensor(noise, dtype=torch.float64), chip, conditions,
                                      tolerance=None).numpy()

    def reference_samples(self, noise: np.ndarray, conditions=None) -> np.ndarray:
        """The source model's ideal samples [B, d] from ``noise`` with its weights before fine-tuning: the bundle
        compiled from them integrated by verify's reference executor (``admc.verify.conditions.reference``: the
        build's solver, grid and fixed-point iterations, guided as the build is), for each sample's
        ``conditions`` (name → [B, ...])."""
        velocity, schedule, interface, guidance, null = self._reference
        given = {name: np.asarray(value) for name, value in (conditions or {}).items()}
        draw = ConditionDraw(interface, interface.check(given, len(noise)), np.zeros(0), guidance, null)
        return reference(draw, velocity, np.asarray(noise, dtype=np.float64), schedule).samples
