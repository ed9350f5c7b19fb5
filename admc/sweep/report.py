"""``admc sweep --report RESULTS_DIR``: yields with confidence intervals, sensitivities, Pareto fronts, plots.

Requires: a results directory written by ``run_sweep`` (finished or interrupted: parts are read too).
Guarantees: :func:`analyse` returns plain data: per point the yield (chips passing / chips) with Wilson and
Clopper-Pearson 95 % intervals and the mean quality figures of its chips that ran; the one-at-a-time
sensitivity table (each effect alone at its preset value against every effect off: the mean W2 and worst-step
NRMSE it adds); and, for sweeps of more than one grid point, the Pareto fronts of quality (mean W2 / W2 of a
Gaussian fit, lower is better) against the latency estimate and against the modules used.
:func:`write_report` writes ``report/summary.json``, ``report/report.md`` and PNG plots, and returns the
Markdown. Deterministic for a given table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from admc.core.atomic import write_file_atomically
from admc.core.errors import AdmcError
from admc.sweep.points import BASELINE, GRID, SENSITIVITY
from admc.sweep.results import read_rows
from admc.sweep.statistics import clopper_pearson_interval, pareto_front, wilson_interval

CONFIDENCE = 0.95
REPORT = "report"


def _mean(values: list[float]) -> float:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def _label(row: dict) -> str:
    if row["kind"] == SENSITIVITY:
        return f"{row['effect']} alone" if row["effect"] != BASELINE else "every effect off"
    parameters = json.loads(row["parameters"])
    return ", ".join(f"{name}={value}" for name, value in parameters.items()) or "nominal"


def point_table(rows: list[dict]) -> list[dict]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["point"], []).append(row)
    table = []
    for index in sorted(groups):
        chips = groups[index]
        passed = sum(bool(row["passed"]) for row in chips)
        ran = [row for row in chips if row["status"] == "ok"]
        failures: dict[str, int] = {}
        for row in chips:
            if row["status"] != "ok":
                failures[row["status"]] = failures.get(row["status"], 0) + 1
        reasons = sorted({row["reason"] for row in chips if row["status"] != "ok" and row["reason"]})
        first = chips[0]
        table.append({
            "point": index, "kind": first["kind"], "effect": first["effect"], "label": _label(first),
            "parameters": json.loads(first["parameters"]), "chips": len(chips), "passed": passed,
            "yield": passed / len(chips), "wilson": list(wilson_interval(passed, len(chips), CONFIDENCE)),
            "clopper_pearson": list(clopper_pearson_interval(passed, len(chips), CONFIDENCE)),
            "w2": _mean([row["w2"] for row in ran]), "w2_ratio": _mean([row["w2_ratio"] for row in ran]),
            "nrmse_max_step": _mean([row["nrmse_max_step"] for row in ran]),
            "loop_iterations": _mean([row["loop_iterations"] for row in ran]),
            "latency_s": _mean([row["latency_s"] for row in ran]),
            "modules_used": first["modules_used"], "steps": first["steps"],
            "failures": failures, "reasons": reasons[:3],
        })
    return table


def sensitivity_table(points: list[dict], rows: list[dict]) -> list[dict]:
    """Each effect alone against every effect off, sorted by the W2 it adds (largest first)."""
    baseline = [point for point in points if point["kind"] == SENSITIVITY and point["effect"] == BASELINE]
    if not baseline:
        return []
    base = baseline[0]
    table = []
    for point in points:
        if point["kind"] != SENSITIVITY or point["effect"] == BASELINE:
            continue
        w2 = [row["w2"] for row in rows if row["point"] == point["point"] and row["status"] == "ok"]
        spread = float(np.std(w2, ddof=1) / math.sqrt(len(w2))) if len(w2) > 1 else float("nan")
        table.append({
            "effect": point["effect"], "chips": point["chips"], "yield": point["yield"],
            "clopper_pearson": point["clopper_pearson"], "w2": point["w2"],
            "w2_added": point["w2"] - base["w2"], "w2_added_standard_error": spread,
            "nrmse_max_step": point["nrmse_max_step"],
            "nrmse_added": point["nrmse_max_step"] - base["nrmse_max_step"],
            "failures": point["failures"],
        })
    table.sort(key=lambda entry: (-entry["w2_added"] if math.isfinite(entry["w2_added"]) else math.inf,
                                  entry["effect"]))
    return table


def pareto_tables(points: list[dict]) -> dict:
    grid_points = [point for point in points if point["kind"] == GRID]
    if len(grid_points) < 2:
        return {}
    fronts = {}
    for cost in ("latency_s", "modules_used", "loop_iterations"):
        objectives = [(point["w2_ratio"], float(point[cost])) for point in grid_points]
        fronts[cost] = [grid_points[index]["point"] for index in pareto_front(objectives)]
    objectives = [(point["w2_ratio"], point["latency_s"], float(point["modules_used"])) for point in grid_points]
    fronts["latency_s+modules_used"] = [grid_points[index]["point"] for index in pareto_front(objectives)]
    return fronts


def analyse(directory: Path) -> dict:
    record_path = directory / "sweep.json"
    if not record_path.is_file():
        raise AdmcError(f"{directory}: not a sweep results directory (no sweep.json)")
    record = json.loads(record_path.read_text())
    rows = read_rows(directory, record["format"])
    if not rows:
        raise AdmcError(f"{directory}: no finished chips to report on yet")
    points = point_table(rows)
    runs = []
    if (directory / "runs.jsonl").is_file():
        runs = [json.loads(line) for line in (directory / "runs.jsonl").read_text().splitlines() if line.strip()]
    return {"name": record["spec"]["name"], "chips": len(rows), "points": points,
            "sensitivity": sensitivity_table(points, rows), "pareto": pareto_tables(points),
            "criterion": record["spec"]["criterion"], "runs": runs}


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def markdown(analysis: dict) -> str:
    criterion = analysis["criterion"]
    rule = f"W2(twin, reference) ≤ {criterion['twin_ratio']} × W2(Gaussian fit, reference)"
    if criterion.get("twin_nrmse") is not None:
        rule += f" and worst per-step NRMSE ≤ {criterion['twin_nrmse']}"
    wall = sum(run.get("wall_s", 0.0) for run in analysis["runs"])
    lines = [f"# Sweep report: {analysis['name']}", "",
             f"{analysis['chips']} chips; a chip passes when the ideal chain passes and {rule} "
             f"(admc verify's links). Wall time of the runs: {wall:.1f} s.", "",
             "## Yield per point (95 % intervals)", "",
             "| point | setting | chips | passed | yield | Wilson | Clopper-Pearson | mean W2 | mean W2 ratio | "
             "mean worst-step NRMSE | latency estimate (s) | modules | failures |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for point in analysis["points"]:
        failures = ", ".join(f"{count} {status}" for status, count in sorted(point["failures"].items())) or "–"
        lines.append(f"| {point['point']} | {point['label']} | {point['chips']} | {point['passed']} | "
                     f"{point['yield']:.3f} | {_interval(point['wilson'])} | {_interval(point['clopper_pearson'])} | "
                     f"{point['w2']:.4f} | {point['w2_ratio']:.4f} | {point['nrmse_max_step']:.4f} | "
                     f"{point['latency_s']:.3e} | {point['modules_used']} | {failures} |")
    reasons = [(point["point"], reason) for point in analysis["points"] for reason in point["reasons"]]
    if reasons:
        lines += ["", "Failure reasons (first of each point):", ""]
        lines += [f"- point {index}: {reason}" for index, reason in reasons]
    if analysis["sensitivity"]:
        lines += ["", "## One-at-a-time sensitivity (each effect alone at its preset value vs every effect off)", "",
                  "| effect | chips | W2 added | ± s.e. | worst-step NRMSE added | yield | Clopper-Pearson |",
                  "|---|---|---|---|---|---|---|"]
        for entry in analysis["sensitivity"]:
            lines.append(f"| {entry['effect']} | {entry['chips']} | {entry['w2_added']:+.4f} | "
                         f"{entry['w2_added_standard_error']:.4f} | {entry['nrmse_added']:+.4f} | "
                         f"{entry['yield']:.3f} | {_interval(entry['clopper_pearson'])} |")
    if analysis["pareto"]:
        lines += ["", "## Pareto fronts (quality = mean W2 ratio, lower is better)", ""]
        for cost, front in analysis["pareto"].items():
            lines.append(f"- quality vs {cost.replace('+', ' and ')}: points {', '.join(map(str, front))}")
    return "\n".join(lines) + "\n"


def _plots(analysis: dict, directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    points = analysis["points"]
    figure, axes = plt.subplots(figsize=(max(5, 0.5 * len(points) + 2), 3.5))
    centres = [point["yield"] for point in points]
    errors = np.array([[point["yield"] - point["clopper_pearson"][0], point["clopper_pearson"][1] - point["yield"]]
                       for point in points]).T
    axes.bar(range(len(points)), centres, yerr=errors, capsize=3, color="tab:blue")
    axes.set_xticks(range(len(points)), [str(point["point"]) for point in points])
    axes.set_xlabel("point")
    axes.set_ylabel("yield (95 % Clopper-Pearson)")
    axes.set_ylim(0, 1.05)
    figure.tight_layout()
    figure.savefig(directory / "yield.png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    written.append("yield.png")
    if analysis["sensitivity"]:
        entries = analysis["sensitivity"]
        figure, axes = plt.subplots(figsize=(6, 0.35 * len(entries) + 1.5))
        axes.barh([entry["effect"] for entry in entries][::-1], [entry["w2_added"] for entry in entries][::-1],
                  xerr=[entry["w2_added_standard_error"] for entry in entries][::-1], color="tab:red")
        axes.set_xlabel("W2 added against every effect off")
        figure.tight_layout()
        figure.savefig(directory / "sensitivity.png", dpi=100, metadata={"Software": None})
        plt.close(figure)
        written.append("sensitivity.png")
    if analysis["pareto"]:
        grid_points = [point for point in points if point["kind"] == GRID]
        figure, panels = plt.subplots(1, 2, figsize=(9, 3.5))
        for panel, cost, label in ((panels[0], "latency_s", "latency estimate (s)"),
                                   (panels[1], "modules_used", "modules used")):
            front = set(analysis["pareto"][cost])
            for point in grid_points:
                on_front = point["point"] in front
                panel.scatter(point[cost], point["w2_ratio"], color="tab:red" if on_front else "tab:gray")
                panel.annotate(str(point["point"]), (point[cost], point["w2_ratio"]), fontsize=7)
            panel.set_xlabel(label)
            panel.set_ylabel("mean W2 / W2 of a Gaussian fit")
        figure.tight_layout()
        figure.savefig(directory / "pareto.png", dpi=100, metadata={"Software": None})
        plt.close(figure)
        written.append("pareto.png")
    return written


def _strict(value):
    """NaN (no chip ran) as null, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(directory: Path) -> str:
    analysis = analyse(directory)
    output = directory / REPORT
    output.mkdir(exist_ok=True)
    text = markdown(analysis)
    analysis["plots"] = _plots(analysis, output)
    summary = json.dumps(_strict(analysis), indent=1, sort_keys=True, allow_nan=False) + "\n"
    for name, content in (("summary.json", summary), ("report.md", text)):
        write_file_atomically(output / name, content.encode("utf-8"))
    return text + f"\nwrote {output}/ (report.md, summary.json, {', '.join(analysis['plots'])})"
