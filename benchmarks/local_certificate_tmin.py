"""Certified T_min of the local certificate against the smallest T whose loops settle (issue 22, point 4).

    python benchmarks/local_certificate_tmin.py [--steps 1 2 3 4 6 8 12 16] [--targets aoc-48 ideal]
        [--models examples/two_moons.onnx examples/conditional/eight_gaussians.onnx] [--json PATH]

Per shipped model, target and T: ``admc build`` at implicit Euler T (no --force: a build whose loops do not settle
on its fresh samples is refused, and counts as not settling), then the manifest's ``convergence.local`` entry
(the slowest closed phase: the full-P certificate over each calibration sample's box, from iteration
``from_iteration`` on) and the CPU time of the local certificate (``local_certificate``, timed around the
build's own call). Per model and target: the smallest T whose build settles, the smallest T whose local
certificate is < 1 (from any tail, and from iteration 0: the whole loop), and their ratios. Single-threaded BLAS;
the load average is printed. Results: benchmarks/results/local_certificate_tmin.json.
"""

from __future__ import annotations

import os

# Single-threaded BLAS: threads only oversubscribe a shared machine, and CPU time stays comparable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import admc.passes.loop_budget as loop_budget  # noqa: E402
from admc.compiler.driver import build  # noqa: E402
from admc.core.errors import AdmcError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["examples/two_moons.onnx", "examples/conditional/eight_gaussians.onnx"]
STEPS = [1, 2, 3, 4, 6, 8, 12, 16]
RESULTS = ROOT / "benchmarks" / "results" / "local_certificate_tmin.json"


def timed_local_certificate(times: list[float]):
    """The build's own ``local_certificate``, its CPU time appended to ``times``."""
    original = loop_budget.local_certificate

    def wrapped(*arguments):
        start = time.process_time()
        try:
            return original(*arguments)
        finally:
            times.append(time.process_time() - start)
    return wrapped


def one_build(model: str, target: str, steps: int, directory: Path) -> dict:
    times: list[float] = []
    loop_budget.local_certificate, original = timed_local_certificate(times), loop_budget.local_certificate
    started = time.perf_counter()
    try:
        bundle = build(ROOT / model, directory / f"{Path(model).stem}_{target}_{steps}", target=target, steps=steps)
    except AdmcError as error:
        return {"steps": steps, "settles": False, "refusal": str(error)[:200]}
    finally:
        loop_budget.local_certificate = original
    section = json.loads((bundle / "manifest.json").read_text())["convergence"]
    entry = (section["local"]["phases"] or [{}])[0]
    return {"steps": steps, "settles": True, "build_s": time.perf_counter() - started,
            "local_s": times[0] if times else None, "contraction_raw": entry.get("contraction_raw"),
            "from_iteration": entry.get("from_iteration"), "global": entry.get("global"),
            "certified_iterations": entry.get("certified_iterations"),
            "measured_iterations": entry.get("measured_iterations"), "step": entry.get("step")}


def first(rows: list[dict], condition) -> int | None:
    return next((row["steps"] for row in rows if condition(row)), None)


def summary(rows: list[dict]) -> dict:
    settles = first(rows, lambda row: row["settles"])
    certified = first(rows, lambda row: row["settles"] and (row["contraction_raw"] or 2.0) < 1.0)
    whole = first(rows, lambda row: row["settles"] and (row["contraction_raw"] or 2.0) < 1.0
                  and row["from_iteration"] == 0)
    return {"settles_from": settles, "certified_from": certified, "certified_whole_loop_from": whole,
            "ratio": None if settles is None or certified is None else certified / settles,
            "ratio_whole_loop": None if settles is None or whole is None else whole / settles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--targets", nargs="+", default=["aoc-48", "ideal"])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--json", type=Path, default=RESULTS)
    options = parser.parse_args()
    results = {"load_average": list(os.getloadavg()), "cases": []}
    with tempfile.TemporaryDirectory() as scratch:
        for model in options.models:
            for target in options.targets:
                rows = [one_build(model, target, steps, Path(scratch)) for steps in options.steps]
                case = {"model": model, "target": target, "rows": rows, **summary(rows)}
                results["cases"].append(case)
                for row in rows:
                    print(f"{model} {target} T={row['steps']}: " + ", ".join(
                        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in row.items() if key not in ("steps", "refusal")), flush=True)
                print(f"{model} {target}: settles from T={case['settles_from']}, certified from "
                      f"T={case['certified_from']} (whole loop T={case['certified_whole_loop_from']}), ratio "
                      f"{case['ratio']}", flush=True)
    results["load_average_after"] = list(os.getloadavg())
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
