"""Issue 13, bundles: containment (payloads inside the bundle, no symlinks), the manifest's schema and
digest, payload dtypes and shapes, thresholds not taken from editable fields, and emitted files checked.
Every tampered bundle here is refused by ``inspect``, ``simulate`` and ``verify`` with one line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import (
    cli,
    copy_bundle,
    read_manifest,
    refused,
    replace_payload,
    save_noise,
    write_manifest,
)
from models import gemm_model

import admc.bundle.store
from admc.bundle.store import Bundle, npy_bytes
from admc.compiler.driver import build
from admc.verify.chain import EXACT_TOLERANCE, program_criterion

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

COMMANDS = ("inspect", "simulate", "verify")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bundles")
    model = gemm_model(directory / "model.onnx", "transB", hidden=8, seed=2)
    return {"ideal": build(model, directory / "ideal", target="ideal", solver="heun", steps=3),
            "aoc": build(model, directory / "aoc", target="aoc-48", solver="implicit-euler", steps=3),
            "model": model}


@pytest.fixture
def ideal(bundles, tmp_path) -> Path:
    return copy_bundle(bundles["ideal"], tmp_path / "bundle")


@pytest.fixture
def aoc(bundles, tmp_path) -> Path:
    return copy_bundle(bundles["aoc"], tmp_path / "bundle")


def run(capsys, command: str, bundle: Path, tmp_path: Path, *fragments: str) -> str:
    """``command`` on ``bundle`` must refuse it (one line, exit 2, no output written)."""
    if command == "simulate":
        output = tmp_path / "out.npy"
        message = refused(capsys, "simulate", bundle, "--noise", save_noise(tmp_path / "noise.npy"), "-o", output,
                          "--ideal", fragments=fragments)
        assert not output.exists()
        return message
    extra = ["--samples", "8", "--no-twin"] if command == "verify" else []
    return refused(capsys, command, bundle, *extra, fragments=fragments)


# ---------------------------------------------------------------- containment


@pytest.mark.parametrize("command", COMMANDS)
def test_payload_absolute_path_refused(capsys, ideal, tmp_path, command):
    outside = tmp_path / "outside.npy"
    outside.write_bytes(npy_bytes(np.zeros(3)))
    manifest = read_manifest(ideal)
    manifest["payloads"][str(outside)] = admc.bundle.store.sha256(outside.read_bytes())
    write_manifest(ideal, manifest)
    assert "absolute path" in run(capsys, command, ideal, tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_payload_dotdot_path_refused(capsys, ideal, tmp_path, command):
    (tmp_path / "outside.npy").write_bytes(npy_bytes(np.zeros(3)))
    manifest = read_manifest(ideal)
    manifest["payloads"]["../outside.npy"] = admc.bundle.store.sha256((tmp_path / "outside.npy").read_bytes())
    write_manifest(ideal, manifest)
    assert "normalised relative path" in run(capsys, command, ideal, tmp_path)


def test_source_payload_outside_bundle_refused(capsys, bundles, ideal, tmp_path):
    """A ``source.payload`` pointing outside with its true hash must not make verify run that model."""
    content = bundles["model"].read_bytes()
    (tmp_path / "evil.onnx").write_bytes(content)
    manifest = read_manifest(ideal)
    manifest["payloads"]["../evil.onnx"] = admc.bundle.store.sha256(content)
    manifest["source"]["payload"] = "../evil.onnx"
    write_manifest(ideal, manifest)
    run(capsys, "verify", ideal, tmp_path, "../evil.onnx")


@pytest.mark.parametrize("command", COMMANDS)
def test_symlinked_payload_refused(capsys, ideal, tmp_path, command):
    target = ideal / "channels" / "alpha.npy"
    copy = tmp_path / "alpha-copy.npy"
    copy.write_bytes(target.read_bytes())  # same bytes, same hash: only the symlink itself can be refused
    target.unlink()
    target.symlink_to(copy)
    assert "symbolic link" in run(capsys, command, ideal, tmp_path, str(target))


def test_symlinked_payload_directory_refused(capsys, ideal, tmp_path):
    moved = tmp_path / "weights-elsewhere"
    (ideal / "weights").rename(moved)
    (ideal / "weights").symlink_to(moved)
    run(capsys, "inspect", ideal, tmp_path, "symbolic link")


@pytest.mark.parametrize("command", COMMANDS)
def test_symlinked_manifest_refused(capsys, ideal, tmp_path, command):
    copy = tmp_path / "manifest-copy.json"
    copy.write_bytes((ideal / "manifest.json").read_bytes())
    (ideal / "manifest.json").unlink()
    (ideal / "manifest.json").symlink_to(copy)
    assert "symbolic link" in run(capsys, command, ideal, tmp_path)


def test_fifo_payload_refused(capsys, ideal, tmp_path):
    target = ideal / "channels" / "alpha.npy"
    target.unlink()
    os.mkfifo(target)
    assert "FIFO" in run(capsys, "inspect", ideal, tmp_path)


# ---------------------------------------------------------------- manifest trust


@pytest.mark.parametrize("command", COMMANDS)
def test_manifest_not_an_object_refused(capsys, ideal, tmp_path, command):
    (ideal / "manifest.json").write_text("[]")
    assert "JSON object" in run(capsys, command, ideal, tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_manifest_nested_100000_deep_refused(capsys, ideal, tmp_path, command):
    (ideal / "manifest.json").write_text('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested" in run(capsys, command, ideal, tmp_path)


def test_manifest_edited_without_digest_refused(capsys, ideal, tmp_path):
    manifest = read_manifest(ideal)
    manifest["report"]["notes"] = ["edited by hand"]
    write_manifest(ideal, manifest, redigest=False)
    assert "manifest_digest" in run(capsys, "inspect", ideal, tmp_path)


@pytest.mark.parametrize("section", ["layout", "source", "phases", "solver", "target"])
@pytest.mark.parametrize("command", COMMANDS)
def test_manifest_missing_section_refused(capsys, ideal, tmp_path, section, command):
    manifest = read_manifest(ideal)
    del manifest[section]
    write_manifest(ideal, manifest)
    assert f"'{section}'" in run(capsys, command, ideal, tmp_path)


MANIFEST_EDITS = {
    "negative_group_offset": (lambda m: m["layout"]["groups"][0].update(offset=-1), "layout.groups.0.offset"),
    "unknown_readout_group": (lambda m: m["layout"].update(readout_group="nowhere"), "layout.readout_group"),
    "loop_kind_foo": (lambda m: m["phases"][0][0].update(loop="foo"), "phases.0.0.loop"),
    "empty_grid": (lambda m: m["solver"].update(grid=[]), "solver.grid"),
    "steps_mismatch": (lambda m: m["solver"].update(steps=7), "solver.steps"),
    "phase_reads_later_phase": (lambda m: m["phases"][0][0]["inject"].append(["phase:5", 1.0]), "phases.0.0"),
    "negative_step_scale": (lambda m: m["phases"][0][0].update(step_scale=-1.0), "phases.0.0.step_scale"),
    "block_rows_mismatch": (lambda m: m["layout"]["blocks"][0].update(rows=999), "layout.blocks.0.rows"),
    "unknown_field": (lambda m: m["layout"].update(surprise=1), "layout.surprise"),
    "unlisted_payload": (lambda m: m["channels"].update(alpha="channels/other.npy"), "channels.alpha"),
    "bad_target_field": (lambda m: m["target"].update(linear_channels="yes"), "linear_channels"),
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS)
def test_manifest_inconsistent_values_refused(capsys, ideal, tmp_path, edit):
    change, field = MANIFEST_EDITS[edit]
    manifest = read_manifest(ideal)
    change(manifest)
    write_manifest(ideal, manifest)
    for command in COMMANDS:
        assert field in run(capsys, command, ideal, tmp_path)


def test_manifest_infinite_number_refused(capsys, ideal, tmp_path):
    text = (ideal / "manifest.json").read_text().replace('"step_scale": ', '"step_scale": 1e400, "x": ', 1)
    (ideal / "manifest.json").write_text(text)
    run(capsys, "inspect", ideal, tmp_path, "finite")


def test_manifest_negative_group_offset_refused(capsys, ideal, tmp_path):
    manifest = read_manifest(ideal)
    manifest["layout"]["groups"][0]["offset"] = -1
    write_manifest(ideal, manifest)
    run(capsys, "simulate", ideal, tmp_path, "layout.groups.0.offset")


def test_manifest_unknown_readout_group_refused(capsys, ideal, tmp_path):
    manifest = read_manifest(ideal)
    manifest["layout"]["readout_group"] = "nowhere"
    write_manifest(ideal, manifest)
    run(capsys, "verify", ideal, tmp_path, "layout.readout_group")


def test_manifest_loop_kind_foo_refused(capsys, ideal, tmp_path):
    manifest = read_manifest(ideal)
    manifest["phases"][0][0]["loop"] = "foo"
    write_manifest(ideal, manifest)
    run(capsys, "inspect", ideal, tmp_path, "phases.0.0.loop")


def test_manifest_empty_grid_refused(capsys, ideal, tmp_path):
    manifest = read_manifest(ideal)
    manifest["solver"]["grid"] = []
    write_manifest(ideal, manifest)
    run(capsys, "simulate", ideal, tmp_path, "solver.grid")


def test_manifest_timing_repeats_1e9_refused(capsys, aoc, tmp_path):
    """``target.timing.repeats = 1e9`` asked the twin for a 256 GB allocation; the target schema caps it."""
    manifest = read_manifest(aoc)
    manifest["target"]["timing"]["repeats"] = 10 ** 9
    write_manifest(aoc, manifest)
    run(capsys, "verify", aoc, tmp_path, "timing.repeats")


def test_manifest_extra_top_level_section_accepted(capsys, ideal):
    """Later features add top-level sections: the digest covers them, the schema lets them through."""
    manifest = read_manifest(ideal)
    manifest["future_feature"] = {"certificate": "block-norm", "rho": 0.5}
    write_manifest(ideal, manifest)
    status, _, err = cli(capsys, "inspect", ideal)
    assert status == 0, err
    assert Bundle(ideal).manifest["future_feature"]["rho"] == 0.5


def test_malformed_convergence_section_refused_by_inspect(capsys, ideal):
    manifest = read_manifest(ideal)
    manifest["convergence"] = {"certificate": "block-norm", "rho": 0.5}
    write_manifest(ideal, manifest)
    status, _, err = cli(capsys, "inspect", ideal)
    assert status == 2 and "convergence" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", COMMANDS)
def test_payload_dtype_and_shape_checked_against_manifest(capsys, ideal, tmp_path, command):
    replace_payload(ideal, "channels/alpha.npy", npy_bytes(np.zeros((3, 3))))
    assert "shape" in run(capsys, command, ideal, tmp_path, str(ideal / "channels" / "alpha.npy"))


def test_payload_complex_dtype_refused(capsys, ideal, tmp_path):
    size = read_manifest(ideal)["layout"]["size"]
    replace_payload(ideal, "channels/alpha.npy", npy_bytes(np.zeros(size, dtype=np.complex128)))
    run(capsys, "simulate", ideal, tmp_path, "dtype")


def test_verify_tolerance_from_manifest_ignored(aoc):
    """``report.verify_tolerance = 1e9`` (digest updated) must not change the bound verify applies."""
    before = program_criterion(Bundle(aoc))
    manifest = read_manifest(aoc)
    manifest["report"]["verify_tolerance"] = 1e9
    manifest["report"]["verify_criterion"] = "relative_error"
    write_manifest(aoc, manifest)
    assert program_criterion(Bundle(aoc)) == before
    assert before[0] == "per_step_nrmse" and before[1] < 1e-1


def test_verify_tolerance_of_an_exact_target_is_fixed(ideal):
    manifest = read_manifest(ideal)
    manifest["report"]["verify_tolerance"] = 1e9
    write_manifest(ideal, manifest)
    assert program_criterion(Bundle(ideal)) == ("relative_error", EXACT_TOLERANCE)


@pytest.mark.parametrize("command", COMMANDS)
def test_garbage_png_with_updated_hash_refused(capsys, aoc, tmp_path, command):
    from admc.targets.aoc.png import encode_png

    name = "aoc/images/module_0000_positive.png"
    replace_payload(aoc, name, encode_png(np.full((48, 48), 7, dtype=np.uint8)))
    assert "differs from the grey levels" in run(capsys, command, aoc, tmp_path, str(aoc / name))


def test_undecodable_png_with_updated_hash_refused(capsys, aoc, tmp_path):
    name = "aoc/images/module_0000_negative.png"
    replace_payload(aoc, name, b"\x89PNG\r\n\x1a\n garbage")
    run(capsys, "verify", aoc, tmp_path, "not a readable PNG")


def test_routing_with_updated_hash_refused(capsys, aoc, tmp_path):
    routing = json.loads((aoc / "aoc" / "routing.json").read_text())
    routing["edges"] = routing["edges"][1:]
    replace_payload(aoc, "aoc/routing.json", (json.dumps(routing) + "\n").encode())
    run(capsys, "verify", aoc, tmp_path, "routing differs")
    run(capsys, "simulate", aoc, tmp_path, "routing differs")


def test_inspect_checks_the_bundle(capsys, ideal, tmp_path):
    """``inspect`` used to check nothing: now it reads through the same trust boundary."""
    (ideal / "weights" / "block_0000.npy").write_bytes(b"changed")
    run(capsys, "inspect", ideal, tmp_path, "sha256")


def test_untampered_bundles_still_pass(capsys, bundles):
    for kind in ("ideal", "aoc"):
        status, _, err = cli(capsys, "verify", bundles[kind], "--samples", "16", "--no-twin")
        assert status == 0, err


def test_manifest_digest_covers_the_canonical_form(bundles):
    manifest = read_manifest(bundles["ideal"])
    assert manifest["format_version"] == admc.bundle.store.BUNDLE_VERSION
    content = {key: value for key, value in manifest.items() if key != "manifest_digest"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    import hashlib

    assert manifest["manifest_digest"] == hashlib.sha256(canonical).hexdigest()


def test_gain_per_channel_false_bundle_passes_its_own_verify(capsys, tmp_path):
    """A schema-valid ``gain.per_channel: false`` target builds a bundle that passes its own verify."""
    model = gemm_model(tmp_path / "model.onnx", "transB", hidden=40, seed=3)
    target = tmp_path / "no-per-channel.yaml"
    target.write_text("inherits: aoc-48\nname: no-per-channel\ngain:\n  per_channel: false\n")
    status, _, err = cli(capsys, "build", model, "-o", tmp_path / "bundle", "--target", target, "--steps", "8")
    assert status == 0, err
    status, out, err = cli(capsys, "verify", tmp_path / "bundle", "--no-twin", "--samples", "64")
    assert status == 0, out + err


def test_png_images_are_deterministic_and_decode_to_the_grey_levels(bundles, tmp_path):
    """Pillow writes the SLM images: a rebuild gives the same bytes, and every image decodes (Pillow) to
    exactly its module's grey levels in the bundle's array."""
    from PIL import Image

    again = build(bundles["model"], tmp_path / "again", target="aoc-48", solver="implicit-euler", steps=3)
    images = sorted(path.relative_to(again) for path in again.rglob("*.png"))
    assert images and images == sorted(path.relative_to(bundles["aoc"]) for path in bundles["aoc"].rglob("*.png"))
    for name in images:
        assert (again / name).read_bytes() == (bundles["aoc"] / name).read_bytes(), name
        module, path = int(name.name.split("_")[1]), name.stem.split("_")[2]
        grey = np.load(again / "aoc" / f"grey_{path}.npy")
        with Image.open(again / name) as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), grey[module])
