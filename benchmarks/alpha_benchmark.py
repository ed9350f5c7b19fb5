"""Loop iterations for each α mode, the twin's readout error at equal budgets, and the solve times at scale.

    python benchmarks/alpha_benchmark.py iterations [--steps 2 4 8 16] [--samples 32] [--networks …]
        [--targets ideal aoc-48] [--json PATH]
    python benchmarks/alpha_benchmark.py twin [--budgets 20 40 100] [--samples 64] [--networks …] [--steps 8]
    python benchmarks/alpha_benchmark.py timing [--channels 100 1000 5000]

``iterations``: implicit Euler. Source models (``--networks``: the shipped two-moons example and two seeded
ADM-form networks, one hidden layer of 48 and four of 24) compiled for every ``--targets`` (ideal: α per
phase, no gain limit; aoc-48: one α per program, gain range), or random block programs (random-1x48,
random-4x24; ideal only, the previous round's rows). Total loop iterations over every step to the executor's
tolerance 1e-10 (seeded samples, seed 0; the α pass probes with seed 7) for ``min``, ``global``, ``auto`` and
the best single α per phase from a grid (0, 0.05, …, 0.95, floored by min; chosen on the benchmark's own
samples, an in-sample oracle): ``grid`` enters every phase from the state every mode's loop enters it with
(the previous step's fixed point), ``grid_cold`` from the converged input with the other channels at zero
(the previous rounds' figure; a different start, so not the same problem as the modes'). ``held_out``: every
mode and the grid's choice scored on 8 fresh sample sets of the same size (seed 100; mean total), which no
choice has seen. On a target with a gain range ``auto_no_range``: the α pass on the realised program without
the range (what the range costs).
``--target-tolerance``: source models' rows counted to their target's settle tolerance (aoc-48: 1e-4, what its
loop budget and the α pass's judge count to) instead of 1e-10.
``twin``: on aoc-48, the twin's final readout NRMSE against the ideal program with the preset's read noise,
at equal loop budgets, for min, global and auto.
``timing``: the α pass (auto) and each certificate on random 4-block programs of 100, 1,000 and 5,000
channels (one implicit step; the SDP only where it runs, up to ``SDP_LIMIT`` channels: add e.g. 64 to
``--channels``); wall and CPU time of this process, since the machine may be shared.
"""

from __future__ import annotations

import os

# Many small dense eigenproblems: BLAS threads only oversubscribe a shared machine (40× slower measured on 2
# busy cores), so the benchmark runs single-threaded unless told otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from block_programs import random_cycle_program  # noqa: E402  (the tests' generator: same networks)

from admc.compiler.driver import BuildOptions, compile_source, load_source, pack_for_target  # noqa: E402
from admc.core.errors import ConvergenceError  # noqa: E402
from admc.core.schedule import time_grid  # noqa: E402
from admc.ir.program import (  # noqa: E402
    CLOSED,
    BlockProgram,
    Phase,
    Schedule,
    tabulate_static_injection,
)
from admc.passes.alpha_probe import ProbeRecorder, probe_iterations  # noqa: E402
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha  # noqa: E402
from admc.passes.canonicalize import canonicalize  # noqa: E402
from admc.passes.convergence_certificates import steps_needed, theorem1_and_block  # noqa: E402
from admc.passes.step_phases import build_schedule  # noqa: E402
from admc.runtime.executor import IdealExecutor  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"
TOLERANCE = 1e-10
MAX_ITERATIONS = 20_000
GRID = np.round(np.arange(0.0, 0.951, 0.05), 2)
MODES = ("min", "global", "auto")
# Held-out scoring: the grid is chosen on the benchmark's own samples (an in-sample oracle); every mode and the
# grid's choice are also scored on fresh sets of the same size (set by ``--samples``), none seen by any choice.
HELD_OUT_SEED = 100
HELD_OUT_SETS = 8


def random_program(hidden: tuple[int, ...], seed: int, gain: float = 1.6, d: int = 2) -> BlockProgram:
    """A direct-layout ADM program: state ← hidden_K ← … ← hidden_1 ← state, Gaussian weights and biases."""
    return random_cycle_program(hidden, seed, gain, d)


class SeededAdm(torch.nn.Module):
    """ADM-form MLP (every layer W tanh(h) + b + t e), seeded Gaussian weights gain / sqrt(fan-in)."""

    def __init__(self, hidden: tuple[int, ...], seed: int, gain: float, d: int = 2) -> None:
        super().__init__()
        sizes = [d, *hidden, d]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.time_vectors = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(size)) for size in sizes[1:])
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(gain * torch.randn(layer.weight.shape, generator=generator)
                                   / layer.weight.shape[1] ** 0.5)
                layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=generator))
            for vector in self.time_vectors:
                vector.copy_(0.3 * torch.randn(vector.shape, generator=generator))
        self.eval()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(torch.tanh(h)) + t[:, None] * time_vector
        return h


# Source models compiled for any target: the shipped example and two seeded ADM-form networks (1 and 4 hidden
# layers; gains chosen so that α = 0 diverges or is slow at T = 2, where α matters).
SOURCES = {"two-moons": lambda: EXAMPLE,
           "adm-1x48": lambda: SeededAdm((48,), seed=1, gain=1.8),
           "adm-4x24": lambda: SeededAdm((24, 24, 24, 24), seed=2, gain=1.3)}


def source_of(network: str):
    model = SOURCES[network]()
    example = None if isinstance(model, Path) else (torch.zeros(4, 2), torch.zeros(4))
    return load_source(model, example)


def spine(network: str, steps: int) -> tuple[BlockProgram, Schedule]:
    schedule = build_schedule("implicit-euler", time_grid(steps=steps))
    if network == "two-moons":
        program = pack_for_target(canonicalize(load_source(EXAMPLE).graph), True)
    elif network == "random-1x48":
        program = random_program((48,), seed=1)
    else:
        program = random_program((24, 24, 24, 24), seed=2, gain=1.3)
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    return program, schedule


def count(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, noise: np.ndarray,
          tolerance: float = TOLERANCE) -> list[int] | None:
    try:
        result = IdealExecutor(program, alpha, tolerance=tolerance, max_iterations=MAX_ITERATIONS).run(schedule,
                                                                                                        noise)
    except ConvergenceError:
        return None
    return [sum(step) for step in result.iterations]


def grid_per_phase(program: BlockProgram, schedule: Schedule, inputs: np.ndarray, floor: np.ndarray,
                   per_phase: bool, tolerance: float = TOLERANCE) -> tuple[int | None, np.ndarray | None]:
    """Best single α per phase (or one for the program when the target has one α table), from the grid: the
    total iterations and the α table it chose (None, None where no grid point settles)."""
    def step_counts(alpha_value: float) -> list[float]:
        counts = []
        for step, phases in enumerate(schedule.steps):
            one = Schedule(schedule.solver, schedule.grid[step:step + 2], [phases])
            alpha = np.maximum(floor, alpha_value)
            try:
                result = IdealExecutor(program, alpha, tolerance=tolerance,
                                       max_iterations=MAX_ITERATIONS).run(one, inputs[step])
                counts.append(sum(result.iterations[0]))
            except ConvergenceError:
                counts.append(np.inf)
        return counts

    table = np.array([step_counts(value) for value in GRID])  # [grid, steps]
    total = float(np.sum(np.min(table, axis=0))) if per_phase else float(np.min(np.sum(table, axis=1)))
    if not np.isfinite(total):
        return None, None
    if per_phase:
        chosen = [GRID[int(np.argmin(table[:, step]))] for step, phases in enumerate(schedule.steps)
                  for _ in phases]
        return int(total), np.stack([np.maximum(floor, value) for value in chosen])
    return int(total), np.maximum(floor, GRID[int(np.argmin(np.sum(table, axis=1)))])


def grid_warm(program: BlockProgram, schedule: Schedule, reference_alpha: np.ndarray, noise: np.ndarray,
              floor: np.ndarray, per_phase: bool, tolerance: float = TOLERANCE
              ) -> tuple[int | None, np.ndarray | None]:
    """The grid search from the states every mode's loop starts from: each closed phase entered as in a full
    run (the previous step's fixed point, which no α changes), the grid's α counted with the executor's loop
    arithmetic (``probe_iterations``, tested equal to the executor's counts). Total and chosen α table."""
    recorder = ProbeRecorder(program, reference_alpha, tolerance=1e-13, max_iterations=MAX_ITERATIONS)
    recorder.run(schedule, noise)
    candidates = np.stack([np.maximum(floor, value) for value in GRID])
    table = np.stack([probe_iterations(recorder, probe, candidates, tolerance, MAX_ITERATIONS, patience=1e9)
                      for probe in recorder.probes], axis=1)  # [grid, closed phases]
    total = float(np.sum(np.min(table, axis=0))) if per_phase else float(np.min(np.sum(table, axis=1)))
    if not np.isfinite(total):
        return None, None
    closed = iter(np.argmin(table, axis=0))
    if per_phase:
        rows = [candidates[next(closed)] if phase.loop == CLOSED else np.zeros(program.size)
                for phases in schedule.steps for phase in phases]
        return int(total), np.stack(rows)
    return int(total), candidates[int(np.argmin(np.sum(table, axis=1)))]


def held_out(program: BlockProgram, schedule: Schedule, alpha: np.ndarray, sets: np.ndarray,
             tolerance: float = TOLERANCE) -> float | None:
    """Mean total iterations over fresh sample sets [sets, samples, d] (``held_out_sets``): the expected count
    on samples no choice was made on (None: some set does not settle)."""
    totals = []
    for noise in sets:
        counts = count(program, schedule, alpha, noise, tolerance)
        if counts is None:
            return None
        totals.append(sum(counts))
    return float(np.mean(totals))


def held_out_sets(samples: int) -> np.ndarray:
    return np.random.default_rng(HELD_OUT_SEED).standard_normal((HELD_OUT_SETS, samples, 2))


def spine_rows(network: str, steps_list: list[int], noise: np.ndarray) -> list[dict]:
    """Rows of a random block program (no source model) on the ideal target."""
    rows = []
    sets = held_out_sets(noise.shape[0])
    ideal = load_target("ideal")
    for steps in steps_list:
        program, schedule = spine(network, steps)
        row = {"network": network, "target": "ideal", "steps": steps, "channels": program.size}
        reference, held = None, {}
        for mode in MODES:
            try:
                selection = select_alpha(program, schedule, AlphaCapabilities.of(ideal), mode, force=True)
            except Exception as error:  # noqa: BLE001 - a benchmark row records the failure
                row[mode] = f"error: {error}"
                continue
            counts = count(program, schedule, selection.alpha, noise)
            row[mode] = None if counts is None else sum(counts)
            held[mode] = held_out(program, schedule, selection.alpha, sets)
            if counts is not None and reference is None:
                reference = IdealExecutor(program, selection.alpha).run(schedule, noise).trajectory
                reference_alpha = selection.alpha
        if reference is not None:
            row["grid"], grid_alpha = grid_warm(program, schedule, reference_alpha, noise, np.zeros(program.size),
                                                True)
            row["grid_cold"], _ = grid_per_phase(program, schedule, reference, np.zeros(program.size), True)
            held["grid"] = None if grid_alpha is None else held_out(program, schedule, grid_alpha, sets)
        row["held_out"] = held
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def source_rows(network: str, target_name: str, steps_list: list[int], noise: np.ndarray,
                at_target_tolerance: bool = False) -> list[dict]:
    """Rows of a source model compiled for a target: every mode, the grid floored by ``min``, and on a target
    with a gain range the α pass without it (``auto_no_range``: what the range costs). Counted to
    ``TOLERANCE``, or with ``at_target_tolerance`` to the target's settle tolerance (what its loop budget and
    the α pass's judge count to)."""
    rows = []
    sets = held_out_sets(noise.shape[0])
    target = load_target(target_name)
    tolerance = target.loop.settle_tolerance if at_target_tolerance else TOLERANCE
    source = source_of(network)
    per_phase = bool(target.alpha.per_phase)
    for steps in steps_list:
        row = {"network": network, "target": target_name, "steps": steps, "tolerance": tolerance}
        floor, reference, realised, held = None, None, None, {}
        for mode in MODES:
            try:
                compiled = compile_source(source, target, BuildOptions(solver="implicit-euler", steps=steps,
                                                                       alpha=mode, force=True))
            except Exception as error:  # noqa: BLE001
                row[mode] = f"error: {error}"
                continue
            program = compiled.realised_program or compiled.program
            row["channels"] = program.size
            counts = count(program, compiled.schedule, compiled.alpha, noise, tolerance)
            row[mode] = None if counts is None else sum(counts)
            held[mode] = held_out(program, compiled.schedule, compiled.alpha, sets, tolerance)
            if mode == "min":
                floor = np.min(np.atleast_2d(compiled.alpha), axis=0)
                row["alpha_floor_mean"] = float(np.mean(floor))
            if counts is not None and reference is None:
                reference = IdealExecutor(program, compiled.alpha).run(compiled.schedule, noise).trajectory
                realised, reference_alpha = (program, compiled.schedule), compiled.alpha
            if mode == "auto" and compiled.realised_program is not None:
                # The same α pass on the realised program without the gain range (row peaks unset).
                selection = select_alpha(program, compiled.schedule, AlphaCapabilities.of(target), "auto",
                                         force=True)
                unlimited = count(program, compiled.schedule, selection.alpha, noise, tolerance)
                row["auto_no_range"] = None if unlimited is None else sum(unlimited)
        if reference is not None and floor is not None:
            row["grid"], grid_alpha = grid_warm(*realised, reference_alpha, noise, floor, per_phase, tolerance)
            row["grid_cold"], _ = grid_per_phase(*realised, reference, floor, per_phase, tolerance)
            held["grid"] = None if grid_alpha is None else held_out(*realised, grid_alpha, sets, tolerance)
        row["held_out"] = held
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def iterations_table(steps_list: list[int], samples: int, networks: tuple[str, ...],
                     targets: tuple[str, ...], at_target_tolerance: bool = False) -> list[dict]:
    noise = np.random.default_rng(0).standard_normal((samples, 2))
    rows = []
    for network in networks:
        if network in SOURCES:
            for target_name in targets:
                rows += source_rows(network, target_name, steps_list, noise, at_target_tolerance)
        else:
            rows += spine_rows(network, steps_list, noise)
    return rows


def twin_table(budgets: list[int], samples: int, networks: tuple[str, ...], steps_list: list[int]) -> list[dict]:
    """The twin's final readout NRMSE against the ideal program (preset read noise only) at equal loop budgets."""
    from dataclasses import replace

    from admc.bundle.program import bundle_program
    from admc.bundle.store import Bundle
    from admc.compiler.driver import build
    from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
    from admc.verify.metrics import per_step_nrmse

    rows = []
    noise = np.random.default_rng(0).standard_normal((samples, 2))
    with tempfile.TemporaryDirectory(prefix="admc-alpha-") as directory:
        for network in networks:
            model = SOURCES[network]()
            example = None if isinstance(model, Path) else (torch.zeros(4, 2), torch.zeros(4))
            for steps in steps_list:
                for mode in MODES:
                    row = {"network": network, "steps": steps, "mode": mode}
                    try:
                        bundle = Bundle(build(model, Path(directory) / f"{network}-{steps}-{mode}", target="aoc-48",
                                              steps=steps, alpha=mode, force=True, example_inputs=example))
                    except Exception as error:  # noqa: BLE001 - a benchmark row records the failure
                        row["error"] = str(error)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                    program, schedule, alpha = bundle_program(bundle)
                    ideal = IdealExecutor(program, alpha, max_iterations=MAX_ITERATIONS).run(schedule, noise)
                    preset = nonidealities_of(bundle)
                    noisy = replace(all_off(preset), read_noise=preset.read_noise)
                    row.update({"alpha_mean": float(np.mean(alpha)),
                                "loop_budget": bundle.manifest["convergence"]["loop_budget"]})
                    for budget in budgets:
                        try:
                            result = AocTwin(bundle, noisy, loop_iterations=budget, repeats=1).run(noise)
                            row[budget] = float(per_step_nrmse(result.trajectory[1:], ideal.trajectory[1:])[-1])
                        except ConvergenceError:
                            row[budget] = None
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def timed(function, *arguments):
    """(result, wall seconds, CPU seconds of this process): the machine is shared, so both are reported."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*arguments)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def timing_table(channels: list[int], sdp_up_to: int) -> list[dict]:
    from admc.passes.convergence_certificates import SDP_LIMIT, sdp_factor

    rows = []
    capabilities = AlphaCapabilities(0.0, 0.99, True, 0.0)
    for total in channels:
        hidden = ((total - 2) // 3,) * 3
        program = random_program(hidden, seed=3, gain=1.0)
        schedule = build_schedule("implicit-euler", np.array([0.0, 1.0]))
        program.static_table = tabulate_static_injection(program, np.array([1.0]))
        row = {"channels": program.size}
        selection, row["alpha_auto_wall_s"], row["alpha_auto_cpu_s"] = timed(
            select_alpha, program, schedule, capabilities, "auto", None, None, True)
        alpha = selection.alpha[0]
        phase = Phase(CLOSED, 1.0, 1.0, ())
        _, row["theorem1_and_block_wall_s"], row["theorem1_and_block_cpu_s"] = timed(
            theorem1_and_block, program, phase, alpha)
        _, row["t_min_wall_s"], row["t_min_cpu_s"] = timed(steps_needed, program, alpha)
        if program.size <= max(SDP_LIMIT, sdp_up_to):
            _, row["sdp_wall_s"], row["sdp_cpu_s"] = timed(sdp_factor, program, phase, alpha)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["iterations", "twin", "timing"])
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 40, 100])
    parser.add_argument("--channels", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--networks", nargs="+", default=["two-moons", "adm-1x48", "adm-4x24"],
                        choices=[*SOURCES, "random-1x48", "random-4x24"],
                        help="source models (every --targets) or random block programs (ideal only)")
    parser.add_argument("--targets", nargs="+", default=["ideal", "aoc-48"])
    parser.add_argument("--sdp-up-to", type=int, default=0,
                        help="timing: run the SDP up to this many channels even above its limit (to size it)")
    parser.add_argument("--target-tolerance", action="store_true",
                        help="iterations: count source models' rows to their target's settle tolerance "
                             f"instead of {TOLERANCE:g}")
    parser.add_argument("--json")
    arguments = parser.parse_args()
    if arguments.table == "iterations":
        rows = iterations_table(arguments.steps, arguments.samples, tuple(arguments.networks),
                                tuple(arguments.targets), arguments.target_tolerance)
    elif arguments.table == "twin":
        rows = twin_table(arguments.budgets, arguments.samples, tuple(arguments.networks), arguments.steps)
    else:
        rows = timing_table(arguments.channels, arguments.sdp_up_to)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
