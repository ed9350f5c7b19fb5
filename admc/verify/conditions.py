"""Verification of conditional programs: conditions drawn from the bundle's declared distribution, the guided
reference, and metrics per class.

Requires: a bundle with a ``conditions`` section. Guarantees: ``draw`` refuses (``AdmcError``) a condition
input without a declared distribution; ``per_class`` gives, for every class of the first class-valued
condition, the ideal program's final relative error against the reference and, with twin samples, the
twin's W2 to the reference relative to a Gaussian fit of that class's reference samples; a class passes
when both are within the chain's tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.runtime.condition_drive import ConditioningInterface, condition_classes, sample_conditions
from admc.verify.metrics import gaussian_baseline, max_abs_error, per_step_nrmse, wasserstein2

# Conditions are drawn with their own stream, independent of the noise's.
CONDITION_SEED_OFFSET = 7919


@dataclass
class ConditionDraw:
    interface: ConditioningInterface
    conditions: dict[str, np.ndarray]
    classes: np.ndarray | None
    guidance: float | None
    null: dict[str, np.ndarray] | None


def check_declared(bundle: Bundle) -> None:
    """Refuse a conditional bundle with a condition input whose distribution is not declared."""
    section = bundle.manifest.get("conditions") or {}
    distribution = section.get("distribution", {})
    for entry in section.get("inputs", []):
        if entry["name"] not in distribution:
            raise AdmcError(f"{bundle.path}: condition '{entry['name']}' has no declared distribution to draw "
                            f"from; build with --condition-distribution {entry['name']}=uniform:K|one-hot:K|normal")


def draw(bundle: Bundle, samples: int, seed: int) -> ConditionDraw | None:
    from admc.compiler.conditional_build import read_interface

    interface = read_interface(bundle)
    if interface is None:
        return None
    conditions = interface.check(
        sample_conditions(interface.inputs, interface.distribution, samples, seed + CONDITION_SEED_OFFSET), samples)
    guidance = bundle.manifest["conditions"].get("guidance") or None
    null = None
    if guidance:
        kinds = {condition.name: condition.kind for condition in interface.inputs}
        null = {name: np.asarray(value, dtype=np.int64 if kinds.get(name) == "index" else np.float64)
                for name, value in guidance["null"].items()}
    return ConditionDraw(interface, conditions, condition_classes(interface.inputs, interface.distribution, conditions),
                         float(guidance["weight"]) if guidance else None, null)


def reference(conditioning: ConditionDraw, velocity, noise: np.ndarray, schedule):
    from admc.runtime.conditioned_reference import integrate_conditioned

    return integrate_conditioned(velocity, noise, conditioning.conditions, schedule.solver, schedule.grid,
                                 schedule.fp_iterations, conditioning.guidance, conditioning.null)


def per_class(conditioning: ConditionDraw, trajectories: dict[str, np.ndarray], program_tolerance: float,
              twin_ratio: float, seed: int, criterion: str = "relative_error") -> list[dict]:
    """Per class; the ideal program is judged by the chain's own criterion (final relative error, or the
    worst per-step NRMSE for a quantised target)."""
    if conditioning.classes is None:
        return []
    reference = trajectories["reference"][-1]
    rows = []
    for label in np.unique(conditioning.classes):
        members = np.flatnonzero(conditioning.classes == label)
        expected = reference[members]
        scale = float(max(np.sqrt(np.mean(expected ** 2)), 1e-300))
        ideal_error = max_abs_error(trajectories["ideal"][-1][members], expected) / scale
        steps = per_step_nrmse(trajectories["ideal"][1:, members], trajectories["reference"][1:, members])
        worst_step = float(np.max(steps, initial=0.0))
        measured = worst_step if criterion == "per_step_nrmse" else float(ideal_error)
        row = {"class": int(label), "samples": int(members.size), "ideal_relative_error": float(ideal_error),
               "ideal_per_step_nrmse": worst_step, "criterion": criterion,
               "passed": bool(measured <= program_tolerance)}
        if "twin" in trajectories and members.size > 1:
            twin = trajectories["twin"][-1][members]
            baseline = wasserstein2(gaussian_baseline(expected, members.size, seed + 1 + int(label)), expected)
            ratio = float(wasserstein2(twin, expected) / max(baseline, 1e-300))
            row.update({"twin_wasserstein2": float(wasserstein2(twin, expected)), "twin_w2_ratio": ratio})
            row["passed"] = bool(row["passed"] and ratio <= twin_ratio)
        rows.append(row)
    return rows
