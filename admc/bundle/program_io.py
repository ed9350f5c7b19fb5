"""Serialise a block program, its schedule and channel α into manifest sections and payloads, and back.

Guarantees: ``read_program(bundle)`` rebuilds a ``BlockProgram`` (with its static injection table),
``Schedule`` and α that execute exactly as the ones written (every array stored bit-exact as ``.npy``).
Time terms are stored as evaluated tables at the schedule's time points, never as code.
"""

from __future__ import annotations

import numpy as np

from admc.bundle.store import Bundle, npy_bytes
from admc.core.errors import AdmcError
from admc.ir.program import (
    BlockProgram,
    InjectionPart,
    MatrixBlock,
    Phase,
    Schedule,
    StateGroup,
    StaticInjection,
    block_name,
)
from admc.passes.continuous_time import DISCRETE, solver_kind


def program_sections(program: BlockProgram, schedule: Schedule, alpha: np.ndarray,
                     block_arrays: bool = True) -> tuple[dict, dict[str, bytes]]:
    """Manifest sections ``layout``, ``channels``, ``static_injection``, ``solver``, ``phases``, and payloads.

    With ``block_arrays`` false the blocks are listed without weight payloads (a target that stores its
    weights in another form, e.g. SLM images, provides them).
    """
    payloads: dict[str, bytes] = {}
    blocks = []
    for index, block in enumerate(program.blocks):
        entry = {"row_group": block.row_group, "column_group": block.column_group,
                 "scale_class": block.scale_class, "layer": block.layer,
                 "rows": int(block.matrix.shape[0]), "columns": int(block.matrix.shape[1])}
        if block_arrays:
            entry["payload"] = f"weights/{block_name(index)}.npy"
            payloads[entry["payload"]] = npy_bytes(block.matrix)
        blocks.append(entry)
    injections = []
    for index, part in enumerate(program.injections):
        name = f"injection/part_{index:04d}.npy"
        payloads[name] = npy_bytes(part.matrix)
        injections.append({"group": part.group, "kind": part.kind, "payload": name,
                           "identity": part.is_identity()})
    table = program.static_table
    static = {"times": "injection/times.npy", "constants": {}, "time_tables": {}}
    payloads[static["times"]] = npy_bytes(table.times)
    for scale_class, vector in sorted(table.constants.items()):
        static["constants"][scale_class] = f"injection/constant_{scale_class}.npy"
        payloads[static["constants"][scale_class]] = npy_bytes(vector)
    for scale_class, matrix in sorted(table.time_tables.items()):
        static["time_tables"][scale_class] = f"injection/time_table_{scale_class}.npy"
        payloads[static["time_tables"][scale_class]] = npy_bytes(matrix)
    payloads["channels/alpha.npy"] = npy_bytes(np.asarray(alpha, dtype=np.float64))
    sections = {
        "layout": {
            "kind": program.layout,
            "state_dimension": program.state_dimension,
            "size": program.size,
            "groups": [{"name": group.name, "offset": group.offset, "size": group.size,
                        "activation": group.activation, "held": group.held, "role": group.role,
                        "voltage_scale": group.voltage_scale, "sigma_gain": group.sigma_gain}
                       for group in program.groups],
            "blocks": blocks,
            "injections": injections,
            "readout_group": program.readout_group,
            "open_iterations": program.open_iterations,
            "notes": list(program.notes),
        },
        "channels": {"alpha": "channels/alpha.npy"},
        "static_injection": static,
        "solver": {"name": schedule.solver, "fp_iterations": schedule.fp_iterations,
                   "grid": [float(value) for value in schedule.grid], "steps": len(schedule.steps)},
        "phases": [[phase.to_dict() for phase in phases] for phases in schedule.steps],
    }
    return sections, payloads


def layout_groups(layout: dict) -> list[StateGroup]:
    """The state groups of a manifest's ``layout`` section (KeyError, TypeError or ValueError when malformed)."""
    return [StateGroup(entry["name"], int(entry["offset"]), int(entry["size"]), entry["activation"],
                       bool(entry["held"]), entry["role"], float(entry.get("voltage_scale", 1.0)),
                       float(entry.get("sigma_gain", 1.0))) for entry in layout["groups"]]


def read_program(bundle: Bundle, block_matrices: list[np.ndarray] | None = None
                 ) -> tuple[BlockProgram, Schedule, np.ndarray]:
    """Rebuild the program from a verified bundle (``block_matrices`` overrides the stored blocks)."""
    manifest = bundle.manifest
    try:
        layout = manifest["layout"]
        groups = layout_groups(layout)
        blocks = []
        for index, entry in enumerate(layout["blocks"]):
            matrix = block_matrices[index] if block_matrices is not None else bundle.array(entry["payload"])
            blocks.append(MatrixBlock(entry["row_group"], entry["column_group"], matrix,
                                      entry["scale_class"], int(entry["layer"])))
        injections = [InjectionPart(entry["group"], bundle.array(entry["payload"]), entry["kind"])
                      for entry in layout["injections"]]
        static = manifest["static_injection"]
        table = StaticInjection(
            bundle.array(static["times"]),
            {name: bundle.array(path) for name, path in static["constants"].items()},
            {name: bundle.array(path) for name, path in static["time_tables"].items()},
        )
        program = BlockProgram(int(layout["state_dimension"]), groups, blocks, [], injections,
                               layout["readout_group"], int(layout["open_iterations"]), layout["kind"],
                               list(layout.get("notes", [])), table)
        solver = manifest["solver"]
        schedule = Schedule(solver["name"], np.asarray(solver["grid"], dtype=np.float64),
                            [[Phase.from_dict(phase) for phase in phases] for phases in manifest["phases"]],
                            solver.get("fp_iterations"))
        alpha = bundle.array(manifest["channels"]["alpha"])
        missing = {phase.time for phases in schedule.steps for phase in phases} - set(table.times.tolist())
        # A continuous program's table is interpolated at any time (passes/continuous_time.py); a discrete
        # one is read at its phases' times only, so each must be there.
        if table.time_tables and missing and solver_kind(schedule.solver) == DISCRETE:
            raise AdmcError(f"{bundle.path / static['times']}: phase time {min(missing)!r} is not in the "
                            "static injection table")
    except (KeyError, TypeError, ValueError) as error:
        raise AdmcError(f"{bundle.path}/manifest.json: malformed program section ({error!r})") from None
    return program, schedule, alpha
