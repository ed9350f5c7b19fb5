"""What ``admc verify`` found: each link of the chain, the sample distributions, the per-class figures, and
the arrays behind them.

Guarantees: :class:`VerifyReport` is typed data: ``passed`` is every judged link and every class within its
tolerance (an informative link, tolerance None, never fails); ``to_json`` is the ``verify.json`` document
(its ``per_class`` and ``conditions`` are empty for a program without condition inputs; ``twin`` is present
when a twin ran); the noise, trajectories and loop residual histories are attributes for plots and sweeps,
never part of the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.verify.conditions import ConditionDraw


@dataclass(frozen=True)
class LinkReport:
    name: str
    max_abs_error: float
    relative_error: float
    tolerance: float | None
    per_step_nrmse: list[float] = field(default_factory=list)
    # "relative_error" (final max abs error / RMS of the reference), "per_step_nrmse" (the worst step's NRMSE)
    # or "w2_ratio_to_gaussian" (W2 to the reference samples / W2 of a Gaussian fitted to them), or
    # "unsettled_fraction" (the largest fraction of samples a closed loop left unsettled; per phase in
    # ``per_step_nrmse``).
    criterion: str = "relative_error"

    @property
    def measured(self) -> float:
        if self.criterion == "per_step_nrmse":
            return float(max(self.per_step_nrmse, default=0.0))
        return self.relative_error

    @property
    def passed(self) -> bool:
        """An informative link (tolerance None) reports without judging."""
        return self.tolerance is None or bool(self.measured <= self.tolerance)

    def to_dict(self) -> dict:
        return {"link": self.name, "max_abs_error": self.max_abs_error, "relative_error": self.relative_error,
                "criterion": self.criterion, "measured": self.measured, "tolerance": self.tolerance,
                "passed": self.passed, "per_step_nrmse": self.per_step_nrmse}


@dataclass(frozen=True)
class VerifyReport:
    """One verification of a bundle on ``samples`` seeded samples (see the module docstring)."""

    bundle: str
    samples: int
    seed: int
    solver: str
    steps: int
    links: tuple[LinkReport, ...]
    reference_max_residual: float
    noise: np.ndarray  # [B, d], the seeded start samples every executor ran from
    trajectories: dict[str, np.ndarray]  # "reference", "ideal" (and "twin"): [T + 1, B, d]
    histories: dict[str, list]  # loop residuals per iteration of the first step's closed phases
    conditioning: ConditionDraw  # the drawn conditions (none for an unconditional program)
    program_criterion: str
    program_tolerance: float
    distributions: dict[str, dict] = field(default_factory=dict)  # MMD² and W2 against the reference samples
    twin: dict | None = None  # the twin's summary, when a twin ran
    per_class: tuple[dict, ...] = ()

    @property
    def passed(self) -> bool:
        return all(link.passed for link in self.links) and all(row["passed"] for row in self.per_class)

    @property
    def final_samples(self) -> dict[str, np.ndarray]:
        """Each executor's final samples [B, d], by name."""
        return {name: trajectory[-1] for name, trajectory in self.trajectories.items()}

    @property
    def conditions(self) -> dict[str, list[int]]:
        """The drawn conditions' shapes, by condition input."""
        return {name: list(np.asarray(values).shape) for name, values in self.conditioning.conditions.items()}

    def to_json(self) -> dict:
        """The ``verify.json`` document."""
        document = {"bundle": self.bundle, "samples": self.samples, "seed": self.seed, "solver": self.solver,
                    "steps": self.steps, "links": [link.to_dict() for link in self.links],
                    "reference_max_residual": self.reference_max_residual, "passed": self.passed,
                    "distributions": self.distributions, "per_class": list(self.per_class),
                    "conditions": self.conditions}
        return document if self.twin is None else {**document, "twin": self.twin}
