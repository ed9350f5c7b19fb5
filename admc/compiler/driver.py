"""The compiler driver: source model → graph IR → canonical network → block program → target bundle.

``load_source`` imports and identifies the model's signature; ``compile_source`` runs the passes for a
target; ``build`` writes the bundle. The spine (canonicalisation, packing, Δt/phases, time tables) is shared
and reads only what the target declares (activations, linear channels, solver kinds); the backend the
target's description names (``admc.targets.backends``) runs the target-specific passes.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from admc import __version__
from admc.bundle.program_io import program_sections
from admc.bundle.store import write_bundle
from admc.compiler import conditional_pass_checks as conditional_checks
from admc.compiler.backend_passes import run_backend_passes
from admc.compiler.pass_checks import canonical_check, lowering_check, pack_check
from admc.core.errors import AdmcError
from admc.core.schedule import time_grid
from admc.frontends.onnx_import import import_onnx, self_contained_bytes
from admc.frontends.signature import Signature, identify_signature
from admc.frontends.torch_export import export_module, import_exported_program, load_pt2
from admc.ir.adm import IDENTITY, AdmNetwork
from admc.ir.graph import Graph
from admc.ir.program import BlockProgram, Schedule, tabulate_static_injection
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha
from admc.passes.canonicalize import canonicalize
from admc.passes.continuous_time import DISCRETE, solver_kind, tabulation_times
from admc.passes.fold_input import pack_folded
from admc.passes.loop_budget import convergence_section
from admc.passes.manager import PassManager
from admc.passes.pack import pack_direct
from admc.passes.step_phases import build_schedule, solver_name
from admc.targets.backends import backend_of
from admc.targets.loader import load_target


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
    extra_sections: dict = field(default_factory=dict)
    extra_payloads: dict[str, bytes] = field(default_factory=dict)
    block_arrays: bool = True
    # What the emitted weights realise (quantised), when they differ from ``program``'s intended blocks.
    realised_program: BlockProgram | None = None
    # A measured machine to compile for (its backend's calibration object), or None for the nominal target.
    calibration: Any = None
    # Conditional models: the digital conditioning interface (admc.runtime.condition_drive) and its manifest section.
    condition_interface: Any = None
    # α selection: the mode (--alpha), whether to build a schedule that no α contracts (--force), the result.
    alpha_mode: str = "auto"
    force: bool = False
    alpha_selection: Any = None


def load_source(model: str | Path | torch.nn.Module | torch.export.ExportedProgram,
                example_inputs: tuple | None = None, time_input: str | None = None,
                condition_inputs: tuple[str, ...] | list[str] = ()) -> SourceModel:
    """Import an ``.onnx`` / ``.pt2`` file, an exported program, or a module with example inputs;
    ``condition_inputs`` names inputs beyond x and t (``--condition``)."""
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise AdmcError("a torch module needs example inputs (x [B, d], t [B] or [B, 1]) to be exported")
        program = export_module(model, tuple(example_inputs), source=type(model).__name__)
        graph = import_exported_program(program, type(model).__name__)
        content, file_format, name = _pt2_bytes(program), "pt2", f"{type(model).__name__}.pt2"
    elif isinstance(model, torch.export.ExportedProgram):
        graph = import_exported_program(model, "<exported program>")
        content, file_format, name = _pt2_bytes(model), "pt2", "model.pt2"
    else:
        path = Path(model)
        if path.suffix == ".onnx":
            graph, file_format = import_onnx(path), "onnx"
        elif path.suffix == ".pt2":
            graph, file_format = load_pt2(path), "pt2"
        else:
            raise AdmcError(f"{path}: unknown model format '{path.suffix}'; give an .onnx or a .pt2 file")
        content = self_contained_bytes(path) if file_format == "onnx" else path.read_bytes()
        name = path.name
    if len(graph.outputs) != 1:
        raise AdmcError(f"{graph.source}: expected 1 output (the velocity [B, d]), found {len(graph.outputs)}")
    signature = identify_signature(graph.inputs, graph.source, time_input, tuple(condition_inputs))
    graph.state_input, graph.time_input = signature.state_input, signature.time_input
    graph.condition_inputs = signature.condition_names
    return SourceModel(graph, signature, content, file_format, name)


def _pt2_bytes(program: torch.export.ExportedProgram) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def pack_for_target(network: AdmNetwork, linear_channels: bool) -> BlockProgram:
    """Direct layout when the state can sit in the loop as it is read; the fold-input rewrite otherwise."""
    if IDENTITY in network.state_activations() and not linear_channels:
        return pack_folded(network)
    return pack_direct(network)


def check_solver(solver: str, target: Any) -> str:
    """The canonical solver name, if the target's machine runs that kind of solver (discrete or continuous)."""
    canonical = solver_name(solver)
    if solver_kind(canonical) not in target.solver_kinds:
        raise AdmcError(f"solver '{canonical}' is {solver_kind(canonical)}-time; target '{target.name}' runs "
                        f"{' and '.join(sorted(target.solver_kinds))}-time solvers only")
    return canonical


def compile_source(source: SourceModel, target: Any, solver: str | None = None, steps: int | None = 16,
                   grid: np.ndarray | None = None, fp_iterations: int | None = None,
                   layout: str = "auto", passes: PassManager | None = None,
                   calibration: Any = None, guidance: float | None = None,
                   null_conditions: dict | None = None, distributions: dict | None = None,
                   alpha: str = "auto", force: bool = False) -> CompiledProgram:
    """Run the passes; ``passes`` (a ``PassManager``) records their times and, in verify mode, checks them.
    ``solver`` None takes the target's default; ``calibration``: a measured machine to compile for (read by
    the target's backend). Conditional models: ``guidance`` W with ``null_conditions`` builds the
    classifier-free-guided loop; ``distributions`` declares how ``verify`` draws conditions
    (admc.compiler.conditional_build). ``alpha`` is the α mode (auto | global | min | path of a .npy table); ``force``
    builds a schedule whose loops no α in range makes contract."""
    passes = passes or PassManager()
    solver = check_solver(target.default_solver if solver is None else solver, target)
    backend = backend_of(target)
    conditional = bool(source.signature.conditions)
    probe = None
    if conditional and passes.verify:
        from admc.compiler.conditional_build import default_distribution
        from admc.compiler.conditional_pass_checks import ConditionalProbe

        probe = ConditionalProbe(source.graph, source.signature,
                                 default_distribution(source.graph, source.signature, distributions or {},
                                                      null_conditions), null_conditions)
    canonical = conditional_checks.canonical_check(probe) if conditional else canonical_check(source.graph)
    network = passes.run("canonicalise", canonicalize, source.graph, tuple(target.activations),
                         f"target '{target.name}'", check=canonical)
    unguided = network
    if conditional or guidance is not None or null_conditions:
        from admc.compiler.conditional_build import prepare_network

        network = passes.run("condition interface and guidance", prepare_network, network, source.signature,
                             guidance, null_conditions,
                             check=conditional_checks.guidance_check(probe, guidance) if conditional else None)
    program = passes.run("pack", pack_for_target, network, bool(target.linear_channels),
                         check=conditional_checks.pack_check(probe, network, guidance) if conditional
                         else pack_check(network))
    times = time_grid(steps=None if grid is not None else steps, grid=grid)
    schedule = passes.run("solver phases and Δt", build_schedule, solver, times, fp_iterations)
    program.static_table = passes.run("static injection table", tabulate_static_injection, program,
                                      tabulation_times(schedule))
    # Loops (discrete solvers) get α before anything runs them (state-scaling calibration included); a
    # continuous-time program has no loop to relax.
    discrete = solver_kind(schedule.solver) == DISCRETE
    selection = None
    if discrete:
        selection = passes.run("α selection", select_alpha, program, schedule, AlphaCapabilities.of(target),
                               alpha, None, None, force)
    compiled = CompiledProgram(source, target, network, program, schedule,
                               selection.alpha if selection is not None else np.zeros(program.size),
                               alpha_mode=alpha, force=force, alpha_selection=selection)
    compiled.report = spine_report(compiled)
    compiled.calibration = calibration
    if conditional:
        from admc.compiler.conditional_build import build_interface, default_distribution

        distribution = default_distribution(source.graph, source.signature, distributions or {}, null_conditions)
        compiled.condition_interface = build_interface(network, program, source.signature, guidance, distribution)
        unguided_program = pack_for_target(unguided, bool(target.linear_channels)) if guidance is not None else None
    if backend is not None:
        check = (conditional_checks.lowering_check(probe, program, compiled.alpha, schedule,
                                                   compiled.condition_interface) if conditional
                 else lowering_check(program, compiled.alpha, schedule))
        compiled = run_backend_passes(backend, compiled, layout, passes, check)
    if conditional:
        from admc.compiler.conditional_build import attach_conditions

        attach_conditions(compiled, unguided_program, null_conditions)
    if discrete:
        timing = getattr(target, "timing", None)
        compiled.extra_sections["convergence"] = passes.run(
            "convergence certificates and loop budget", convergence_section,
            compiled.realised_program or compiled.program, schedule, compiled.alpha, target.loop.settle_tolerance,
            getattr(timing, "loop_iteration_s", None), compiled.alpha_selection.report())
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
    sections, payloads = program_sections(compiled.program, compiled.schedule, compiled.alpha,
                                          block_arrays=compiled.block_arrays)
    source_path = f"source/model.{compiled.source.format}"
    payloads[source_path] = compiled.source.content
    payloads.update(compiled.extra_payloads)
    signature = compiled.source.signature
    manifest = {
        "admc_version": __version__,
        "target": compiled.target.to_dict(),
        "source": {"payload": source_path, "format": compiled.source.format, "name": compiled.source.name,
                   "sha256": compiled.source.sha256, "state_input": signature.state_input,
                   "time_input": signature.time_input, "state_dimension": signature.state_dimension},
        "report": compiled.report,
        **sections,
        **compiled.extra_sections,
    }
    return write_bundle(output, manifest, payloads)


def build(model: str | Path | torch.nn.Module, output: str | Path, target: str | Path = "aoc-48",
          solver: str | None = None, steps: int | None = 16, grid: np.ndarray | None = None,
          time_input: str | None = None, fp_iterations: int | None = None, layout: str = "auto",
          example_inputs: tuple | None = None, passes: PassManager | None = None,
          calibration: str | Path | None = None,
          condition_inputs: tuple[str, ...] | list[str] = (), guidance: float | None = None,
          null_conditions: dict | list[str] | None = None, distributions: dict | list[str] | None = None,
          alpha: str = "auto", force: bool = False) -> Path:
    """Compile ``model`` for ``target`` and write the bundle at ``output``; returns its path (``solver`` None:
    the target's default). ``calibration``: a measured machine's calibration file to compile for, read by the
    target's backend (the AOC's: the makers' format). ``alpha``: the α mode (auto | global | min | .npy table);
    ``force``: build a schedule whose loops no α in range makes contract.

    Conditional models: ``condition_inputs`` names inputs beyond x and t; ``guidance`` W with
    ``null_conditions`` (``{name: value}`` or ``["NAME=VALUE", ...]``) builds classifier-free guidance;
    ``distributions`` (``{name: {"kind": ...}}`` or ``["NAME=uniform:K", ...]``) declares verify's draws.
    """
    target_description = load_target(target)
    machine = None
    if calibration is not None:
        backend = backend_of(target_description)
        if backend is None or backend.read_calibration is None:
            raise AdmcError(f"--calibration {calibration}: target '{target_description.name}' takes no "
                            "calibration file")
        machine = backend.read_calibration(calibration)
    source = load_source(model, example_inputs, time_input, condition_inputs)
    if null_conditions is not None or distributions is not None:
        from admc.compiler.conditional_build import parse_condition_options

        null_conditions, distributions = parse_condition_options(source.signature, null_conditions, distributions)
    compiled = compile_source(source, target_description, solver, steps, grid, fp_iterations, layout, passes,
                              machine, guidance, null_conditions, distributions, alpha, force)
    return emit_bundle(compiled, output)
