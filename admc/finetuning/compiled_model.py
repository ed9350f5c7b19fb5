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
``phase_points`` are the (time, step scale, static-table row) at
which the program evaluates the velocity, the times fine-tuning draws.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from admc.bundle.store import Bundle
from admc.compiler.driver import SourceModel, compile_source, emit_bundle
from admc.core.errors import AdmcError
from admc.finetuning.graph_torch import TorchGraph, graph_velocity, trainable_names
from admc.finetuning.program_torch import ProgramMap
from admc.targets.backends import backend_of

# Training solves each velocity phase to this relative change (the twin's simulation to 1e-13): the objective and
# its gradient move by ~1e-9 of themselves, far below one Adam step, and a third of the loop's iterations go.
TRAINING_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PhasePoint:
    time: float
    step_scale: float
    row: int  # of the static injection table


class CompiledModel:
    """See the module docstring."""

    def __init__(self, source: SourceModel, target, options, *, seed: int = 0, chips: int = 1,
                 quantise: bool = True, writable: set[str] | None = None):
        backend = backend_of(target)
        if backend is None or backend.differentiable_twin is None:
            raise AdmcError(f"target '{target.name}' has no differentiable twin to fine-tune through; use a "
                            "target with one (aoc-48, aoc-16)")
        if source.graph.condition_inputs:
            raise AdmcError(f"{source.name}: fine-tuning a conditional model (condition inputs "
                            f"{', '.join(source.graph.condition_inputs)}) is not supported yet; fine-tune an "
                            "unconditional model")
        names = [name for name in trainable_names(source.graph) if writable is None or name in writable]
        if not names:
            raise AdmcError(f"{source.name}: no weights to fine-tune (no floating constants the file stores)")
        self.parameters = {name: torch.nn.Parameter(torch.as_tensor(np.asarray(source.graph.constants[name]),
                                                                    dtype=torch.float64)) for name in names}
        self.initial = {name: value.detach().clone() for name, value in self.parameters.items()}
        self._setup = (backend, target, options, seed, chips, quantise)
        self._directory = tempfile.TemporaryDirectory(prefix="admc-finetune-")
        self.rebuilds = 0
        self._compile(source)

    def _compile(self, source: SourceModel) -> None:
        """Compile ``source`` (its weights equal to ``parameters``) and fix the structure fine-tuning runs through."""
        backend, target, options, seed, chips, quantise = self._setup
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
                                                  calibration=calibration) for chip in range(count)]
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

    def velocity(self, y: torch.Tensor, points: list[PhasePoint], chip: int = 0,
                 tolerance: float | None = TRAINING_TOLERANCE) -> torch.Tensor:
        """The program's velocity at each sample's state and phase point, through chip ``chip``'s twin, each
        phase solved to ``tolerance`` (None: the twin's own)."""
        arrays, change = self.program()
        twin = self.twins[chip % len(self.twins)]
        scales = np.array([point.step_scale for point in points])
        rows = torch.as_tensor([point.row for point in points])
        result = torch.zeros_like(y)
        iterations = 0
        for scale in np.unique(scales):
            chosen = torch.as_tensor(np.flatnonzero(scales == scale))
            value = twin.velocity(y[chosen], rows[chosen], float(scale), arrays, change, tolerance)
            result = result.index_copy(0, chosen, value)
            iterations += twin.iterations
        self.iterations = iterations
        return result

    def digital_velocity(self, y: torch.Tensor, points: list[PhasePoint]) -> torch.Tensor:
        """The source model's velocity at each sample's state and time (torch, float64)."""
        times = torch.as_tensor([point.time for point in points], dtype=y.dtype)
        return graph_velocity(self.torch_graph, self.parameters, y, times)

    def teacher_velocity(self, y: torch.Tensor, points: list[PhasePoint]) -> torch.Tensor:
        """The source model's velocity with its weights before fine-tuning (the ``teacher`` objective's target)."""
        times = torch.as_tensor([point.time for point in points], dtype=y.dtype)
        return graph_velocity(self.torch_graph, self.initial, y, times)

    def samples(self, noise: np.ndarray, chip: int = 0) -> np.ndarray:
        """The program's final samples on chip ``chip``'s twin (no noise, no gradient)."""
        with torch.no_grad():
            arrays, change = self.program()
            twin = self.twins[chip % len(self.twins)]
            return twin.run(torch.as_tensor(noise, dtype=torch.float64), arrays, change)[-1].numpy()
