"""The options of a build, as one typed value: what ``admc build``'s flags and ``build(...)``'s keywords say.

Requires: nothing. Guarantees: :class:`BuildOptions` holds every build option with the default
``admc.compiler.driver.build`` has always had; ``BuildOptions.of`` takes keyword options and refuses an
unknown name with an ``AdmcError`` naming it and the known ones; ``target_machine`` reads a measured
machine's calibration file with the target's backend (a target that takes none is refused naming it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from admc.core.errors import AdmcError
from admc.targets.backends import backend_of


@dataclass(frozen=True)
class BuildOptions:
    """Source: ``time_input`` (the time input's name), ``condition_inputs`` (inputs beyond x and t,
    ``--condition``), ``example_inputs`` (to export a torch module). Schedule: ``solver`` (None: the
    target's default), ``steps`` (a uniform grid) or ``grid`` (time points), ``fp_iterations`` (fixed-point
    iterations per implicit step). Target: ``layout`` (packed | ring | auto), ``alpha`` (auto | global | min
    | a .npy table), ``force`` (build even when the loops do not settle on fresh samples), ``calibration``
    (a measured machine: its calibration file, read by the target's backend, or the object it reads).
    Conditioning: ``guidance`` W with ``null_conditions`` (``{name: value}`` or ``["NAME=VALUE", ...]``)
    builds classifier-free guidance; ``distributions`` (``{name: {"kind": ...}}`` or
    ``["NAME=uniform:K", ...]``) declares how verify draws conditions."""

    solver: str | None = None
    steps: int | None = 16
    grid: np.ndarray | None = None
    fp_iterations: int | None = None
    time_input: str | None = None
    condition_inputs: tuple[str, ...] | list[str] = ()
    example_inputs: tuple | None = None
    layout: str = "auto"
    alpha: str = "auto"
    force: bool = False
    calibration: Any = None
    guidance: float | None = None
    null_conditions: dict | list[str] | None = None
    distributions: dict | list[str] | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> BuildOptions:
        """Options from keywords; an unknown keyword is refused naming it."""
        known = [entry.name for entry in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise AdmcError(f"unknown build option {', '.join(map(repr, unknown))} (options: {', '.join(known)})")
        return cls(**options)


def target_machine(target: Any, calibration: Any) -> Any:
    """A measured machine for ``target``: a calibration file (or a shipped name) read by its backend; an
    already-read calibration object or None passes through."""
    if not isinstance(calibration, str | Path):
        return calibration
    backend = backend_of(target)
    if backend is None or backend.read_calibration is None:
        raise AdmcError(f"--calibration {calibration}: target '{target.name}' takes no calibration file")
    return backend.read_calibration(calibration)
