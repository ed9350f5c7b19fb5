"""The compiler driver: source model → graph IR → canonical network → block program → target bundle.

``load_source`` imports and identifies the model's signature; ``compile_source`` runs the passes for a
target; ``build`` writes the bundle. Every model runs the same passes: an unconditional model is a model
with zero conditions (its conditioning interface is empty, its guidance pass the identity). The spine
(canonicalisation, guidance, packing, Δt/phases, time tables, α) is shared and reads only what the target
declares (activations, linear channels, solver kinds); the backend the target's description names
(``admc.targets.backends``) runs the target-specific passes; the manifest's sections are gathered once,
after every pass ran (``admc.compiler.sections``).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from admc.bundle.store import write_bundle
from admc.compiler.backend_passes import run_backend_passes
from admc.compiler.build_options import BuildOptions, target_machine
from admc.compiler.calibration_drive import condition_sampler, interface_drive
from admc.compiler.conditions import build_interface, default_distribution, guide_network
from admc.compiler.model_checks import checked_static_injection
from admc.compiler.packing import pack_for_target
from admc.compiler.pass_checks import Probe, canonical_check, guidance_check, lowering_check, pack_check
from admc.compiler.sections import bundle_contents
from admc.core.errors import AdmcError
from admc.core.retained_heap import retained_heap
from admc.core.schedule import time_grid
from admc.frontends.model_file import open_model
from admc.frontends.signature import Signature, identify_signature
from admc.ir.adm import AdmNetwork
from admc.ir.graph import Graph
from admc.ir.program import BlockProgram, Schedule
from admc.passes.alpha_selection import (
    BLAS_THREADS,
    AlphaCapabilities,
    AlphaSelection,
    select_alpha,
)
from admc.passes.canonicalize import canonicalize
from admc.passes.continuous_time import DISCRETE, solver_kind, tabulation_times
from admc.passes.loop_budget import convergence_section
from admc.passes.manager import PassManager
from admc.passes.settling_calibration import settle_and_calibrate
from admc.passes.state_scaling import CalibrationPeaks, calibration_samples
from admc.passes.step_phases import build_schedule, solver_name
from admc.runtime.condition_options import parse_condition_options
from admc.runtime.conditioning import ConditioningInterface
from admc.targets.backends import backend_of
from admc.targets.loader import load_target

if TYPE_CHECKING:  # torch loads only for a torch model: an ONNX build starts without it (issue 23)
    import torch


@dataclass
class SourceModel:
    graph: Graph
    signature: Signature
    content: bytes
    format: str  # "onnx" or "pt2"
    name: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class CompiledProgram:
    source: SourceModel
    target: Any
    network: AdmNetwork
    program: BlockProgram
    schedule: Schedule
    alpha: np.ndarray
    report: dict = field(default_factory=dict)
    # The backend's own manifest sections and payloads (its lowering owns them; ``compiler.sections`` gathers).
    extra_sections: dict = field(default_factory=dict)
    extra_payloads: dict[str, bytes] = field(default_factory=dict)
    block_arrays: bool = True
    # What the emitted weights realise (quantised), when they differ from ``program``'s intended blocks.
    realised_program: BlockProgram | None = None
    # A measured machine to compile for (its backend's calibration object), or None for the nominal target.
    calibration: Any = None
    # The digital conditioning interface (admc.runtime.conditioning) in the spine program's units: empty
    # for an unconditional model; with the null conditions of guidance and the network before guidance.
    condition_interface: ConditioningInterface = field(default_factory=ConditioningInterface)
    null_conditions: dict | None = None
    canonical_network: AdmNetwork | None = None
    # α selection: the mode (--alpha), whether to build a schedule that no α contracts (--force), the result.
    alpha_mode: str = "auto"
    force: bool = False
    alpha_selection: Any = None
    # The peaks of the calibration run made with a settling α (a backend choosing α in its lowering reuses them
    # for its state scaling instead of running the loops again), or None.
    calibration_peaks: CalibrationPeaks | None = None
    # The loop budget and convergence certificates (discrete-time solvers; None for continuous time).
    convergence: dict | None = None


def load_source(model: str | Path | torch.nn.Module | torch.export.ExportedProgram,
                example_inputs: tuple | None = None, time_input: str | None = None,
                condition_inputs: tuple[str, ...] | list[str] = ()) -> SourceModel:
    """Import an ``.onnx`` / ``.pt2`` file, an exported program, or a module with example inputs;
    ``condition_inputs`` names inputs beyond x and t (``--condition``)."""
    if isinstance(model, (str, os.PathLike)):
        opened = open_model(model)
        graph, file_format, content, name = opened.graph, opened.format, opened.content, Path(model).name
    else:
        graph, file_format, content, name = _import_torch_model(model, example_inputs)
    if len(graph.outputs) != 1:
        raise AdmcError(f"{graph.source}: expected 1 output (the velocity [B, d]), found {len(graph.outputs)}")
    signature = identify_signature(graph.inputs, graph.source, time_input, tuple(condition_inputs))
    graph.state_input, graph.time_input = signature.state_input, signature.time_input
    graph.condition_inputs = signature.condition_names
    return SourceModel(graph, signature, content, file_format, name)


def _import_torch_model(model: Any, example_inputs: tuple | None) -> tuple[Graph, str, bytes, str]:
    """A module or exported program as (graph, format, content, name); torch loads here, only for these."""
    import torch

    from admc.frontends.torch_export import export_module, import_exported_program

    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise AdmcError("a torch module needs example inputs (x [B, d], t [B] or [B, 1]) to be exported")
        program = export_module(model, tuple(example_inputs), source=type(model).__name__)
        graph = import_exported_program(program, type(model).__name__)
        return graph, "pt2", _pt2_bytes(program), f"{type(model).__name__}.pt2"
    if isinstance(model, torch.export.ExportedProgram):
        graph = import_exported_program(model, "<exported program>")
        return graph, "pt2", _pt2_bytes(model), "model.pt2"
    opened = open_model(model)
    return opened.graph, opened.format, opened.content, str(model)


def _pt2_bytes(program: torch.export.ExportedProgram) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def check_solver(solver: str, target: Any) -> str:
    """The canonical solver name, if the target's machine runs that kind of solver (discrete or continuous)."""
    canonical = solver_name(solver)
    if solver_kind(canonical) not in target.solver_kinds:
        raise AdmcError(f"solver '{canonical}' is {solver_kind(canonical)}-time; target '{target.name}' runs "
                        f"{' and '.join(sorted(target.solver_kinds))}-time solvers only")
    return canonical


def _select_alpha(passes: PassManager, program: BlockProgram, schedule: Schedule, target: Any,
                  options: BuildOptions, interface: ConditioningInterface
                  ) -> tuple[np.ndarray, AlphaSelection | None, CalibrationPeaks | None]:
    """α for the loops of a discrete-time program, chosen once: here, or (``alpha_in_lowering``) by the
    backend's lowering where its limits are known, which then gets only a settling α for its calibration run,
    and that run's peaks, made while the α was checked. A continuous-time program has no loop to relax."""
    if solver_kind(schedule.solver) != DISCRETE:
        return np.zeros(program.size), None, None
    capabilities = AlphaCapabilities.of(target)
    backend = backend_of(target)
    if backend is not None and backend.alpha_in_lowering:
        drive = interface_drive(interface, program, calibration_samples(program))
        table, peaks = passes.run("settling α and calibration run", settle_and_calibrate, program, schedule,
                                  capabilities, drive)
        return table, None, peaks
    selection = passes.run("α selection", select_alpha, program, schedule, capabilities, options.alpha, None,
                           None, options.force, None, condition_sampler(interface))
    return selection.alpha, selection, None


def _convergence(passes: PassManager, compiled: CompiledProgram) -> dict | None:
    if compiled.alpha_selection is None:
        return None
    timing = getattr(compiled.target, "timing", None)
    section = passes.run("convergence certificates and loop budget", convergence_section,
                         compiled.realised_program or compiled.program, compiled.schedule, compiled.alpha,
                         compiled.target.loop.settle_tolerance, getattr(timing, "loop_iteration_s", None),
                         compiled.alpha_selection.report(), condition_sampler(compiled.condition_interface))
    if section["phases"] and section["loop_budget"] is None and not compiled.force:
        # The α pass accepted the program it chose α on; the program the target realises (quantised) must
        # settle too, or the bundle's own verify and simulate could not run it.
        raise AdmcError("the realised program's loops do not settle on the loop budget's samples: "
                        f"{'; '.join(section['notes'])}; use more steps, or --force to build anyway")
    return section


def compile_source(source: SourceModel, target: Any, options: BuildOptions | None = None,
                   passes: PassManager | None = None) -> CompiledProgram:
    """Run the passes for ``target`` with ``options`` (``BuildOptions``; its source options are
    ``load_source``'s); ``passes`` (a ``PassManager``) records their times and, in verify mode, checks them.

    BLAS runs on one thread throughout: the passes' products are small batches (8-256 samples) and small dense
    factorisations, which threads barely speed up, and on a busy machine OpenBLAS's spinning threads made the
    calibration runs of a 3.9M-weight build 8× slower (47 s against 6 s, benchmarks/scaling.py)."""
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"), retained_heap():
        return _compile_source(source, target, options, passes)


def _compile_source(source: SourceModel, target: Any, options: BuildOptions | None,
                    passes: PassManager | None) -> CompiledProgram:
    options = options or BuildOptions()
    passes = passes or PassManager()
    solver = check_solver(target.default_solver if options.solver is None else options.solver, target)
    null, declared = parse_condition_options(source.signature.conditions, options.null_conditions,
                                             options.distributions)
    distribution = default_distribution(source.graph, source.signature, declared or {}, null)
    probe = Probe(source.graph, source.signature, distribution, null)
    canonical = passes.run("canonicalise", canonicalize, source.graph, tuple(target.activations),
                           f"target '{target.name}'", check=canonical_check(probe))
    network = passes.run("condition interface and guidance", guide_network, canonical, source.signature,
                         options.guidance, null, check=guidance_check(probe, options.guidance))
    program = passes.run("pack", pack_for_target, network, bool(target.linear_channels),
                         check=pack_check(probe, network, options.guidance))
    times = time_grid(steps=None if options.grid is not None else options.steps, grid=options.grid)
    schedule = passes.run("solver phases and Δt", build_schedule, solver, times, options.fp_iterations)
    program.static_table = passes.run("static injection table", checked_static_injection, program,
                                      tabulation_times(schedule), source.graph)
    interface = build_interface(network, program, source.signature, options.guidance, distribution)
    alpha, selection, peaks = _select_alpha(passes, program, schedule, target, options, interface)
    compiled = CompiledProgram(
        source, target, network, program, schedule, alpha,
        calibration=target_machine(target, options.calibration), condition_interface=interface,
        null_conditions=null, canonical_network=canonical, alpha_mode=options.alpha, force=options.force,
        alpha_selection=selection, calibration_peaks=peaks)
    compiled.report = spine_report(compiled)
    backend = backend_of(target)
    if backend is not None:
        compiled = run_backend_passes(backend, compiled, options.layout, passes,
                                      lowering_check(probe, program, compiled.alpha, schedule,
                                                     compiled.condition_interface))
    compiled.convergence = _convergence(passes, compiled)
    return compiled


def spine_report(compiled: CompiledProgram) -> dict:
    program, schedule = compiled.program, compiled.schedule
    multiply_adds = program.digital_multiply_adds_per_injection()
    injections_per_step = [len(phases) for phases in schedule.steps]
    return {
        "state_channels": program.size,
        "blocks": len(program.blocks),
        "weights": int(sum(block.matrix.size for block in program.blocks)),
        "layout": program.layout,
        "open_loop_iterations": program.open_iterations,
        "phases_per_step": max(injections_per_step, default=0),
        "digital_multiply_adds_per_step": multiply_adds * max(injections_per_step, default=0),
        "notes": list(program.notes),
    }


def emit_bundle(compiled: CompiledProgram, output: str | Path) -> Path:
    """Write the bundle of a compiled program (its sections gathered by ``compiler.sections``)."""
    return write_bundle(output, *bundle_contents(compiled))


def build(model: str | Path | torch.nn.Module, output: str | Path, target: str | Path = "aoc-48", *,
          passes: PassManager | None = None, **options: Any) -> Path:
    """Compile ``model`` for ``target`` and write the bundle at ``output``; returns its path. ``options``
    are :class:`BuildOptions`' fields as keywords (``solver``, ``steps``, ``grid``, ``time_input``,
    ``fp_iterations``, ``layout``, ``example_inputs``, ``calibration``, ``condition_inputs``, ``guidance``,
    ``null_conditions``, ``distributions``, ``alpha``, ``force``; an unknown one is refused naming it);
    ``passes`` records the passes' times and checks them in verify mode."""
    settings = BuildOptions.of(options)
    target_description = load_target(target)
    # A calibration file is read (and refused) before the model is.
    settings = replace(settings, calibration=target_machine(target_description, settings.calibration))
    with retained_heap():  # the import's freed buffers serve the first passes (compile_source's scope nests)
        source = load_source(model, settings.example_inputs, settings.time_input, settings.condition_inputs)
        return emit_bundle(compile_source(source, target_description, settings, passes), output)
