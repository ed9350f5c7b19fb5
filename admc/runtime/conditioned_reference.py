"""The reference executor for conditional models: the source model run as given, per condition, with
classifier-free guidance as the combination of two runs of the source model.

Requires: a ``Velocity`` of a conditional source model, per-sample conditions (``name → [B, ...]``, checked by
the caller) and, for guidance, the weight W and the null condition values. Guarantees: samples are grouped
by identical conditions and each group is integrated by ``admc.runtime.reference.integrate`` with
f(x, t) = model(x, t, c) or, guided, (1 + W)·model(x, t, c) − W·model(x, t, ∅); samples are independent
under every solver (per-sample stopping rules), so the assembled result equals one batched run. The
result's residuals, iteration counts and evaluation counts are the worst (or the sum) over the groups.
"""

from __future__ import annotations

import numpy as np

from admc.runtime.reference import ReferenceResult, canonical_solver, integrate


def condition_velocity(velocity, condition_row: dict[str, np.ndarray], guidance: float | None = None,
                       null_conditions: dict[str, np.ndarray] | None = None):
    """f(x, t) for one condition value (the same for every sample of the batch)."""

    def batch_of(values: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        return {name: np.repeat(np.asarray(value)[None], size, axis=0) for name, value in values.items()}

    def conditioned(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return velocity(x, t, batch_of(condition_row, x.shape[0]))

    if guidance is None:
        return conditioned
    unconditional = {**condition_row, **(null_conditions or {})}

    def guided(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return ((1.0 + guidance) * velocity(x, t, batch_of(condition_row, x.shape[0]))
                - guidance * velocity(x, t, batch_of(unconditional, x.shape[0])))

    return guided


def integrate_conditioned(velocity, noise: np.ndarray, conditions: dict[str, np.ndarray], solver: str,
                          grid: np.ndarray, fp_iterations: int | None = None, guidance: float | None = None,
                          null_conditions: dict[str, np.ndarray] | None = None) -> ReferenceResult:
    noise = np.asarray(noise, dtype=np.float64)
    batch = noise.shape[0]
    names = sorted(conditions)
    keys = [b"".join(np.ascontiguousarray(conditions[name][index]).tobytes() for name in names)
            for index in range(batch)]
    groups: dict[bytes, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    grid = np.asarray(grid, dtype=np.float64)
    trajectory = np.empty((grid.size, *noise.shape))
    residuals = np.zeros(grid.size - 1)
    fixed_point = np.zeros(grid.size - 1, dtype=np.int64)
    newton = np.zeros(grid.size - 1, dtype=np.int64)
    evaluations = 0
    for rows in groups.values():
        row = {name: conditions[name][rows[0]] for name in names}
        function = condition_velocity(velocity, row, guidance, null_conditions)
        result = integrate(function, noise[rows], solver, grid, fp_iterations)
        trajectory[:, rows] = result.trajectory
        residuals = np.maximum(residuals, result.residuals)
        fixed_point = np.maximum(fixed_point, result.fixed_point_iterations)
        newton = np.maximum(newton, result.newton_iterations)
        evaluations += result.function_evaluations
    return ReferenceResult(canonical_solver(solver), grid, trajectory, residuals, evaluations,
                           None if fp_iterations is None else int(fp_iterations), fixed_point, newton)
