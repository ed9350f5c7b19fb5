"""Verification chain: source model ≡ canonical network ≡ bundle (ideal) [≈ bundle (twin)].

Each link is measured on the same seeded noise and the same drawn conditions (none for an unconditional
program): per-step NRMSE, max abs error, and the final-sample error relative to the sample scale (max abs
error / RMS of the reference samples). A link passes when its relative error is within its tolerance:
exact links (canonicalisation, ideal program of an exact target) get ``exact_tolerance``; a quantised
program gets the tolerance its target's quantisation explains. ``verify_bundle`` returns a
:class:`admc.verify.result.VerifyReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from admc.bundle.program import bundle_program, source_copy, source_velocity
from admc.bundle.store import Bundle
from admc.frontends.model_file import import_model
from admc.passes.canonicalize import canonicalize
from admc.runtime.executor import run_ideal
from admc.runtime.simulate import SimulateOptions, read_machine
from admc.targets.backends import backend_of_manifest
from admc.verify import conditions as verify_conditions
from admc.verify.metrics import gaussian_baseline, max_abs_error, mmd, per_step_nrmse, wasserstein2
from admc.verify.result import LinkReport, VerifyReport

EXACT_TOLERANCE = 1e-6
# The twin passes when its samples are at most this fraction as far (Wasserstein-2) from the reference
# samples as a Gaussian fitted to the reference is: the paper's baseline for judging analog samples.
TWIN_W2_RATIO = 0.5


def _scale(reference: np.ndarray) -> float:
    return float(max(np.sqrt(np.mean(reference ** 2)), 1e-300))


def trajectory_link(name: str, estimate: np.ndarray, reference: np.ndarray, tolerance: float | None,
                    criterion: str = "relative_error") -> LinkReport:
    error = max_abs_error(estimate[-1], reference[-1])
    steps = [float(value) for value in per_step_nrmse(estimate[1:], reference[1:])]
    return LinkReport(name, error, error / _scale(reference[-1]), tolerance, steps, criterion)


def canonical_link(bundle: Bundle, velocity, noise: np.ndarray, tolerance: float,
                   conditions: dict[str, np.ndarray]) -> LinkReport:
    """Re-canonicalise the bundled source and compare f on the noise (and the samples' ``conditions``) at
    the schedule's times."""
    return canonical_report(*canonical_errors(bundle, velocity, noise, conditions), tolerance)


def canonical_errors(bundle: Bundle, velocity, noise: np.ndarray,
                     conditions: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """Per grid time: the canonical network's max abs error against the source's velocity, and the RMS of
    the source's velocity (the scale the error is relative to)."""
    source = bundle.manifest["source"]
    with source_copy(bundle) as path:
        graph = import_model(path, source["format"])
        graph.state_input, graph.time_input = source["state_input"], source["time_input"]
        graph.condition_inputs = tuple(conditions)
        network = canonicalize(graph)
    grid = np.asarray(bundle.manifest["solver"]["grid"])
    errors, scales = [], []
    for time in grid:
        times = np.full(noise.shape[0], time)
        expected = velocity(noise, times, conditions)
        errors.append(max_abs_error(network.velocity(noise, times, conditions), expected))
        scales.append(_scale(expected))
    return errors, scales


def canonical_report(errors: list[float], scales: list[float], tolerance: float) -> LinkReport:
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


@dataclass(frozen=True)
class ChainRuns:
    """What the chain ran on its samples (all of them, or a contiguous slice: ``admc.verify.shards``)."""

    noise: np.ndarray  # [B, d]
    reference: np.ndarray  # [T + 1, B, d]
    reference_residual: float  # the reference executor's largest implicit-solve residual
    ideal: np.ndarray  # [T + 1, B, d]
    ideal_history: list  # loop residuals of step 0's closed phases: [k, B] each
    settled: list  # (step, phase, fraction of the samples settled) per closed phase
    canonical_errors: list[float]  # per grid time (``canonical_errors``)
    canonical_scales: list[float]
    solver: str
    steps: int


def chain_runs(bundle: Bundle, noise: np.ndarray, conditioning, record_residuals: bool = False) -> ChainRuns:
    """The reference executor, the ideal program and the canonical network on ``noise`` and ``conditioning``."""
    velocity = source_velocity(bundle)
    program, schedule, alpha = bundle_program(bundle)
    reference = verify_conditions.reference(conditioning, velocity, noise, schedule)
    ideal = run_ideal(program, schedule, alpha, noise, conditioning.run.drive(program),
                      record_residuals=record_residuals, record_settling=True)
    errors, scales = canonical_errors(bundle, velocity, noise, conditioning.conditions)
    return ChainRuns(noise, reference.trajectory, float(np.max(reference.residuals, initial=0.0)),
                     ideal.trajectory, ideal.residual_history, ideal.settled, errors, scales, schedule.solver,
                     len(schedule.steps))


def chain_report(bundle: Bundle, samples: int, seed: int, runs: ChainRuns, conditioning,
                 tolerance: float | None = None) -> VerifyReport:
    """The ideal chain's links judged on ``runs`` (every sample of the draw for ``samples`` and ``seed``)."""
    criterion, bound = program_criterion(bundle)
    program_tolerance = bound if tolerance is None else tolerance
    links = (canonical_report(runs.canonical_errors, runs.canonical_scales, EXACT_TOLERANCE),
             trajectory_link("source (reference executor) ≡ bundle (ideal executor)", runs.ideal,
                             runs.reference, program_tolerance, criterion),
             *([settled_link(runs.settled)] if runs.settled else []))  # only where there are loops
    return VerifyReport(str(bundle.path), samples, seed, runs.solver, runs.steps, links, runs.reference_residual,
                        runs.noise, {"reference": runs.reference, "ideal": runs.ideal},
                        {"ideal": runs.ideal_history}, conditioning, criterion, program_tolerance)


def seeded_noise(bundle: Bundle, samples: int, seed: int) -> np.ndarray:
    """The start samples verify runs from: [samples, d] standard normal draws of ``seed``."""
    dimension = int(bundle.manifest["source"]["state_dimension"])
    return np.random.default_rng(seed).standard_normal((samples, dimension))


def verify_ideal_chain(bundle: Bundle, samples: int = 256, seed: int = 0,
                       tolerance: float | None = None, record_residuals: bool = False) -> VerifyReport:
    """source ≡ canonical network ≡ bundle (ideal executor), on seeded noise and drawn conditions."""
    conditioning = verify_conditions.draw(bundle, samples, seed)
    runs = chain_runs(bundle, seeded_noise(bundle, samples, seed), conditioning, record_residuals)
    return chain_report(bundle, samples, seed, runs, conditioning, tolerance)


def settled_link(settled: list[tuple[int, int, float]]) -> LinkReport:
    """Every closed loop of the ideal executor settled on every sample: judged on the fraction of samples not
    settled in the worst phase (0 to pass); per phase, the fraction settled (``per_step_nrmse`` holds the
    fraction *not* settled per closed phase, in schedule order, for the JSON report)."""
    unsettled = [1.0 - fraction for _, _, fraction in settled]
    worst = max(range(len(unsettled)), key=unsettled.__getitem__, default=None)
    where = "" if worst is None else f", worst step {settled[worst][0]} phase {settled[worst][1]}"
    return LinkReport(f"every closed loop settled (ideal executor): fraction of samples not settled{where}",
                      max(unsettled, default=0.0), max(unsettled, default=0.0), 0.0, unsettled,
                      "unsettled_fraction")


def distribution_distances(samples: np.ndarray, reference: np.ndarray) -> dict:
    return {"mmd": float(mmd(samples, reference)), "wasserstein2": float(wasserstein2(samples, reference))}


def twin_links(twin: np.ndarray, trajectories: dict[str, np.ndarray], distances: dict, baseline: float,
               twin_ratio: float, twin_nrmse: float | None) -> list[LinkReport]:
    """The twin's links: its W2 to the reference relative to a Gaussian fit's (judged), optionally its
    per-step NRMSE (judged), and its per-step distance to the ideal program (informative)."""
    reference = trajectories["reference"]
    links = [LinkReport("source (reference samples) ≈ bundle (twin samples), W2 / W2 of a Gaussian fit",
                        max_abs_error(twin[-1], reference[-1]), distances["wasserstein2"] / max(baseline, 1e-300),
                        twin_ratio, [float(value) for value in per_step_nrmse(twin[1:], reference[1:])],
                        "w2_ratio_to_gaussian")]
    if twin_nrmse is not None:
        links.append(trajectory_link("source (reference) ≈ bundle (twin), per step", twin, reference, twin_nrmse,
                                     "per_step_nrmse"))
    links.append(trajectory_link("bundle (ideal) ≈ bundle (twin), per step [informative]", twin,
                                 trajectories["ideal"], None, "per_step_nrmse"))
    return links


def twin_options_for(bundle: Bundle, options: SimulateOptions, conditioning) -> SimulateOptions:
    """The twin's options with the measured machine read and the drawn conditions as the run's."""
    return replace(options, calibration=read_machine(bundle, options.calibration), conditions=conditioning.run)


def _run_twin(result: VerifyReport, bundle: Bundle, backend, options: SimulateOptions, progress):
    say = progress or (lambda message: None)
    say(f"digital twin ({options.mode})")
    twin_progress = None
    if progress is not None:
        def twin_progress(step: int, steps: int) -> None:
            if step % max(1, steps // 4) == 0:
                say(f"digital twin: step {step} of {steps}")

    return backend.run_twin(bundle, result.noise, twin_options_for(bundle, options, result.conditioning),
                            twin_progress)


def judged(result: VerifyReport, run, twin_ratio: float, twin_nrmse: float | None) -> VerifyReport:
    """The ideal chain's report with the sample distances, the twin's links (``run``: its ``TwinRun``, or None)
    and the per-class figures."""
    reference = result.trajectories["reference"][-1]
    gaussian = gaussian_baseline(reference, reference.shape[0], result.seed + 1)
    result = replace(result, distributions={
        "ideal program": distribution_distances(result.trajectories["ideal"][-1], reference),
        "gaussian fit (baseline)": distribution_distances(gaussian, reference)})
    if run is not None:
        distances = distribution_distances(run.trajectory[-1], reference)
        baseline = result.distributions["gaussian fit (baseline)"]["wasserstein2"]
        links = twin_links(run.trajectory, result.trajectories, distances, baseline, twin_ratio, twin_nrmse)
        result = replace(result, links=(*result.links, *links), twin=run.summary,
                         distributions={**result.distributions, "twin": distances},
                         trajectories={**result.trajectories, "twin": run.trajectory},
                         histories={**result.histories, "twin": run.residual_history})
    return replace(result, per_class=verify_conditions.per_class(
        result.conditioning, result.trajectories, result.program_tolerance, twin_ratio, result.seed,
        result.program_criterion))


def verify_bundle(bundle: Bundle, samples: int = 256, seed: int = 0, tolerance: float | None = None,
                  twin: bool = True, twin_options: SimulateOptions | dict | None = None,
                  twin_ratio: float = TWIN_W2_RATIO, twin_nrmse: float | None = None,
                  progress=None) -> VerifyReport:
    """The whole chain; the twin links are added for targets whose backend has a twin (``twin_options``:
    how it runs, a ``SimulateOptions`` or a mapping of its fields); the per-class figures for a program
    with a class-valued condition. (``admc.verify.shards``: the same over slices of the samples.)"""
    verify_conditions.check_declared(bundle)  # refuse undeclared condition distributions before any work
    (progress or (lambda message: None))("reference executor and ideal program")
    result = verify_ideal_chain(bundle, samples, seed, tolerance, record_residuals=True)
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    run = None
    if twin and backend is not None and backend.run_twin is not None:
        run = _run_twin(result, bundle, backend, SimulateOptions.of(twin_options), progress)
    return judged(result, run, twin_ratio, twin_nrmse)
