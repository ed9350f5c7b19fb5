"""A worker keeps the bundle it loaded for its next chips: a second chip of the same bundle does not load it
again, and the rows equal those of chips that each load the bundle from its directory (their own seeds, their
own static errors and noise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from admc.compiler.driver import build
from admc.sweep import loaded_bundles
from admc.sweep.build_cache import build_point, materialise_bundle
from admc.sweep.chip import run_chip
from admc.sweep.execute import chip_task
from admc.sweep.loaded_bundles import SharedBundle, loaded_bundle

ROOT = Path(__file__).resolve().parents[1]
CRITERION = {"twin_ratio": 0.5, "twin_nrmse": None}
OPTIONS = {"mode": "discrete", "loop_iterations": 40, "repeats": None}
# Three chips: two draws of the bundle's own errors, one with a larger weight error.
CHIPS = [({}, 11), ({}, 12), ({"weight_error": {"relative_std": 0.03}}, 13)]


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    path = build(ROOT / "examples" / "two_moons.onnx", tmp_path_factory.mktemp("b") / "bundle", target="aoc-48",
                 steps=4)
    return {str(item.relative_to(path)): item.read_bytes() for item in sorted(path.rglob("*")) if item.is_file()}


def test_second_chip_does_not_reload_and_rows_equal_uncached(bundle_files: dict[str, bytes]) -> None:
    reference = build_point(None, "bundle", None, {}, 8, 5, bundle_files=bundle_files)
    assert reference["status"] == "ok"
    directory = materialise_bundle("test-loaded-uncached", bundle_files)
    uncached = [run_chip(directory, reference, overrides, seed, OPTIONS, CRITERION) for overrides, seed in CHIPS]

    loaded_bundles.clear()
    shared = SharedBundle.of("test-loaded-cached", bundle_files)
    before = loaded_bundles.loads()
    cached = [chip_task(shared, reference, overrides, seed, OPTIONS, CRITERION) for overrides, seed in CHIPS]
    assert loaded_bundles.loads() == before + 1  # three chips, one load
    assert loaded_bundle(shared) is loaded_bundle(shared)
    assert all(row["status"] == "ok" for row in uncached)
    assert cached == uncached
    assert len({row["w2"] for row in cached}) == len(CHIPS)  # each chip its own draw of errors and noise


def test_cache_is_bounded_and_keeps_the_bundle_in_use(bundle_files: dict[str, bytes],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    loaded_bundles.clear()
    monkeypatch.setattr(loaded_bundles, "CACHE_BYTES", 1)  # smaller than any bundle
    first, second = (SharedBundle.of(f"test-loaded-{name}", bundle_files) for name in ("first", "second"))
    before = loaded_bundles.loads()
    kept = loaded_bundle(first)
    assert loaded_bundle(first) is kept  # the one in use stays, however large
    loaded_bundle(second)  # evicts the first
    loaded_bundle(first)
    assert loaded_bundles.loads() == before + 3


def test_files_that_do_not_match_the_digest_give_an_error_row(bundle_files: dict[str, bytes]) -> None:
    loaded_bundles.clear()
    other = {**bundle_files, "manifest.json": bundle_files["manifest.json"] + b" "}
    shared = SharedBundle("test-loaded-mismatch", SharedBundle.of("x", bundle_files).manifest_sha256, other)
    row = chip_task(shared, {"summary": {}}, {}, 1, OPTIONS, CRITERION)
    assert row["status"] == "error" and "do not match the manifest digest" in row["reason"]
