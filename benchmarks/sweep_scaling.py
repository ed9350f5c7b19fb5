"""Sweep scaling on Ray: wall time with 2 workers against 1, and the per-task overhead Ray adds against
calling the twin directly.

Run:  nice .venv/bin/python benchmarks/sweep_scaling.py [--chips 12] [--samples 32] [--json out.json]

What it measures, in one run on this machine:
1. ``direct``: the chips of one point run one after another in this process (``admc.sweep.chip.run_chip``,
   torch on one thread, the same function a Ray task runs), after one warm-up chip.
2. ``ray-1`` and ``ray-2``: the same chips as Ray tasks (``admc.sweep.execute.chip_task``) on a local
   instance of 1 and of 2 CPUs, timed from submission to the last result, after one warm-up task per worker
   (so worker start-up and imports are not counted).
   Overhead per task = (ray-1 wall − direct wall) / chips, also as a fraction of the direct per-chip time;
   and, robust to other load on the machine (both sides measured over the same seconds), (ray-1 wall − the
   time the tasks spent inside the chip function) / chips. Speed-up = ray-1 wall / ray-2 wall.
3. ``sweep-1`` and ``sweep-2``: the whole ``run_sweep`` (Ray start and stop, build, chips, table) with 1 and 2
   workers on fresh directories; the two tables are compared byte for byte.
The load average before and after is printed: the machine may be shared, and a busy machine lowers the
speed-up (2 workers cannot get 2 CPUs when others use them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
def timed_chip_task(*arguments) -> tuple[dict, float]:
    """``chip_task`` and the seconds it took inside the worker."""
    from admc.sweep.execute import chip_task

    start = time.perf_counter()
    row = chip_task(*arguments)
    return row, time.perf_counter() - start


SPEC = """
name: scaling
model: {model}
seed: 0
chips: {chips}
samples: {samples}
build: {{target: aoc-48, solver: implicit-euler, steps: 16}}
twin: {{loop_iterations: 300}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=12)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--json", help="write the figures as JSON here")
    arguments = parser.parse_args()

    from admc.sweep import build_cache
    from admc.sweep.chip import run_chip
    from admc.sweep.cluster import ray_session
    from admc.sweep.execute import run_sweep
    from admc.sweep.points import chip_seed, expand_points
    from admc.sweep.spec import load_spec

    figures: dict = {"chips": arguments.chips, "samples": arguments.samples, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="admc-sweep-benchmark-") as directory:
        work = Path(directory)
        spec_path = work / "scaling.yaml"
        spec_path.write_text(SPEC.format(model=ROOT / "examples" / "two_moons.onnx", chips=arguments.chips,
                                         samples=arguments.samples))
        spec = load_spec(spec_path)
        point = expand_points(spec)[0]
        source = spec.source.read_bytes()
        from admc.sweep.points import build_target

        outcome = build_cache.build_point(source, spec.source.name, build_target(spec, point), point.build,
                                          spec.raw.samples, spec.raw.seed)
        key = "benchmark-" + build_cache.build_key("x", spec.source.name, None, point.build, spec.raw.samples, 0)
        reference = {name: outcome[name] for name in (*build_cache.ARRAYS, "summary")}
        criterion = spec.raw.criterion.model_dump(mode="json")
        seeds = [chip_seed(0, point.key, chip) for chip in range(arguments.chips)]
        bundle = build_cache.materialise_bundle(key, outcome["files"])

        run_chip(bundle, reference, {}, 1, point.twin, criterion)  # warm-up
        start = time.perf_counter()
        direct_rows = [run_chip(bundle, reference, {}, seed, point.twin, criterion) for seed in seeds]
        figures["direct_s"] = time.perf_counter() - start
        print(f"direct: {arguments.chips} chips in {figures['direct_s']:.2f} s "
              f"({figures['direct_s'] / arguments.chips:.3f} s per chip)", flush=True)

        for workers in (1, 2):
            with ray_session(workers) as ray:
                remote = ray.remote(num_cpus=1)(timed_chip_task)
                files, shared = ray.put(outcome["files"]), ray.put(reference)
                ray.get([remote.remote(key, files, shared, {}, 1, point.twin, criterion) for _ in range(workers)])
                start = time.perf_counter()
                results = ray.get([remote.remote(key, files, shared, {}, seed, point.twin, criterion)
                                   for seed in seeds])
                figures[f"ray_{workers}_s"] = time.perf_counter() - start
                figures[f"ray_{workers}_inside_s"] = sum(elapsed for _, elapsed in results)
                rows = [row for row, _ in results]
            assert rows == direct_rows, "a Ray task gave a different row than the direct call"
            print(f"ray, {workers} worker(s): {figures[f'ray_{workers}_s']:.2f} s", flush=True)

        for workers in (1, 2):
            start = time.perf_counter()
            run_sweep(spec, work / f"sweep-{workers}", workers=workers, progress=False)
            figures[f"sweep_{workers}_s"] = time.perf_counter() - start
            print(f"run_sweep, {workers} worker(s): {figures[f'sweep_{workers}_s']:.2f} s", flush=True)
        figures["tables_identical"] = ((work / "sweep-1" / "results.parquet").read_bytes()
                                       == (work / "sweep-2" / "results.parquet").read_bytes())
    figures["load_after"] = os.getloadavg()
    per_task = (figures["ray_1_s"] - figures["direct_s"]) / arguments.chips
    figures["overhead_per_task_s"] = per_task
    figures["overhead_fraction"] = per_task / (figures["direct_s"] / arguments.chips)
    inside = figures["ray_1_inside_s"] / arguments.chips
    figures["overhead_outside_task_s"] = figures["ray_1_s"] / arguments.chips - inside
    figures["overhead_outside_fraction"] = figures["overhead_outside_task_s"] / inside
    figures["speedup_tasks"] = figures["ray_1_s"] / figures["ray_2_s"]
    figures["speedup_sweep"] = figures["sweep_1_s"] / figures["sweep_2_s"]
    print(f"Ray overhead per task: {per_task * 1e3:.1f} ms ({100 * figures['overhead_fraction']:.1f} % of a "
          f"{figures['direct_s'] / arguments.chips:.2f} s chip)")
    print(f"Ray time outside the chip function, 1 worker: {figures['overhead_outside_task_s'] * 1e3:.1f} ms per "
          f"task ({100 * figures['overhead_outside_fraction']:.2f} % of the {inside:.2f} s spent inside it)")
    print(f"speed-up 2 workers vs 1: {figures['speedup_tasks']:.2f}x (tasks), {figures['speedup_sweep']:.2f}x "
          f"(whole sweep incl. Ray start and build); tables identical: {figures['tables_identical']}")
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
