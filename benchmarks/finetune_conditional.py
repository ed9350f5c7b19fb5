"""Fine-tuning a conditional model with classifier-free guidance for a measured machine (issue 24).

Run: `nice .venv/bin/python benchmarks/finetune_conditional.py [--max-steps N] [--samples N] [--json OUT]` (writes
benchmarks/results/finetune_conditional.json; a few minutes on two shared cores at the defaults, most of it builds).

The shipped conditional example (`examples/conditional/eight_gaussians.onnx`, eight labelled Gaussians, null token
8) compiled for aoc-48 with the shipped hw48 calibration at guidance W = 3 (`--guidance 3 --null-condition
label=8`, the target's default solver), fine-tuned by `admc.finetune` with the ``teacher`` objective (the source's
own guided velocity as the target; rebuilt and selected on the rebuilt program every 25 steps) on eight-Gaussians
samples with their labels, beside the digital control (the same weights trained by flow matching, guided as the
build is, for the same number of steps). Source, tuned model and control are each built as above and measured:

- the per-class twin link, as `admc verify --calibration hw48` judges it (``admc.verify.conditions.per_class``
  through ``Bundle.verify``: per class the twin's W2 to the bundled model's reference over a Gaussian fit's, at most
  0.5; the class passes when that and the ideal program's link hold): how many of the eight classes pass;
- per class, W2 and final-sample NRMSE of the calibrated twin's samples (read noise on, as `admc simulate
  --calibration hw48` runs it) against the *source* model's ideal samples (the float64 reference solver, guided),
  from the same noise and labels (an equal number per class).

First, the differentiable path fine-tuning trains through is checked against the bundle twin on this build: with
the source's weights, float64, read noise off, the largest difference of their final samples (every class).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples" / "conditional"), str(ROOT / "benchmarks")]

from finetune import write_report  # noqa: E402
from train_eight_gaussians import CLASSES, NULL_TOKEN, eight_gaussians  # noqa: E402

import admc  # noqa: E402
from admc.finetuning.flow_matching import FitSettings  # noqa: E402
from admc.finetuning.model_writer import write_tuned  # noqa: E402
from admc.finetuning.objectives import LEARNING_RATES, TEACHER  # noqa: E402
from admc.finetuning.run import finetune  # noqa: E402
from admc.runtime.reference import run_reference  # noqa: E402
from admc.runtime.simulate import simulate  # noqa: E402
from admc.verify.metrics import nrmse, wasserstein2  # noqa: E402

SOURCE = ROOT / "examples" / "conditional" / "eight_gaussians.onnx"
TARGET, CALIBRATION, GUIDANCE, NULL = "aoc-48", "hw48", 3.0, {"label": NULL_TOKEN}
SOLVER, STEPS = "implicit-euler", 16  # the target's default solver and grid: what admc build (and finetune) use
TRAIN_SAMPLES, TRAIN_SEED, NOISE_SEED, VERIFY_SAMPLES = 4096, 10, 12, 256


def twin_agreement(noise: np.ndarray, labels: np.ndarray) -> dict:
    """max |differentiable path − bundle twin| of the final samples, source weights, float64, read noise off."""
    from dataclasses import replace

    from admc.compiler.build_options import BuildOptions, target_machine
    from admc.compiler.driver import load_source
    from admc.finetuning.compiled_model import CompiledModel
    from admc.runtime.guidance import run_conditions
    from admc.targets.aoc.measured_device import measured_nonidealities
    from admc.targets.aoc.twin import AocTwin, nonidealities_of
    from admc.targets.loader import load_target

    target = load_target(TARGET)
    options = replace(BuildOptions(), calibration=target_machine(target, CALIBRATION), guidance=GUIDANCE,
                      null_conditions=NULL)
    model = CompiledModel(load_source(SOURCE), target, options, seed=0)
    try:
        mine = model.samples(noise, conditions={"label": labels})
        effects = nonidealities_of(model.bundle)
        calibration = model.compiled.calibration
        effects = replace(measured_nonidealities(calibration, effects),
                          read_noise=replace(effects.read_noise, enabled=False))
        twin = AocTwin(model.bundle, effects, calibration=calibration, seed=0, switch_on_calibrated=False)
        drive = run_conditions(model.bundle, len(noise), {"label": labels}).drive(twin.program)
        theirs = twin.run(noise, extra_drive=drive).trajectory[-1]
    finally:
        model.close()
    return {"samples": len(noise), "max_abs_difference": float(np.abs(mine - theirs).max()),
            "sample_scale": float(np.abs(theirs).max())}


def built(model: Path, directory: Path) -> Path:
    bundle = admc.build(model, TARGET, directory / f"{model.stem}_bundle", calibration=CALIBRATION,
                        guidance=GUIDANCE, null_conditions=NULL)
    return Path(bundle.path)


def twin_link(bundle: Path) -> dict:
    """``admc verify --calibration hw48``'s per-class rows and how many classes pass."""
    report = admc.load(bundle).verify(samples=VERIFY_SAMPLES, calibration=CALIBRATION)
    rows = [dict(row) for row in report.per_class]
    return {"classes_passing": sum(row["passed"] for row in rows),
            "classes_twin_ratio_within_bound": sum(row["twin_w2_ratio"] <= 0.5 for row in rows),
            "twin_w2_ratios": [row["twin_w2_ratio"] for row in rows],
            "ideal_per_step_nrmse": [row["ideal_per_step_nrmse"] for row in rows],
            "overall_passed": report.passed, "per_class": rows}


def per_class(samples: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    w2 = [wasserstein2(samples[labels == label], expected[labels == label]) for label in range(CLASSES)]
    error = [nrmse(samples[labels == label], expected[labels == label]) for label in range(CLASSES)]
    return {"w2_per_class": w2, "nrmse_per_class": error, "w2_mean": float(np.mean(w2)),
            "nrmse": nrmse(samples, expected)}


def evaluate(models: dict[str, Path], noise: np.ndarray, labels: np.ndarray, directory: Path) -> dict:
    conditions = {"label": labels}
    source_ideal = run_reference(str(models["source"]), noise, SOLVER, STEPS, conditions=conditions,
                                 guidance=GUIDANCE, null_conditions=NULL).samples
    rows = {}
    for name, path in models.items():
        began = time.perf_counter()
        bundle = built(path, directory)
        machine = simulate(bundle, noise, conditions, ideal=False, seed=0, calibration=CALIBRATION)
        own = run_reference(str(path), noise, SOLVER, STEPS, conditions=conditions, guidance=GUIDANCE,
                            null_conditions=NULL).samples
        rows[name] = {"twin_link": twin_link(bundle), "machine_vs_source_ideal": per_class(machine, source_ideal,
                                                                                             labels),
                      "own_ideal_vs_source_ideal": per_class(own, source_ideal, labels),
                      "seconds": time.perf_counter() - began}
        link, against = rows[name]["twin_link"], rows[name]["machine_vs_source_ideal"]
        print(f"{name:45s} classes passing {link['classes_passing']}/{CLASSES} (twin ratio ≤ 0.5: "
              f"{link['classes_twin_ratio_within_bound']}), ratios "
              f"{' '.join(f'{ratio:.2f}' for ratio in link['twin_w2_ratios'])}; vs source ideal: mean W2 "
              f"{against['w2_mean']:.4f}, NRMSE {against['nrmse']:.4f}", flush=True)
    return rows


def tune(train: np.ndarray, labels: np.ndarray, max_steps: int, directory: Path) -> tuple[dict, dict]:
    began = time.perf_counter()
    output = directory / "eight_gaussians_tuned.onnx"
    result = finetune(SOURCE, train, output, TARGET, calibration=CALIBRATION, max_steps=max_steps, seed=0,
                      objective=TEACHER, conditions={"label": labels}, guidance=GUIDANCE, null_conditions=NULL,
                      progress=lambda fit, step, steps, loss, best: print(
                          f"  {fit} {step}/{steps} loss {loss:.5f} best {best:.5f}", flush=True)
                      if step % 25 == 0 else None)
    control = write_tuned(SOURCE, result.control.weights, directory / "eight_gaussians_control.onnx")
    figures = {"steps": result.program.steps, "best_step": result.program.best_step,
               "rebuilds": result.program.rebuilds, "stopped": result.program.stopped,
               "holdout_loss": result.program.holdout_loss, "seconds": time.perf_counter() - began,
               "seconds_per_step": result.program.seconds_per_step,
               "loop_iterations_per_step": result.program.loop_iterations_per_step,
               "control": {"steps": result.control.steps, "best_step": result.control.best_step,
                           "holdout_loss": result.control.holdout_loss}}
    return {"tuned (teacher, rebuilt)": output, "control (digital flow matching, same steps)": control}, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=512, help="evaluation samples (an equal number per class)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_conditional.json")
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # the cores are shared
    began = time.perf_counter()
    train, train_labels = eight_gaussians(TRAIN_SAMPLES, np.random.default_rng(TRAIN_SEED))
    noise = np.random.default_rng(NOISE_SEED).standard_normal((arguments.samples, 2))
    labels = np.arange(arguments.samples) % CLASSES
    report = {"source": str(SOURCE.relative_to(ROOT)), "target": TARGET, "calibration": CALIBRATION,
              "guidance": GUIDANCE, "null_condition": NULL, "solver": SOLVER, "steps": STEPS,
              "settings": {"max_steps": arguments.max_steps, "batch": FitSettings().batch, "objective": TEACHER,
                           "learning_rate": LEARNING_RATES[TEACHER], "train_samples": TRAIN_SAMPLES,
                           "evaluation_samples": arguments.samples, "verify_samples": VERIFY_SAMPLES,
                           "w2": "exact (POT EMD via admc.verify.metrics.wasserstein2), equal-size sets per class"}}
    report["differentiable_path_vs_bundle_twin"] = twin_agreement(noise[:64], labels[:64])
    print(f"differentiable path vs bundle twin: {report['differentiable_path_vs_bundle_twin']}", flush=True)
    with tempfile.TemporaryDirectory() as temporary:
        written, report["fit"] = tune(train, train_labels, arguments.max_steps, Path(temporary))
        report["results"] = evaluate({"source": SOURCE, **written}, noise, labels, Path(temporary))
    report["seconds"] = time.perf_counter() - began
    write_report(arguments.json, report)


if __name__ == "__main__":
    main()
