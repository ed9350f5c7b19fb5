"""CPU solve times of the α pass and of each convergence certificate on random block-cycle programs (issue 8).

    python benchmarks/certificate_timing.py [--channels 100 1000 5000] [--sdp-channels 66 100 200 300]
        [--gain 1.0] [--sdp-gain 0.5] [--json PATH]

Programs: ``tests/block_programs.random_cycle_program`` with three equal hidden groups and a 2-channel state
(state ← hidden_3 ← hidden_2 ← hidden_1 ← state), seed 3, one implicit-Euler step (step scale 1), exactly
the programs of ``benchmarks/alpha_benchmark.py timing``. Per size: the α pass (``select_alpha``, mode auto,
the driver's entry; ideal capabilities: α in [0, 0.99] per phase, no gain range), then for the α it chose
Theorem 1 and the block bound (one call: they share the block norms), T_min (``steps_needed``: both bounds,
implicit Euler and Crank-Nicolson) and, up to ``SDP_LIMIT`` channels, the SDP (``sdp_factor``, upper end 1).
The first table uses ``--gain`` (1.0: the loop is far from contracting, so the SDP stops at its spectral lower
end); the second, at ``--sdp-channels``, uses ``--sdp-gain`` (0.5), where the SDP certifies ρ < 1 and runs
its whole search. CPU seconds of this process (``time.process_time``), single-threaded BLAS; the load average
is printed, since the machine may be shared.
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


def measure(total: int, gain: float, sdp: bool) -> dict:
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
    row["t_min_implicit_euler"] = t_min["implicit-euler"]
    if sdp and program.size <= SDP_LIMIT:
        row["sdp_lower"] = spectral_lower_bound(loop_matrix(program, PHASE).toarray(), alpha, slope_bounds(program))
        row["sdp"], row["sdp_s"] = cpu_timed(sdp_factor, program, PHASE, alpha, 1.0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--sdp-channels", type=int, nargs="+", default=[66, 100, 200, 300])
    parser.add_argument("--gain", type=float, default=1.0)
    parser.add_argument("--sdp-gain", type=float, default=0.5)
    parser.add_argument("--json")
    arguments = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    columns = ["channels", "alpha_pass_s", "theorem1_and_block_s", "t_min_s", "sdp_s", "theorem1", "block",
               "sdp_lower", "sdp", "t_min_implicit_euler"]
    rows = [measure(total, arguments.gain, True) for total in arguments.channels]
    print(f"\ngain {arguments.gain} (CPU seconds; ρ per certificate)")
    print_table(rows, columns)
    sdp_rows = [measure(total, arguments.sdp_gain, True) for total in arguments.sdp_channels]
    print(f"\ngain {arguments.sdp_gain}: programs the SDP certifies (CPU seconds; ρ per certificate)")
    print_table(sdp_rows, columns)
    print(f"\nload average after: {os.getloadavg()}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"rows": rows, "sdp_rows": sdp_rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
