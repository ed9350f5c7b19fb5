"""Issue 22's α benchmark: loop iterations of `min`, best block-wise, `auto` and an offline channel-wise limit;
spectral radii block-wise against channel-wise; the α pass's time by part and at scale.

    python benchmarks/alpha_channelwise.py iterations [--steps 2 4 8 16] [--networks …] [--targets ideal aoc-48]
    python benchmarks/alpha_channelwise.py timing [--channels 66 1000 5000] [--random 60]

``iterations``: implicit Euler, each network compiled for each target (random-4x24: a random block program,
ideal only). Per cell, total loop iterations over every closed phase to 1e-10, from the states the loops
enter with on the benchmark's 32 samples (seed 0), for:
- ``min``: the smallest α the target allows (its gain range on aoc-48);
- ``blockwise``: the best block-wise α found by a coordinate search over one α per state group on the grid
  0, 0.1, …, 0.9 (clipped into the bounds), measured in-sample (two sweeps);
- ``auto``: the α pass (chosen on its own seed-7 samples);
- ``limit``: the best channel-wise α an expensive offline search finds: the channel-wise cone-program descent
  (``alpha_channelwise.descend``) from `auto`, `min`, the block-wise best and four random starts, on the
  linearisations at the benchmark's own fixed points, every result measured in-sample; the fewest wins.
``held_out``: each of the four α scored on 8 fresh sets of 32 samples (seed 100), mean total — the fair
comparison (no choice has seen them). ``radius``: the worst spectral radius at the pass's linearisations,
block-wise against channel-wise (from the pass's report).
``timing``: the α pass and its parts on two moons (aoc-48 and ideal), on random direct-layout programs of
``--channels`` channels (one step), and the slowest of ``--random`` small random programs (the fuzz set of
tests/test_channelwise_alpha.py); wall and CPU seconds, since the machine may be shared.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from alpha_benchmark import SOURCES, SeededAdm, held_out_sets, source_of, spine  # noqa: E402

from admc.compiler.driver import BuildOptions, compile_source  # noqa: E402
from admc.core.errors import AdmcError, ConvergenceError  # noqa: E402
from admc.passes.alpha_channelwise import descend  # noqa: E402
from admc.passes.alpha_probe import ProbeRecorder, probe_iterations  # noqa: E402
from admc.passes.alpha_selection import AlphaCapabilities, closed_phases, select_alpha  # noqa: E402
from admc.passes.loop_jacobian import loop_matrix, slopes  # noqa: E402
from admc.runtime.executor import IdealExecutor  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402

TOLERANCE = 1e-10
LIMIT = 5_000
GRID = np.round(np.arange(0.0, 0.91, 0.1), 2)
RANDOM_STARTS = 4
HOLD_OUTS = {"holdout-adm-2x32": lambda: SeededAdm((32, 32), seed=5, gain=1.6),
             "holdout-adm-1x64": lambda: SeededAdm((64,), seed=6, gain=2.0)}
SOURCES.update(HOLD_OUTS)


def measured(recorder: ProbeRecorder, table: np.ndarray, per_phase: bool) -> np.ndarray:
    """In-sample iterations [candidates, closed phases] of α candidates [C, n] (or [C, phases, n] per phase)."""
    columns = []
    for index, probe in enumerate(recorder.probes):
        candidates = table[:, index] if per_phase else table
        columns.append(probe_iterations(recorder, probe, candidates, TOLERANCE, LIMIT, patience=1e9))
    return np.stack(columns, axis=1)


def iterations_per_phase(program, schedule, alpha, sets) -> np.ndarray | None:
    """Loop iterations per (held-out set, phase), [sets, phases]; None when a loop does not settle."""
    counts = []
    for noise in sets:
        try:
            result = IdealExecutor(program, alpha, tolerance=TOLERANCE, max_iterations=LIMIT).run(schedule, noise)
        except ConvergenceError:
            return None
        counts.append([count for step in result.iterations for count in step])
    return np.array(counts, dtype=float)


def held_out(program, schedule, alpha, sets) -> float | None:
    """Mean over the held-out sets of the total iterations (None: a loop does not settle)."""
    counts = iterations_per_phase(program, schedule, alpha, sets)
    return None if counts is None else float(np.mean(counts.sum(axis=1)))


def _as_rows(alpha: np.ndarray, closed: list, per_phase: bool) -> np.ndarray:
    """α [n] or [phases, n] as one row per closed phase [closed, n] (a per-phase table's closed rows)."""
    return np.stack([alpha[row] for _, _, row in closed]) if per_phase else alpha


def blockwise_search(recorder, program, closed, floor: np.ndarray, per_phase: bool) -> np.ndarray:
    """Coordinate search over one α per state group, measured in-sample (per phase, or for the program)."""
    groups = [slice(group.offset, group.stop) for group in program.groups if group.size]
    shape = (len(closed), program.size) if per_phase else (program.size,)
    alpha = np.broadcast_to(floor, shape).copy()
    for _ in range(2):
        for part in groups:
            candidates = np.repeat(alpha[None], GRID.size, axis=0)
            candidates[..., part] = GRID[:, None] if not per_phase else GRID[:, None, None]
            candidates = np.maximum(candidates, floor)
            counts = measured(recorder, candidates, per_phase)
            if per_phase:
                best = np.argmin(counts, axis=0)
                alpha = candidates[best, np.arange(len(closed))]
            else:
                alpha = candidates[int(np.argmin(counts.sum(axis=1)))]
    return alpha


def channelwise_limit(recorder, program, schedule, closed, starts: list[np.ndarray], floor: np.ndarray,
                      per_phase: bool, seed: int) -> np.ndarray:
    """The offline channel-wise search: descents from many starts on the benchmark's own fixed points."""
    flat = [phase for phases in schedule.steps for phase in phases]
    rng = np.random.default_rng(seed)
    lower, upper = np.full(program.size, 0.01), 1.0 - floor
    jacobians = []
    for (_, _, row), probe in zip(closed, recorder.probes, strict=True):
        matrix = loop_matrix(program, flat[row]).toarray()
        jacobians.append([matrix * slope[None, :] for slope in slopes(program, probe.fixed_point[:4])])
    results = list(starts)
    for start_index in range(len(starts) + RANDOM_STARTS):
        start = starts[start_index] if start_index < len(starts) else 1.0 - rng.uniform(0.0, 0.8, (
            len(closed), program.size) if per_phase else program.size)
        u_start = np.clip(1.0 - start, lower, upper)
        if per_phase:
            rows = [descend(jacobians[index], lower, upper, u_start[index], max_steps=16)[0]
                    for index in range(len(closed))]
            results.append(1.0 - np.stack(rows))
        else:
            everything = [jacobian for phase in jacobians for jacobian in phase[:1]]
            results.append(1.0 - descend(everything, lower, upper, u_start, max_steps=24)[0])
    table = np.stack(results)
    counts = measured(recorder, table, per_phase)
    if per_phase:
        return table[np.argmin(counts, axis=0), np.arange(len(closed))]
    return table[int(np.argmin(counts.sum(axis=1)))]


def compiled_program(network: str, target_name: str, steps: int, mode: str):
    """(program the machine runs, schedule, α, selection) for a mode."""
    target = load_target(target_name)
    if network in SOURCES:
        compiled = compile_source(source_of(network), target, BuildOptions(solver="implicit-euler", steps=steps,
                                                                            alpha=mode, force=True))
        return (compiled.realised_program or compiled.program, compiled.schedule, compiled.alpha,
                compiled.alpha_selection)
    program, schedule = spine(network, steps)
    selection = select_alpha(program, schedule, AlphaCapabilities.of(target), mode, force=True)
    return program, schedule, selection.alpha, selection


def cell(network: str, target_name: str, steps: int, noise: np.ndarray, sets: np.ndarray) -> dict:
    row = {"network": network, "target": target_name, "steps": steps}
    try:
        program, schedule, minimum, _ = compiled_program(network, target_name, steps, "min")
    except (AdmcError, ConvergenceError) as error:  # even forced, min's loops may not run (e.g. the σ fit)
        program, schedule, auto, selection = compiled_program(network, target_name, steps, "auto")
        return {**row, "min_error": str(error)[:120],
                "held_out": {"auto": held_out(program, schedule, auto, sets)}}
    _, _, auto, selection = compiled_program(network, target_name, steps, "auto")
    per_phase = minimum.ndim == 2
    closed = closed_phases(schedule)
    floor = np.min(np.atleast_2d(minimum), axis=0)
    recorder = ProbeRecorder(program, auto, tolerance=1e-13, max_iterations=LIMIT)
    recorder.run(schedule, noise)
    candidates = {"min": _as_rows(minimum, closed, per_phase), "auto": _as_rows(auto, closed, per_phase)}
    candidates["blockwise"] = blockwise_search(recorder, program, closed, floor, per_phase)
    candidates["limit"] = channelwise_limit(recorder, program, schedule, closed, list(candidates.values()), floor,
                                            per_phase, steps)
    table = np.stack(list(candidates.values()))
    counts = measured(recorder, table, per_phase)
    sets_alpha = {}
    for index, (name, rows) in enumerate(candidates.items()):
        row[name] = float(np.sum(counts[index]))
        if per_phase:
            full = np.zeros_like(minimum)
            for position, (_, _, flat_row) in enumerate(closed):
                full[flat_row] = rows[position]
            sets_alpha[name] = full
        else:
            sets_alpha[name] = rows
    row["held_out"] = {name: held_out(program, schedule, alpha, sets) for name, alpha in sets_alpha.items()}
    radii = [phase.radii for phase in selection.phases] if selection is not None else []
    row["radius"] = {name: max((radius.get(name, np.nan) for radius in radii), default=None)
                     for name in ("min", "blockwise", "channelwise")}
    row["auto_chosen"] = selection.candidates.get("chosen") if selection is not None else None
    return row


def iterations_table(networks: list[str], targets: list[str], steps_list: list[int], output: Path | None) -> None:
    noise = np.random.default_rng(0).standard_normal((32, 2))
    sets = held_out_sets(32)
    rows = []
    for network in networks:
        for target_name in targets if network in SOURCES else ["ideal"]:
            for steps in steps_list:
                try:
                    row = cell(network, target_name, steps, noise, sets)
                except (AdmcError, ConvergenceError) as error:
                    row = {"network": network, "target": target_name, "steps": steps, "error": str(error)[:200]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if output is not None:
                    output.write_text(json.dumps(rows, indent=1) + "\n")


def timed(function, *arguments, **options):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*arguments, **options)
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def timing_table(channels: list[int], random_count: int) -> None:
    from block_programs import random_cycle_program

    from admc.ir.program import tabulate_static_injection
    from admc.passes.step_phases import build_schedule

    for target_name in ("aoc-48", "ideal"):
        example = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"
        from admc.compiler.driver import load_source
        from admc.passes.manager import PassManager

        passes = PassManager()
        _, wall, cpu = timed(compile_source, load_source(example), load_target(target_name), BuildOptions(),
                             passes)
        print(json.dumps({"two_moons": target_name, "compile_wall_s": wall, "compile_cpu_s": cpu,
                          "passes": {record.name: round(record.seconds, 3) for record in passes.records}}), flush=True)
    capabilities = AlphaCapabilities(0.0, 0.99, True, 0.0, settle_tolerance=1e-10)
    for total in channels:
        program = random_cycle_program(((total - 2) // 3,) * 3, 3, 1.0)
        schedule = build_schedule("implicit-euler", np.array([0.0, 1.0]))
        program.static_table = tabulate_static_injection(program, np.array([1.0]))
        selection, wall, cpu = timed(select_alpha, program, schedule, capabilities, "auto", force=True)
        print(json.dumps({"channels": program.size, "alpha_wall_s": wall, "alpha_cpu_s": cpu,
                          "notes": selection.notes}), flush=True)
    slowest = (0.0, None)
    for case in range(random_count):
        gain = 1.0 + 3.0 * (case % 5) / 4
        program = random_cycle_program((4, 4), case, gain)
        schedule = build_schedule("implicit-euler", np.linspace(0.0, 1.0, (2, 3, 6)[case % 3] + 1))
        program.static_table = tabulate_static_injection(
            program, np.array([phase.time for phases in schedule.steps for phase in phases]))
        start = time.perf_counter()
        try:
            select_alpha(program, schedule, capabilities, "auto")
        except AdmcError:
            pass
        slowest = max(slowest, (time.perf_counter() - start, case))
    print(json.dumps({"random_programs": random_count, "slowest_wall_s": round(slowest[0], 3),
                      "slowest_case": slowest[1]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["iterations", "timing"])
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--networks", nargs="+",
                        default=["two-moons", "adm-1x48", "adm-4x24", "random-4x24", *HOLD_OUTS])
    parser.add_argument("--targets", nargs="+", default=["ideal", "aoc-48"])
    parser.add_argument("--channels", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--random", type=int, default=60)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    if arguments.table == "iterations":
        iterations_table(arguments.networks, arguments.targets, arguments.steps, arguments.json)
    else:
        timing_table(arguments.channels, arguments.random)


if __name__ == "__main__":
    main()
