"""Scaling benchmark (issue 25): compile and run networks of 0.26M to 36M weights; time and peak memory per pass.

Requires: admc installed (``pip install -e .``) with torch and onnx; Linux for the memory figures
(``admc.core.process_memory``). Run::

    python benchmarks/scaling.py                         # the full table (tens of minutes on 2 cores)
    python benchmarks/scaling.py --quick                 # two small sizes, aoc-48 only
    python benchmarks/scaling.py --sizes 1280 --forms adm --targets aoc-48 --run

Networks (seeded, exported to ONNX untimed): state d = 256 and three hidden layers of width H, so 2·256·H + 2·H²
weights: H = 256, 640, 1280, 2816, 4096 give 0.26M, 1.15M, 3.9M, 17.3M and 35.7M. ``adm`` is the ADM form (``W
tanh(h) + b + t e`` per layer); ``standard`` is a standard MLP (``Linear(cat[x, t])`` then ``tanh``/``Linear``,
canonicalised by fold-input). ``--paper-3m`` adds the 3.3M network of earlier reports (d = 64, hidden [1024] × 4,
ADM form). Targets: aoc-48 with ``module.count`` raised so every size fits, ideal, rram-128 with ``crossbar.count``
raised.

Each build runs in a fresh child process (so one build's memory does not count against the next); the pass manager
records each pass's seconds and the process's peak resident memory during it (as ``admc build --timings`` prints
them; everything resident, not only what the pass allocated). "outside passes" is the build's wall time less the
passes' (source import and bundle write). ``--run`` also times ``admc simulate`` (ideal and twin) and ``admc
verify`` per sample on the bundle.

The growth exponent of each pass is the least-squares slope of log(seconds) against log(weights) over the sizes of
at least 4M weights (issue 25 asks for ≤ 1.15 between 4M and 36M).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seeded_export import seed_and_export

STATE = 256
LAYERS = 3
WIDTHS = (256, 640, 1280, 2816, 4096)
QUICK_WIDTHS = (256, 640)
FORMS = ("adm", "standard")
TARGETS = ("aoc-48", "ideal", "rram-128")
SEED = 0
WEIGHT_SCALE = 0.5
LARGE_COUNT = 1_000_000  # modules / crossbars: more than any size here needs
EXPONENT_FROM = 4_000_000 * 0.95  # the 3.9M size counts as "4M"
RUN_SAMPLES = 64


def _model(form: str, width: int, state: int, layers: int, path: Path) -> Path:
    import torch
    from torch import nn

    sizes_in = state + (1 if form == "standard" else 0)
    sizes = [sizes_in, *([width] * layers), state]

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
            self.time_vectors = nn.ParameterList(nn.Parameter(torch.zeros(size)) for size in sizes[1:])

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if form == "standard":
                h = self.layers[0](torch.cat([x, t[:, None]], dim=1))
                for layer in self.layers[1:]:
                    h = layer(torch.tanh(h))
                return h
            h = x
            for layer, time_vector in zip(self.layers, self.time_vectors, strict=True):
                h = layer(torch.tanh(h)) + t[:, None] * time_vector
            return h

    return seed_and_export(Network(), state, path, SEED, WEIGHT_SCALE)


def _target(name: str, directory: Path) -> str:
    if name == "ideal":
        return name
    section = "module" if name.startswith("aoc") else "crossbar"
    path = directory / f"{name}-large.yaml"
    path.write_text(f"inherits: {name}\nname: {name}-large\n{section}:\n  count: {LARGE_COUNT}\n")
    return str(path)


def _files(path: Path) -> tuple[int, int]:
    files = [file for file in path.rglob("*") if file.is_file()]
    return len(files), sum(file.stat().st_size for file in files)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    return time.perf_counter() - started


def _run_bundle(bundle: Path, directory: Path, state: int) -> dict:
    import numpy as np

    admc = [sys.executable, "-m", "admc.cli"]
    noise = directory / "noise.npy"
    np.save(noise, np.random.default_rng(SEED).standard_normal((RUN_SAMPLES, state)))
    out = directory / "out.npy"
    figures = {}
    for label, extra in (("simulate_ideal", ["--ideal"]), ("simulate_twin", [])):
        seconds = _timed([*admc, "simulate", str(bundle), "--noise", str(noise), "-o", str(out), *extra])
        figures[label + "_seconds_per_sample"] = seconds / RUN_SAMPLES
    seconds = _timed([*admc, "verify", str(bundle), "--samples", str(RUN_SAMPLES)])
    figures["verify_seconds_per_sample"] = seconds / RUN_SAMPLES
    return figures


def one(form: str, width: int, state: int, layers: int, target: str, run: bool) -> dict:
    """Build one network for one target in this process; per-pass time and peak memory."""
    from admc.compiler.driver import build
    from admc.core.process_memory import peak_bytes, reset_peak
    from admc.passes.manager import PassManager

    with tempfile.TemporaryDirectory(prefix="admc-scaling-") as scratch:
        directory = Path(scratch)
        model = _model(form, width, state, layers, directory / "model.onnx")
        passes = PassManager()
        reset_peak()
        started = time.perf_counter()
        bundle = build(model, directory / "bundle", target=_target(target, directory), passes=passes)
        wall = time.perf_counter() - started
        rows = [{"pass": record.name, "seconds": record.seconds, "peak_bytes": record.peak_bytes}
                for record in passes.records]
        file_count, size = _files(bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        row = {"form": form, "width": width, "state": state, "layers": layers, "target": target,
               "weights": manifest["report"]["weights"], "seconds": wall, "passes": rows,
               "outside_passes_seconds": wall - sum(entry["seconds"] for entry in rows),
               "peak_bytes": max([entry["peak_bytes"] or 0 for entry in rows] + [peak_bytes() or 0]),
               "bundle_files": file_count, "bundle_bytes": size}
        if run:
            row.update(_run_bundle(bundle, directory, state))
    return row


def exponents(rows: list[dict]) -> dict:
    """Per (form, target, pass): least-squares slope of log seconds on log weights over sizes ≥ 4M."""
    import numpy as np

    series: dict[tuple, list[tuple[float, float]]] = {}
    for row in rows:
        if row["weights"] < EXPONENT_FROM:
            continue
        entries = [("build", row["seconds"])] + [(entry["pass"], entry["seconds"]) for entry in row["passes"]]
        for name, seconds in entries:
            series.setdefault((row["form"], row["target"], name), []).append((row["weights"], max(seconds, 1e-3)))
    slopes = {}
    for (form, target, name), points in series.items():
        if len(points) < 2:
            continue
        weights, seconds = (np.log([point[index] for point in points]) for index in (0, 1))
        slopes[f"{form} {target} {name}"] = float(np.polyfit(weights, seconds, 1)[0])
    return slopes


def print_row(row: dict) -> None:
    print(f"\n{row['form']} H={row['width']} d={row['state']} on {row['target']}: {row['weights']:,} weights, "
          f"build {row['seconds']:.2f} s, peak {row['peak_bytes'] / 2**30:.2f} GiB, bundle "
          f"{row['bundle_bytes'] / 2**20:.1f} MiB in {row['bundle_files']} files")
    for entry in row["passes"]:
        peak = "" if entry["peak_bytes"] is None else f"{entry['peak_bytes'] / 2**30:8.2f} GiB"
        print(f"  {entry['pass']:<44}{entry['seconds']:9.3f} s {peak}")
    print(f"  {'outside passes (import, bundle write)':<44}{row['outside_passes_seconds']:9.3f} s")
    for key in ("simulate_ideal_seconds_per_sample", "simulate_twin_seconds_per_sample", "verify_seconds_per_sample"):
        if key in row:
            print(f"  {key.replace('_', ' '):<44}{row[key]:9.4f} s")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"widths {QUICK_WIDTHS}, aoc-48, ADM form only")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"hidden widths H (default {WIDTHS})")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--paper-3m", action="store_true", help="also the 3.3M network (d 64, [1024] × 4, ADM)")
    parser.add_argument("--run", action="store_true", help=f"also time simulate and verify on {RUN_SAMPLES} samples")
    parser.add_argument("--json", type=Path, help="write the rows and exponents to this JSON file")
    parser.add_argument("--one", nargs=5, metavar=("FORM", "WIDTH", "STATE", "LAYERS", "TARGET"),
                        help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        form, width, state, layers, target = arguments.one
        print(json.dumps(one(form, int(width), int(state), int(layers), target, arguments.run)))
        return
    widths = QUICK_WIDTHS if arguments.quick else tuple(arguments.sizes or WIDTHS)
    forms = ["adm"] if arguments.quick else arguments.forms
    targets = ["aoc-48"] if arguments.quick else arguments.targets
    cases = [(form, width, STATE, LAYERS, target) for target in targets for form in forms for width in widths]
    if arguments.paper_3m:
        cases.insert(0, ("adm", 1024, 64, 4, "aoc-48"))
    rows = []
    for case in cases:
        command = [sys.executable, __file__, "--one", *map(str, case)] + (["--run"] if arguments.run else [])
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            print(f"\n{case}: failed\n{completed.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print_row(rows[-1])
    slopes = exponents(rows)
    if slopes:
        print("\ngrowth exponent (seconds ∝ weights^e, sizes ≥ 4M)")
        for name, slope in sorted(slopes.items()):
            print(f"  {name:<70}{slope:6.2f}")
    if arguments.json:
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows, "exponents": slopes}
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
