"""Run-time inputs of conditional programs: simulate a bundle and run the reference with per-sample conditions
and guidance (the Python API behind ``admc simulate/reference --condition NAME=FILE.npy [--guidance W]``).

Requires: a bundle or source model with condition inputs, noise [B, d] and ``name → [B, ...]`` conditions.
Guarantees: condition names and shapes are checked against the declared inputs before anything runs
(``AdmcError`` naming the condition, its shape and the expected one); a bundle built without guidance
refuses ``guidance``, and one whose W lives in its images refuses a different W.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError


def load_condition_files(pairs: list[str]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` pairs → arrays (one value per sample)."""
    conditions = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise AdmcError(f"--condition '{pair}': expected NAME=FILE.npy")
        try:
            conditions[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise AdmcError(f"{path}: cannot read condition array for '{name}' ({error})") from None
    return conditions


def _bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle(bundle)


def _interface_for(bundle: Bundle, noise: np.ndarray, conditions: dict | None, guidance: float | None):
    from admc.compiler.conditional_build import check_runtime_guidance, read_interface

    interface = read_interface(bundle)
    if interface is None:
        if conditions:
            raise AdmcError(f"{bundle.path}: the program has no condition inputs; drop --condition")
        check_runtime_guidance(bundle, None, guidance)
        return None, None
    if not conditions:
        names = ", ".join(condition.name for condition in interface.inputs)
        raise AdmcError(f"{bundle.path}: the program is conditional; give --condition NAME=FILE.npy for {names}")
    check_runtime_guidance(bundle, interface, guidance)
    return interface, interface.check(conditions, noise.shape[0])


def simulate(bundle: Bundle | str | Path, noise: np.ndarray, conditions: dict[str, np.ndarray] | None = None,
             guidance: float | None = None, ideal: bool = True, seed: int = 0,
             loop_iterations: int | None = None, calibration: Any = None) -> np.ndarray:
    """Final samples of ``bundle`` from ``noise`` for per-sample ``conditions`` (ideal executor or twin)."""
    from admc.bundle.program import bundle_program
    from admc.compiler.conditional_build import apply_runtime_guidance, rescale_twin_gains
    from admc.runtime.executor import IdealExecutor

    bundle = _bundle(bundle)
    noise = np.asarray(noise, dtype=np.float64)
    dimension = int(bundle.manifest["source"]["state_dimension"])
    if noise.ndim != 2 or noise.shape[1] != dimension:
        raise AdmcError(f"noise has shape {list(noise.shape)}, the bundle's state has {dimension} features")
    interface, checked = _interface_for(bundle, noise, conditions, guidance)
    if ideal:
        program, schedule, alpha = bundle_program(bundle)
        drive = None
        if interface is not None:
            program = apply_runtime_guidance(program, interface, bundle, guidance)
            drive = interface.drive_function(program, checked, guidance)
        return IdealExecutor(program, alpha, loop_iterations=loop_iterations).run(schedule, noise, drive).trajectory[-1]
    if bundle.manifest.get("target", {}).get("kind") != "aoc":
        raise AdmcError(f"{bundle.path}: the digital twin runs AOC bundles (use the ideal executor)")
    from admc.targets.aoc.twin import AocTwin

    twin = AocTwin(bundle, seed=seed, loop_iterations=loop_iterations, calibration=calibration)
    drive = None
    if interface is not None:
        rescale_twin_gains(twin, bundle, interface, guidance)
        drive = interface.drive_function(twin.program, checked, guidance)
    return twin.run(noise, extra_drive=drive).trajectory[-1]


def reference(model: Any, noise: np.ndarray, solver: str, grid: np.ndarray, fp_iterations: int | None = None,
              conditions: dict[str, np.ndarray] | None = None, guidance: float | None = None,
              null_conditions: dict | list[str] | None = None, time_input: str | None = None,
              condition_inputs: tuple[str, ...] = ()):
    """The source model integrated in float64 for per-sample conditions, guided by (1 + W)·f(c) − W·f(∅)."""
    from admc.compiler.conditional_build import parse_condition_options
    from admc.runtime.condition_drive import ConditioningInterface
    from admc.runtime.conditioned_reference import integrate_conditioned
    from admc.runtime.reference import integrate
    from admc.runtime.source_model import make_velocity

    names = tuple(dict.fromkeys((*condition_inputs, *(conditions or {}))))
    velocity = make_velocity(model, time_input=time_input, condition_inputs=names)
    signature = velocity.signature
    noise = np.asarray(noise, dtype=np.float64)
    if signature is not None and (noise.ndim != 2 or noise.shape[1] != signature.state_dimension):
        raise AdmcError(f"noise has shape {list(noise.shape)}; the model's state input "
                        f"'{signature.state_input}' has {signature.state_dimension} features")
    if signature is None or not signature.conditions:
        if conditions or guidance is not None:
            raise AdmcError(f"{velocity.source}: the model has no condition inputs; drop --condition/--guidance")
        return integrate(velocity, noise, solver, grid, fp_iterations)
    checked = ConditioningInterface(signature.conditions, {}, []).check(conditions or {}, noise.shape[0])
    null, _ = parse_condition_options(signature, null_conditions, None)
    if guidance is not None and not null:
        raise AdmcError("--guidance needs --null-condition NAME=VALUE (the unconditional input)")
    if guidance is None and null:
        raise AdmcError("--null-condition needs --guidance W")
    return integrate_conditioned(velocity, noise, checked, solver, grid, fp_iterations, guidance, null)
