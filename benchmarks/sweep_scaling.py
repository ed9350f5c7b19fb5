"""Sweep scaling on Ray: wall time with 2 workers against 1, and the per-task overhead Ray adds against
calling the twin directly.

Run:  nice .venv/bin/python benchmarks/sweep_scaling.py [--chips 12] [--samples 32] [--json out.json]
      (or with ``--bundle PATH``: below)

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

With ``--bundle PATH`` (an existing bundle, e.g. the 36M-weight aoc-48 program) it times that program instead:
  nice .venv/bin/python benchmarks/sweep_scaling.py --bundle PATH --chips 16 --samples 4 --loop-iterations 20 \
      --json benchmarks/results/sweep_scaling_36m.json
1. the point's reference (the ideal chain on ``--samples`` samples, seed 0), as a sweep's build task computes it;
2. one chip in this process, split into loading the bundle (parse, hash-check), the twin's set-up (its arrays
   and this chip's static errors) and the twin's run (``--samples`` samples × the target's repeats, discrete
   mode, ``--loop-iterations`` per closed phase; ``--repeats`` overrides the target's);
3. ``--chips`` chips (seeds 1 … N, the bundle's own non-idealities) as Ray tasks (``chip_task``, torch on one
   thread) on a local instance of 1 and of 2 CPUs, timed from submission to the last result after each
   worker has loaded the bundle once (a warm-up task per worker); with 1 worker also what handing a task the
   files themselves costs (how every chip got the bundle before). Printed: wall per worker count, speed-up,
   bundle loads per worker process (1 each: no worker loads the bundle twice), whether the rows of 1 and 2
   workers are identical, and the load average before and after each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_chip_task(*arguments) -> tuple[dict, float, int, int, float]:
    """``chip_task``, the seconds it took inside the worker, the worker's pid, how many bundles it has loaded,
    and the CPU seconds it used (what a busy machine does not inflate)."""
    from admc.sweep import loaded_bundles
    from admc.sweep.execute import chip_task

    start, cpu = time.perf_counter(), time.process_time()
    row = chip_task(*arguments)
    return row, time.perf_counter() - start, os.getpid(), loaded_bundles.loads(), time.process_time() - cpu


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
    parser.add_argument("--chips", type=int, help="chips timed (default 12; 16 with --bundle)")
    parser.add_argument("--samples", type=int, help="twin samples per chip (default 32; 4 with --bundle)")
    parser.add_argument("--bundle", help="time chips of this existing bundle's program instead (see docstring)")
    parser.add_argument("--loop-iterations", type=int, default=20, help="with --bundle: twin loop iterations per "
                        "closed phase (default 20)")
    parser.add_argument("--repeats", type=int, help="with --bundle: twin repeats (default: the target's)")
    parser.add_argument("--json", help="write the figures as JSON here")
    arguments = parser.parse_args()
    if arguments.bundle:
        figures = given_bundle(Path(arguments.bundle), arguments.chips or 16, arguments.samples or 4,
                               arguments.loop_iterations, arguments.repeats)
    else:
        figures = small_spec(arguments.chips or 12, arguments.samples or 32)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=1) + "\n")


def small_spec(chips: int, samples: int) -> dict:
    """The default run: a small spec's chips direct, on Ray with 1 and 2 workers, and whole sweeps."""
    from admc.sweep import build_cache
    from admc.sweep.chip import run_chip
    from admc.sweep.cluster import ray_session
    from admc.sweep.execute import run_sweep
    from admc.sweep.loaded_bundles import SharedBundle
    from admc.sweep.points import chip_seed, expand_points
    from admc.sweep.spec import load_spec

    figures: dict = {"chips": chips, "samples": samples, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="admc-sweep-benchmark-") as directory:
        work = Path(directory)
        spec_path = work / "scaling.yaml"
        spec_path.write_text(SPEC.format(model=ROOT / "examples" / "two_moons.onnx", chips=chips,
                                         samples=samples))
        spec = load_spec(spec_path)
        point = expand_points(spec)[0]
        source = spec.source.read_bytes()
        from admc.sweep.points import build_target

        outcome = build_cache.build_point(source, spec.source.name, build_target(spec, point), point.build,
                                          spec.raw.samples, spec.raw.seed)
        key = "benchmark-" + build_cache.build_key("x", spec.source.name, None, point.build, spec.raw.samples, 0)
        reference = {name: outcome[name] for name in (*build_cache.ARRAYS, "summary")}
        criterion = spec.raw.criterion.model_dump(mode="json")
        seeds = [chip_seed(0, point.key, chip) for chip in range(chips)]
        bundle = build_cache.materialise_bundle(key, outcome["files"])

        run_chip(bundle, reference, {}, 1, point.twin, criterion)  # warm-up
        start = time.perf_counter()
        direct_rows = [run_chip(bundle, reference, {}, seed, point.twin, criterion) for seed in seeds]
        figures["direct_s"] = time.perf_counter() - start
        print(f"direct: {chips} chips in {figures['direct_s']:.2f} s "
              f"({figures['direct_s'] / chips:.3f} s per chip)", flush=True)

        for workers in (1, 2):
            with ray_session(workers) as ray:
                remote = ray.remote(num_cpus=1)(timed_chip_task)
                files = SharedBundle.of(key, outcome["files"], ray.put(outcome["files"]))
                shared = ray.put(reference)
                ray.get([remote.remote(files, shared, {}, 1, point.twin, criterion) for _ in range(workers)])
                start = time.perf_counter()
                results = ray.get([remote.remote(files, shared, {}, seed, point.twin, criterion)
                                   for seed in seeds])
                figures[f"ray_{workers}_s"] = time.perf_counter() - start
                figures[f"ray_{workers}_inside_s"] = sum(result[1] for result in results)
                rows = [result[0] for result in results]
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
    per_task = (figures["ray_1_s"] - figures["direct_s"]) / chips
    figures["overhead_per_task_s"] = per_task
    figures["overhead_fraction"] = per_task / (figures["direct_s"] / chips)
    inside = figures["ray_1_inside_s"] / chips
    figures["overhead_outside_task_s"] = figures["ray_1_s"] / chips - inside
    figures["overhead_outside_fraction"] = figures["overhead_outside_task_s"] / inside
    figures["speedup_tasks"] = figures["ray_1_s"] / figures["ray_2_s"]
    figures["speedup_sweep"] = figures["sweep_1_s"] / figures["sweep_2_s"]
    print(f"Ray overhead per task: {per_task * 1e3:.1f} ms ({100 * figures['overhead_fraction']:.1f} % of a "
          f"{figures['direct_s'] / chips:.2f} s chip)")
    print(f"Ray time outside the chip function, 1 worker: {figures['overhead_outside_task_s'] * 1e3:.1f} ms per "
          f"task ({100 * figures['overhead_outside_fraction']:.2f} % of the {inside:.2f} s spent inside it)")
    print(f"speed-up 2 workers vs 1: {figures['speedup_tasks']:.2f}x (tasks), {figures['speedup_sweep']:.2f}x "
          f"(whole sweep incl. Ray start and build); tables identical: {figures['tables_identical']}")
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    return figures


# -- --bundle: chips of an existing (large) bundle's program -----------------------------------------------
def warm_task(bundle) -> tuple[int, float]:
    """Load the bundle into this worker (fetch, write once per machine, parse) and import what a chip imports;
    its pid and the seconds taken."""
    import ot  # noqa: F401  (W2)
    import torch  # noqa: F401

    from admc.sweep.loaded_bundles import loaded_bundle

    start = time.perf_counter()
    loaded_bundle(bundle)
    return os.getpid(), time.perf_counter() - start


def take_files(files: dict) -> int:
    """A task given the files themselves (how a chip got them before): Ray fetches and deserialises them."""
    return len(files)


def chip_cost(key: str, files: dict, reference: dict, twin: dict) -> dict:
    """Where one chip's seconds go, in this process: loading the bundle (parse, hash-check), its twin's set-up
    (arrays, this chip's static errors) and the twin's run."""
    from admc.bundle.store import Bundle
    from admc.sweep.build_cache import materialise_bundle
    from admc.targets.backends import backend_of_manifest

    figures = {}
    start = time.perf_counter()
    directory = materialise_bundle(key, files)
    figures["materialise_s"] = time.perf_counter() - start
    start = time.perf_counter()
    bundle = Bundle(directory)
    figures["load_s"] = time.perf_counter() - start
    backend = backend_of_manifest(bundle.manifest, str(bundle.path))
    start = time.perf_counter()
    chip_twin = backend.make_twin(bundle, {}, 0, twin)
    figures["twin_setup_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chip_twin.run(reference["noise"])
    figures["twin_run_s"] = time.perf_counter() - start
    print(f"one chip in this process: load {figures['load_s']:.2f} s (parse, hash-check), twin set-up "
          f"{figures['twin_setup_s']:.2f} s, twin run {figures['twin_run_s']:.2f} s", flush=True)
    return figures


def ray_chips(workers: int, key: str, files: dict, reference: dict, seeds: list[int], twin: dict) -> tuple[dict, list]:
    """The chips as Ray tasks on ``workers`` CPUs after one warm-up load per worker: wall, seconds inside the
    tasks, bundle loads per worker process; with 1 worker also what handing a task the files themselves costs."""
    from admc.sweep.cluster import ray_session
    from admc.sweep.loaded_bundles import SharedBundle

    figures: dict = {f"load_before_{workers}": os.getloadavg()}
    criterion = {"twin_ratio": 0.5, "twin_nrmse": None}
    with ray_session(workers) as ray:
        files_ref = ray.put(files)
        bundle, shared = SharedBundle.of(key, files, files_ref), ray.put(reference)
        warm = ray.get([ray.remote(num_cpus=1)(warm_task).remote(bundle) for _ in range(workers)])
        figures[f"ray_{workers}_warmup"] = {str(pid): seconds for pid, seconds in warm}
        if workers == 1:
            take = ray.remote(num_cpus=1)(take_files)
            start = time.perf_counter()
            ray.get(take.remote(files_ref))
            figures["files_argument_s"] = time.perf_counter() - start
        remote = ray.remote(num_cpus=1)(timed_chip_task)
        start = time.perf_counter()
        results = ray.get([remote.remote(bundle, shared, {}, seed, twin, criterion) for seed in seeds])
        figures[f"ray_{workers}_s"] = time.perf_counter() - start
    figures[f"ray_{workers}_inside_s"] = sum(result[1] for result in results)
    figures[f"ray_{workers}_cpu_per_chip_s"] = sum(result[4] for result in results) / len(results)
    loads: dict[str, int] = {}
    for _, _, pid, count, _ in results:
        loads[str(pid)] = max(loads.get(str(pid), 0), count)
    figures[f"ray_{workers}_loads_per_worker"] = loads
    figures[f"load_after_{workers}"] = os.getloadavg()
    print(f"ray, {workers} worker(s): {len(seeds)} chips in {figures[f'ray_{workers}_s']:.1f} s (CPU per chip "
          f"{figures[f'ray_{workers}_cpu_per_chip_s']:.1f} s, tasks in flight on average "
          f"{figures[f'ray_{workers}_inside_s'] / figures[f'ray_{workers}_s']:.2f}); bundle loads per worker "
          f"process {loads}; load average {figures[f'load_after_{workers}']}", flush=True)
    return figures, [result[0] for result in results]


def given_bundle(path: Path, chips: int, samples: int, loop_iterations: int, repeats: int | None) -> dict:
    """``--bundle``: ``chips`` chips of ``path``'s program, twin on ``samples`` samples, with 1 and 2 workers."""
    import hashlib
    import shutil

    import torch

    from admc.sweep.build_cache import ARRAYS, build_point, materialised_directory

    torch.set_num_threads(1)
    files = {str(item.relative_to(path)): item.read_bytes() for item in sorted(path.rglob("*")) if item.is_file()}
    key = "benchmark-" + hashlib.sha256(files["manifest.json"]).hexdigest()
    twin = {"mode": "discrete", "loop_iterations": loop_iterations, "repeats": repeats}
    figures: dict = {"bundle": str(path), "files": len(files), "bundle_bytes": sum(map(len, files.values())),
                     "chips": chips, "samples": samples, "twin": twin, "torch_threads": 1,
                     "load_before": os.getloadavg()}
    start = time.perf_counter()
    outcome = build_point(None, path.name, None, {}, samples, 0, bundle_files=files)
    figures["reference_s"] = time.perf_counter() - start
    if outcome["status"] != "ok":
        raise SystemExit(f"{path}: the point's reference failed: {outcome['reason']}")
    print(f"reference (ideal chain, {samples} samples): {figures['reference_s']:.1f} s", flush=True)
    reference = {name: outcome[name] for name in (*ARRAYS, "summary")}
    try:
        figures.update(chip_cost(key, files, reference, twin))
        rows = {}
        for workers in (1, 2):
            measured, rows[workers] = ray_chips(workers, key, files, reference, list(range(1, chips + 1)), twin)
            figures.update(measured)
    finally:  # the benchmark's own copy of the bundle on this machine
        shutil.rmtree(materialised_directory(key, files["manifest.json"]), ignore_errors=True)
    return summarise(figures, rows)


def summarise(figures: dict, rows: dict[int, list]) -> dict:
    chips = figures["chips"]
    figures["rows_identical"] = json.dumps(rows[1], sort_keys=True) == json.dumps(rows[2], sort_keys=True)
    figures["statuses"] = sorted({row["status"] for row in rows[1]})
    figures["speedup_tasks"] = figures["ray_1_s"] / figures["ray_2_s"]
    # Before: every task was handed the files, wrote them (once per machine) and loaded the bundle.
    figures["chip_before_s"] = (figures["files_argument_s"] + figures["load_s"] + figures["twin_setup_s"]
                                + figures["twin_run_s"])
    figures["chip_after_s"] = figures["twin_setup_s"] + figures["twin_run_s"]
    figures["load_after"] = os.getloadavg()
    print(f"per chip: before {figures['chip_before_s']:.2f} s (files to the task {figures['files_argument_s']:.2f} "
          f"s + load {figures['load_s']:.2f} s + twin set-up {figures['twin_setup_s']:.2f} s + run "
          f"{figures['twin_run_s']:.2f} s), now {figures['chip_after_s']:.2f} s (load once per worker); "
          f"inside a Ray task, 1 worker: {figures['ray_1_inside_s'] / chips:.2f} s")
    print(f"speed-up 2 workers vs 1 ({chips} chips): {figures['speedup_tasks']:.2f}x; rows identical: "
          f"{figures['rows_identical']}; chip statuses {figures['statuses']}")
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    return figures


if __name__ == "__main__":
    main()
