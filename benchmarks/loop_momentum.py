"""Does heavy-ball momentum, the other loop gain in the makers' twin, beat α = 0 where `min` is fast?

    python benchmarks/loop_momentum.py [--steps 8 16] [--networks two-moons adm-1x48 adm-4x24]

The makers' cell can add γ (z(t) − z(t−1)) to every iteration (targets/aoc/calibrations/FIELDS.md §1, step 13), which
keeps the fixed points. For each network of the iteration benchmark compiled for ``ideal`` with ``min`` (α = 0), per
closed phase, from the states the benchmark's 32 samples (seed 0) enter the loop with, this counts the iterations of z
← F(z) + γ (z − z_prev) to the benchmark's tolerance 1e-10 for γ in ``GAMMAS`` (the executor's loop arithmetic, its
relative-change criterion) and prints the total at each γ and the best γ per phase summed (in-sample: the most any
single γ per phase could save on these samples). """

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from alpha_benchmark import MAX_ITERATIONS, TOLERANCE, source_of  # noqa: E402

from admc.compiler.driver import BuildOptions, compile_source  # noqa: E402
from admc.passes.alpha_probe import PhaseProbe, ProbeRecorder  # noqa: E402
from admc.runtime.executor import DIVERGENCE_BOUND  # noqa: E402
from admc.targets.loader import load_target  # noqa: E402

GAMMAS = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3)


def momentum_iterations(executor: ProbeRecorder, probe: PhaseProbe, gamma: float) -> float:
    """Iterations until every probe's relative change is ≤ the tolerance (inf: diverged or over the limit)."""
    previous, state = probe.start.copy(), probe.start.copy()
    for iteration in range(1, MAX_ITERATIONS + 1):
        updated = executor._apply(probe.compiled, state, probe.drive) + gamma * (state - previous)
        peak = np.max(np.abs(updated), axis=1)
        if not np.all(np.isfinite(updated)) or np.max(peak) > DIVERGENCE_BOUND:
            return np.inf
        change = np.max(np.abs(updated - state), axis=1) / np.maximum(1.0, peak)
        previous, state = state, updated
        if np.max(change) <= TOLERANCE:
            return float(iteration)
    return np.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--networks", nargs="+", default=["two-moons", "adm-1x48", "adm-4x24"])
    arguments = parser.parse_args()
    noise = np.random.default_rng(0).standard_normal((32, 2))
    for network in arguments.networks:
        for steps in arguments.steps:
            compiled = compile_source(source_of(network), load_target("ideal"),
                                      BuildOptions(solver="implicit-euler", steps=steps, alpha="min"))
            executor = ProbeRecorder(compiled.program, compiled.alpha, tolerance=1e-13,
                                     max_iterations=MAX_ITERATIONS)
            executor.run(compiled.schedule, noise)
            executor.alpha = np.zeros(compiled.program.size)  # min on ideal: α = 0 in every phase
            table = np.array([[momentum_iterations(executor, probe, gamma) for gamma in GAMMAS]
                              for probe in executor.probes])  # [phases, γ]
            row = {"network": network, "steps": steps,
                   "total_by_gamma": {f"{gamma:g}": float(value) for gamma, value in zip(GAMMAS, table.sum(0),
                                                                                        strict=True)},
                   "best_gamma_per_phase": [float(GAMMAS[index]) for index in np.argmin(table, axis=1)],
                   "best_per_phase_total": float(np.min(table, axis=1).sum())}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
