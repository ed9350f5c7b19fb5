"""The program bundle (docs/design.md §5) and the CLI commands that read it: determinism, hash checks, atomic
writes, ``inspect --json``, ``reference`` / ``simulate --ideal`` round trips, and divergence reports."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from models import ResidualMlp, StandardMlp, export_onnx, export_pt2, seeded

import admc.bundle.store
from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import BuildOptions, build, compile_source, load_source
from admc.core.errors import AdmcError
from admc.targets.loader import load_target
from admc.verify.chain import verify_ideal_chain

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

SOLVER_CASES = [("explicit-euler", None), ("heun", None), ("implicit-euler", None), ("crank-nicolson", None),
                ("implicit-euler", 3), ("crank-nicolson", 2)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("sources")
    module = seeded(StandardMlp((16, 12)), 11)
    return {"onnx": export_onnx(module, directory / "model.onnx"), "pt2": export_pt2(module, directory / "model.pt2")}


def bundle_files(path: Path) -> dict[str, bytes]:
    return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}


def cli(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    message = err.strip()
    assert message.startswith("admc: error: ") and "\n" not in message, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("file_format", ["onnx", "pt2"])
@pytest.mark.parametrize("solver", ["heun", "crank-nicolson"])
def test_two_builds_are_byte_identical(tmp_path, sources, file_format, solver):
    first = build(sources[file_format], tmp_path / "first", target="ideal", solver=solver, steps=8)
    second = build(sources[file_format], tmp_path / "second", target="ideal", solver=solver, steps=8)
    first_files, second_files = bundle_files(first), bundle_files(second)
    assert set(first_files) == set(second_files)
    assert "manifest.json" in first_files and any(name.startswith("weights/") for name in first_files)
    for name in first_files:
        assert first_files[name] == second_files[name], name
    # A rebuild in place over an existing bundle gives the same bytes again.
    build(sources[file_format], first, target="ideal", solver=solver, steps=8)
    assert bundle_files(first) == second_files


def test_manifest_lists_every_payload_with_its_hash(tmp_path, sources):
    bundle = build(sources["onnx"], tmp_path / "bundle", target="ideal", solver="heun", steps=4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = bundle_files(bundle)
    assert set(manifest["payloads"]) == set(files) - {"manifest.json"}
    for name, digest in manifest["payloads"].items():
        assert admc.bundle.store.sha256(files[name]) == digest
    assert manifest["source"]["sha256"] == admc.bundle.store.sha256(sources["onnx"].read_bytes())
    assert files[manifest["source"]["payload"]] == sources["onnx"].read_bytes()


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize("payload", ["weights/block_0000.npy", "injection/part_0000.npy", "channels/alpha.npy",
                                     "source/model.onnx"])
@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_tampered_payload_is_refused_naming_the_file(tmp_path, sources, capsys, payload, command):
    bundle = build(sources["onnx"], tmp_path / "bundle", target="ideal", solver="implicit-euler", steps=4)
    target = bundle / payload
    content = bytearray(target.read_bytes())
    content[-1] ^= 0x01
    target.write_bytes(bytes(content))
    status, _, err = cli(capsys, command, bundle)
    assert status == 2
    assert_one_line_error(err, str(target), "sha256")


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_missing_payload_is_refused_naming_the_file(tmp_path, sources, capsys, command):
    bundle = build(sources["onnx"], tmp_path / "bundle", target="ideal", solver="heun", steps=4)
    (bundle / "weights" / "block_0001.npy").unlink()
    status, _, err = cli(capsys, command, bundle)
    assert status == 2
    assert_one_line_error(err, str(bundle / "weights" / "block_0001.npy"))


def test_simulate_refuses_a_tampered_bundle(tmp_path, sources, capsys):
    bundle = build(sources["onnx"], tmp_path / "bundle", target="ideal", solver="heun", steps=4)
    noise = tmp_path / "noise.npy"
    np.save(noise, np.zeros((3, 2)))
    (bundle / "injection" / "times.npy").write_bytes(b"tampered")
    status, _, err = cli(capsys, "simulate", bundle, "--noise", noise, "-o", tmp_path / "out.npy", "--ideal")
    assert status == 2
    assert_one_line_error(err, str(bundle / "injection" / "times.npy"))
    assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------- atomic writes


def test_build_failing_while_writing_leaves_nothing(tmp_path, sources, capsys, monkeypatch):
    """The manifest is written last, after every payload: failing there must remove the staged payloads."""

    def broken(manifest):
        raise AdmcError("simulated failure while writing the manifest")

    monkeypatch.setattr(admc.bundle.store, "manifest_bytes", broken)
    output = tmp_path / "out" / "bundle"
    output.parent.mkdir()
    status, _, err = cli(capsys, "build", sources["onnx"], "-o", output, "--target", "ideal", "--steps", "4")
    assert status == 2
    assert_one_line_error(err, "simulated failure")
    assert not output.exists()
    assert os.listdir(output.parent) == []  # no staging directory left


def test_build_failing_with_an_os_error_midway_leaves_nothing(tmp_path, sources, monkeypatch):
    writes = {"count": 0}
    original = Path.write_bytes

    def flaky(self, data):
        writes["count"] += 1
        if writes["count"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    output = tmp_path / "bundle"
    with pytest.raises(OSError):
        build(sources["onnx"], output, target="ideal", solver="heun", steps=4)
    assert writes["count"] == 3
    assert os.listdir(tmp_path) == []


def test_failed_rebuild_keeps_the_previous_bundle(tmp_path, sources, capsys, monkeypatch):
    output = tmp_path / "bundle"
    build(sources["onnx"], output, target="ideal", solver="heun", steps=4)
    before = bundle_files(output)

    def broken(manifest):
        raise AdmcError("simulated failure while writing the manifest")

    monkeypatch.setattr(admc.bundle.store, "manifest_bytes", broken)
    status, _, _ = cli(capsys, "build", sources["onnx"], "-o", output, "--target", "ideal", "--steps", "8")
    assert status == 2
    assert bundle_files(output) == before
    assert os.listdir(tmp_path) == ["bundle"]


def test_build_refuses_to_overwrite_something_that_is_not_a_bundle(tmp_path, sources, capsys):
    output = tmp_path / "precious"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    status, _, err = cli(capsys, "build", sources["onnx"], "-o", output, "--target", "ideal")
    assert status == 2
    assert_one_line_error(err, str(output))
    assert (output / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["precious"]


# ---------------------------------------------------------------- inspect


@pytest.mark.parametrize("target", ["ideal", "no-linear"])
def test_inspect_json_lists_groups_blocks_and_phases(tmp_path, sources, capsys, no_linear_target, target):
    target_spec = "ideal" if target == "ideal" else str(no_linear_target)
    bundle = build(sources["onnx"], tmp_path / "bundle", target=target_spec, solver="crank-nicolson", steps=5)
    status, out, err = cli(capsys, "inspect", bundle, "--json")
    assert status == 0, err
    summary = json.loads(out)
    compiled = compile_source(load_source(sources["onnx"]), load_target(target_spec),
                              BuildOptions(solver="crank-nicolson", steps=5))
    program = compiled.program
    assert [group["name"] for group in summary["groups"]] == [group.name for group in program.groups]
    assert [group["size"] for group in summary["groups"]] == [group.size for group in program.groups]
    assert summary["state_channels"] == program.size == sum(group["size"] for group in summary["groups"])
    assert [(block["row_group"], block["column_group"], block["rows"], block["columns"])
            for block in summary["blocks"]] == [
        (block.row_group, block.column_group, *block.matrix.shape) for block in program.blocks]
    assert summary["solver"] == "crank-nicolson" and summary["steps"] == 5
    assert summary["phases_per_step"] == 2
    assert summary["phase_loops"] == {"closed": 5, "open": 5}
    assert summary["layout"] == ("direct" if target == "ideal" else "folded-input")
    status, text, _ = cli(capsys, "inspect", bundle)
    assert status == 0
    for group in program.groups:
        assert group.name in text


# ---------------------------------------------------------------- reference and simulate round trips


@pytest.mark.parametrize(("solver", "fp_iterations"), SOLVER_CASES)
def test_reference_and_simulate_agree_with_verify(tmp_path, sources, capsys, solver, fp_iterations):
    samples, seed, steps = 48, 3, 6
    extra = ["--fp-iterations", str(fp_iterations)] if fp_iterations else []
    bundle = tmp_path / "bundle"
    status, _, err = cli(capsys, "build", sources["onnx"], "-o", bundle, "--target", "ideal", "--solver", solver,
                         "--steps", steps, *extra)
    assert status == 0, err
    # The noise verify draws for (samples, seed), so the three commands see the same inputs.
    noise = np.random.default_rng(seed).standard_normal((samples, 2))
    np.save(tmp_path / "noise.npy", noise)
    status, _, err = cli(capsys, "reference", sources["onnx"], "--noise", tmp_path / "noise.npy",
                         "-o", tmp_path / "reference.npy", "--solver", solver, "--steps", steps, *extra)
    assert status == 0, err
    status, _, err = cli(capsys, "simulate", bundle, "--noise", tmp_path / "noise.npy",
                         "-o", tmp_path / "simulated.npy", "--ideal")
    assert status == 0, err
    status, _, err = cli(capsys, "verify", bundle, "--samples", samples, "--seed", seed,
                         "--json", tmp_path / "report.json")
    assert status == 0, err
    reference, simulated = np.load(tmp_path / "reference.npy"), np.load(tmp_path / "simulated.npy")
    assert reference.shape == simulated.shape == (samples, 2)
    chain = verify_ideal_chain(Bundle(bundle), samples, seed).trajectories
    np.testing.assert_allclose(reference, chain["reference"][-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(simulated, chain["ideal"][-1], rtol=0, atol=1e-12)
    report = json.loads((tmp_path / "report.json").read_text())
    (link,) = [link for link in report["links"] if "bundle (ideal executor)" in link["link"]]
    assert link["relative_error"] <= 1e-6
    assert abs(link["max_abs_error"] - float(np.max(np.abs(simulated - reference)))) <= 1e-13
    scale = float(np.sqrt(np.mean(reference ** 2)))
    assert float(np.max(np.abs(simulated - reference))) / scale <= 1e-6


def test_reference_from_pt2_matches_onnx(tmp_path, sources, capsys):
    noise = np.random.default_rng(0).standard_normal((16, 2))
    np.save(tmp_path / "noise.npy", noise)
    results = []
    for file_format in ("onnx", "pt2"):
        output = tmp_path / f"{file_format}.npy"
        status, _, err = cli(capsys, "reference", sources[file_format], "--noise", tmp_path / "noise.npy",
                             "-o", output, "--solver", "implicit-euler", "--steps", 4)
        assert status == 0, err
        results.append(np.load(output))
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-10)


def test_simulate_refuses_noise_of_the_wrong_width(tmp_path, sources, capsys):
    bundle = build(sources["onnx"], tmp_path / "bundle", target="ideal", solver="heun", steps=4)
    np.save(tmp_path / "noise.npy", np.zeros((4, 3)))
    status, _, err = cli(capsys, "simulate", bundle, "--noise", tmp_path / "noise.npy", "-o",
                         tmp_path / "out.npy", "--ideal")
    assert status == 2
    assert_one_line_error(err, str(tmp_path / "noise.npy"))
    assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------- a closed phase that cannot converge


def diverging_model(directory: Path, kind: str) -> Path:
    if kind == "unbounded":
        # v = g(x) + 4x: at Δt = 1 the closed loop multiplies the state by ~5 per iteration.
        module = seeded(ResidualMlp(16), 0, scale=3.0)
        module.skip_gain = -4.0
    else:
        # Large weights through tanh: bounded, but the loop never settles.
        module = seeded(StandardMlp((16, 16)), 0, scale=6.0)
    return export_onnx(module, directory / f"{kind}.onnx")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["unbounded", "oscillating"])
def test_simulate_reports_a_closed_phase_that_does_not_converge(tmp_path, capsys, kind):
    model = diverging_model(tmp_path, kind)
    bundle = tmp_path / "bundle"
    # α = 0 (--alpha min) and --force: the α pass would otherwise damp or refuse these loops
    # (tests/test_alpha_selection.py); the test is about what simulate says of a bundle that does not settle.
    status, _, err = cli(capsys, "build", model, "-o", bundle, "--target", "ideal", "--solver", "implicit-euler",
                         "--steps", 1, "--alpha", "min", "--force")
    assert status == 0, err
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).standard_normal((8, 2)))
    status, _, err = cli(capsys, "simulate", bundle, "--noise", tmp_path / "noise.npy", "-o",
                         tmp_path / "out.npy", "--ideal")
    assert status == 2
    assert_one_line_error(err, "step 0", "phase 0", "closed")
    assert not (tmp_path / "out.npy").exists()
    assert not any(name.startswith(".out") for name in os.listdir(tmp_path))


def test_geometric_divergence_is_caught_before_overflow(tmp_path, capsys):
    """Regression: the relative change |Δz| / max(1, |z|) of a geometrically growing state stays below 1, so
    divergence must be caught by the state's size, with a finite residual and no overflow warnings."""
    model = diverging_model(tmp_path, "unbounded")
    bundle = tmp_path / "bundle"
    assert cli(capsys, "build", model, "-o", bundle, "--target", "ideal", "--steps", 1, "--alpha", "min",
               "--force")[0] == 0
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).standard_normal((8, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, _, err = cli(capsys, "simulate", bundle, "--noise", tmp_path / "noise.npy", "-o",
                             tmp_path / "out.npy", "--ideal")
    assert status == 2
    assert "diverged" in err
    relative_change = float(re.search(r"relative change ([^)]+)\)", err).group(1))
    assert np.isfinite(relative_change), err
    assert not [warning for warning in caught if issubclass(warning.category, RuntimeWarning)]


@pytest.mark.parametrize("grid_format", ["npy", "txt"])
@pytest.mark.parametrize("solver", ["explicit-euler", "heun", "implicit-euler", "crank-nicolson"])
def test_non_uniform_grid_file_builds_and_verifies(tmp_path, sources, capsys, grid_format, solver):
    grid = np.array([0.05, 0.1, 0.35, 0.6, 0.61, 1.0])
    grid_path = tmp_path / f"grid.{grid_format}"
    if grid_format == "npy":
        np.save(grid_path, grid)
    else:
        grid_path.write_text(", ".join(repr(float(value)) for value in grid) + "\n")
    bundle = tmp_path / "bundle"
    status, _, err = cli(capsys, "build", sources["onnx"], "-o", bundle, "--target", "ideal", "--solver", solver,
                         "--grid", grid_path)
    assert status == 0, err
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["solver"]["grid"] == [float(value) for value in grid]
    assert len(manifest["phases"]) == len(grid) - 1
    status, _, err = cli(capsys, "verify", bundle, "--samples", 32, "--json", tmp_path / "report.json")
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(link["relative_error"] <= 1e-6 for link in report["links"])
