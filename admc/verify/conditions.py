"""The conditions verify runs a program for: drawn from the bundle's declared distribution (none for an
unconditional program), the guided reference, and metrics per class.

Requires: a verified bundle. Guarantees: ``check_declared`` and ``draw`` refuse (``AdmcError``) a condition
input without a declared distribution; ``reference`` integrates the bundled source model for the drawn
conditions with the bundle's own guidance (exactly ``integrate`` when there are none); ``per_class`` gives,
for every class of the first class-valued condition (none when no condition is class-valued), the ideal
program's final relative error against the reference and, with twin samples, the twin's W2 to the
reference relative to a Gaussian fit of that class's reference samples; a class passes when both are
within the chain's tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admc.bundle.store import Bundle
from admc.core.errors import AdmcError
from admc.runtime.bundle_interface import UNCONDITIONED, read_interface
from admc.runtime.conditioning import ConditioningInterface, RunConditions, condition_classes, sample_conditions
from admc.runtime.reference import ReferenceResult, integrate_by_condition
from admc.verify.metrics import gaussian_baseline, max_abs_error, per_step_nrmse, wasserstein2

# Conditions are drawn with their own stream, independent of the noise's.
CONDITION_SEED_OFFSET = 7919


@dataclass(frozen=True)
class ConditionDraw:
    interface: ConditioningInterface
    conditions: dict[str, np.ndarray]
    classes: np.ndarray  # each sample's class; empty when no condition is class-valued
    guidance: float | None  # the weight the bundle was built for
    null: dict[str, np.ndarray]  # the null condition of its unconditional copy

    @property
    def run(self) -> RunConditions:
        """The drawn conditions as a run's (at the built guidance weight)."""
        return RunConditions(self.interface, self.conditions)


def check_declared(bundle: Bundle) -> None:
    """Refuse a bundle with a condition input whose distribution is not declared."""
    section = bundle.manifest.get("conditions") or UNCONDITIONED
    distribution = section.get("distribution", {})
    for entry in section.get("inputs", []):
        if entry["name"] not in distribution:
            raise AdmcError(f"{bundle.path}: condition '{entry['name']}' has no declared distribution to draw "
                            f"from; build with --condition-distribution {entry['name']}=uniform:K|one-hot:K|normal")


def draw(bundle: Bundle, samples: int, seed: int) -> ConditionDraw:
    interface = read_interface(bundle)
    conditions = interface.check(
        sample_conditions(interface.inputs, interface.distribution, samples, seed + CONDITION_SEED_OFFSET), samples)
    guidance = (bundle.manifest.get("conditions") or UNCONDITIONED).get("guidance") or {}
    kinds = {condition.name: condition.kind for condition in interface.inputs}
    null = {name: np.asarray(value, dtype=np.int64 if kinds.get(name) == "index" else np.float64)
            for name, value in guidance.get("null", {}).items()}
    return ConditionDraw(interface, conditions, condition_classes(interface.inputs, interface.distribution, conditions),
                         interface.guidance, null)


def reference(conditioning: ConditionDraw, velocity, noise: np.ndarray, schedule) -> ReferenceResult:
    return integrate_by_condition(velocity, noise, conditioning.conditions, schedule.solver, schedule.grid,
                                  schedule.fp_iterations, conditioning.guidance, conditioning.null)


def per_class(conditioning: ConditionDraw, trajectories: dict[str, np.ndarray], program_tolerance: float,
              twin_ratio: float, seed: int, criterion: str = "relative_error") -> tuple[dict, ...]:
    """Per class; the ideal program is judged by the chain's own criterion (final relative error, or the
    worst per-step NRMSE for a quantised target)."""
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
    return tuple(rows)
