"""Read an RRAM bundle: the program its conductances, column scales and DAC tables realise.

Requires: a verified ``Bundle`` (hashes checked) built for an RRAM target. Guarantees: ``read_program``
returns the block program whose blocks are column_scale · (G⁺ − G⁻) rebuilt from the stored conductance maps
(what the chip is programmed with), and the static table at the DAC instants; malformed sections raise
``AdmcError`` naming the bundle.
"""

from __future__ import annotations

import numpy as np

from admc.bundle.program_io import read_program as read_spine
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.targets.rram.conductance import realised_blocks


def section(bundle: Bundle) -> dict:
    data = bundle.manifest.get("rram")
    if not isinstance(data, dict):
        raise AdmcError(f"{bundle.path}/manifest.json: no 'rram' section in a bundle built for an RRAM target")
    return data


def conductances(bundle: Bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = section(bundle)
    try:
        return (bundle.array(data["conductance"]["positive"]), bundle.array(data["conductance"]["negative"]),
                bundle.array(data["column_scale"]))
    except (KeyError, TypeError) as error:
        raise AdmcError(f"{bundle.path}/manifest.json: malformed 'rram' section ({error!r})") from None


def block_shapes(bundle: Bundle) -> list[tuple[int, int]]:
    return [(int(entry["rows"]), int(entry["columns"])) for entry in bundle.manifest["layout"]["blocks"]]


def read_program(bundle: Bundle, positive_us: np.ndarray | None = None, negative_us: np.ndarray | None = None):
    """(program, schedule, α); ``positive_us``/``negative_us`` replace the stored maps (the twin's chip)."""
    stored_positive, stored_negative, scale = conductances(bundle)
    positive = stored_positive if positive_us is None else positive_us
    negative = stored_negative if negative_us is None else negative_us
    blocks = realised_blocks(block_shapes(bundle), section(bundle)["tiles"], positive, negative, scale)
    return read_spine(bundle, blocks)
