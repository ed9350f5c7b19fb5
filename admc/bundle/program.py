"""Read the executable parts of a bundle: the program to run and the source model it was built from.

Guarantees: ``bundle_program`` returns the block program whose ideal execution is what the bundle asks the
hardware to do (for targets with stored weights, exactly those arrays; for the optical target, the
weights realised by its images, gains and α). ``source_velocity`` runs the bundled copy of the source
model, so verification never depends on files outside the bundle.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from admc.bundle.program_io import read_program
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.ir.program import BlockProgram, Schedule
from admc.runtime.source_model import make_velocity
from admc.runtime.velocity import Velocity
from admc.targets.backends import backend_of_manifest


def check_loaded_files(bundle: Bundle) -> None:
    """Refuse a bundle whose machine-loaded files (images, routing, …) disagree with its arrays; once per bundle.

    The target's backend knows which files its machine loads; targets without such files check nothing here.
    """
    if getattr(bundle, "files_checked", False):
        return
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if backend is not None and backend.check_files is not None:
        backend.check_files(bundle)
    bundle.files_checked = True


def bundle_program(bundle: Bundle) -> tuple[BlockProgram, Schedule, np.ndarray]:
    check_loaded_files(bundle)
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if backend is not None and backend.read_program is not None:
        return backend.read_program(bundle)
    return read_program(bundle)


@contextmanager
def source_copy(bundle: Bundle) -> Iterator[Path]:
    """A private temporary file holding the bundle's (hash-checked) source model; errors raised while it is
    in use name the bundle's payload, never the temporary copy the user cannot see."""
    source = bundle.manifest["source"]
    shown = str(bundle.path / source["payload"])
    with tempfile.TemporaryDirectory(prefix="admc-source-") as directory:
        path = Path(directory) / f"model.{source['format']}"
        path.write_bytes(bundle.read_bytes(source["payload"]))
        try:
            yield path
        except AdmcError as error:
            raise type(error)(str(error).replace(str(path), shown).replace(directory, str(bundle.path))) from None


def source_velocity(bundle: Bundle) -> Velocity:
    source = bundle.manifest["source"]
    with source_copy(bundle) as path:
        conditions = tuple(entry["name"] for entry in (bundle.manifest.get("conditions") or {}).get("inputs", []))
        velocity = make_velocity(path, time_input=source["time_input"], condition_inputs=conditions)
        # ONNX sessions and exported programs are fully loaded; the temporary file is no longer needed.
        velocity.source = f"{bundle.path}/{source['payload']}"
    return velocity
