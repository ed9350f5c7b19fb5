"""Fine-tune a model for a target (and a measured machine): what ``admc finetune`` and ``admc.finetune`` run.

Requires: a model file (``.onnx`` or ``.pt2``), a data array [N, d] (d the model's state dimension, N ≥ 2),
for a conditional model each sample's conditions (``conditions_data``) and the build's guidance options, a
target whose backend has a differentiable twin, an output path with the source's suffix.
Guarantees: every input is checked before any work (a missing or malformed data file, a wrong data
shape naming the expected and the given shape, an unknown target, an output in another format: ``AdmcError``,
nothing written); the data are split by a seeded permutation into training and held-out parts; the program's
weights are fitted through the compiled program on the twin (``flow_matching.fit``, ``through="program"``; the
objective flow matching on the data, the source model's own velocity as the target: ``teacher``, or the
source's ideal final samples from the same noise: ``samples``), then,
as the control, the source's weights by digital flow matching on the same data for the same number of steps;
the tuned model is written in the source's format (``model_writer``), atomically. The same inputs and seed give
the same bytes. ``workers`` > 1 or an ``address`` run the program's fit data-parallel on Ray (``parallel``); one
worker in this process is the default. ``rebuild`` (the default) recompiles the tuned weights before each held-out
evaluation, as ``admc build`` of the written file would, and selects on that rebuilt program's loss: the written
model is never worse there than the source (step 0 is a candidate). A conditional model is compiled as ``admc
build --guidance W --null-condition ...`` compiles it, and every velocity fitted is the guided one; the samples'
conditions follow them into the split and the draws.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from admc.compiler.build_options import BuildOptions, target_machine
from admc.core.array_files import read_npy
from admc.core.errors import AdmcError
from admc.finetuning.compiled_model import CompiledModel
from admc.finetuning.conditions_data import load_conditioned
from admc.finetuning.flow_matching import FitResult, FitSettings, fit
from admc.finetuning.model_writer import check_output, load_tuned, writable_names, write_tuned
from admc.finetuning.objectives import FLOW_MATCHING, OBJECTIVES
from admc.targets.loader import load_target

HOLDOUT_SHARE = 0.2
DEFAULT_CHIPS = 4  # nominal targets: static errors redrawn over this many chips, cycled step by step


@dataclass
class FinetuneResult:
    """The tuned model's path, the program fit and the digital control's fit (its weights in ``control``)."""

    output: Path
    program: FitResult
    control: FitResult | None


def _split_indices(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training and the held-out sample indices (a seeded permutation)."""
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, int(round(HOLDOUT_SHARE * count)))
    return order[held:], order[:held]


def _split(data: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training and the held-out samples."""
    train, held = _split_indices(data.shape[0], seed)
    return data[train], data[held]


@dataclass
class _Job:
    """What the program's fit needs besides the model: the data's two splits, their conditions and the build
    options a worker compiles with (``build``: ``BuildOptions`` fields beyond the calibration)."""

    train: np.ndarray
    holdout: np.ndarray
    conditions: tuple[dict, dict]
    build: dict


def _fit_program(compiled: CompiledModel, model: Path, target, calibration, seed: int, chips: int, job: _Job,
                 settings: FitSettings, progress, workers: int, address: str | None, rebuild: bool) -> FitResult:
    """The program's fit, in this process (one worker, no address) or data-parallel on Ray; with ``rebuild``,
    recompiled for the tuned weights (as the tuned file) before each held-out evaluation."""
    with tempfile.TemporaryDirectory(prefix="admc-finetune-tuned-") as directory:
        def recompile(weights: dict[str, np.ndarray]) -> None:
            compiled.rebuild(load_tuned(model, weights, directory, compiled.source.graph.condition_inputs))

        if address is None and workers == 1:
            return fit(compiled, job.train, job.holdout, "program", settings, progress,
                       rebuild=recompile if rebuild else None, conditions=job.conditions)
        return _fit_parallel(compiled, model, target, calibration, seed, chips, job, settings, progress,
                             workers, address, recompile if rebuild else None)


def _fit_parallel(compiled: CompiledModel, model: Path, target, calibration, seed: int, chips: int, job: _Job,
                  settings: FitSettings, progress, workers: int, address: str | None, recompile) -> FitResult:
    from admc.finetuning.parallel import DataParallel

    # Workers need no shared file system: the model is sent; a target or calibration file is named absolutely.
    target, calibration = (str(Path(value).resolve()) if value is not None and Path(value).is_file() else value
                           for value in (target, calibration))
    parallel = DataParallel(model, target, calibration, seed, chips, set(compiled.parameters),
                            None if address is not None and workers == 1 else workers, address, compiled.parameters,
                            job.build)
    def rebuild_all(weights: dict[str, np.ndarray]) -> None:
        recompile(weights)
        parallel.rebuild(weights)

    try:
        return fit(compiled, job.train, job.holdout, "program", settings, progress, gradient=parallel,
                   rebuild=rebuild_all if recompile is not None else None, conditions=job.conditions)
    finally:
        parallel.close()


def finetune(model: str | Path, data: str | Path | np.ndarray, output: str | Path, target: str | Path = "aoc-48",
             *, calibration: str | Path | None = None, max_steps: int = 200, seed: int = 0,
             objective: str = FLOW_MATCHING, settings: FitSettings | None = None, chips: int = DEFAULT_CHIPS,
             control: bool = True, workers: int = 1, address: str | None = None, rebuild: bool = True,
             conditions: Mapping[str, str | Path | np.ndarray] | None = None, guidance: float | None = None,
             null_conditions: Mapping[str, object] | Sequence[str] | None = None,
             solver: str | None = None, steps: int = 16, fp_iterations: int | None = None,
             progress: Callable[[str, int, int, float, float], None] | None = None) -> FinetuneResult:
    """See the module docstring; ``progress(phase, step, max_steps, loss, best held-out)`` after each step.
    ``conditions``: a conditional model's condition per sample of ``data`` (input name → ``.npy`` path or array);
    ``guidance`` W and ``null_conditions`` as for ``admc.build``; ``solver``, ``steps`` and ``fp_iterations``:
    the schedule of the build fine-tuned through (as ``admc build``; the tuned model is for that build)."""
    model, output = Path(model), Path(output)
    check_output(model, output)
    if not output.parent.is_dir():
        raise AdmcError(f"-o {output}: the directory {output.parent} does not exist")
    samples = read_npy(data, "data", dimensions=2) if not isinstance(data, np.ndarray) else np.asarray(
        data, dtype=np.float64)
    description = load_target(target)
    where = data if not isinstance(data, np.ndarray) else "data"
    source, given = load_conditioned(model, conditions, samples.shape[0], str(where))
    build = {"condition_inputs": source.graph.condition_inputs, "guidance": guidance,
             "null_conditions": null_conditions, "solver": solver, "steps": steps, "fp_iterations": fp_iterations}
    options = replace(BuildOptions(), **build, calibration=target_machine(description, calibration))
    dimension = next(entry.shape[1] for entry in source.graph.inputs if entry.name == source.graph.state_input)
    if samples.ndim != 2 or samples.shape[1] != dimension or samples.shape[0] < 2:
        raise AdmcError(f"{where}: data has shape {list(samples.shape)}; expected [N, {dimension}] with N ≥ 2 (the "
                        f"model's state has {dimension} features)")
    if objective not in OBJECTIVES:
        raise AdmcError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    settings = replace(settings or FitSettings(), max_steps=int(max_steps), seed=int(seed), objective=objective)
    if settings.hold_full_scale and (workers != 1 or address is not None):
        raise AdmcError("hold_full_scale is an experiment of one process: the Ray workers compute gradients without it")
    train, held = _split_indices(samples.shape[0], seed)
    job = _Job(samples[train], samples[held], tuple({name: value[part] for name, value in given.items()}
                                                    for part in (train, held)), build)
    torch.manual_seed(seed)
    compiled = CompiledModel(source, description, options, seed=seed, chips=chips, writable=writable_names(model),
                             hold_full_scale=settings.hold_full_scale)
    try:
        report = (lambda name: (lambda *values: progress(name, *values))) if progress else (lambda name: None)
        program = _fit_program(compiled, model, target, calibration, seed, chips, job, settings,
                               report("program"), workers, address, rebuild)
        digital = None
        if control:
            with torch.no_grad():
                for name, value in compiled.parameters.items():
                    value.copy_(compiled.initial[name])
            # The control is ordinary digital training on the same data (the teacher's target is the source
            # itself, which a digital model already meets), for as many steps as the program's fit took.
            digital = fit(compiled, job.train, job.holdout, "digital", replace(settings, max_steps=program.steps,
                          objective=FLOW_MATCHING), report("control"), conditions=job.conditions)
    finally:
        compiled.close()
    write_tuned(model, program.weights, output)
    return FinetuneResult(output, program, digital)
