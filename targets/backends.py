"""A target's backend: what the driver, the bundle reader, verify and simulate call for that target.

Requires: a target description class with a ``backend`` class attribute: the module path of its backend
(or None for a target whose spine program is the bundle, such as ``ideal``); that module defines
``BACKEND``, a :class:`TargetBackend`. Guarantees: the backend is resolved explicitly on use (no import-time
registry); a module that cannot be imported or lacks ``BACKEND`` is an ``AdmcError`` naming the module and
the description that named it. Shared code calls these entries and never tests a target's kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from admc.core.errors import AdmcError


@dataclass
class TwinRun:
    """A twin's samples along the schedule, its loop residuals (if it has loops) and a summary for reports."""

    trajectory: np.ndarray  # [T + 1, B, d]
    residual_history: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TargetBackend:
    """The target-specific steps. ``lowering(compiled, layout)`` returns the lowering as named passes
    (``admc.passes.manager.Lowering``) that the build runs under the pass manager;
    ``read_program(bundle)`` the realised (program, schedule, α) a bundle asks the hardware to run;
    ``run_twin(bundle, noise, options, progress)`` a :class:`TwinRun`; ``simulate(bundle, noise, options)``
    the twin's final samples and a one-line account of the run for ``admc simulate`` (``options``: an
    ``admc.runtime.simulate.SimulateOptions``, the run's conditions and guidance included);
    ``describe(manifest)`` extra ``admc inspect`` data and lines; ``check_files(bundle)`` refuses a bundle
    whose machine-loaded files (images, routing) disagree with its arrays."""

    name: str
    lowering: Callable[[Any, str], Any]
    read_program: Callable[[Any], tuple] | None = None
    run_twin: Callable[..., TwinRun] | None = None
    simulate: Callable[..., tuple[np.ndarray, str]] | None = None
    describe: Callable[[dict], tuple[dict, list[str]]] | None = None
    check_files: Callable[[Any], None] | None = None  # refuses emitted files that disagree with the arrays
    # (criterion, bound) of the program link, from the validated description and program, never the manifest's
    # informative report fields; None: the program is exact (float64)
    verify_bound: Callable[[Any], tuple[str, float]] | None = None
    # reads a measured machine's calibration file for ``build --calibration``; None: the target takes none
    read_calibration: Callable[[Any], Any] | None = None
    # the model of the target's own manifest section, ``manifest[kind]`` (an admc.bundle.manifest_types
    # .TargetSection); None: the target writes none (its bundle is the program itself)
    manifest_section: type | None = None
    # (bundle, non-ideality overrides, seed, options) -> the twin of one chip of a sweep: the bundle's own
    # non-idealities with the overrides merged in (nested mapping, like a description's ``inherits:``);
    # options are the twin's mode, loop_iterations and repeats. Its ``run(noise)`` returns the trajectory and
    # the loop iterations, its ``repeats`` the readouts averaged. None: the target has no twin to sweep.
    make_twin: Callable[..., Any] | None = None
    # True: the lowering runs the shared α pass itself, once, where its limits are known (e.g. a gain range
    # on the weights its state scaling produces); the driver then gives it only ``settling_alpha`` for the
    # runs that precede the choice. False: the driver's α pass chooses α before the lowering.
    alpha_in_lowering: bool = False
    # (bundle, block shapes, seed, quantise) -> the target's twin of that bundle with the program's weights,
    # static injections and injection matrices as torch inputs (``run``, ``velocity``; admc.finetuning).
    # None: the target's programs cannot be fine-tuned through a twin.
    differentiable_twin: Callable[..., Any] | None = None


def resolve_backend(module_path: str | None, named_by: str) -> TargetBackend | None:
    """Import ``module_path`` and return its ``BACKEND``; ``named_by`` names the description in errors."""
    if module_path is None:
        return None
    try:
        module = importlib.import_module(module_path)
    except ImportError as error:
        raise AdmcError(f"{named_by}: backend module {module_path!r} cannot be imported ({error})") from None
    backend = getattr(module, "BACKEND", None)
    if not isinstance(backend, TargetBackend):
        raise AdmcError(f"{named_by}: backend module {module_path!r} defines no BACKEND (a TargetBackend)")
    return backend


def backend_of(target: Any) -> TargetBackend | None:
    """The backend a loaded target description names."""
    return resolve_backend(type(target).backend, f"target '{target.name}' ({type(target).__name__})")


def backend_of_manifest(manifest: dict, label: str) -> TargetBackend | None:
    """The backend of the target a bundle's manifest was built for (its ``target.kind``)."""
    from admc.targets.loader import description_of_kind

    kind = manifest.get("target", {}).get("kind")
    description = description_of_kind(str(kind), f"{label}: manifest 'target'")
    return resolve_backend(description.backend, f"{label}: target kind {kind!r}")
