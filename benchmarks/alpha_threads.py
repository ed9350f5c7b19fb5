"""The α pass with its BLAS thread cap and without it (the library's default threads), on a busy machine.

    python benchmarks/alpha_threads.py [--channels 130] [--steps 8] [--repeats 3]

Runs ``select_alpha`` (auto, ideal capabilities) on a random direct-layout program of about ``--channels``
channels (two hidden groups) and an implicit-Euler schedule, alternating capped (``BLAS_THREADS``) and uncapped
(``threadpool_limits`` not applied), and prints wall and CPU seconds with the load average. Unlike the other α
benchmarks it does not set OPENBLAS_NUM_THREADS: the uncapped run must see the library's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from block_programs import random_cycle_program  # noqa: E402

from admc.core.schedule import time_grid  # noqa: E402
from admc.ir.program import tabulate_static_injection  # noqa: E402
from admc.passes import alpha_selection  # noqa: E402
from admc.passes.alpha_selection import AlphaCapabilities, select_alpha  # noqa: E402
from admc.passes.step_phases import build_schedule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=130)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    hidden = ((arguments.channels - 2) // 2,) * 2
    program = random_cycle_program(hidden, 4, 1.3, 2)
    schedule = build_schedule("implicit-euler", time_grid(steps=arguments.steps))
    program.static_table = tabulate_static_injection(
        program, np.array([phase.time for phases in schedule.steps for phase in phases]))
    capabilities = AlphaCapabilities(0.0, 0.99, True, 0.0, settle_tolerance=1e-10)
    default_threads = [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]
    capped = alpha_selection.BLAS_THREADS
    reference = None
    for repeat in range(arguments.repeats):
        for label, threads in (("capped", capped), ("uncapped", None)):
            alpha_selection.BLAS_THREADS = threads
            wall, cpu = time.perf_counter(), time.process_time()
            alpha = select_alpha(program, schedule, capabilities, "auto", force=True).alpha
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            # The cap changes only the speed: the same α either way.
            reference = alpha if reference is None else reference
            print(json.dumps({"run": label, "repeat": repeat, "channels": program.size,
                              "blas_threads": threads or default_threads, "wall_s": round(wall, 3),
                              "cpu_s": round(cpu, 3), "same_alpha": bool(np.array_equal(alpha, reference)),
                              "load_average": os.getloadavg()}), flush=True)
    alpha_selection.BLAS_THREADS = capped


if __name__ == "__main__":
    main()
