"""CPU solve times of the α pass and of each convergence certificate on random block-cycle programs (issue 8).

    python benchmarks/certificate_timing.py [--channels 100 1000 5000] [--sdp-channels 66 100 200 300]
        [--gain 1.0] [--sdp-gain 0.5] [--json PATH]
    python benchmarks/certificate_timing.py --two-moons [--steps 2 4 8] [--targets ideal aoc-48]

Programs: ``tests/block_programs.random_cycle_program`` with three equal hidden groups and a 2-channel state
(state ← hidden_3 ← hidden_2 ← hidden_1 ← state), seed 3, one implicit-Euler step (step scale 1), exactly
the programs of ``benchmarks/alpha_benchmark.py timing``. Per size: the α pass (``select_alpha``, mode auto,
the driver's entry; ideal capabilities: α in [0, 0.99] per phase, no gain range), then for the α it chose
Theorem 1 and the block bound (one call: they share the block norms), T_min (``steps_needed``: both bounds,
implicit Euler and Crank-Nicolson) and, up to ``SDP_LIMIT`` channels, the SDP (``sdp_factor``, upper end 1).
The first table uses ``--gain`` (1.0: the loop is far from contracting, so the SDP stops at its spectral lower
end); the second, at ``--sdp-channels``, uses ``--sdp-gain`` (0.5), and the third times the SDP on the same
programs at one α (``--fixed-alpha`` 0.2) for every channel, where it certifies ρ < 1 and runs its whole
search. CPU seconds of this process (``time.process_time``), single-threaded BLAS, after a warm-up on a
20-channel program; the load average is printed, since the machine may be shared.

``--two-moons``: the shipped example built for each target at implicit Euler T = ``--steps`` (the build's own
α; its SDP switched off, then run here per distinct closed phase): Theorem 1, the block bound, the SDP's lower
end, the SDP with the build's upper end 1 (what the manifest gets) and with upper end 10 and 40 rounds (how
far below the block bound the semidefinite search gets, certified or not), and the measured loop iterations.
"""

from __future__ import annotations

import os

# Single-threaded BLAS: threads only oversubscribe a shared machine, and CPU time stays comparable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from block_programs import random_cycle_program  # noqa: E402  (the tests' and the α benchmark's generator)

from admc.ir.program import CLOSED, Phase, tabulate_static_injection  # noqa: E402
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha  # noqa: E402
from admc.passes.convergence_certificates import (  # noqa: E402
    SDP_LIMIT,
    sdp_factor,
    steps_needed,
    theorem1_and_block,
)
from admc.passes.loop_jacobian import loop_matrix, slope_bounds  # noqa: E402
from admc.passes.sdp_certificate import spectral_lower_bound  # noqa: E402
from admc.passes.step_phases import build_schedule  # noqa: E402

SEED = 3
PHASE = Phase(CLOSED, 1.0, 1.0, ())


def cpu_timed(function, *arguments):
    start = time.process_time()
    result = function(*arguments)
    return result, time.process_time() - start


def measure(total: int, gain: float, sdp: bool, fixed_alpha: float | None = None) -> dict:
    program = random_cycle_program(((total - 2) // 3,) * 3, SEED, gain)
    schedule = build_schedule("implicit-euler", np.array([0.0, 1.0]))
    program.static_table = tabulate_static_injection(program, np.array([1.0]))
    row: dict = {"channels": program.size, "gain": gain}
    selection, row["alpha_pass_s"] = cpu_timed(select_alpha, program, schedule,
                                               AlphaCapabilities(0.0, 0.99, True, 0.0), "auto", None, None, True)
    alpha = selection.alpha[0]
    row["alpha_mean"] = float(np.mean(alpha))
    (theorem1, block, _), row["theorem1_and_block_s"] = cpu_timed(theorem1_and_block, program, PHASE, alpha)
    row["theorem1"], row["block"] = theorem1, block
    t_min, row["t_min_s"] = cpu_timed(steps_needed, program, alpha)
    row["t_min_implicit_euler"] = f"{t_min['implicit-euler']['theorem1']} / {t_min['implicit-euler']['block']}"
    if sdp and program.size <= SDP_LIMIT:
        row["sdp_lower"] = spectral_lower_bound(loop_matrix(program, PHASE).toarray(), alpha, slope_bounds(program))
        row["sdp"], row["sdp_s"] = cpu_timed(sdp_factor, program, PHASE, alpha, 1.0)
        if fixed_alpha is not None:  # the same program at one α for every channel: where the SDP certifies
            alpha = np.full(program.size, fixed_alpha)
            row["fixed_alpha"] = fixed_alpha
            row["theorem1_fixed"], row["block_fixed"], _ = theorem1_and_block(program, PHASE, alpha)
            row["sdp_lower_fixed"] = spectral_lower_bound(loop_matrix(program, PHASE).toarray(), alpha,
                                                          slope_bounds(program))
            row["sdp_fixed"], row["sdp_fixed_s"] = cpu_timed(sdp_factor, program, PHASE, alpha, 1.0)
    return row


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e3 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |", flush=True)


def two_moons_rows(steps_list: list[int], targets: list[str]) -> list[dict]:
    from admc.compiler.driver import BuildOptions, compile_source, load_source
    from admc.passes import loop_budget
    from admc.passes import sdp_certificate as sdp_module
    from admc.passes.alpha_selection import closed_phases
    from admc.targets.loader import load_target

    example = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"
    loop_budget.SDP_PHASES = 0  # the build's own SDP off: it is run below, with both upper ends
    rows = []
    for target in targets:
        for steps in steps_list:
            compiled = compile_source(load_source(example), load_target(target),
                                      BuildOptions(solver="implicit-euler", steps=steps))
            program = compiled.realised_program or compiled.program
            flat = [phase for phases in compiled.schedule.steps for phase in phases]
            measured = compiled.convergence["phases"]
            seen = set()
            for (step, _, row), entry in zip(closed_phases(compiled.schedule), measured, strict=True):
                alpha = compiled.alpha[row] if compiled.alpha.ndim == 2 else compiled.alpha
                key = (flat[row].step_scale, alpha.tobytes())
                if key in seen:
                    continue
                seen.add(key)
                theorem1, block, _ = theorem1_and_block(program, flat[row], alpha)
                dense = loop_matrix(program, flat[row]).toarray()
                result = {"target": target, "steps": steps, "step": step, "channels": program.size,
                          "alpha_mean": float(np.mean(alpha)), "theorem1": theorem1, "block": block,
                          "sdp_lower": spectral_lower_bound(dense, alpha, slope_bounds(program))}
                result["sdp"], result["sdp_s"] = cpu_timed(sdp_factor, program, flat[row], alpha, 1.0)
                rounds, sdp_module.ROUNDS = sdp_module.ROUNDS, 40  # from 10 down, Dinkelbach needs 11-15 rounds
                result["sdp_upper_10"], result["sdp_upper_10_s"] = cpu_timed(sdp_factor, program, flat[row],
                                                                             alpha, 10.0)
                sdp_module.ROUNDS = rounds
                result["measured_iterations"] = entry["measured_iterations"]
                rows.append(result)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--sdp-channels", type=int, nargs="+", default=[66, 100, 200, 300])
    parser.add_argument("--gain", type=float, default=1.0)
    parser.add_argument("--sdp-gain", type=float, default=0.5)
    parser.add_argument("--fixed-alpha", type=float, default=0.2)
    parser.add_argument("--two-moons", action="store_true")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--targets", nargs="+", default=["ideal", "aoc-48"])
    parser.add_argument("--json")
    arguments = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    # Warm-up on a small program: the first cvxpy/SciPy calls of a process pay one-off import and set-up costs.
    measure(20, arguments.gain, True)
    if arguments.two_moons:
        rows = two_moons_rows(arguments.steps, arguments.targets)
        print_table(rows, ["target", "steps", "step", "channels", "alpha_mean", "theorem1", "block", "sdp_lower",
                           "sdp", "sdp_s", "sdp_upper_10", "sdp_upper_10_s", "measured_iterations"])
        print(f"\nload average after: {os.getloadavg()}")
        if arguments.json:
            Path(arguments.json).write_text(json.dumps(rows, indent=1) + "\n")
        return
    columns = ["channels", "alpha_pass_s", "theorem1_and_block_s", "t_min_s", "sdp_s", "alpha_mean", "theorem1",
               "block", "sdp_lower", "sdp", "t_min_implicit_euler"]
    fixed_columns = ["channels", "fixed_alpha", "theorem1_fixed", "block_fixed", "sdp_lower_fixed", "sdp_fixed",
                     "sdp_fixed_s"]
    rows = [measure(total, arguments.gain, True) for total in arguments.channels]
    print(f"\ngain {arguments.gain} (CPU seconds; ρ per certificate)")
    print_table(rows, columns)
    sdp_rows = [measure(total, arguments.sdp_gain, True, arguments.fixed_alpha) for total in arguments.sdp_channels]
    print(f"\ngain {arguments.sdp_gain} (CPU seconds; ρ per certificate)")
    print_table(sdp_rows, columns)
    print(f"\nthe same programs at α = {arguments.fixed_alpha} on every channel, where the SDP certifies ρ < 1")
    print_table(sdp_rows, fixed_columns)
    print(f"\nload average after: {os.getloadavg()}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"rows": rows, "sdp_rows": sdp_rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
