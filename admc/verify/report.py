"""Write a verification report: ``verify.json``, ``report.md`` and PNG plots (matplotlib, Agg backend).

Requires: a :class:`admc.verify.result.VerifyReport`. Plots: samples of the reference, the ideal program and
the twin (2-D scatter, or the first two principal components of the reference for d > 2); per-step NRMSE of
every link; the loop's relative change per iteration for the first step's closed phases (ideal and twin),
for a few samples. Files are written to a temporary directory and renamed into place, so a failed report
leaves nothing half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from admc.core.atomic import staged_directory
from admc.verify.result import VerifyReport  # noqa: E402

SAMPLE_COLOURS = {"reference": "#1f77b4", "ideal": "#2ca02c", "twin": "#d62728", "gaussian": "#7f7f7f"}


def _projection(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    if reference.shape[1] <= 2:
        return np.zeros(reference.shape[1]), np.eye(reference.shape[1]), "x"
    mean = reference.mean(axis=0)
    _, _, components = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, components[:2].T, "principal component"


def plot_samples(path: Path, samples: dict[str, np.ndarray]) -> None:
    mean, basis, label = _projection(samples["reference"])
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, values in samples.items():
        projected = (values - mean) @ basis
        second = projected[:, 1] if projected.shape[1] > 1 else np.zeros(len(projected))
        axis.scatter(projected[:, 0], second, s=6, alpha=0.6, label=name, color=SAMPLE_COLOURS.get(name))
    axis.set_xlabel(f"{label} 1")
    axis.set_ylabel(f"{label} 2")
    axis.set_title("final samples")
    axis.legend(markerscale=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def plot_nrmse(path: Path, links: list[dict]) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for link in links:
        values = link.get("per_step_nrmse") or []
        if values:
            axis.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-18), marker="o", ms=3,
                          label=link["link"])
    axis.set_xlabel("diffusion step")
    axis.set_ylabel("NRMSE against the reference")
    axis.set_title("per-step NRMSE")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def plot_residuals(path: Path, histories: dict[str, list[np.ndarray]], count: int = 4) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, phases in histories.items():
        for phase_index, history in enumerate(phases[:1]):
            for sample in range(min(count, history.shape[1])):
                axis.semilogy(np.arange(1, history.shape[0] + 1), np.maximum(history[:, sample], 1e-18),
                              color=SAMPLE_COLOURS.get(name), alpha=0.7,
                              label=f"{name}, phase {phase_index}" if sample == 0 else None)
    axis.set_xlabel("loop iteration (step 1)")
    axis.set_ylabel("relative change of the state")
    axis.set_title("residual vs loop iteration")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def markdown(report: dict) -> str:
    lines = [f"# Verification of `{report['bundle']}`", "",
             f"Solver {report['solver']}, {report['steps']} steps, {report['samples']} samples (seed "
             f"{report['seed']}). Result: **{'PASS' if report['passed'] else 'FAIL'}**.", "",
             "| link | criterion | measured | tolerance | max abs error | result |",
             "|---|---|---|---|---|---|"]
    for link in report["links"]:
        tolerance = "informative" if link["tolerance"] is None else f"{link['tolerance']:.1e}"
        result = "—" if link["tolerance"] is None else ("pass" if link["passed"] else "FAIL")
        lines.append(f"| {link['link']} | {link['criterion']} | {link['measured']:.3e} | {tolerance} | "
                     f"{link['max_abs_error']:.3e} | {result} |")
    distributions = report.get("distributions")
    if distributions:
        lines += ["", "## Sample distributions against the reference samples", "",
                  "MMD² is the unbiased estimate (mixture of RBF bandwidths): about 0, or slightly negative, when "
                  "the sets are indistinguishable.", "",
                  "| samples | MMD² (RBF mixture) | Wasserstein-2 |", "|---|---|---|"]
        for name, values in distributions.items():
            lines.append(f"| {name} | {values['mmd']:.3e} | {values['wasserstein2']:.4f} |")
    lines += ["", "![samples](samples.png)", "", "![per-step NRMSE](nrmse.png)", "",
              "![residual vs iteration](residuals.png)", ""]
    return "\n".join(lines)


def write_report(directory: str | Path, result: VerifyReport) -> Path:
    """``verify.json`` (``result.to_json()``), ``report.md`` and the plots of ``result`` in ``directory``."""
    report = result.to_json()
    samples, histories = result.final_samples, result.histories
    directory = Path(directory)
    with staged_directory(directory) as staging:
        (staging / "verify.json").write_text(json.dumps(report, indent=1, sort_keys=True, allow_nan=False) + "\n")
        (staging / "report.md").write_text(markdown(report))
        plot_samples(staging / "samples.png", samples)
        plot_nrmse(staging / "nrmse.png", report["links"])
        plot_residuals(staging / "residuals.png", histories)
    return directory
