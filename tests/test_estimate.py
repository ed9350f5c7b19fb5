"""``admc estimate``: itemised latency and energy per sample, every assumption printed, bad bundles refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import build
from admc.estimate.cost import estimate
from admc.targets.estimate_spec import ESTIMATE_FIELDS
from admc.targets.loader import load_target

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build(str(EXAMPLES / "two_moons.onnx"), str(tmp_path_factory.mktemp("estimate") / "b"),
                      target="aoc-48", steps=4))


def _with_steps(bundle: Bundle, factor: int) -> SimpleNamespace:
    """The same program with its step list repeated ``factor`` times (same phases, same iterations each)."""
    manifest = copy.deepcopy(bundle.manifest)
    manifest["phases"] = manifest["phases"] * factor
    manifest["solver"]["steps"] *= factor
    return SimpleNamespace(manifest=manifest, path=bundle.path, target=bundle.target)


def _override(tmp_path: Path, name: str, **figures: float | None) -> object:
    lines = ["inherits: aoc-48", f"name: {name}", "estimate:"]
    lines += [f"  {key}: {'null' if value is None else f'{value:.6e}'}" for key, value in figures.items()]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_energy_is_the_sum_of_its_items_and_each_item_is_figure_times_count(bundle_path: Path) -> None:
    bundle = Bundle(bundle_path)
    result = estimate(bundle)
    items = result["energy_items_j"]
    assert result["energy_j"] == pytest.approx(sum(items.values()), rel=1e-12)
    assert all(value > 0 for value in items.values())
    figures, counts = bundle.target.estimate, result["counts"]
    assert items["adc_conversions"] == pytest.approx(counts["adc_conversions"] * figures.adc_conversion_energy_j)
    assert items["module_static"] == pytest.approx(result["program"]["modules"] * figures.module_static_power_w
                                                   * result["latency_s"])
    assert result["latency_s"] == pytest.approx(sum(result["latency_items_s"].values()), rel=1e-12)


def test_latency_is_linear_in_steps_for_fixed_iterations_and_matches_the_formula(bundle_path: Path) -> None:
    bundle = Bundle(bundle_path)
    four = estimate(bundle, loop_iterations=10)
    eight = estimate(_with_steps(bundle, 2), loop_iterations=10)
    assert eight["latency_s"] == pytest.approx(2 * four["latency_s"], rel=1e-12)
    assert eight["energy_j"] == pytest.approx(2 * four["energy_j"], rel=1e-12)
    # Independently: implicit Euler has one closed phase per step; each runs 10 iterations between an
    # injection update and a readout transfer, the whole program timing.repeats times.
    target = bundle.target
    per_phase = 10 * target.timing.loop_iteration_s + target.estimate.injection_update_s \
        + target.estimate.readout_transfer_s
    assert four["latency_s"] == pytest.approx(target.timing.repeats * 4 * per_phase, rel=1e-12)


def test_doubling_a_figure_in_an_override_doubles_its_term_only(bundle_path: Path, tmp_path: Path) -> None:
    bundle = Bundle(bundle_path)
    base = bundle.target.estimate
    doubled = load_target(_override(tmp_path, "double-adc", adc_conversion_energy_j=2 * base.adc_conversion_energy_j,
                                    baseline_energy_per_flop_j=2 * base.baseline_energy_per_flop_j))
    first, second = estimate(bundle), estimate(bundle, doubled)
    for name, value in first["energy_items_j"].items():
        factor = 2 if name == "adc_conversions" else 1
        assert second["energy_items_j"][name] == pytest.approx(factor * value, rel=1e-12)
    assert second["baseline"]["energy_j"] == pytest.approx(2 * first["baseline"]["energy_j"], rel=1e-12)
    assert second["latency_s"] == first["latency_s"]


def test_cli_prints_every_assumption_and_json(bundle_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["estimate", str(bundle_path)]) == 0
    text = capsys.readouterr().out
    for name in ESTIMATE_FIELDS:
        assert f"estimate.{name}" in text
    assert "timing.loop_iteration_s" in text and "timing.repeats" in text
    assert "10–15 µs" in text and "100×" in text
    assert main(["estimate", str(bundle_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {entry["field"] for entry in data["assumptions"]} >= {f"estimate.{name}" for name in ESTIMATE_FIELDS}
    assert data["energy_j"] == pytest.approx(sum(data["energy_items_j"].values()), rel=1e-12)


def test_bad_bundle_is_refused_with_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert main(["estimate", str(broken)]) == 2
    assert main(["estimate", str(tmp_path / "missing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("admc: error:") for line in errors)


def test_missing_figure_or_other_kind_is_refused_naming_the_field(bundle_path: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    unset = _override(tmp_path, "no-adc", adc_conversion_energy_j=None)
    assert main(["estimate", str(bundle_path), "--target", str(unset)]) == 2
    assert "estimate.adc_conversion_energy_j" in capsys.readouterr().err
    assert main(["estimate", str(bundle_path), "--target", "rram"]) == 2
    assert "'rram'" in capsys.readouterr().err


def test_tampered_payload_is_refused_like_inspect(bundle_path: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle_path, copy)
    payload = copy / "channels" / "alpha.npy"
    payload.write_bytes(payload.read_bytes()[:-8] + b"\x00" * 8)
    assert main(["estimate", str(copy)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "alpha.npy" in error
