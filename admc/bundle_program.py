"""Read the executable parts of a bundle: the program to run and the source model it was built from.

Guarantees: ``bundle_program`` returns the block program whose ideal execution is what the bundle asks the
hardware to do (for targets with stored weights, exactly those arrays; for the optical target, the
weights realised by its images, gains and α). ``source_velocity`` runs the bundled copy of the source
model, so verification never depends on files outside the bundle.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from admc.bundle import Bundle
from admc.ir.program import BlockProgram, Schedule
from admc.program_io import read_program
from admc.source_model import Velocity, make_velocity


def bundle_program(bundle: Bundle) -> tuple[BlockProgram, Schedule, np.ndarray]:
    if bundle.manifest.get("target", {}).get("kind") == "aoc":
        from admc.targets.aoc.bundle_reader import phase_blocks, realised_blocks

        program, schedule, alpha = read_program(bundle, realised_blocks(bundle))
        program.phase_blocks = phase_blocks(bundle)
        return program, schedule, alpha
    return read_program(bundle)


def source_velocity(bundle: Bundle) -> Velocity:
    source = bundle.manifest["source"]
    content = bundle.read_bytes(source["payload"])
    with tempfile.TemporaryDirectory(prefix="admc-source-") as directory:
        path = Path(directory) / f"model.{source['format']}"
        path.write_bytes(content)
        conditions = tuple(entry["name"] for entry in (bundle.manifest.get("conditions") or {}).get("inputs", []))
        velocity = make_velocity(path, time_input=source["time_input"], condition_inputs=conditions)
        # ONNX sessions and exported programs are fully loaded; the temporary file is no longer needed.
        velocity.source = f"{bundle.path}/{source['payload']}"
    return velocity
