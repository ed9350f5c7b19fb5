"""Verification chain: source model ≡ canonical network ≡ bundle (ideal) [≈ bundle (twin)].

Each link is measured on the same seeded noise: per-step NRMSE, max abs error, and the final-sample error
relative to the sample scale (max abs error / RMS of the reference samples). A link passes when its
relative error is within its tolerance: exact links (canonicalisation, ideal program of an exact target)
get ``exact_tolerance``; a quantised program gets the tolerance its target's quantisation explains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.bundle import Bundle
from admc.bundle_program import bundle_program, source_velocity
from admc.executor import IdealExecutor
from admc.frontends.onnx_import import import_onnx
from admc.frontends.torch_export import load_pt2
from admc.metrics import max_abs_error, per_step_nrmse
from admc.passes.canonicalize import canonicalize
from admc.reference import integrate

EXACT_TOLERANCE = 1e-6


@dataclass
class LinkReport:
    name: str
    max_abs_error: float
    relative_error: float
    tolerance: float
    per_step_nrmse: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.relative_error <= self.tolerance)

    def to_dict(self) -> dict:
        return {"link": self.name, "max_abs_error": self.max_abs_error, "relative_error": self.relative_error,
                "tolerance": self.tolerance, "passed": self.passed, "per_step_nrmse": self.per_step_nrmse}


def _scale(reference: np.ndarray) -> float:
    return float(max(np.sqrt(np.mean(reference ** 2)), 1e-300))


def trajectory_link(name: str, estimate: np.ndarray, reference: np.ndarray, tolerance: float) -> LinkReport:
    error = max_abs_error(estimate[-1], reference[-1])
    steps = [float(value) for value in per_step_nrmse(estimate[1:], reference[1:])]
    return LinkReport(name, error, error / _scale(reference[-1]), tolerance, steps)


def canonical_link(bundle: Bundle, velocity, noise: np.ndarray, tolerance: float) -> LinkReport:
    """Re-canonicalise the bundled source and compare f on the noise at the schedule's times."""
    source = bundle.manifest["source"]
    path = bundle.path / source["payload"]
    graph = import_onnx(path) if source["format"] == "onnx" else load_pt2(path)
    graph.state_input, graph.time_input = source["state_input"], source["time_input"]
    network = canonicalize(graph)
    grid = np.asarray(bundle.manifest["solver"]["grid"])
    errors, scales = [], []
    for time in grid:
        times = np.full(noise.shape[0], time)
        expected = velocity(noise, times)
        errors.append(max_abs_error(network.velocity(noise, times), expected))
        scales.append(_scale(expected))
    worst = int(np.argmax(np.asarray(errors) / np.asarray(scales)))
    return LinkReport("source ≡ canonical network (velocity at the grid times)", float(max(errors)),
                      errors[worst] / scales[worst], tolerance)


def program_tolerance(bundle: Bundle) -> float:
    """Exact targets: EXACT_TOLERANCE; a quantised target states its own bound in the manifest."""
    bound = bundle.manifest.get("report", {}).get("verify_tolerance")
    return float(bound) if bound is not None else EXACT_TOLERANCE


def verify_ideal_chain(bundle: Bundle, samples: int = 256, seed: int = 0,
                       tolerance: float | None = None) -> dict:
    dimension = int(bundle.manifest["source"]["state_dimension"])
    noise = np.random.default_rng(seed).standard_normal((samples, dimension))
    velocity = source_velocity(bundle)
    program, schedule, alpha = bundle_program(bundle)
    reference = integrate(velocity, noise, schedule.solver, schedule.grid, schedule.fp_iterations)
    ideal = IdealExecutor(program, alpha).run(schedule, noise)
    links = [
        canonical_link(bundle, velocity, noise, EXACT_TOLERANCE),
        trajectory_link("source (reference executor) ≡ bundle (ideal executor)", ideal.trajectory,
                        reference.trajectory, program_tolerance(bundle) if tolerance is None else tolerance),
    ]
    return {
        "bundle": str(bundle.path),
        "samples": samples,
        "seed": seed,
        "solver": schedule.solver,
        "steps": len(schedule.steps),
        "links": [link.to_dict() for link in links],
        "reference_max_residual": float(np.max(reference.residuals, initial=0.0)),
        "passed": all(link.passed for link in links),
        "_trajectories": {"reference": reference.trajectory, "ideal": ideal.trajectory},
    }
