"""Chip-to-chip yield before and after fine-tuning (issue 24): the shipped yield sweep, source against tuned model.

Run: `nice .venv/bin/python benchmarks/finetune_yield.py [--max-steps N] [--chips N] [--workers N] [--json OUT]`
(writes benchmarks/results/finetune_yield.json; about 10 min on two shared cores at the defaults).

The shipped two-moons model is fine-tuned for the nominal aoc-48 (no calibration: static errors redrawn per chip,
`admc.finetune`'s four chips cycled step by step; teacher objective, rebuilt and selected as `admc finetune`
does). Then `examples/sweeps/two_moons_yield.yaml` — the shipped 200-chip yield sweep, every chip's static errors
and read noise from its own seed, judged by `admc verify`'s twin links — runs on the source model and on the tuned
one, with the same seeds (so chip k has the same draws in both), without its sensitivity table. Figures: yield
(chips passing / chips) with its 95 % Clopper-Pearson interval, mean W2 ratio, and the chips that pass in one run
and fail in the other. Nothing here is downloaded; the training data are `examples/train_two_moons.two_moons`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from train_two_moons import two_moons  # noqa: E402

from admc.api.finetune import finetune  # noqa: E402
from admc.finetuning.objectives import TEACHER  # noqa: E402
from admc.sweep.execute import run_sweep  # noqa: E402
from admc.sweep.report import analyse  # noqa: E402
from admc.sweep.results import read_rows  # noqa: E402
from admc.sweep.spec import load_spec  # noqa: E402

SOURCE = ROOT / "examples" / "two_moons.onnx"
SPEC = ROOT / "examples" / "sweeps" / "two_moons_yield.yaml"
TRAIN_SAMPLES, TRAIN_SEED, TUNE_SEED = 4096, 10, 0


def sweep(model: Path, chips: int, workers: int, directory: Path) -> tuple[dict, dict[int, bool], float]:
    """The shipped yield sweep on ``model`` (its sensitivity table left out): the nominal point's analysis, pass
    or fail per chip index, and the seconds it took."""
    raw = yaml.safe_load(SPEC.read_text())
    raw.update(model=str(model), chips=chips)
    raw.pop("sensitivity", None)
    spec_path = directory / f"{model.stem}_yield.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    results = directory / f"{model.stem}_results"
    started = time.perf_counter()
    run_sweep(load_spec(spec_path), results, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    (point,) = analyse(results)["points"]
    passed = {int(row["chip"]): bool(row["passed"]) for row in read_rows(results, "parquet")}
    return point, passed, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--chips", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_yield.json")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="admc-finetune-yield-") as scratch:
        directory = Path(scratch)
        started = time.perf_counter()
        tuned = directory / "tuned.onnx"
        data = two_moons(TRAIN_SAMPLES, np.random.default_rng(TRAIN_SEED))
        result = finetune(SOURCE, data, tuned, "aoc-48", objective=TEACHER, max_steps=arguments.max_steps,
                          seed=TUNE_SEED)
        tune_seconds = time.perf_counter() - started
        figures = {}
        for name, model in (("source", SOURCE), ("tuned", tuned)):
            point, passed, seconds = sweep(model, arguments.chips, arguments.workers, directory)
            figures[name] = {"yield": point["yield"], "passed": sum(passed.values()), "chips": len(passed),
                             "clopper_pearson": point["clopper_pearson"], "mean_w2_ratio": point["w2_ratio"],
                             "sweep_seconds": seconds, "per_chip": passed}
            print(f"{name:7s} yield {point['yield']:.3f} ({sum(passed.values())}/{len(passed)}), 95 % CP "
                  f"[{point['clopper_pearson'][0]:.3f}, {point['clopper_pearson'][1]:.3f}], mean W2 ratio "
                  f"{point['w2_ratio']:.3f}, {seconds:.0f} s", flush=True)
    before, after = figures["source"]["per_chip"], figures["tuned"]["per_chip"]
    summary = {
        "spec": str(SPEC.relative_to(ROOT)), "chips": arguments.chips, "max_steps": arguments.max_steps,
        "objective": TEACHER, "tune_seconds": tune_seconds, "steps_run": result.program.steps,
        "best_step": result.program.best_step, "rebuilds": result.program.rebuilds,
        "source": {key: value for key, value in figures["source"].items() if key != "per_chip"},
        "tuned": {key: value for key, value in figures["tuned"].items() if key != "per_chip"},
        "chips_gained": sorted(chip for chip in before if after.get(chip) and not before[chip]),
        "chips_lost": sorted(chip for chip in before if before[chip] and not after.get(chip)),
    }
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"gained {len(summary['chips_gained'])} chips, lost {len(summary['chips_lost'])}; wrote {arguments.json}")


if __name__ == "__main__":
    main()
