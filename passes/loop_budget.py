"""Convergence pass: certificates, measured iterations and the loop budget of every closed phase.

Requires: the program whose weights the target realises, the schedule, the chosen α ([n] or [phases, n]),
the target's settle tolerance and (optionally) its loop iteration time. Guarantees: a JSON-able section
(manifest key ``convergence``) with, per closed phase, the certificates of ``convergence_certificates`` for
that phase's α, the iterations certified and measured on seeded calibration samples (ideal execution to the
settle tolerance), and the settle time; T_min per solver; and ``loop_budget``, the largest iterations any
closed phase needs (measured, else certified), which the twin and ``admc simulate`` default to; ``local``,
the local certificates (``local_certificates``) over the box the same calibration run visits (no other run).
Where no certificate holds but the samples settle, ``notes`` says so plainly; that is not an error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from admc.core.errors import AdmcError, ConvergenceError
from admc.ir.program import BlockProgram, Schedule
from admc.passes.alpha_selection import BLAS_THREADS, closed_phases
from admc.passes.convergence_certificates import SDP_LIMIT, certify_phase, steps_needed
from admc.passes.local_certificates import LOCAL_MARGIN, LOCAL_PHASES, BoxRecorder, local_certificate
from admc.runtime.executor import float32_products_for, samples_within_work

if TYPE_CHECKING:
    from admc.runtime.conditioning import ConditionSampler

BUDGET_SAMPLES = 32
# 32 samples up to 65,536 weights, fewer above (never under 16): at 36M weights a sample's loops cost about
# as much as a whole small build, and a program's slowest loop is found among 16 as well as among 32 (the
# margin below covers what the samples miss).
BUDGET_WORK = BUDGET_SAMPLES << 16
BUDGET_MIN_SAMPLES = 16
BUDGET_SEED = 1
BUDGET_MAX_ITERATIONS = 100_000
# The budget is this × the iterations the ideal program needs: room for the machine's non-idealities (the
# twin's measured sigmoid and noise settle more slowly; 2× sufficed for two-moons on aoc-48, an assumption).
BUDGET_MARGIN = 2.0
# Distinct (step scale, α) pairs that get the semidefinite certificate (each is a bisection of SDP solves).
SDP_PHASES = 1


def _alpha_row(alpha: np.ndarray, row: int) -> np.ndarray:
    return alpha[row] if alpha.ndim == 2 else alpha


def measured_iterations(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, tolerance: float,
                        conditions: ConditionSampler | None = None
                        ) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]]] | None:
    """Iterations per phase (flat) on the calibration samples (with their conditions, for a conditional program)
    and the box each closed loop visited."""
    samples = samples_within_work(program, BUDGET_WORK, BUDGET_MIN_SAMPLES, BUDGET_SAMPLES)
    noise = np.random.default_rng(BUDGET_SEED).standard_normal((samples, program.state_dimension))
    recorder = BoxRecorder(program, alpha, tolerance=tolerance, max_iterations=BUDGET_MAX_ITERATIONS,
                           float32_products=float32_products_for(program, tolerance))
    try:
        drive = None if conditions is None else conditions(program, samples, BUDGET_SEED)
        result = recorder.run(schedule, noise, drive)
    except ConvergenceError:
        return None
    return [count for step in result.iterations for count in step], recorder.boxes


def convergence_section(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, settle_tolerance: float,
                        loop_iteration_s: float | None = None, selection: dict | None = None,
                        conditions: ConditionSampler | None = None) -> dict:
    # Small dense factorisations: BLAS threads only add synchronisation (as in the α pass).
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        return _convergence_section(program, schedule, alpha, settle_tolerance, loop_iteration_s, selection,
                                    conditions)


def _convergence_section(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, settle_tolerance: float,
                         loop_iteration_s: float | None, selection: dict | None,
                         conditions: ConditionSampler | None = None) -> dict:
    flat = [phase for phases in schedule.steps for phase in phases]
    recorded = measured_iterations(program, schedule, alpha, settle_tolerance, conditions)
    measured = None if recorded is None else recorded[0]
    cache: dict[tuple, dict] = {}
    norms: dict = {}  # block norms shared by every phase's certificate and the T_min bounds (group_norms)
    phases, notes = [], []
    for step, index, row in closed_phases(schedule):
        phase_alpha = _alpha_row(alpha, row)
        key = (flat[row].step_scale, phase_alpha.tobytes())
        if key not in cache:
            cache[key] = certify_phase(program, flat[row], phase_alpha, settle_tolerance,
                                       sdp=len(cache) < SDP_PHASES, memo=norms)
        certificate = cache[key]
        count = None if measured is None else measured[row]
        needed = count if count is not None else certificate["certified_iterations"]
        phases.append({"step": step, "phase": index, "alpha_max": float(np.max(phase_alpha, initial=0.0)),
                       "alpha_mean": float(np.mean(phase_alpha)) if phase_alpha.size else 0.0,
                       **certificate, "measured_iterations": count, "iterations": needed,
                       "settle_time_s": None if needed is None or loop_iteration_s is None
                       else needed * loop_iteration_s})
    uncertified = [entry for entry in phases if not entry["best"] < 1.0]
    if uncertified and measured is not None:
        notes.append(f"{len(uncertified)} of {len(phases)} closed phases have no certificate (best bound "
                     f"{max(entry['best'] for entry in uncertified):.3g} ≥ 1): the certificates are sufficient, "
                     "not necessary; the calibration samples settle, so the build carries on")
    if measured is None and phases:
        notes.append("the calibration samples did not settle within "
                     f"{BUDGET_MAX_ITERATIONS} iterations with this α (built with --force?)")
    if program.size > SDP_LIMIT and phases and SDP_PHASES > 0:
        # A dense semidefinite search is cubic in the channels: past the limit neither the global SDP nor the
        # local certificates run, and the manifest says so rather than leaving the reader to guess.
        notes.append(f"no semidefinite certificates (global SDP and local): {program.size} channels > "
                     f"{SDP_LIMIT}, where the dense search stops scaling; Theorem 1 and the block bound stand")
    budgets = [entry["iterations"] for entry in phases if entry["iterations"] is not None]
    first_alpha = _alpha_row(alpha, closed_phases(schedule)[0][2]) if phases else np.zeros(program.size)
    return {
        "settle_tolerance": settle_tolerance,
        "loop_iteration_s": loop_iteration_s,
        "loop_budget": math.ceil(BUDGET_MARGIN * max(budgets)) if budgets else None,
        "budget_margin": BUDGET_MARGIN,
        "total_iterations": int(sum(budgets)) if budgets else None,
        "settle_time_s": None if not budgets or loop_iteration_s is None else sum(budgets) * loop_iteration_s,
        "t_min": steps_needed(program, first_alpha, norms),
        "alpha": selection or {},
        "phases": phases,
        "local": _local_section(program, schedule, alpha, settle_tolerance, recorded, phases),
        "notes": notes,
    }


def _local_section(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, tolerance: float,
                   recorded: tuple | None, phases: list[dict]) -> dict:
    """Local certificates of the ``LOCAL_PHASES`` slowest closed phases over the boxes the calibration run
    visited (none when it did not settle, when ``SDP_PHASES`` is 0, or above ``SDP_LIMIT`` channels: each is a
    dense semidefinite search too).
    The local T_min is not derived: the box is that of this schedule's trajectories, and another T has other
    trajectories (a box from this T proves nothing there)."""
    section = {"margin": LOCAL_MARGIN, "samples": samples_within_work(program, BUDGET_WORK, BUDGET_MIN_SAMPLES,
                                                                        BUDGET_SAMPLES),
               "seed": BUDGET_SEED, "t_min": None,
               "phases": []}
    if recorded is None or not phases or program.size > SDP_LIMIT:
        return section
    flat = [phase for steps in schedule.steps for phase in steps]
    closed = closed_phases(schedule)
    order = sorted(range(len(closed)), key=lambda position: -(phases[position]["measured_iterations"] or 0))
    for position in sorted(order[:LOCAL_PHASES if SDP_PHASES > 0 else 0]):
        step, index, row = closed[position]
        entry = phases[position]
        low, high = recorded[1][position]
        certificate = local_certificate(program, flat[row], _alpha_row(alpha, row), low, high, tolerance,
                                        entry["best"])
        section["phases"].append({"step": step, "phase": index, **certificate, "global": entry["best"],
                                  "measured_iterations": entry["measured_iterations"]})
    return section


def bundle_loop_budget(manifest: dict) -> int | None:
    """The loop budget a bundle records (None for bundles without one)."""
    budget = manifest.get("convergence", {}).get("loop_budget")
    return int(budget) if isinstance(budget, int) and budget > 0 else None


def describe(section: dict) -> list[str]:
    """Lines for ``admc inspect``; a section that is not what ``convergence_section`` writes is refused."""
    if not section:
        return []
    try:
        return _describe(section)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise AdmcError(f"manifest section 'convergence' is malformed ({type(error).__name__}: {error})") from None


def _describe(section: dict) -> list[str]:
    lines = [f"convergence settle tolerance {section['settle_tolerance']:.1e}, loop budget "
             f"{section['loop_budget']} iterations per closed phase, {section['total_iterations']} in all"
             + (f" ({section['settle_time_s'] * 1e6:.2f} µs)" if section.get("settle_time_s") else "")]
    alpha = section.get("alpha", {})
    if alpha:
        lines.extend(_describe_alpha(alpha))
    for entry in section["phases"][:8]:
        sdp = "—" if entry["sdp"] is None else f"{entry['sdp']:.4f}"
        lines.append(f"  step {entry['step']} phase {entry['phase']}: Theorem 1 {entry['theorem1']:.4f}, block "
                     f"{entry['block']:.4f}, SDP {sdp}; iterations certified {entry['certified_iterations']}, "
                     f"measured {entry['measured_iterations']}")
    if len(section["phases"]) > 8:
        lines.append(f"  … {len(section['phases']) - 8} more closed phases")
    for solver, bounds in section.get("t_min", {}).items():
        lines.append(f"  T_min {solver}: Theorem 1 {bounds.get('theorem1')}, block {bounds.get('block')}")
    local = section.get("local") or {}
    for entry in local.get("phases", []):
        raw = entry["contraction_raw"]
        value = "none below 1" if raw is None else f"{raw:.4f} from iteration {entry.get('from_iteration', 0)}"
        lines.append(f"  local (a full-P norm per box of the states each of the {local['samples']} calibration "
                     f"samples visits, widened by {100 * local['margin']:g} %): step {entry['step']} phase "
                     f"{entry['phase']} {value} (global {entry['global']:.4f}); iterations certified "
                     f"{entry['certified_iterations']}")
    lines.extend(f"note: {note}" for note in section.get("notes", []))
    return lines


def _describe_alpha(alpha: dict) -> list[str]:
    """The α pass's record: mode and range, each candidate's worst spectral radius and probe iterations, the
    choice, and the acceptance on fresh samples."""
    candidates = alpha.get("candidates", {})
    lines = [f"  α mode {alpha.get('mode')}, α in [{alpha.get('alpha_min', 0):.3f}, {alpha.get('alpha_max', 0):.3f}]"
             f" ({alpha.get('distinct_values', '?')} distinct values), chosen: "
             f"{', '.join(candidates.get('chosen', [])) or alpha.get('mode')}"]
    iterations = candidates.get("probe_iterations", {})
    radii = [f"{name} {value:.3f}" + (f" ({iterations[name]:.0f} it.)" if iterations.get(name) else "")
             for name, value in candidates.items() if isinstance(value, float)]
    if radii:
        lines.append("  worst spectral radius at the linearisations: " + "; ".join(radii))
    acceptance = alpha.get("acceptance")
    if acceptance:
        verdict = "settled" if acceptance["settled"] else f"did not settle ({acceptance['failure']})"
        lines.append(f"  acceptance: {acceptance['samples']} fresh samples (seed {acceptance['seed']}) {verdict}, "
                     f"slowest closed loop {acceptance['largest_iterations']} iterations")
    return lines
