"""Steps versus quality: one trained model sampled with explicit Euler, Heun, implicit Euler and
Crank-Nicolson at T ∈ {2, …, 64}, with converged loops and with 2 and 4 fixed-point iterations, on the
reference executor and on the aoc-48 twin (the paper's Fig. 4a and Extended Data Fig. 2, in spirit).

    python examples/steps/steps.py -o out/steps                          # shapes A, lightning, star
    python examples/steps/steps.py -o out/steps --shapes heart --quick   # seconds-to-minutes smoke run
    python examples/steps/steps.py -o out/steps --model NAME PATH.onnx TRUTH.npy   # any ADM ONNX model

For each model and configuration: W2 (exact, ``admc.verify.metrics``) of the samples against ground-truth samples
(a shape's sampler, or the rows of TRUTH.npy for ``--model``), network evaluations per sample (the reference
executor's batched calls of f: the explicit warm start counts as the first fixed-point iteration, the
paper's counting) and, on the twin, loop iterations per sample (every phase of every step, as the bundle's
loop budget runs them). The twin runs the smaller grid ``--twin-steps`` (its loops cost CPU time) plus the
anchor, explicit Euler at the largest T. A configuration the compiler refuses (e.g. an implicit step too
large for any loop to contract) or whose run diverges is a row with its status, not a crash.

"Match": a configuration matches the anchor when its W2 ≤ (1 + ``--match``) × W2 of explicit Euler at the
largest T on the same executor, with the same noise and ground-truth samples (a paired comparison).
``findings.md`` lists, per model and executor, the smallest T at which each implicit variant matches.
Writes ``results.csv``, ``results.md``, ``findings.md`` and ``steps.png``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SHAPES_DIR = HERE.parent / "shapes"
sys.path.insert(0, str(SHAPES_DIR))

from pipeline import build_bundle, distances, reference_samples, twin_samples  # noqa: E402
from shapes import SHAPES, sample  # noqa: E402

from admc.core.errors import AdmcError  # noqa: E402

STEPS = (2, 4, 8, 16, 32, 64)
TWIN_STEPS = (2, 4, 8, 16)
DEFAULT_SHAPES = ("A", "lightning", "star")
NOISE_SEED, TRUTH_SEED, TWIN_SEED = 11, 12, 13
MATCH = 0.10
COLUMNS = ("model", "executor", "solver", "loop", "steps", "status", "w2", "mmd", "network_evaluations",
           "loop_iterations", "seconds")


@dataclass(frozen=True)
class Configuration:
    solver: str
    fp_iterations: int | None  # None: converged loops (implicit solvers) or no loop (explicit, Heun)

    @property
    def implicit(self) -> bool:
        return self.solver in ("implicit-euler", "crank-nicolson")

    @property
    def loop(self) -> str:
        if not self.implicit:
            return "none"
        return "converged" if self.fp_iterations is None else f"{self.fp_iterations} fp"

    @property
    def label(self) -> str:
        return self.solver if not self.implicit else f"{self.solver} ({self.loop})"


CONFIGURATIONS = (Configuration("explicit-euler", None), Configuration("heun", None),
                  Configuration("implicit-euler", None), Configuration("implicit-euler", 2),
                  Configuration("implicit-euler", 4), Configuration("crank-nicolson", None),
                  Configuration("crank-nicolson", 2), Configuration("crank-nicolson", 4))
ANCHOR = CONFIGURATIONS[0]


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    truth: np.ndarray


def shape_model(shape: str, samples: int) -> Model:
    return Model(shape, SHAPES_DIR / "models" / f"{shape}.onnx", sample(shape, samples, TRUTH_SEED))


def file_model(name: str, path: str, truth_path: str, samples: int) -> Model:
    truth = np.load(truth_path, allow_pickle=False)
    if truth.ndim != 2 or truth.shape[0] < samples:
        raise AdmcError(f"{truth_path}: expected ground-truth samples [N ≥ {samples}, d], got {truth.shape}")
    return Model(name, Path(path), np.asarray(truth[:samples], dtype=np.float64))


def run_reference(model: Model, configuration: Configuration, steps: int, noise: np.ndarray) -> dict:
    started = time.perf_counter()
    try:
        result = reference_samples(model.path, noise, configuration.solver, steps, configuration.fp_iterations)
    except AdmcError as error:  # ConvergenceError included: the implicit equation has no solution found
        return {"status": f"failed: {error}"}
    scores = distances(result.samples, model.truth)
    return {"status": "ok", "w2": scores["w2"], "mmd": scores["mmd"],
            "network_evaluations": result.function_evaluations, "seconds": time.perf_counter() - started}


def run_twin(model: Model, configuration: Configuration, steps: int, noise: np.ndarray, output: Path) -> dict:
    started = time.perf_counter()
    directory = output / "bundles" / f"{model.name}-{configuration.solver}-{configuration.loop}-{steps}"
    try:
        bundle = build_bundle(model.path, directory.with_name(directory.name.replace(" ", "")),
                              configuration.solver, steps, configuration.fp_iterations)
    except AdmcError as error:
        return {"status": f"refused: {error}"}
    try:
        result = twin_samples(bundle, noise, seed=TWIN_SEED)
    except AdmcError as error:
        return {"status": f"diverged: {error}"}
    scores = distances(result.samples, model.truth[: noise.shape[0]])
    return {"status": "ok", "w2": scores["w2"], "mmd": scores["mmd"], "loop_iterations": result.loop_iterations,
            "seconds": time.perf_counter() - started}


def smallest_matching(rows: list[dict], model: str, executor: str, tolerance: float) -> tuple[float | None, dict]:
    """The anchor's W2 and, per implicit configuration, the smallest T whose W2 ≤ (1 + tolerance) × it."""
    mine = [row for row in rows if row["model"] == model and row["executor"] == executor and row["status"] == "ok"]
    largest = max((row["steps"] for row in mine if row["solver"] == ANCHOR.solver), default=None)
    anchor = next((row["w2"] for row in mine if row["solver"] == ANCHOR.solver and row["steps"] == largest), None)
    found: dict[str, int | None] = {}
    if anchor is None:
        return None, found
    for configuration in CONFIGURATIONS:
        candidates = sorted(row["steps"] for row in mine if row["solver"] == configuration.solver
                            and row["loop"] == configuration.loop and row["w2"] <= (1 + tolerance) * anchor)
        found[configuration.label] = candidates[0] if candidates else None
    return anchor, found


def write_outputs(rows: list[dict], output: Path, models: list[str], tolerance: float, caption: str) -> None:
    with open(output / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{row[key]:.6g}" if isinstance(row.get(key), float) else row.get(key, ""))
                             for key in COLUMNS})
    lines = [caption, ""]
    findings = [f"Match: W2 ≤ {1 + tolerance:.2f} × W2 of explicit Euler at the largest T, same executor, noise "
                "and ground truth. '—': no T in the grid matches (or every run failed).", ""]
    for model in models:
        for executor in ("reference", "twin"):
            mine = [row for row in rows if row["model"] == model and row["executor"] == executor]
            if not mine:
                continue
            steps = sorted({row["steps"] for row in mine})
            lines += [f"### {model}, {executor}: W2 (network evaluations / loop iterations per sample)", "",
                      "| configuration | " + " | ".join(f"T={value}" for value in steps) + " |",
                      "|---|" + "---|" * len(steps)]
            for configuration in CONFIGURATIONS:
                cells = []
                for value in steps:
                    row = next((row for row in mine if row["solver"] == configuration.solver
                                and row["loop"] == configuration.loop and row["steps"] == value), None)
                    if row is None:
                        cells.append("")
                    elif row["status"] != "ok":
                        cells.append(row["status"].split(":")[0])
                    else:
                        cost = row.get("network_evaluations") or row.get("loop_iterations")
                        cells.append(f"{row['w2']:.4f} ({cost})")
                lines.append(f"| {configuration.label} | " + " | ".join(cells) + " |")
            lines.append("")
            anchor, found = smallest_matching(rows, model, executor, tolerance)
            if anchor is not None:
                summary = "; ".join(f"{label}: {'—' if value is None else f'T={value}'}"
                                    for label, value in found.items() if "euler" in label or "nicolson" in label)
                findings.append(f"- **{model}, {executor}** (anchor W2 {anchor:.4f}): {summary}")
    failures = [row for row in rows if row["status"] != "ok"]
    if failures:
        lines += ["### Runs that did not complete", ""]
        lines += [f"- {row['model']}, {row['executor']}, {row['solver']} ({row['loop']}), T={row['steps']}: "
                  f"{row['status'][:200]}" for row in failures]
    (output / "results.md").write_text("\n".join(lines) + "\n")
    (output / "findings.md").write_text("\n".join(findings) + "\n")


def plot(rows: list[dict], output: Path, models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("reference", "steps", "T (reference)"), ("twin", "steps", "T (twin)"),
              ("reference", "network_evaluations", "network evaluations per sample (reference)"),
              ("twin", "loop_iterations", "loop iterations per sample (twin)"))
    figure, axes = plt.subplots(len(models), len(panels), figsize=(4.2 * len(panels), 3.2 * len(models)),
                                squeeze=False)
    styles = {"none": "-", "converged": "-", "2 fp": "--", "4 fp": ":"}
    colours = {"explicit-euler": "tab:gray", "heun": "tab:purple", "implicit-euler": "tab:blue",
               "crank-nicolson": "tab:red"}
    for line, model in enumerate(models):
        for column, (executor, axis_key, label) in enumerate(panels):
            axis = axes[line, column]
            for configuration in CONFIGURATIONS:
                # Joined in order of T, so a converged loop's non-monotone cost shows as a turn, not a zigzag.
                points = sorted((row["steps"], row[axis_key], row["w2"]) for row in rows
                                if row["model"] == model and row["executor"] == executor and row["status"] == "ok"
                                and row["solver"] == configuration.solver and row["loop"] == configuration.loop
                                and row.get(axis_key))
                if points:
                    _, x, y = zip(*points, strict=True)
                    axis.plot(x, y, styles[configuration.loop], marker="o", markersize=3,
                              color=colours[configuration.solver], label=configuration.label)
            axis.set_xscale("log", base=2)
            axis.set_xlabel(label, fontsize=8)
            axis.set_ylabel(f"{model}: W2", fontsize=8)
            axis.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(output / "steps.png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--shapes", nargs="*", default=list(DEFAULT_SHAPES), choices=list(SHAPES))
    parser.add_argument("--model", nargs=3, action="append", default=[], metavar=("NAME", "MODEL", "TRUTH"),
                        help="any ADM ONNX model and a .npy of ground-truth samples [N, d]")
    parser.add_argument("--steps", type=int, nargs="+", help=f"default {list(STEPS)}")
    parser.add_argument("--twin-steps", type=int, nargs="*", help=f"default {list(TWIN_STEPS)}")
    parser.add_argument("--samples", type=int, help="reference samples (and ground truth); default 512")
    parser.add_argument("--twin-samples", type=int, help="default 256")
    parser.add_argument("--match", type=float, default=MATCH)
    parser.add_argument("--quick", action="store_true",
                        help="defaults T ∈ {2, 4}, twin T ∈ {2}, 128 / 32 samples: a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    arguments = parser.parse_args(argv)
    defaults = ([2, 4], [2], 128, 32) if arguments.quick else (list(STEPS), list(TWIN_STEPS), 512, 256)
    for name, default in zip(("steps", "twin_steps", "samples", "twin_samples"), defaults, strict=True):
        if getattr(arguments, name) is None:
            setattr(arguments, name, default)
    from tqdm import tqdm

    torch.set_num_threads(arguments.threads)
    output = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    models = [shape_model(shape, arguments.samples) for shape in arguments.shapes]
    models += [file_model(name, path, truth, arguments.samples) for name, path, truth in arguments.model]
    largest = max(arguments.steps)
    jobs = []
    for model in models:
        for configuration in CONFIGURATIONS:
            for steps in arguments.steps:
                jobs.append((model, configuration, steps, "reference"))
                if steps in arguments.twin_steps or (configuration == ANCHOR and steps == largest):
                    jobs.append((model, configuration, steps, "twin"))
    rows = []
    bar = tqdm(jobs, unit="run", disable=arguments.no_progress)
    for model, configuration, steps, executor in bar:
        bar.set_postfix_str(f"{model.name} {executor} {configuration.label} T={steps}")
        dimension = model.truth.shape[1]
        count = arguments.samples if executor == "reference" else arguments.twin_samples
        noise = np.random.default_rng(NOISE_SEED).standard_normal((count, dimension))
        if executor == "reference":
            result = run_reference(model, configuration, steps, noise)
        else:
            result = run_twin(model, configuration, steps, noise, output)
        rows.append({"model": model.name, "executor": executor, "solver": configuration.solver,
                     "loop": configuration.loop, "steps": steps, **result})
    caption = (f"W2 against ground truth: reference {arguments.samples} samples, twin {arguments.twin_samples} "
               f"samples (aoc-48, the bundle's loop budget); T ∈ {arguments.steps} (twin: "
               f"{sorted(set(arguments.twin_steps))} + explicit Euler at T={largest}).")
    names = [model.name for model in models]
    write_outputs(rows, output, names, arguments.match, caption)
    plot(rows, output, names)
    print((output / "findings.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
