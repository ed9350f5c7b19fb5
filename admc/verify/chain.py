"""Verification chain: source model ≡ canonical network ≡ bundle (ideal) [≈ bundle (twin)].

Each link is measured on the same seeded noise: per-step NRMSE, max abs error, and the final-sample error
relative to the sample scale (max abs error / RMS of the reference samples). A link passes when its
relative error is within its tolerance: exact links (canonicalisation, ideal program of an exact target)
get ``exact_tolerance``; a quantised program gets the tolerance its target's quantisation explains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admc.bundle.program import bundle_program, source_copy, source_velocity
from admc.bundle.store import Bundle
from admc.frontends.onnx_import import import_onnx
from admc.frontends.torch_export import load_pt2
from admc.passes.canonicalize import canonicalize
from admc.runtime.execute import run_ideal
from admc.runtime.reference import integrate
from admc.targets.backends import backend_of_manifest
from admc.verify import conditions as verify_conditions
from admc.verify.metrics import gaussian_baseline, max_abs_error, mmd, per_step_nrmse, wasserstein2

EXACT_TOLERANCE = 1e-6
# The twin passes when its samples are at most this fraction as far (Wasserstein-2) from the reference
# samples as a Gaussian fitted to the reference is: the paper's baseline for judging analog samples.
TWIN_W2_RATIO = 0.5


@dataclass
class LinkReport:
    name: str
    max_abs_error: float
    relative_error: float
    tolerance: float | None
    per_step_nrmse: list[float] = field(default_factory=list)
    # "relative_error" (final max abs error / RMS of the reference), "per_step_nrmse" (the worst step's NRMSE)
    # or "w2_ratio_to_gaussian" (W2 to the reference samples / W2 of a Gaussian fitted to them).
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


def _scale(reference: np.ndarray) -> float:
    return float(max(np.sqrt(np.mean(reference ** 2)), 1e-300))


def trajectory_link(name: str, estimate: np.ndarray, reference: np.ndarray, tolerance: float | None,
                    criterion: str = "relative_error") -> LinkReport:
    error = max_abs_error(estimate[-1], reference[-1])
    steps = [float(value) for value in per_step_nrmse(estimate[1:], reference[1:])]
    return LinkReport(name, error, error / _scale(reference[-1]), tolerance, steps, criterion)


def canonical_link(bundle: Bundle, velocity, noise: np.ndarray, tolerance: float,
                   conditions: dict | None = None) -> LinkReport:
    """Re-canonicalise the bundled source and compare f on the noise at the schedule's times (with the
    samples' ``conditions`` for a conditional model)."""
    source = bundle.manifest["source"]
    with source_copy(bundle) as path:
        graph = import_onnx(path) if source["format"] == "onnx" else load_pt2(path)
        graph.state_input, graph.time_input = source["state_input"], source["time_input"]
        graph.condition_inputs = tuple(conditions or ())
        network = canonicalize(graph)
    grid = np.asarray(bundle.manifest["solver"]["grid"])
    errors, scales = [], []
    for time in grid:
        times = np.full(noise.shape[0], time)
        expected = velocity(noise, times, conditions) if conditions else velocity(noise, times)
        errors.append(max_abs_error(network.velocity(noise, times, conditions), expected))
        scales.append(_scale(expected))
    worst = int(np.argmax(np.asarray(errors) / np.asarray(scales)))
    return LinkReport("source ≡ canonical network (velocity at the grid times)", float(max(errors)),
                      errors[worst] / scales[worst], tolerance)


def program_criterion(bundle: Bundle) -> tuple[str, float]:
    """The program link's criterion and bound, from the (validated) target description — never from an
    editable manifest field: exact targets get EXACT_TOLERANCE on the final relative error; a quantised
    target its worst per-step NRMSE bound for its SLM depth (what its backend promises)."""
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if backend is not None and backend.verify_bound is not None:
        return backend.verify_bound(bundle)
    return "relative_error", EXACT_TOLERANCE


def verify_ideal_chain(bundle: Bundle, samples: int = 256, seed: int = 0,
                       tolerance: float | None = None, record_residuals: bool = False) -> dict:
    dimension = int(bundle.manifest["source"]["state_dimension"])
    noise = np.random.default_rng(seed).standard_normal((samples, dimension))
    velocity = source_velocity(bundle)
    program, schedule, alpha = bundle_program(bundle)
    conditioning = verify_conditions.draw(bundle, samples, seed)  # None for unconditional programs
    if conditioning is None:
        reference = integrate(velocity, noise, schedule.solver, schedule.grid, schedule.fp_iterations)
        drive = None
    else:
        reference = verify_conditions.reference(conditioning, velocity, noise, schedule)
        drive = conditioning.interface.drive_function(program, conditioning.conditions)
    ideal = run_ideal(program, schedule, alpha, noise, drive, record_residuals=record_residuals)
    criterion, bound = program_criterion(bundle)
    links = [
        canonical_link(bundle, velocity, noise, EXACT_TOLERANCE, conditioning and conditioning.conditions),
        trajectory_link("source (reference executor) ≡ bundle (ideal executor)", ideal.trajectory,
                        reference.trajectory, bound if tolerance is None else tolerance, criterion),
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
        "_histories": {"ideal": ideal.residual_history},
        "_noise": noise,
        "_conditioning": conditioning,
        "_program_tolerance": bound if tolerance is None else tolerance,
    }


def distribution_distances(samples: np.ndarray, reference: np.ndarray) -> dict:
    return {"mmd": float(mmd(samples, reference)), "wasserstein2": float(wasserstein2(samples, reference))}


def verify_bundle(bundle: Bundle, samples: int = 256, seed: int = 0, tolerance: float | None = None,
                  twin: bool = True, twin_options: dict | None = None, twin_ratio: float = TWIN_W2_RATIO,
                  twin_nrmse: float | None = None, progress=None) -> dict:
    """The whole chain; the twin links are added for targets whose backend has a twin."""
    say = progress or (lambda message: None)
    verify_conditions.check_declared(bundle)  # refuse undeclared condition distributions before any work
    say("reference executor and ideal program")
    report = verify_ideal_chain(bundle, samples, seed, tolerance, record_residuals=True)
    trajectories = report["_trajectories"]
    reference = trajectories["reference"][-1]
    gaussian = gaussian_baseline(reference, reference.shape[0], seed + 1)
    report["distributions"] = {"ideal program": distribution_distances(trajectories["ideal"][-1], reference),
                               "gaussian fit (baseline)": distribution_distances(gaussian, reference)}
    report["_samples"] = {"reference": reference, "ideal": trajectories["ideal"][-1]}
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    if twin and backend is not None and backend.run_twin is not None:
        options = dict(twin_options or {})
        say(f"digital twin ({options.get('mode', 'discrete')})")
        twin_progress = None
        if progress is not None:
            def twin_progress(step: int, steps: int) -> None:
                if step % max(1, steps // 4) == 0:
                    say(f"digital twin: step {step} of {steps}")

        if report["_conditioning"] is not None:
            options["conditioning"] = report["_conditioning"]
        result = backend.run_twin(bundle, report["_noise"], options, twin_progress)
        twin_samples = result.trajectory[-1]
        report["_samples"]["twin"] = twin_samples
        report["_histories"]["twin"] = result.residual_history
        distances = distribution_distances(twin_samples, reference)
        report["distributions"]["twin"] = distances
        baseline = report["distributions"]["gaussian fit (baseline)"]["wasserstein2"]
        ratio_link = LinkReport("source (reference samples) ≈ bundle (twin samples), W2 / W2 of a Gaussian fit",
                                max_abs_error(twin_samples, reference),
                                distances["wasserstein2"] / max(baseline, 1e-300), twin_ratio,
                                [float(value) for value in per_step_nrmse(result.trajectory[1:],
                                                                          trajectories["reference"][1:])],
                                "w2_ratio_to_gaussian")
        links = [ratio_link]
        if twin_nrmse is not None:
            links.append(trajectory_link("source (reference) ≈ bundle (twin), per step", result.trajectory,
                                         trajectories["reference"], twin_nrmse, "per_step_nrmse"))
        links.append(trajectory_link("bundle (ideal) ≈ bundle (twin), per step [informative]",
                                     result.trajectory, trajectories["ideal"], None, "per_step_nrmse"))
        report["links"] += [link.to_dict() for link in links]
        report["twin"] = result.summary
        report["passed"] = all(link["passed"] for link in report["links"])
        trajectories["twin"] = result.trajectory
    if report["_conditioning"] is not None:
        classes = verify_conditions.per_class(report["_conditioning"], trajectories, report["_program_tolerance"],
                                              twin_ratio, seed, program_criterion(bundle)[0])
        report["per_class"] = classes
        report["conditions"] = {name: list(np.asarray(values).shape)
                                for name, values in report["_conditioning"].conditions.items()}
        report["passed"] = bool(report["passed"] and all(row["passed"] for row in classes))
    return report
