"""Sweep spec validation, point expansion, chip seeds, the per-chip criterion and the report's statistics
(no Ray here; tests/test_sweep_ray.py runs sweeps)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("pydantic")
pytest.importorskip("pyarrow")

from admc.core.errors import AdmcError  # noqa: E402
from admc.sweep.points import BASELINE, chip_overrides, chip_seed, declared_effects, expand_points  # noqa: E402
from admc.sweep.spec import load_spec  # noqa: E402
from admc.sweep.statistics import clopper_pearson_interval, pareto_front, wilson_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "two_moons.onnx"


def write_spec(directory: Path, text: str) -> Path:
    path = directory / "sweep.yaml"
    path.write_text(f"name: test\nmodel: {MODEL}\nchips: 2\nsamples: 8\n" + text)
    return path


@pytest.mark.parametrize("text, field", [
    ("axes:\n  steps: []\n", "axes.steps"),
    ("axes:\n  nonidealities.weight_error.relative_std: [0.01, -1.0]\n", "nonidealities.weight_error.relative_std"),
    ("axes:\n  nonidealities.no_such_effect.std: [1.0]\n", "nonidealities"),
    ("axes:\n  nonidealities.read_noise.no_such_parameter: [1.0]\n", "nonidealities.read_noise"),
    ("axes:\n  colour: [1]\n", "axes.colour"),
    ("axes:\n  solver: [implicit-euler, leapfrog]\n", "build.solver"),
    ("axes:\n  target.gain.beta_max: [-1.0]\n", "gain.beta_max"),
    ("axes:\n  target: [aoc-48, no-such-target]\n", "axes.target[1]"),
    ("axes:\n  steps: {start: 4, stop: 8}\n", "axes.steps"),
    ("axes:\n  steps: {distribution: uniform, low: 1, high: 4}\n", "axes.steps"),
    ("axes:\n  nonidealities.offsets.std: {distribution: normal, mean: 0.01}\n", "axes.nonidealities.offsets.std"),
    ("axes:\n  nonidealities.offsets.std: {distribution: uniform, low: 0.02, high: 0.01}\n",
     "axes.nonidealities.offsets.std.low"),
    ("axes:\n  nonidealities.offsets.std: {distribution: normal, mean: 0.01, std: 0.01}\n",
     "nonidealities.offsets.std"),  # mean - 5 std < 0: outside the schema's range
    ("build:\n  steps: 0\n", "build.steps"),
    ("build:\n  layout: diagonal\n", "build.layout"),
    ("twin:\n  loop_iterations: 0\n", "twin.loop_iterations"),
    ("criterion:\n  twin_ratio: 0\n", "criterion.twin_ratio"),
    ("axes:\n  nonidealities.input_efficiency.dead_channels: {distribution: choice, values: [[1], [99]]}\n",
     "nonidealities.input_efficiency.dead_channels[0]"),
    ("axes:\n  nonidealities.offsets.std: {distribution: choice, values: []}\n",
     "axes.nonidealities.offsets.std.values"),
    ("colour: blue\n", "colour"),
    ("sensitivity:\n  effects: [weight_error, sunburn]\n", "sensitivity.effects[1]"),
    ("sensitivity:\n  effects: [read_noise, led_response]\n", "sensitivity.effects[1]"),
])
def test_bad_spec_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(AdmcError) as raised:
        load_spec(write_spec(tmp_path, text))
    assert f"'{field}" in str(raised.value) or f"{field}'" in str(raised.value), str(raised.value)
    assert str(tmp_path / "sweep.yaml") in str(raised.value)


def test_missing_model_and_both_sources(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("name: x\nchips: 1\nmodel: nowhere.onnx\n")
    with pytest.raises(AdmcError, match="field 'model'.*not found"):
        load_spec(path)
    path.write_text(f"name: x\nchips: 1\nmodel: {MODEL}\nbundle: {tmp_path}\n")
    with pytest.raises(AdmcError, match="exactly one of 'model'"):
        load_spec(path)
    path.write_text("name: x\nchips: [1\n")
    with pytest.raises(AdmcError, match="not valid YAML"):
        load_spec(path)


def test_alpha_axis_only_where_the_build_takes_it(tmp_path: Path) -> None:
    import dataclasses

    from admc.compiler.build_options import BuildOptions

    for text, field in (("axes:\n  alpha: [auto]\n", "axes.alpha"), ("build:\n  alpha: auto\n", "build.alpha")):
        if "alpha" in {entry.name for entry in dataclasses.fields(BuildOptions)}:
            load_spec(write_spec(tmp_path, text))
        else:
            with pytest.raises(AdmcError, match=f"{field}.*no 'alpha' option"):
                load_spec(write_spec(tmp_path, text))


def test_points_are_the_product_of_the_axes_then_the_sensitivity_points(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, """
axes:
  steps: {start: 4, stop: 8, step: 2}
  nonidealities.read_noise.std: {start: 0.001, stop: 0.003, count: 2}
  target.gain.beta_max: [0.3875]
  loop_iterations: [100]
sensitivity:
  chips: 3
"""))
    points = expand_points(spec)
    grid = [point for point in points if point.kind == "grid"]
    assert [point.parameters["steps"] for point in grid] == [4, 4, 6, 6, 8, 8]
    assert [point.parameters["nonidealities.read_noise.std"] for point in grid[:2]] == [0.001, 0.003]
    assert all(point.build["steps"] == point.parameters["steps"] for point in grid)
    assert grid[1].nonidealities == {"read_noise": {"std": 0.003}}
    assert grid[0].build["target_overrides"] == {"gain": {"beta_max": 0.3875}}
    assert grid[0].twin["loop_iterations"] == 100
    from admc.targets.loader import load_target

    effects = declared_effects(load_target("aoc-48").to_dict())
    from admc.targets.aoc.nonidealities import MEASURED_CHAIN_EFFECTS

    # The calibration-only effects cannot act in a sweep (no calibration file): they are not measured at +0.
    measurable = [name for name in effects if name not in MEASURED_CHAIN_EFFECTS]
    assert len(measurable) == len(effects) - 4
    sensitivity = points[len(grid):]
    assert [point.effect for point in sensitivity] == [BASELINE, *measurable]
    assert all(not entry["enabled"] for name, entry in sensitivity[0].nonidealities.items())
    assert set(sensitivity[0].nonidealities) == set(effects)  # the baseline switches every effect off
    assert all(point.chips == 3 for point in sensitivity)
    assert all(not entry["enabled"] for entry in sensitivity[0].nonidealities.values())
    for point in sensitivity[1:]:
        assert [name for name, entry in point.nonidealities.items() if entry["enabled"]] == [point.effect]
    assert [point.index for point in points] == list(range(len(points)))
    assert len({point.key for point in points}) == len(points)


def test_effects_follow_the_target_description() -> None:
    """Every switchable non-ideality the description declares is an effect (new fields need no change)."""
    from admc.targets.aoc.nonidealities import NonIdealities
    from admc.targets.loader import load_target

    declared = declared_effects(load_target("aoc-48").to_dict())
    assert declared == [name for name in NonIdealities.__dataclass_fields__ if name != "seed"]
    extended = {"nonidealities": {"seed": 0, "new_effect": {"enabled": False, "size": 1.0}}}
    assert declared_effects(extended) == ["new_effect"]


def test_chip_seeds_depend_on_spec_seed_point_and_chip_only(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "axes:\n  steps: [4, 8]\n"))
    points = expand_points(spec)
    seeds = [chip_seed(0, point.key, chip) for point in points for chip in range(50)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= seed < 2**62 for seed in seeds)
    assert chip_seed(0, points[1].key, 3) == chip_seed(0, points[1].key, 3)
    assert chip_seed(1, points[1].key, 3) != chip_seed(0, points[1].key, 3)
    # The same point in a larger sweep keeps its seeds: they do not depend on the other points.
    bigger = expand_points(load_spec(write_spec(tmp_path, "axes:\n  steps: [2, 4, 8]\n")))
    assert chip_seed(0, bigger[2].key, 7) == chip_seed(0, points[1].key, 7)


def test_distributions_draw_per_chip_within_the_checked_range(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, """
axes:
  nonidealities.offsets.std: {distribution: uniform, low: 0.01, high: 0.02}
  nonidealities.gain_error.relative_std: {distribution: normal, mean: 0.05, std: 0.005}
"""))
    point = expand_points(spec)[0]
    draws = [chip_overrides(point, chip_seed(0, point.key, chip)) for chip in range(400)]
    offsets = np.array([drawn["nonidealities.offsets.std"] for _, drawn in draws])
    gains = np.array([drawn["nonidealities.gain_error.relative_std"] for _, drawn in draws])
    assert offsets.min() >= 0.01 and offsets.max() <= 0.02
    assert stats.kstest((offsets - 0.01) / 0.01, "uniform").pvalue > 1e-3
    assert abs(gains.mean() - 0.05) < 5 * 0.005 / math.sqrt(400)
    overrides, drawn = draws[0]
    dead = load_spec(write_spec(tmp_path, """
axes:
  nonidealities.input_efficiency.dead_channels: {distribution: choice, values: [[], [8], [3, 8]]}
"""))
    dead_point = expand_points(dead)[0]
    chosen = [chip_overrides(dead_point, chip_seed(0, dead_point.key, chip))[0]["input_efficiency"]["dead_channels"]
              for chip in range(60)]
    assert {tuple(value) for value in chosen} == {(), (8,), (3, 8)}
    assert overrides["offsets"]["std"] == drawn["nonidealities.offsets.std"]
    assert draws[0] == chip_overrides(point, chip_seed(0, point.key, 0))


# -- the per-chip criterion is admc verify's ------------------------------------------------------------
def test_chip_row_matches_admc_verify(tmp_path: Path) -> None:
    """The chip's W2 ratio, worst-step NRMSE and pass decision equal verify_bundle's twin links for the same
    bundle, non-idealities and seed."""
    from admc.bundle.store import Bundle
    from admc.compiler.driver import build
    from admc.sweep.build_cache import build_point, materialise_bundle
    from admc.sweep.chip import run_chip
    from admc.targets.aoc.sweep_twin import chip_nonidealities
    from admc.verify.chain import verify_bundle

    bundle_path = build(MODEL, tmp_path / "bundle", target="aoc-48", steps=4)
    files = {str(path.relative_to(bundle_path)): path.read_bytes()
             for path in sorted(bundle_path.rglob("*")) if path.is_file()}
    outcome = build_point(None, "bundle", None, {}, 16, 3, bundle_files=files)
    assert outcome["status"] == "ok"
    overrides = {"weight_error": {"relative_std": 0.03}}
    options = {"mode": "discrete", "loop_iterations": 60, "repeats": None}
    row = run_chip(materialise_bundle("test-chip-row", files), outcome, overrides, 12345, options,
                   {"twin_ratio": 0.5, "twin_nrmse": 0.2})
    bundle = Bundle(bundle_path)
    report = verify_bundle(bundle, 16, 3, twin_options={"seed": 12345, "loop_iterations": 60,
                                                        "nonidealities": chip_nonidealities(bundle, overrides)},
                           twin_ratio=0.5, twin_nrmse=0.2)
    links = {link.criterion: link for link in report.links if link.tolerance is not None}
    assert row["status"] == "ok"
    assert row["w2_ratio"] == pytest.approx(links["w2_ratio_to_gaussian"].measured, rel=1e-12)
    assert row["nrmse_max_step"] == pytest.approx(links["per_step_nrmse"].measured, rel=1e-12)
    assert row["w2"] == pytest.approx(report.distributions["twin"]["wasserstein2"], rel=1e-12)
    assert row["passed"] == report.passed


# -- statistics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("passed, trials", [(0, 1), (0, 20), (3, 20), (10, 20), (19, 20), (20, 20), (183, 200)])
def test_wilson_interval_solves_its_defining_quadratic(passed: int, trials: int) -> None:
    z = stats.norm.ppf(0.975)
    low, high = wilson_interval(passed, trials)
    estimate = passed / trials
    for end in (low, high):
        if 0.0 < end < 1.0:
            assert (estimate - end) ** 2 == pytest.approx(z * z * end * (1 - end) / trials, rel=1e-9)
    assert low <= estimate <= high


def test_wilson_interval_known_case() -> None:
    # Newcombe (1998), Table I: 81 of 263, Wilson score interval 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("passed, trials", [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (183, 200)])
def test_clopper_pearson_ends_are_the_binomial_tail_quantiles(passed: int, trials: int) -> None:
    low, high = clopper_pearson_interval(passed, trials)
    if passed > 0:
        assert stats.binom.sf(passed - 1, trials, low) == pytest.approx(0.025, rel=1e-7)
    else:
        assert low == 0.0
    if passed < trials:
        assert stats.binom.cdf(passed, trials, high) == pytest.approx(0.025, rel=1e-7)
    else:
        assert high == 1.0
    # Closed form at the extremes: 0 of n gives upper 1 - 0.025^(1/n).
    if passed == 0:
        assert high == pytest.approx(1 - 0.025 ** (1 / trials))


def test_pareto_front_against_brute_force() -> None:
    generator = np.random.default_rng(0)
    points = generator.integers(0, 6, size=(40, 2)).astype(float).tolist()
    points.append([float("nan"), 0.0])
    front = pareto_front(points)
    for index, point in enumerate(points):
        dominated = any(all(a <= b for a, b in zip(other, point, strict=True)) and other != point
                        for other in points if not any(math.isnan(value) for value in other))
        on_front = not dominated and not any(math.isnan(value) for value in point)
        assert (index in front) == on_front
    assert pareto_front([[1, 3], [2, 2], [3, 1], [3, 3]]) == [0, 1, 2]


def test_report_tables_from_rows(tmp_path: Path) -> None:
    """The report's yields and sensitivities from a hand-made table: every number checked by hand."""
    from admc.sweep.report import point_table, sensitivity_table

    def row(point, chip, kind, effect, passed, w2, status="ok"):
        return {"point": point, "chip": chip, "kind": kind, "effect": effect, "parameters": json.dumps({"steps": 4}),
                "status": status, "reason": "" if status == "ok" else "refused", "passed": passed, "w2": w2,
                "w2_ratio": w2 * 2, "nrmse_max_step": w2 / 2, "loop_iterations": 10, "latency_s": 1e-6,
                "modules_used": 2, "steps": 4}

    rows = [row(0, chip, "grid", "", chip < 3, 0.1) for chip in range(4)]
    rows += [row(1, 0, "sensitivity", BASELINE, True, 0.01), row(1, 1, "sensitivity", BASELINE, True, 0.03)]
    rows += [row(2, 0, "sensitivity", "weight_error", True, 0.05), row(2, 1, "sensitivity", "weight_error", False,
                                                                        float("nan"), "diverged")]
    points = point_table(rows)
    assert points[0]["yield"] == 0.75 and points[0]["passed"] == 3
    assert points[0]["clopper_pearson"] == pytest.approx(list(clopper_pearson_interval(3, 4)))
    assert points[2]["failures"] == {"diverged": 1}
    table = sensitivity_table(points, rows)
    assert [entry["effect"] for entry in table] == ["weight_error"]
    assert table[0]["w2_added"] == pytest.approx(0.05 - 0.02)
    assert table[0]["nrmse_added"] == pytest.approx(0.025 - 0.01)
    assert table[0]["yield"] == 0.5


def test_grid_is_the_full_product() -> None:
    from admc.sweep.spec import grid

    axes = {"a": [1, 2], "b": ["x", "y", "z"]}
    assert grid(axes) == [{"a": a, "b": b} for a, b in itertools.product(axes["a"], axes["b"])]
    assert grid({}) == [{}]


def test_parts_consolidate_to_sorted_csv_and_parquet(tmp_path: Path) -> None:
    """However rows are split into parts, the final table is sorted and the same in both formats."""
    from admc.sweep.results import COLUMNS, PartWriter, consolidate, finished, read_table

    def row(point: int, chip: int) -> dict:
        values = {name: None for name in COLUMNS.names}
        values.update(point=point, chip=chip, kind="grid", effect="", parameters="{}", chip_parameters="{}",
                      build="k", seed=point * 10 + chip, status="ok", reason='a, "quoted" reason',
                      passed=chip % 2 == 0,
                      w2=0.1 * chip + 1 / 3, w2_ratio=float("nan"), mmd=-1e-17, nrmse_max_step=1e300,
                      nrmse_final=0.0, nrmse_vs_ideal=2.5, loop_iterations=7, latency_s=3.2e-5,
                      modules_used=2, state_channels=66, steps=4)
        return values

    rows = [row(point, chip) for point in range(3) for chip in range(4)]
    tables = {}
    for file_format, order in (("parquet", rows[::-1]), ("csv", rows[5:] + rows[:5])):
        directory = tmp_path / file_format
        writer = PartWriter(directory)
        for start in range(0, len(order), 5):
            writer.write(order[start:start + 5])
        assert finished(directory, file_format) == {(r["point"], r["chip"]) for r in rows}
        # What a driver killed in the middle of writing a part leaves behind (a staged temporary): not a row.
        (directory / "parts" / ".part-000009.parquet.x1y2.partial").write_bytes(b"half a file")
        assert finished(directory, file_format) == {(r["point"], r["chip"]) for r in rows}
        tables[file_format] = read_table(consolidate(directory, file_format)).to_pylist()
        assert not (directory / "parts").exists()
    for file_format, table in tables.items():
        assert [(r["point"], r["chip"]) for r in table] == [(r["point"], r["chip"]) for r in rows], file_format
        for got, expected in zip(table, rows, strict=True):
            for name in COLUMNS.names:
                if isinstance(expected[name], float) and math.isnan(expected[name]):
                    assert math.isnan(got[name])
                else:
                    assert got[name] == expected[name], (file_format, name)


def _switchable_effects(target: str) -> int:
    from admc.targets.loader import load_target

    effects = load_target(target).to_dict()["nonidealities"]
    switchable = sum(isinstance(value, dict) and "enabled" in value for value in effects.values())
    return switchable - len(type(load_target(target)).calibration_only_effects)


# The yield spec: the nominal point, the all-off baseline and one point per switchable effect of aoc-48 that
# acts without a calibration file.
@pytest.mark.parametrize("name, points", [("two_moons_yield.yaml", 2 + _switchable_effects("aoc-48")),
                                          ("two_moons_design.yaml", 16)])
def test_shipped_specs_validate(name: str, points: int) -> None:
    spec = load_spec(ROOT / "examples" / "sweeps" / name)
    expanded = expand_points(spec)
    assert len(expanded) == points
    assert spec.source == MODEL


def test_seeds_do_not_depend_on_where_the_files_are(tmp_path: Path) -> None:
    """A target file named relative to the spec: moving the spec and the file together keeps every seed."""
    keys = []
    for folder in ("a", "b/c"):
        directory = tmp_path / folder
        directory.mkdir(parents=True)
        (directory / "mine.yaml").write_text("inherits: aoc-48\nname: mine\n")
        spec = load_spec(write_spec(directory, "axes:\n  target: [aoc-48, mine.yaml]\n"))
        points = expand_points(spec)
        assert points[1].build["target"] == str(directory / "mine.yaml")
        keys.append([chip_seed(0, point.key, 0) for point in points])
    assert keys[0] == keys[1]


def test_alpha_is_passed_to_a_build_that_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook for α selection: a build with an ``alpha`` keyword receives the point's value."""
    import admc.compiler.driver
    from admc.sweep.build_cache import build_point
    from admc.targets.loader import load_target

    real_build = admc.compiler.driver.build
    received = []

    def build_with_alpha(model, output, target="aoc-48", solver="implicit-euler", steps=16, fp_iterations=None,
                         layout="auto", alpha=None):
        received.append(alpha)
        return real_build(model, output, target=target, solver=solver, steps=steps, fp_iterations=fp_iterations,
                          layout=layout)

    monkeypatch.setattr(admc.compiler.driver, "build", build_with_alpha)
    spec = load_spec(write_spec(tmp_path, "build:\n  steps: 4\naxes:\n  alpha: [auto, 0.2]\n"))
    points = expand_points(spec)
    assert [point.build["alpha"] for point in points] == ["auto", 0.2]
    outcome = build_point(MODEL.read_bytes(), MODEL.name, load_target("aoc-48").to_dict(), points[1].build, 4, 0)
    assert outcome["status"] == "ok"
    assert received == [0.2]


def test_materialised_bundles_are_content_addressed(tmp_path: Path) -> None:
    """Different bundles under one key never share (or replace) a directory; the same one is written once."""
    from admc.bundle.store import Bundle
    from admc.compiler.driver import build
    from admc.sweep.build_cache import materialise_bundle

    directories = []
    for steps in (4, 5):
        path = build(MODEL, tmp_path / f"bundle-{steps}", target="aoc-48", steps=steps)
        files = {str(item.relative_to(path)): item.read_bytes() for item in sorted(path.rglob("*")) if item.is_file()}
        first = materialise_bundle("same-key", files)
        assert materialise_bundle("same-key", files) == first
        assert Bundle(first).manifest["solver"]["grid"] == Bundle(path).manifest["solver"]["grid"]
        directories.append(first)
    assert directories[0] != directories[1]
    assert all((directory / "manifest.json").is_file() for directory in directories)
