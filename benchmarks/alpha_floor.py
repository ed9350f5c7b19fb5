"""How far any block-wise α can go below ``min`` (α = 0) on the ideal target at small steps.

    python benchmarks/alpha_floor.py [--steps 8 16] [--networks two-moons adm-1x48 adm-4x24 random-4x24]

For each network (the iteration benchmark's, compiled for ``ideal``) and implicit-Euler schedule, per closed
phase, from the states the benchmark's own 32 samples (seed 0) enter the loop with (a run at ``min``):

- ``spectral``: the cycle eigenvalues c of the linearisation at each sample's fixed point (``alpha_cycle``);
  the share of samples whose dominant c (largest |c|) is real and positive, where no block-wise α can lower
  the asymptotic factor below α = 0's (docs/alpha-selection.md gives the proof); the spectral radius at
  α = 0 and the best block-wise one (``search_blockwise``), worst over samples, summed as log-rates.
- ``measured``: every block-wise α on a grid (one α per state group; levels ``LEVELS[K]``) counted with the
  executor's loop arithmetic to the benchmark's tolerance 1e-10 on those same samples (in-sample: the most
  optimistic figure any block-wise choice can reach on them); the best per phase, summed over the phases, and
  its ratio to ``min``'s total.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from alpha_benchmark import MAX_ITERATIONS, SOURCES, TOLERANCE, source_of, spine  # noqa: E402

from admc.compiler.driver import BuildOptions, compile_source  # noqa: E402
from admc.ir.program import CLOSED  # noqa: E402
from admc.passes.alpha_cycle import block_cycle, blockwise_radius, search_blockwise  # noqa: E402
from admc.passes.alpha_probe import ProbeRecorder, probe_iterations  # noqa: E402
from admc.passes.loop_jacobian import slopes  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402

# α levels per state group, by the number of groups K (K^levels candidates per phase).
LEVELS = {2: np.round(np.arange(0.0, 0.951, 0.05), 2), 3: np.round(np.arange(0.0, 0.601, 0.05), 2),
          5: np.array([0.0, 0.05, 0.1, 0.2, 0.3])}
CHUNK = 600  # candidates per batch (memory)


def program_at_min(network: str, steps: int):
    if network in SOURCES:
        compiled = compile_source(source_of(network), load_target("ideal"),
                                  BuildOptions(solver="implicit-euler", steps=steps, alpha="min"))
        return compiled.program, compiled.schedule
    return spine(network, steps)


def phase_floor(executor: ProbeRecorder, program, phase, probe) -> dict:
    slope = slopes(program, probe.fixed_point)
    cycle = block_cycle(program, phase, slope)
    if cycle is None:
        return {"error": "not one block cycle"}
    groups = len(cycle.groups)
    values = cycle.eigenvalues.reshape(slope.shape[0], -1)
    dominant = values[np.arange(values.shape[0]), np.argmax(np.abs(values), axis=1)]
    positive_real = np.mean((np.abs(dominant.imag) <= 1e-9 * np.abs(dominant)) & (dominant.real > 0))
    zero = float(blockwise_radius(cycle, np.ones(groups)))
    best_u = search_blockwise(cycle, np.full(groups, 0.05), np.ones(groups), np.ones(groups))
    levels = LEVELS[groups]
    grid = np.array(list(itertools.product(levels, repeat=groups)))  # α per group, α = 0 first
    alpha = np.zeros((grid.shape[0], program.size))
    for index, part in enumerate(cycle.slices):
        alpha[:, part] = grid[:, index:index + 1]
    # α = 0 first: no candidate slower than it can be the best, so it bounds every other count.
    at_min = int(probe_iterations(executor, probe, alpha[:1], TOLERANCE, MAX_ITERATIONS)[0])
    counts = np.concatenate([probe_iterations(executor, probe, alpha[start:start + CHUNK],
                                              TOLERANCE, at_min, patience=1e9)
                             for start in range(0, grid.shape[0], CHUNK)])
    best = int(np.argmin(counts))
    return {"groups": groups, "dominant_positive_real_share": float(positive_real),
            "radius_min": zero, "radius_best_blockwise": float(blockwise_radius(cycle, best_u)),
            "min": float(counts[0]), "best": float(counts[best]),
            "best_alpha": dict(zip(cycle.groups, map(float, grid[best]), strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--networks", nargs="+", default=["two-moons", "adm-1x48", "adm-4x24", "random-4x24"])
    arguments = parser.parse_args()
    noise = np.random.default_rng(0).standard_normal((32, 2))
    for network in arguments.networks:
        for steps in arguments.steps:
            program, schedule = program_at_min(network, steps)
            executor = ProbeRecorder(program, np.zeros(program.size), tolerance=1e-13,
                                     max_iterations=MAX_ITERATIONS)
            executor.run(schedule, noise)
            flat = [phase for phases in schedule.steps for phase in phases if phase.loop == CLOSED]
            phases = [phase_floor(executor, program, phase, probe)
                      for phase, probe in zip(flat, executor.probes, strict=True)]
            total_min = sum(item["min"] for item in phases)
            total_best = sum(item["best"] for item in phases)
            row = {"network": network, "steps": steps, "min": total_min, "best_blockwise": total_best,
                   "ratio": total_best / total_min,
                   "log_rate_ratio": float(sum(np.log(item["radius_min"]) for item in phases)
                                           / sum(np.log(item["radius_best_blockwise"]) for item in phases)),
                   "dominant_positive_real_share": float(np.mean([item["dominant_positive_real_share"]
                                                                  for item in phases])),
                   "phases": phases}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
