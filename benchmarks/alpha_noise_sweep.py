"""How the analog skip fraction α changes the twin's readout error under read noise (docs/alpha-selection.md).

    python benchmarks/alpha_noise_sweep.py [--samples 128] [--budgets 40 100 300] [--json PATH]

Builds the shipped two-moons example for aoc-48 with a forced lower bound on α (target ``alpha.min``), runs
the bundle twin with read noise as its only non-ideality for several loop budgets, and prints the final
step's NRMSE against the ideal program (fixed seeds). A phase that does not settle in the budget is reported
as such.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.compiler.driver import build
from admc.core.errors import ConvergenceError
from admc.runtime.executor import IdealExecutor
from admc.targets.aoc.twin import AocTwin, all_off, nonidealities_of
from admc.verify.metrics import per_step_nrmse

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"


def run(alpha_floor: float, budgets: list[int], samples: int, directory: Path) -> dict:
    target = directory / f"alpha_{alpha_floor}.yaml"
    target.write_text(f"inherits: aoc-48\nname: alpha-floor\nalpha: {{min: {alpha_floor}, max: 0.95}}\n")
    bundle = Bundle(build(EXAMPLE, directory / f"bundle_{alpha_floor}", target=target, steps=16))
    program, schedule, alpha = bundle_program(bundle)
    noise = np.random.default_rng(0).standard_normal((samples, 2))
    ideal = IdealExecutor(program, alpha).run(schedule, noise)
    nonidealities = nonidealities_of(bundle)
    noisy = replace(all_off(nonidealities), read_noise=nonidealities.read_noise)
    errors = {}
    for budget in budgets:
        try:
            result = AocTwin(bundle, noisy, loop_iterations=budget, repeats=1).run(noise)
            errors[budget] = float(per_step_nrmse(result.trajectory[1:], ideal.trajectory[1:])[-1])
        except ConvergenceError:
            errors[budget] = None
    return {"alpha_floor": alpha_floor, "alpha_range": [float(alpha.min()), float(alpha.max())],
            "ideal_iterations_step_1": ideal.iterations[0][0], "final_nrmse": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--budgets", type=int, nargs="+", default=[40, 100, 300])
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.3, 0.6, 0.8, 0.9])
    parser.add_argument("--json")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="admc-alpha-") as directory:
        rows = [run(floor, arguments.budgets, arguments.samples, Path(directory)) for floor in arguments.floors]
    print(f"{'α floor':>8} {'α range':>14} {'ideal iters':>12} " + " ".join(f"{b:>10}" for b in arguments.budgets))
    for row in rows:
        cells = " ".join("not settled" if row["final_nrmse"][b] is None else f"{row['final_nrmse'][b]:10.4f}"
                         for b in arguments.budgets)
        low, high = row["alpha_range"]
        print(f"{row['alpha_floor']:8.2f} {low:6.2f}–{high:<6.2f} {row['ideal_iterations_step_1']:12d} {cells}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
