"""Run a bundle: the ideal executor or the target's digital twin, for any program (conditions optional).

Requires: a bundle, noise [B, d] and, for a conditional program, ``name → [B, ...]`` conditions.
Guarantees: one path for every program: the conditions are checked against the bundle's interface (an
unconditional program's is empty: it takes none) and run-time guidance against what the bundle allows
(``admc.runtime.guidance``) before anything runs; the ideal run executes the realised program
(``bundle_program``) with the conditions' drive; a twin run goes to the backend the bundle's target names
(``TargetBackend.simulate``) with typed :class:`SimulateOptions`. A target without a twin, or a
calibration for a target that takes none, is an ``AdmcError`` naming the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.core.precision import PRECISIONS
from admc.runtime.conditioning import RunConditions
from admc.runtime.executor import run_ideal
from admc.runtime.guidance import apply_runtime_guidance, run_conditions
from admc.targets.backends import backend_of_manifest


@dataclass(frozen=True)
class SimulateOptions:
    """How a target's twin runs (``TargetBackend.simulate`` and ``run_twin``). ``seed`` None: the twin's own
    (its non-idealities'); ``loop_iterations`` None: the twin's default budget; ``calibration``: a measured
    machine (the backend's ``read_calibration`` object) or None; ``mode``: ``discrete`` or ``continuous``;
    ``repeats`` None: the target's; ``nonidealities``: the twin's effects in place of the bundle's;
    ``conditions``: the run's conditions and guidance (an unconditional run by default); ``precision``: the
    twin's arithmetic, one of ``PRECISIONS`` (a twin that has only float64 refuses float32; the ideal executor
    and ``verify`` stay float64)."""

    seed: int | None = None
    loop_iterations: int | None = None
    calibration: Any = None
    mode: str = "discrete"
    repeats: int | None = None
    nonidealities: Any = None
    conditions: RunConditions = field(default_factory=RunConditions)
    precision: str = "float64"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise AdmcError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def of(cls, options: SimulateOptions | Mapping[str, Any] | None) -> SimulateOptions:
        """Options as given: an instance, or a mapping of field names (an unknown name is refused)."""
        if isinstance(options, cls):
            return options
        known = [entry.name for entry in fields(cls)]
        unknown = sorted(set(options or {}) - set(known))
        if unknown:
            raise AdmcError(f"twin options: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**dict(options or {}))


@dataclass(frozen=True)
class Simulation:
    """Final samples [B, d] and a one-line account of the run (executor, steps, loop iterations)."""

    samples: np.ndarray
    description: str


def _bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle(bundle)


def read_machine(bundle: Bundle, calibration: Any) -> Any:
    """A measured machine for the bundle's target: a calibration file (or shipped name) read by the target's
    backend; an already-read calibration object or None passes through."""
    if not isinstance(calibration, str | Path):
        return calibration
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if backend is None or backend.read_calibration is None:
        raise AdmcError(f"--calibration {calibration}: target {bundle.manifest['target'].get('name')!r} takes no "
                        "calibration file")
    return backend.read_calibration(calibration)


def run_simulation(bundle: Bundle | str | Path, noise: np.ndarray, conditions: dict[str, np.ndarray] | None = None,
                   guidance: float | None = None, ideal: bool = True,
                   options: SimulateOptions | None = None) -> Simulation:
    """Run ``bundle`` from ``noise`` for per-sample ``conditions`` with run-time ``guidance`` W (None: the
    built weight), on the ideal executor or (``ideal`` False) the target's twin."""
    bundle = _bundle(bundle)
    noise = np.asarray(noise, dtype=np.float64)
    dimension = int(bundle.manifest["source"]["state_dimension"])
    if noise.ndim != 2 or noise.shape[1] != dimension:
        raise AdmcError(f"noise has shape {list(noise.shape)}; the bundle's state has {dimension} features")
    options = replace(SimulateOptions.of(options), conditions=run_conditions(bundle, noise.shape[0], conditions,
                                                                             guidance))
    return _ideal_run(bundle, noise, options) if ideal else _twin_run(bundle, noise, options)


def _ideal_run(bundle: Bundle, noise: np.ndarray, options: SimulateOptions) -> Simulation:
    program, schedule, alpha = bundle_program(bundle)
    program = apply_runtime_guidance(program, options.conditions)
    result = run_ideal(program, schedule, alpha, noise, options.conditions.drive(program),
                       loop_iterations=options.loop_iterations)
    iterations = [sum(phases) for phases in result.iterations] or [0]
    return Simulation(result.trajectory[-1], f"ideal: {len(schedule.steps)} steps, loop iterations per step "
                                             f"{min(iterations)}–{max(iterations)}")


def _twin_run(bundle: Bundle, noise: np.ndarray, options: SimulateOptions) -> Simulation:
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if backend is None or backend.simulate is None:
        raise AdmcError(f"{bundle.path}: target {bundle.manifest['target'].get('name')!r} has no digital twin "
                        "(use --ideal)")
    samples, description = backend.simulate(bundle, noise, replace(options, calibration=read_machine(
        bundle, options.calibration)))
    return Simulation(samples, description)


def simulate(bundle: Bundle | str | Path, noise: np.ndarray, conditions: dict[str, np.ndarray] | None = None,
             guidance: float | None = None, ideal: bool = True, seed: int | None = 0,
             loop_iterations: int | None = None, calibration: Any = None, nonidealities: Any = None) -> np.ndarray:
    """Final samples of ``bundle`` from ``noise`` (ideal executor, or the twin with ``seed``,
    ``loop_iterations``, a measured machine's ``calibration`` and ``nonidealities`` in place of the
    bundle's); see :func:`run_simulation`."""
    options = SimulateOptions(seed=seed, loop_iterations=loop_iterations, calibration=calibration,
                              nonidealities=nonidealities)
    return run_simulation(bundle, noise, conditions, guidance, ideal, options).samples
