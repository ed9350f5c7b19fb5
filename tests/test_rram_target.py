"""The RRAM target (issue 11): description, conductance lowering, continuous-time execution, twin, CLI.

Numbers are checked against independent computations: conductances against the intended weights (half a
level), the ideal bundle executor against the continuous reference of the source model, the twin with every
effect off against the ideal executor, quantisation error against levels.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from models import export_onnx, seeded
from PIL import Image

from admc.bundle.program import bundle_program
from admc.bundle.store import Bundle
from admc.cli import main
from admc.compiler.driver import BuildOptions, build, compile_source, load_source
from admc.core.errors import AdmcError
from admc.passes.manager import PassManager, run_lowering
from admc.runtime.executor import run_ideal
from admc.targets.backends import backend_of
from admc.targets.loader import load_target
from admc.targets.rram.description import RramTarget
from admc.targets.rram.twin import RramTwin
from admc.verify.metrics import per_step_nrmse

REPOSITORY = Path(__file__).resolve().parent.parent
PRESET = REPOSITORY / "targets" / "rram" / "presets" / "rram-128.yaml"
EXAMPLE = REPOSITORY / "examples" / "rram" / "relu_moons_noise_aware.onnx"
EFFECTS = ("programming_noise", "read_noise", "drift", "bandwidth", "leakage", "dac_quantisation",
           "adc_quantisation", "relu_offset")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def user_target(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"inherits: rram-128\nname: {name}\n{text}", encoding="utf-8")
    return path


def effects_off(directory: Path, name: str = "rram-quiet", extra: str = "") -> Path:
    lines = "\n".join(f"  {effect}:\n    enabled: false" for effect in EFFECTS)
    return user_target(directory, name, f"nonidealities:\n{lines}\n{extra}")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("rram")
    floating = user_target(directory, "rram-float", "conductance:\n  float_levels: true\n")
    fine = user_target(directory, "rram-256", "conductance:\n  levels: 256\n")
    return {"preset": build(EXAMPLE, directory / "preset", target="rram", steps=8),
            "float": build(EXAMPLE, directory / "float", target=str(floating), steps=8),
            "fine": build(EXAMPLE, directory / "fine", target=str(fine), steps=8),
            "quiet": build(EXAMPLE, directory / "quiet", target=str(effects_off(directory)), steps=8),
            "directory": directory}


# ------------------------------------------------------------------------------------ the description


def test_every_figure_of_the_preset_cites_its_source() -> None:
    for number, line in enumerate(PRESET.read_text(encoding="utf-8").splitlines(), start=1):
        value = line.split("#", 1)[0].split(":", 1)[-1].strip() if ":" in line else ""
        if re.fullmatch(r"-?[0-9.]+(e[+-]?[0-9]+)?", value):
            assert re.search(r"#.*\b(paper|typical|assumption)\b", line), f"rram-128.yaml:{number}: {line}"


def test_preset_figures_and_round_trip() -> None:
    target = load_target("rram")
    assert isinstance(target, RramTarget) and target.name == "rram-128"
    assert target.crossbar.size == 128 and target.periphery.dac_bits == 12
    assert 5 <= target.conductance.g_max_us / target.conductance.g_min_us <= 10
    assert 40 <= target.conductance.g_max_us <= 100
    assert 0.02 <= target.nonidealities.programming_noise.relative_std <= 0.03
    assert target.activations == ("relu", "tanh") and target.linear_channels
    assert RramTarget.from_mapping(yaml.safe_load(yaml.safe_dump(target.to_dict()))) == target


def test_user_yaml_inherits_and_bad_fields_are_named(tmp_path: Path) -> None:
    target = load_target(user_target(tmp_path, "mine", "conductance:\n  levels: 16\nactivations:\n  tanh: false\n"))
    assert target.conductance.levels == 16 and target.activations == ("relu",)
    assert target.conductance.g_max_us == load_target("rram").conductance.g_max_us
    bad = user_target(tmp_path, "bad", "conductance:\n  g_min_us: 90.0\n")
    with pytest.raises(AdmcError, match=r"bad.yaml: field 'conductance.g_min_us': 90 must be below"):
        load_target(bad)


def test_a_target_without_tanh_refuses_tanh_naming_the_node(tmp_path: Path) -> None:
    relu_only = user_target(tmp_path, "relu-only", "activations:\n  tanh: false\n")
    with pytest.raises(AdmcError, match=r"Tanh.*target 'relu-only' computes relu"):
        build(REPOSITORY / "examples" / "two_moons.onnx", tmp_path / "out", target=str(relu_only))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ conductances


def test_devices_in_range_and_weights_within_half_a_level(bundles) -> None:
    bundle = Bundle(bundles["preset"])
    target = load_target("rram")
    section = bundle.manifest["rram"]
    positive, negative = (bundle.array(section["conductance"][side]) for side in ("positive", "negative"))
    g_min, g_max, step = target.conductance.g_min_us, target.conductance.g_max_us, target.conductance.level_step_us
    for side, values in (("positive", positive), ("negative", negative)):
        assert values.min() >= g_min - 1e-12 and values.max() <= g_max + 1e-12
        levels = bundle.array(section["levels"][side])
        assert levels.max() <= target.conductance.levels - 1
        np.testing.assert_allclose(values, g_min + levels * step, rtol=0, atol=1e-12)
    # Intended weights from an independent compile of the same source, realised ones from the bundle.
    compiled = compile_source(load_source(EXAMPLE), target, BuildOptions(steps=8))
    realised, _, _ = bundle_program(bundle)
    scale = bundle.array(section["column_scale"])
    checked = 0
    for tile in section["tiles"]:
        rows = slice(tile["row_start"], tile["row_start"] + tile["rows"])
        columns = slice(tile["column_start"], tile["column_start"] + tile["columns"])
        outputs = slice(tile["output_port_start"], tile["output_port_start"] + tile["rows"])
        index = tile["block_index"]
        intended = compiled.program.blocks[index].matrix[rows, columns]
        error = np.abs(realised.blocks[index].matrix[rows, columns] - intended)
        half_level = 0.5 * scale[tile["module"], outputs][:, None] * step
        assert np.all(error <= half_level * (1 + 1e-9)), tile["block"]
        checked += error.size
    assert checked == sum(block.matrix.size for block in compiled.program.blocks)


def test_the_lowering_passes_leave_the_spine_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """Each pass returns a new state: the spine program the lowering started from is unchanged, and lowering it
    again without a pass manager (``run_lowering`` of ``TargetBackend.lowering``) gives the same payloads."""
    import admc.targets.rram.lowering as lowering

    seen = {}
    original = lowering.rram_lowering

    def recording(compiled, layout):
        seen.update(spine=compiled, layout=layout, report=dict(compiled.report), program=compiled.program,
                    sections=dict(compiled.extra_sections))
        return original(compiled, layout)

    monkeypatch.setattr(lowering, "rram_lowering", recording)
    passes = PassManager(verify=True)
    bundle = Bundle(build(EXAMPLE, tmp_path / "bundle", target="rram", steps=8, passes=passes))
    spine = seen["spine"]
    assert spine.report == seen["report"] and spine.program is seen["program"]
    assert spine.extra_sections == seen["sections"] and "rram" not in spine.extra_sections
    assert spine.realised_program is None and "crossbars_used" in bundle.manifest["report"]
    records = {record.name: record for record in passes.records}
    assert records["conductance mapping"].error <= records["conductance mapping"].bound == 0.5 + 1e-9
    again = run_lowering(backend_of(spine.target).lowering(spine, seen["layout"]))  # without a pass manager
    assert again.extra_payloads.keys() == {name for name in bundle.manifest["payloads"]
                                           if name.startswith("rram/")}
    for name, content in again.extra_payloads.items():
        assert (bundle.path / name).read_bytes() == content, name


def test_a_column_beyond_the_transimpedance_range_is_refused(tmp_path: Path) -> None:
    narrow = user_target(tmp_path, "narrow-tia", "periphery:\n  tia_gain_max_ohm: 1.1e+3\n")
    with pytest.raises(AdmcError, match=r"block_\d+ \(tile \d+, output \d+\).*periphery.tia_gain_max_ohm"):
        build(EXAMPLE, tmp_path / "out", target=str(narrow), steps=8)
    assert not (tmp_path / "out").exists()


def test_heat_maps_decode_and_rebuilds_are_byte_identical(bundles, tmp_path: Path) -> None:
    bundle = Bundle(bundles["preset"])
    crossbars = bundle.manifest["rram"]["summary"]["crossbars_used"]
    for crossbar in range(crossbars):
        for side in ("positive", "negative"):
            image = Image.open(io.BytesIO(bundle.read_bytes(f"rram/maps/crossbar_{crossbar:04d}_{side}.png")))
            assert image.size == (128, 128) and image.mode == "RGB"
    again = build(EXAMPLE, tmp_path / "again", target="rram", steps=8)
    files = sorted(path.relative_to(bundles["preset"]) for path in bundles["preset"].rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(again) for path in again.rglob("*") if path.is_file())
    for name in files:
        assert (bundles["preset"] / name).read_bytes() == (again / name).read_bytes(), name


# ------------------------------------------------------------------------------------ ideal execution


class ReluMlp(torch.nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.first, self.second = torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, hidden)
        self.last = torch.nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.first(torch.cat([x, t[:, None]], 1)))
        return self.last(torch.relu(self.second(hidden)))


def smooth_relu_model(path: Path) -> Path:
    return export_onnx(seeded(ReluMlp(), 0, 1.0), path)


def verify_report(bundle_path: Path, tmp_path: Path, *options: str) -> dict:
    import json

    report = tmp_path / f"{bundle_path.name}.json"
    status = main(["verify", str(bundle_path), "--samples", "128", "--json", str(report), *options])
    data = json.loads(report.read_text())
    assert status == (0 if data["passed"] else 1)
    return data


def test_float_conductances_match_the_continuous_reference(bundles, tmp_path: Path) -> None:
    report = verify_report(bundles["float"], tmp_path, "--no-twin")
    link = report["links"][1]
    assert report["passed"] and report["solver"] == "continuous"
    assert link["tolerance"] == 1e-4 and link["measured"] < 1e-6


def test_quantised_conductances_err_as_quantisation_explains(bundles, tmp_path: Path) -> None:
    layers = 3
    for name, levels in (("preset", 64), ("fine", 256)):
        report = Bundle(bundles[name]).manifest["report"]
        # A priori: each layer's weights err by at most half a level of their column's full range.
        assert report["verify_tolerance"] == pytest.approx(layers / (2 * (levels - 1)))
        assert 0 < report["quantisation_nrmse"] <= report["verify_tolerance"]
    # On a smooth flow (no samples near a split between modes), four times the levels: about a quarter.
    model = smooth_relu_model(tmp_path / "smooth.onnx")
    errors = [Bundle(build(model, tmp_path / f"smooth{levels}", steps=8,
                           target=str(user_target(tmp_path, f"levels{levels}", f"conductance:\n  levels: {levels}\n")))
                     ).manifest["report"]["quantisation_nrmse"] for levels in (64, 256)]
    assert 2.5 < errors[0] / errors[1] < 6.5
    report = verify_report(bundles["preset"], tmp_path, "--no-twin")
    link = report["links"][1]
    assert report["passed"] and link["criterion"] == "per_step_nrmse"
    assert link["measured"] <= link["tolerance"] == pytest.approx(layers / (2 * 63))


# ------------------------------------------------------------------------------------ the twin


def test_twin_is_seed_deterministic(bundles) -> None:
    bundle = Bundle(bundles["preset"])
    noise = np.random.default_rng(3).standard_normal((64, 2))
    first, again, other = (RramTwin(bundle, seed=seed).run(noise) for seed in (0, 0, 1))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_twin_without_effects_integrates_like_the_ideal_executor(bundles) -> None:
    bundle = Bundle(bundles["quiet"])
    noise = np.random.default_rng(4).standard_normal((64, 2))
    program, schedule, alpha = bundle_program(bundle)
    ideal = run_ideal(program, schedule, alpha, noise).trajectory
    twin = RramTwin(bundle).run(noise)
    # Heun's method at ≥ 2BT/unit steps against DOP853 at 1e-10.
    assert float(np.max(per_step_nrmse(twin[1:], ideal[1:]))) < 2e-3


def test_twin_drift_scales_every_weight(bundles, tmp_path: Path) -> None:
    drifting = effects_off(tmp_path, "rram-drift")
    text = drifting.read_text().replace("  drift:\n    enabled: false", "  drift:\n    enabled: true")
    drifting.write_text(text + "")
    bundle = Bundle(build(EXAMPLE, tmp_path / "drift", target=str(drifting), steps=8))
    drift = load_target(drifting).nonidealities.drift
    factor = (drift.time_after_programming_s / drift.reference_time_s) ** (-drift.exponent)
    realised, _, _ = bundle_program(bundle)
    twin = RramTwin(bundle)
    for chip, ideal in zip(twin.program.blocks, realised.blocks, strict=True):
        np.testing.assert_allclose(chip.matrix, factor * ideal.matrix, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------ the command line


def test_cli_build_inspect_simulate_verify(tmp_path: Path, capsys) -> None:
    output = tmp_path / "bundle"
    assert main(["build", str(EXAMPLE), "-o", str(output), "--target", "rram", "--steps", "8"]) == 0
    assert main(["inspect", str(output)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"crossbars\s+1 used", text) and "devices" in text and "µs per sample" in text
    assert "settle" in text and "continuous" in text
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).standard_normal((32, 2)))
    for options in (["--ideal"], ["--seed", "3"]):
        samples = tmp_path / f"samples{len(options)}.npy"
        assert main(["simulate", str(output), "--noise", str(noise), "-o", str(samples), *options]) == 0
        assert np.load(samples).shape == (32, 2)
    assert main(["verify", str(output), "--samples", "128", "--report", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "samples.png").is_file()
    status = main(["build", str(EXAMPLE), "-o", str(tmp_path / "x"), "--target", "rram", "--solver", "heun"])
    assert status == 2 and "continuous-time solvers only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
