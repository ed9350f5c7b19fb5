"""Reproduce the paper's 2-D result (Fig. 2): twelve shapes compiled for aoc-48 and sampled on the twin.

    python examples/shapes/reproduce.py -o out/shapes            # all twelve, ~1-2 min per shape on a CPU
    python examples/shapes/reproduce.py -o out/shapes --shapes A heart --samples 500

For each shape's shipped model (``models/<shape>.onnx``, from ``train.py``): build for the target (implicit
Euler, 16 steps by default), run the bundle on the digital twin with its non-idealities and loop budget, run
the source model on the reference executor (float64, the same solver), and compare each sample set with
ground-truth samples of the shape (squared MMD and exact W2, ``admc.verify.metrics``) beside the paper's
reference: a Gaussian with the mean and covariance of the shape's points. Also listed: the noise floor, two
independent ground-truth sets against each other. Writes ``results.csv``, ``results.md``, ``samples.png``
(ground truth above twin, the paper's Fig. 2a order) and ``metrics.png`` (MMD and W2 bars, Fig. 2b-c).
Every seed is fixed: the same command gives the same table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pipeline import build_bundle, distances, reference_samples, twin_samples  # noqa: E402
from shapes import SHAPES, sample  # noqa: E402

from admc.verify.metrics import gaussian_baseline  # noqa: E402

MODELS = HERE / "models"
# Seeds of the independent draws: noise fed to the samplers, the ground truth scored against, the points the
# Gaussian is fitted to, the Gaussian's own draw, the second ground-truth set (noise floor), the twin's noise.
NOISE_SEED, TRUTH_SEED, FIT_SEED, GAUSSIAN_SEED, FLOOR_SEED, TWIN_SEED = 1, 2, 3, 4, 5, 6
FIT_POINTS = 20_000
COLUMNS = ("shape", "twin_mmd", "twin_w2", "reference_mmd", "reference_w2", "gaussian_mmd", "gaussian_w2",
           "floor_mmd", "floor_w2", "twin_beats_gaussian", "twin_seconds")


def evaluate(shape: str, output: Path, samples: int, solver: str, steps: int, target: str,
             float64: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """One shape's row of the table and its sample sets."""
    model = MODELS / f"{shape}.onnx"
    noise = np.random.default_rng(NOISE_SEED).standard_normal((samples, 2))
    truth = sample(shape, samples, TRUTH_SEED)
    gaussian = gaussian_baseline(sample(shape, FIT_POINTS, FIT_SEED), samples, GAUSSIAN_SEED)
    bundle = build_bundle(model, output / "bundles" / shape, solver, steps, target=target)
    started = time.perf_counter()
    twin = twin_samples(bundle, noise, seed=TWIN_SEED, float64=float64)
    seconds = time.perf_counter() - started
    reference = reference_samples(model, noise, solver, steps).samples
    scores = {"twin": distances(twin.samples, truth), "reference": distances(reference, truth),
              "gaussian": distances(gaussian, truth), "floor": distances(sample(shape, samples, FLOOR_SEED), truth)}
    row: dict = {"shape": shape}
    for name, score in scores.items():
        row[f"{name}_mmd"], row[f"{name}_w2"] = score["mmd"], score["w2"]
    row["twin_beats_gaussian"] = bool(row["twin_mmd"] < row["gaussian_mmd"] and row["twin_w2"] < row["gaussian_w2"])
    row["twin_seconds"] = round(seconds, 1)
    return row, {"truth": truth, "twin": twin.samples, "gaussian": gaussian}


def write_tables(rows: list[dict], output: Path, caption: str) -> None:
    with open(output / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value)
                             for key, value in row.items()})
    lines = [caption, "",
             "| shape | twin MMD | twin W2 | reference MMD | reference W2 | Gaussian MMD | Gaussian W2 | "
             "floor MMD | floor W2 | twin beats Gaussian |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['shape']} | {row['twin_mmd']:.4f} | {row['twin_w2']:.4f} | {row['reference_mmd']:.4f} | "
                     f"{row['reference_w2']:.4f} | {row['gaussian_mmd']:.4f} | {row['gaussian_w2']:.4f} | "
                     f"{row['floor_mmd']:.4f} | {row['floor_w2']:.4f} | "
                     f"{'yes' if row['twin_beats_gaussian'] else '**no**'} |")
    wins = sum(row["twin_beats_gaussian"] for row in rows)
    lines += ["", f"The twin beats the Gaussian reference on both metrics for {wins} of {len(rows)} shapes."]
    (output / "results.md").write_text("\n".join(lines) + "\n")


def plot_samples(sets: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sets)
    columns = min(6, len(names))
    groups = -(-len(names) // columns)
    figure, axes = plt.subplots(2 * groups, columns, figsize=(1.9 * columns, 3.9 * groups), squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_aspect("equal")
    for index, name in enumerate(names):
        group, column = divmod(index, columns)
        for offset, (kind, colour) in enumerate((("truth", "tab:gray"), ("twin", "tab:blue"))):
            axis = axes[2 * group + offset, column]
            points = sets[name][kind]
            axis.scatter(points[:, 0], points[:, 1], s=1.0, color=colour, linewidths=0)
            axis.set_title(f"{name} ({'ground truth' if kind == 'truth' else 'twin'})", fontsize=8)
    for index in range(len(names), groups * columns):
        group, column = divmod(index, columns)
        axes[2 * group, column].axis("off")
        axes[2 * group + 1, column].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_metrics(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["shape"] for row in rows]
    positions = np.arange(len(rows))
    figure, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    series = (("twin", "twin (aoc-48)", "tab:blue"), ("reference", "reference executor", "tab:green"),
              ("gaussian", "Gaussian fit", "tab:orange"))
    for axis, metric, label in ((axes[0], "mmd", "squared MMD"), (axes[1], "w2", "W2")):
        for offset, (key, legend, colour) in enumerate(series):
            values = [row[f"{key}_{metric}"] for row in rows]
            axis.bar(positions + (offset - 1) * 0.27, values, 0.27, label=legend, color=colour)
        # Linear axes: the unbiased squared MMD can be slightly negative, which a log axis would hide.
        axis.axhline(0.0, color="black", linewidth=0.6)
        axis.set_xticks(positions, names, rotation=45, ha="right")
        axis.set_ylabel(label + " to ground truth")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 1.15), ncol=3, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--samples", type=int, default=1000, help="samples per set (twin, truth, Gaussian)")
    parser.add_argument("--solver", default="implicit-euler")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--target", default="aoc-48")
    parser.add_argument("--float64", action="store_true", help="run the twin in float64 (slower)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    arguments = parser.parse_args(argv)
    from tqdm import tqdm

    torch.set_num_threads(arguments.threads)
    output = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    rows, sets = [], {}
    bar = tqdm(arguments.shapes, unit="shape", disable=arguments.no_progress)
    for shape in bar:
        bar.set_postfix_str(shape)
        row, sets[shape] = evaluate(shape, output, arguments.samples, arguments.solver, arguments.steps,
                                    arguments.target, arguments.float64)
        rows.append(row)
    caption = (f"{arguments.samples} samples per set; {arguments.solver}, {arguments.steps} steps, target "
               f"{arguments.target}; squared MMD (unbiased) and exact W2 against ground-truth samples.")
    write_tables(rows, output, caption)
    plot_samples(sets, output / "samples.png")
    plot_metrics(rows, output / "metrics.png")
    print((output / "results.md").read_text())
    return 0 if all(row["twin_beats_gaussian"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
