"""Compile-time benchmark: ``admc.compiler.driver.build`` end to end on aoc-48 for wide ADM-form networks.

Requires: admc installed (``pip install -e .``) with torch and onnx. Run ``python benchmarks/compile_benchmark.py``
for a table, ``--json PATH`` to also write it, ``--quick`` for a smoke-sized run.

Each network is an ADM-form torch model (every layer ``W tanh(h) + b + t e``, the input read through tanh too)
with state size d = 64 and four hidden layers of equal width (512, 1024 and 2048 by default, to show how the
time grows when the width doubles). Weights are drawn from a fixed seed, standard normal / sqrt(fan-in) times a
small scale so implicit steps contract; the model is exported to ONNX inside the script (untimed). The target
is aoc-48 with ``module.count`` raised (``--module-count``, default 100,000): the preset's 1,024 modules are
fewer than [1024] × 4 needs. The timed part is ``build`` as the CLI runs it: load and import the ONNX file,
canonicalise, pack, Δt phases, state scaling (seeded calibration run of the ideal executor), tiling and
placement, routing, α/β, sign split and SLM quantisation, PNG encoding and the atomic bundle write, into a
temporary directory.

Threads: on a 2-core machine numpy's OpenBLAS and torch each start a thread pool; the calibration run's
matrix products (256 samples × a few thousand channels) then run far slower than on one thread when the
cores are busy. ``--blas-threads 1`` sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before
numpy and torch load, to show the difference.

The wall time is the best of ``--repeats`` plain runs. A separate run under cProfile gives the per-stage
breakdown (cumulative time of the main functions; cProfile adds some overhead to Python-heavy stages, so the
stages need not add up to the wall time exactly). Placement is deterministic, so modules used and the bundle
size are the same on every run; only the times vary.
"""

from __future__ import annotations

import os
import sys


def _blas_threads_from_argv(argv: list[str]) -> str | None:
    """``--blas-threads N`` must act before numpy and torch load their thread pools, so it is read here."""
    for index, argument in enumerate(argv):
        if argument == "--blas-threads" and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith("--blas-threads="):
            return argument.split("=", 1)[1]
    return None


if (_THREADS := _blas_threads_from_argv(sys.argv[1:])) is not None:
    for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = _THREADS

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from seeded_export import seed_and_export  # noqa: E402
from torch import nn  # noqa: E402

STATE = 64
WIDTHS = (512, 1024, 2048)
QUICK_WIDTHS = (128, 256)
LAYERS = 4
WEIGHT_SCALE = 0.5
SEED = 0
TARGET = "aoc-48"
# The preset's module.count (1,024) is fewer than [1024] × 4 needs (about 1,500 modules); the benchmark raises it.
MODULE_COUNT = 100_000

# (label, file suffix, function name): cumulative times summed over matching profile entries. Nested stages are
# indented in the table; the top-level ones partition build() up to glue code.
STAGES = [
    ("load source (ONNX import, signature)", "admc/compiler/driver.py", "load_source"),
    ("canonicalise", "passes/canonicalize.py", "canonicalize"),
    ("pack", "admc/compiler/driver.py", "pack_for_target"),
    ("Δt phases + static injection table", "ir/program.py", "tabulate_static_injection"),
    ("lower to AOC (backend total)", "passes/manager.py", "run_lowering"),
    ("  state scaling: calibration run", "passes/state_scaling.py", "measure_peaks"),
    ("  state scaling: apply scales", "passes/state_scaling.py", "apply_scales"),
    ("  tiling + placement", "passes/tiling.py", "place_blocks"),
    ("  routing graph", "passes/routing.py", "routing_graph"),
    ("  routing check", "passes/routing.py", "check_routing"),
    ("  α per channel", "targets/aoc/channel_gains.py", "choose_alpha"),
    ("  β and transmissions per tile row", "targets/aoc/backend.py", "gains_and_transmissions"),
    ("  sign split + SLM quantisation", "targets/aoc/backend.py", "quantise_set"),
    ("  realised blocks", "targets/aoc/backend.py", "realised_blocks"),
    ("  weight error per block", "targets/aoc/backend.py", "weight_errors"),
    ("  emit: manifest section + payloads", "targets/aoc/emit.py", "aoc_section"),
    ("    routing to JSON", "passes/routing.py", "routing_to_json"),
    ("    PNG encoding", "targets/aoc/png.py", "encode_png"),
    ("emit bundle (serialise + write)", "admc/compiler/driver.py", "emit_bundle"),
    ("  write files", "admc/bundle/store.py", "write_bundle"),
]


class AdmForm(nn.Module):
    """ADM form: every layer is ``W tanh(h) + b + t e`` (tanh applied to the input too)."""

    def __init__(self, d: int, hidden: list[int]) -> None:
        super().__init__()
        sizes = [d, *hidden, d]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.time_vectors = nn.ParameterList(nn.Parameter(torch.zeros(size)) for size in sizes[1:])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
            h = layer(torch.tanh(h)) + t[:, None] * time_vector
        return h


def make_model(d: int, hidden: list[int], path: Path, seed: int = SEED, scale: float = WEIGHT_SCALE) -> Path:
    """A seeded ADM-form model exported to ONNX (dynamic batch) at ``path``."""
    return seed_and_export(AdmForm(d, hidden), d, path, seed, scale)


def target_file(directory: Path, module_count: int) -> Path:
    """aoc-48 with ``module.count`` raised: the preset's 1,024 modules hold fewer weights than [1024] × 4."""
    path = directory / "target.yaml"
    path.write_text(f"inherits: {TARGET}\nname: {TARGET}-x{module_count}\nmodule:\n  count: {module_count}\n")
    return path


def _build(model: Path, directory: Path, target: Path, solver: str, steps: int) -> Path:
    from admc.compiler.driver import build

    return build(model, directory / "bundle", target=str(target), solver=solver, steps=steps)


def stage_times(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    times = {}
    for label, suffix, name in STAGES:
        total = 0.0
        for (filename, _, function), (_, _, _, cumulative, callers) in stats.items():
            if function != name or not filename.replace(os.sep, "/").endswith(suffix):
                continue
            # Count only calls from outside the function itself (recursion would double-count).
            total += cumulative if not any(caller[2] == name for caller in callers) else 0.0
        times[label] = total
    return times


def bundle_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def measure(d: int, hidden: list[int], solver: str, steps: int, repeats: int, profile: bool,
            module_count: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="admc-compile-benchmark-") as scratch:
        directory = Path(scratch)
        model = make_model(d, hidden, directory / "model.onnx")
        target = target_file(directory, module_count)
        walls = []
        for _ in range(repeats):
            started = time.perf_counter()
            bundle = _build(model, directory, target, solver, steps)
            walls.append(time.perf_counter() - started)
        manifest = json.loads((bundle / "manifest.json").read_text())
        summary = manifest["aoc"]["summary"]
        row = {
            "d": d, "hidden": hidden, "solver": solver, "steps": steps,
            "weights": manifest["report"]["weights"], "state_channels": manifest["layout"]["size"],
            "modules_used": summary["modules_used"], "lower_bound": summary["lower_bound"],
            "tile_lower_bound": summary["tile_lower_bound"], "tiles": len(manifest["aoc"]["tiles"]),
            "bundle_bytes": bundle_size(bundle), "seconds": min(walls), "seconds_all": walls,
        }
        if profile:
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            _build(model, directory, target, solver, steps)
            profiler.disable()
            row["profiled_seconds"] = time.perf_counter() - started
            row["stages"] = stage_times(profiler)
    return row


def print_table(result: dict) -> None:
    rows = result["rows"]
    print(f"admc build, target {result['target']}, d = {STATE}, {LAYERS} hidden layers; {result['machine']}")
    print(f"{'hidden':<16}{'weights':>11}{'modules':>9}{'bound':>7}{'tiles':>7}{'bundle MB':>11}{'build s':>10}")
    for row in rows:
        print(f"{str(row['hidden'][0]) + ' x ' + str(len(row['hidden'])):<16}{row['weights']:>11,}"
              f"{row['modules_used']:>9}{row['lower_bound']:>7}{row['tiles']:>7}"
              f"{row['bundle_bytes'] / 1e6:>11.2f}{row['seconds']:>10.2f}")
    for first, second in zip(rows, rows[1:], strict=False):
        print(f"width {first['hidden'][0]} → {second['hidden'][0]}: time × {second['seconds'] / first['seconds']:.2f}"
              f", weights × {second['weights'] / first['weights']:.2f}")
    profiled = [row for row in rows if "stages" in row]
    if profiled:
        print("\nper stage (cProfile cumulative seconds; the profiled run's wall time is in the last line)")
        header = "".join(f"{str(row['hidden'][0]) + ' x ' + str(len(row['hidden'])):>12}" for row in profiled)
        print(f"{'stage':<40}{header}")
        for label, _, _ in STAGES:
            print(f"{label:<40}" + "".join(f"{row['stages'][label]:>12.2f}" for row in profiled))
        print(f"{'profiled build (wall)':<40}" + "".join(f"{row['profiled_seconds']:>12.2f}" for row in profiled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: widths {QUICK_WIDTHS}, one repeat")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--widths", type=int, nargs="+", help=f"hidden widths (default {WIDTHS})")
    parser.add_argument("--solver", default="implicit-euler", help="solver of the build (default: the CLI's)")
    parser.add_argument("--steps", type=int, default=16, help="steps of the build (default: the CLI's 16)")
    parser.add_argument("--repeats", type=int, default=1, help="plain timed builds per width (best is kept)")
    parser.add_argument("--module-count", type=int, default=MODULE_COUNT,
                        help=f"module.count of the target (aoc-48 with this many modules; default {MODULE_COUNT})")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    parser.add_argument("--blas-threads", help="set OPENBLAS/OMP/MKL_NUM_THREADS before numpy and torch load "
                        "(default: leave the environment alone)")
    arguments = parser.parse_args()
    widths = arguments.widths or (QUICK_WIDTHS if arguments.quick else WIDTHS)
    torch.manual_seed(SEED)
    rows = [measure(STATE, [width] * LAYERS, arguments.solver, arguments.steps,
                    1 if arguments.quick else arguments.repeats, not arguments.no_profile, arguments.module_count)
            for width in widths]
    result = {
        "benchmark": "admc build end to end", "target": f"{TARGET} with module.count {arguments.module_count}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
                   f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}",
        "rows": rows,
    }
    print_table(result)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {arguments.json}")


if __name__ == "__main__":
    main()
