"""The public Python API (issue 21): build, load, inspect, simulate (ideal, twin, calibrated twin), verify and
reference for an unconditional and a conditional model, through nothing but ``import admc``.

Builds use 4 steps and α ``global`` (the α pass's cheapest mode) to stay fast; each (model, target) is built
once per module. The twin is the point only on aoc-48; exactness is checked on the ideal target.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

import admc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TWO_MOONS = EXAMPLES / "two_moons.onnx"
EIGHT_GAUSSIANS = EXAMPLES / "conditional" / "eight_gaussians.onnx"
STEPS = 4
SAMPLES = 32
TWIN_SAMPLES = 8  # the calibrated twin's cost grows with the batch (~0.1 CPU-s per sample here)
FAST = {"steps": STEPS, "alpha": "global"}
CONDITIONAL = {"solver": "crank-nicolson", **FAST}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((SAMPLES, 2))


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.arange(SAMPLES) % 8


@pytest.fixture(scope="module")
def moons_ideal(tmp_path_factory: pytest.TempPathFactory) -> admc.Bundle:
    return admc.build(TWO_MOONS, target="ideal", output=tmp_path_factory.mktemp("api") / "moons", **FAST)


@pytest.fixture(scope="module")
def eight_ideal() -> admc.Bundle:
    return admc.build(EIGHT_GAUSSIANS, target="ideal", **CONDITIONAL)


@pytest.fixture(scope="module")
def moons_aoc() -> admc.Bundle:
    return admc.build(TWO_MOONS, target="aoc-48", **FAST)


@pytest.fixture(scope="module")
def eight_aoc() -> admc.Bundle:
    return admc.build(EIGHT_GAUSSIANS, target="aoc-48", **CONDITIONAL)


def relative_error(estimate: np.ndarray, expected: np.ndarray) -> float:
    """What verify's exact link measures: max abs error over the RMS of the expected samples."""
    return float(np.max(np.abs(estimate - expected)) / np.sqrt(np.mean(expected ** 2)))


def test_the_public_names_have_docstrings() -> None:
    for name in admc.__all__:
        value = getattr(admc, name)
        assert isinstance(value, str) or value.__doc__, name
    for method in ("inspect", "describe", "simulate", "verify"):
        assert getattr(admc.Bundle, method).__doc__, method


def test_a_built_bundle_loads_and_inspects_as_the_cli_shows_it(moons_ideal: admc.Bundle) -> None:
    loaded = admc.load(moons_ideal.path)
    assert loaded.manifest == moons_ideal.manifest
    summary = loaded.inspect()
    assert (summary["target"], summary["solver"], summary["steps"]) == ("ideal", "implicit-euler", STEPS)
    assert summary["source"]["state_dimension"] == 2
    assert "conditions" not in summary
    assert json.loads(json.dumps(summary)) == summary  # the data `admc inspect --json` prints
    assert "implicit-euler" in loaded.describe()
    loaded.manifest["solver"]["steps"] = 99  # a copy: the bundle's own manifest is unchanged
    assert loaded.manifest["solver"]["steps"] == STEPS


def test_a_bundle_without_output_lives_as_long_as_its_object() -> None:
    bundle = admc.build(TWO_MOONS, target="ideal", **FAST)
    path = bundle.path
    assert (path / "manifest.json").is_file()
    del bundle
    gc.collect()
    assert not path.exists()


def test_ideal_simulation_equals_the_reference_within_verify_bound(moons_ideal: admc.Bundle,
                                                                  eight_ideal: admc.Bundle, noise: np.ndarray,
                                                                  labels: np.ndarray) -> None:
    moons = moons_ideal.simulate(noise, ideal=True)
    assert moons.shape == (SAMPLES, 2)
    expected = admc.reference(TWO_MOONS, noise, solver="implicit-euler", steps=STEPS)
    bound = moons_ideal.verify(samples=16).links[1].tolerance
    assert relative_error(moons, expected) <= bound
    conditions = {"label": labels}
    eight = eight_ideal.simulate(noise, conditions, ideal=True)
    expected = admc.reference(EIGHT_GAUSSIANS, noise, solver="crank-nicolson", steps=STEPS, conditions=conditions)
    assert eight.shape == (SAMPLES, 2)
    assert relative_error(eight, expected) <= bound
    assert relative_error(eight, moons) > 0.1  # different models, different samples


def test_conditions_change_the_samples(eight_ideal: admc.Bundle, noise: np.ndarray) -> None:
    first = eight_ideal.simulate(noise, {"label": np.full(SAMPLES, 1)}, ideal=True)
    fifth = eight_ideal.simulate(noise, {"label": np.full(SAMPLES, 5)}, ideal=True)
    assert np.linalg.norm(first.mean(axis=0) - fifth.mean(axis=0)) > 0.5


def test_verify_passes_on_the_ideal_target(moons_ideal: admc.Bundle, eight_ideal: admc.Bundle) -> None:
    moons = moons_ideal.verify(samples=SAMPLES)
    assert isinstance(moons, admc.VerifyReport)
    assert moons.passed and all(link.passed for link in moons.links)
    # both links exact on the ideal target, and every closed loop settled on every sample
    assert [link.tolerance for link in moons.links] == [1e-6, 1e-6, 0.0]
    assert moons.per_class == ()
    assert set(moons.final_samples) == {"reference", "ideal"}  # the ideal target has no twin
    assert moons.final_samples["ideal"].shape == (SAMPLES, 2)
    assert {"ideal program", "gaussian fit (baseline)"} <= set(moons.distributions)
    assert json.loads(json.dumps(moons.to_json()))["passed"] is True
    eight = eight_ideal.verify(samples=SAMPLES)
    assert eight.passed
    assert len(eight.per_class) >= 2
    assert sum(row["samples"] for row in eight.per_class) == SAMPLES
    assert all(row["passed"] for row in eight.per_class)


@pytest.mark.parametrize("model", ["moons", "eight"])
def test_twin_and_calibrated_twin(model: str, moons_aoc: admc.Bundle, eight_aoc: admc.Bundle,
                                  noise: np.ndarray, labels: np.ndarray) -> None:
    noise, labels = noise[:TWIN_SAMPLES], labels[:TWIN_SAMPLES]
    bundle, conditions = (moons_aoc, None) if model == "moons" else (eight_aoc, {"label": labels})
    ideal = bundle.simulate(noise, conditions, ideal=True)
    twin = bundle.simulate(noise, conditions, seed=3)
    assert twin.shape == (TWIN_SAMPLES, 2) and np.all(np.isfinite(twin))
    np.testing.assert_array_equal(twin, bundle.simulate(noise, conditions, seed=3))  # seeded: reproducible
    assert not np.array_equal(twin, ideal)  # the twin's non-idealities act
    assert relative_error(twin, ideal) < 0.5  # and the twin still runs this program
    calibrated = bundle.simulate(noise, conditions, seed=3, calibration="hw48")
    assert calibrated.shape == (TWIN_SAMPLES, 2) and np.all(np.isfinite(calibrated))
    assert relative_error(calibrated, twin) > 1e-3  # the measured machine is not the nominal one


def test_verify_runs_the_twin_on_aoc(moons_aoc: admc.Bundle) -> None:
    report = moons_aoc.verify(samples=16)
    assert set(report.final_samples) == {"reference", "ideal", "twin"}
    assert "twin" in report.distributions
    criteria = [link.criterion for link in report.links]
    assert criteria[:2] == ["relative_error", "per_step_nrmse"]  # the quantised program's own bound
    assert "w2_ratio_to_gaussian" in criteria
    assert report.passed == all(link.passed for link in report.links)


def test_bad_input_is_refused_naming_the_field(moons_ideal: admc.Bundle, eight_ideal: admc.Bundle,
                                               noise: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(admc.AdmcError, match="stepz"):
        admc.build(TWO_MOONS, target="ideal", stepz=4)
    with pytest.raises(admc.AdmcError, match="model"):
        admc.build(42, target="ideal")
    with pytest.raises(admc.AdmcError, match="not an admc bundle"):
        admc.load(tmp_path)
    with pytest.raises(admc.AdmcError, match="label"):
        eight_ideal.simulate(noise, ideal=True)  # a conditional program needs its conditions
    with pytest.raises(admc.AdmcError, match="lable"):
        eight_ideal.simulate(noise, {"lable": np.zeros(SAMPLES, dtype=np.int64)}, ideal=True)
    with pytest.raises(admc.AdmcError, match="label"):
        admc.reference(EIGHT_GAUSSIANS, noise, conditions={"label": np.zeros(3, dtype=np.int64)})
    with pytest.raises(admc.AdmcError, match="noise"):
        moons_ideal.simulate(noise[:, :1], ideal=True)
    with pytest.raises(admc.AdmcError, match="twin"):
        moons_ideal.simulate(noise)  # the ideal target has no twin
    with pytest.raises(admc.AdmcError, match="calibration"):
        moons_ideal.simulate(noise, ideal=True, calibration="hw48")
