"""Target descriptions: presets, aliases, inheritance, and the errors bad YAML must produce."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest

from admc.core.errors import AdmcError
from admc.targets.aoc.description import AocTarget
from admc.targets.description_models import Section, leaf, section
from admc.targets.description_schema import deep_merge, validate
from admc.targets.ideal.description import IdealTarget
from admc.targets.loader import list_presets, load_target

NONIDEALITY_ENTRIES = {
    "slm_darkness": {"enabled", "floor"},
    "weight_error": {"enabled", "relative_std"},
    "input_efficiency": {"enabled", "minimum", "maximum", "dead_channels"},
    "pd_crosstalk": {"enabled", "edge_ratio", "middle_ratio"},
    "pbs_crosstalk": {"enabled", "leakage"},
    "offsets": {"enabled", "std"},
    "gain_error": {"enabled", "relative_std"},
    "nonlinearity": {"enabled", "exponent"},
    "saturation": {"enabled", "low", "high"},
    "read_noise": {"enabled", "std"},
    "injection_clip": {"enabled", "limit"},
    # The measured chain's own effects: off in the presets, switched on by a calibration file.
    "led_response": {"enabled"},
    "sigmoid_offsets": {"enabled"},
    "slm_transfer": {"enabled"},
    "output_gain": {"enabled"},
}
MEASURED_CHAIN_ONLY = {"led_response", "sigmoid_offsets", "slm_transfer", "output_gain"}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_presets_are_listed_and_load() -> None:
    assert list_presets() == ["aoc", "aoc-16", "aoc-48", "ideal", "rram", "rram-128"]
    ideal = load_target("ideal")
    assert ideal == IdealTarget()
    assert ideal.linear_channels is True and ideal.kind == "ideal"
    for name, ports in (("aoc-48", 48), ("aoc-16", 16)):
        target = load_target(name)
        assert isinstance(target, AocTarget)
        assert target.name == name and target.kind == "aoc"
        assert target.module.ports == ports
        assert target.linear_channels is False
        assert target.slm.bit_depth == 8 and target.slm.float_weights is False
        assert target.sigma.function == "tanh"
        assert target.state.injection_clip == 1.3
        assert target.timing.bandwidth_hz == 5e6 and target.timing.sample_rate_hz == 4.6875e6
        assert target.timing.loop_iteration_s == pytest.approx(1 / (2 * math.pi * 5e6), rel=1e-3)
        assert target.timing.readout_window == (0.68, 0.93) and target.timing.repeats == 5


CALIBRATED_AND_CORRECTED = {"slm_darkness", "input_efficiency", "pd_crosstalk", "pbs_crosstalk", "offsets",
                            "gain_error"}


def test_preset_nonidealities_have_the_agreed_names_and_only_residual_effects_enabled() -> None:
    for name in ("aoc-48", "aoc-16"):
        section = load_target(name).to_dict()["nonidealities"]
        assert set(section) == {"seed", *NONIDEALITY_ENTRIES}
        for entry, parameters in NONIDEALITY_ENTRIES.items():
            assert set(section[entry]) == parameters, entry
            expected_on = entry not in CALIBRATED_AND_CORRECTED | MEASURED_CHAIN_ONLY
            assert section[entry]["enabled"] is expected_on, entry
    assert load_target("aoc-48").nonidealities.input_efficiency.dead_channels == (8,)


def test_alias_aoc_is_aoc_48() -> None:
    assert load_target("aoc") == load_target("aoc-48")


def test_to_dict_is_json_and_round_trips() -> None:
    for name in ("aoc-48", "aoc-16", "ideal"):
        target = load_target(name)
        data = json.loads(json.dumps(target.to_dict()))
        rebuilt = AocTarget.from_mapping(data) if name != "ideal" else IdealTarget.from_mapping(data)
        assert rebuilt == target


def test_user_file_inherits_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mine.yaml",
        "inherits: aoc-48\nname: my-aoc\nslm:\n  bit_depth: 10\nnonidealities:\n  read_noise:\n    enabled: false\n",
    )
    target = load_target(path)
    base = load_target("aoc-48")
    assert isinstance(target, AocTarget)
    assert target.name == "my-aoc"
    assert target.slm.bit_depth == 10
    assert target.nonidealities.read_noise.enabled is False
    # Deep merge: siblings of the overridden fields keep the preset's values.
    assert target.nonidealities.read_noise.std == base.nonidealities.read_noise.std
    assert target.slm.response == base.slm.response
    assert target.nonidealities.offsets == base.nonidealities.offsets
    # A string path works too, and a chain of two user files merges in order.
    child = write(tmp_path, "child.yaml", "inherits: mine.yaml\nslm:\n  float_weights: true\n")
    chained = load_target(str(child))
    assert chained.slm.bit_depth == 10 and chained.slm.float_weights is True


def test_user_ideal_without_linear_channels(tmp_path: Path) -> None:
    path = write(tmp_path, "ideal.yaml", "inherits: ideal\nlinear_channels: false\n")
    assert load_target(path) == IdealTarget(linear_channels=False)
    direct = write(tmp_path, "direct.yaml", "kind: ideal\n")
    assert load_target(direct) == IdealTarget()


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ("inherits: aoc-48\nslm:\n  bits: 8\n", "slm.bits", "unknown field"),
        ("inherits: aoc-48\nslm:\n  bit_depth: eight\n", "slm.bit_depth", "'eight'"),
        ("inherits: aoc-48\nslm:\n  bit_depth: 32\n", "slm.bit_depth", "[1, 16]"),
        ("inherits: aoc-48\nslm: 8\n", "slm", "section"),
        ("inherits: aoc-48\nnonidealities:\n  read_noise:\n    enabled: 1\n",
         "nonidealities.read_noise.enabled", "true or false"),
        ("inherits: aoc-48\nalpha:\n  max: 1.0\n", "alpha.max", "below 1"),
        ("inherits: aoc-48\nslm:\n  response: [0.0, -1.0, 0.0]\n", "slm.response", "not increasing"),
        ("inherits: aoc-48\ntiming:\n  readout_window: [0.5]\n", "timing.readout_window", "2 entries"),
        ("inherits: aoc-48\ntiming:\n  bandwidth_hz: 5.0e6\n", "timing.bandwidth_hz", "5.0e+6"),
        ("kind: aoc\nname: x\n", "linear_channels", "required"),
        ("name: x\n", "kind", "required"),
        ("kind: quantum\n", "kind", "unknown target kind"),
        ("inherits: nowhere\n", "inherits", "aoc-48"),
        # Sections whose YAML name differs from the attribute's are named as the YAML writes them.
        ("kind: rram\nname: x\nlinear_channels: true\n", "activations.relu", "required"),
        ("inherits: rram-128\nactivations:\n  sigmoid: true\n", "activations.sigmoid", "known here: relu, tanh"),
        ("inherits: rram-128\nactivations_computed: {relu: true}\n", "activations_computed", "unknown field"),
        ("inherits: aoc-48\nchain:\n  sigmoid: [1, 2]\n", "chain.sigmoid", "6 entries"),
        ("inherits: aoc-48\nchain:\n  led_positive: [0, 0, 1, 2000]\n", "chain.led_positive[3]", "[-1000, 1000]"),
        ("inherits: aoc-48\nestimate:\n  phase_window_s: -1\n", "estimate.phase_window_s", "[0, 1e+18]"),
        ("inherits: ideal\nloop:\n  settle_tolerance: 0.9\n", "loop.settle_tolerance", "[1e-15, 0.5]"),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path: Path, text: str, field: str, detail: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(AdmcError) as caught:
        load_target(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"field '{field}'" in message
    assert detail in message
    assert "\n" not in message


def test_error_names_the_inherited_file_that_is_wrong(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "inherits: aoc-48\ngain:\n  beta_max: -1\n")
    child = write(tmp_path, "child.yaml", "inherits: base.yaml\n")
    with pytest.raises(AdmcError, match=r"base\.yaml: field 'gain\.beta_max'"):
        load_target(child)


def test_inheritance_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "inherits: b.yaml\n")
    write(tmp_path, "b.yaml", "inherits: a.yaml\n")
    with pytest.raises(AdmcError, match=r"field 'inherits': inheritance cycle") as caught:
        load_target(tmp_path / "a.yaml")
    assert "a.yaml" in str(caught.value) and "b.yaml" in str(caught.value)
    write(tmp_path, "self.yaml", "inherits: self.yaml\n")
    with pytest.raises(AdmcError, match="cycle"):
        load_target(tmp_path / "self.yaml")


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(AdmcError, match="absent.yaml: target file not found"):
        load_target(missing)
    with pytest.raises(AdmcError) as caught:
        load_target("aoc-99")
    assert "'aoc-99'" in str(caught.value)
    for name in list_presets():
        assert name in str(caught.value)
    child = write(tmp_path, "child.yaml", "inherits: gone.yaml\n")
    with pytest.raises(AdmcError, match="gone.yaml: target file not found"):
        load_target(child)


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(AdmcError, match="not valid YAML"):
        load_target(write(tmp_path, "broken.yaml", "kind: [aoc\n"))
    with pytest.raises(AdmcError, match="expected a mapping"):
        load_target(write(tmp_path, "list.yaml", "- aoc\n"))


def test_kind_conflict_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "conflict.yaml", "inherits: aoc-48\nkind: ideal\n")
    with pytest.raises(AdmcError, match="conflicts with kind 'aoc'"):
        load_target(path)


def test_a_description_is_one_frozen_model() -> None:
    """The loaded target is the description's pydantic model itself: frozen, and equal to its own round trip."""
    from pydantic import ValidationError

    target = load_target("aoc-48")
    assert isinstance(target, Section)
    with pytest.raises(ValidationError):
        target.name = "changed"
    assert target.to_dict() == target.model_dump(by_alias=True)
    assert target.chain.gain_per_setting > 0 and target.activations[0] == "tanh"
    assert load_target("rram").activations == ("relu", "tanh")
    for name in ("ideal", "aoc-48", "rram-128"):  # descriptions travel to worker processes
        assert pickle.loads(pickle.dumps(load_target(name))) == load_target(name)


def test_the_description_and_the_twin_name_the_same_effects() -> None:
    """The twin's NonIdealities reads the description's section: both name the same entries and parameters."""
    from dataclasses import fields

    from admc.targets.aoc.description_nonidealities import NonIdealitiesSection
    from admc.targets.aoc.nonidealities import NonIdealities

    twin = {item.name: {entry.name for entry in fields(item.default_factory)} for item in fields(NonIdealities)
            if item.name != "seed"}
    description = {name: set(info.annotation.model_fields) for name, info in NonIdealitiesSection.model_fields.items()
                   if name != "seed"}
    assert twin == description == NONIDEALITY_ENTRIES


class Inner(Section):
    b: float = leaf("b")


class Outer(Section):
    a: int = leaf("a", 3, minimum=0)
    s: Inner = section()


def test_schema_machinery_directly() -> None:
    assert validate({"s": {"b": 2}}, Outer, "x.yaml").model_dump() == {"a": 3, "s": {"b": 2.0}}
    with pytest.raises(AdmcError, match=r"x\.yaml: field 's\.b': required"):
        validate({}, Outer, "x.yaml")
    assert validate({}, Outer, "x.yaml", complete=False) is None  # a partial file: only what it sets is checked
    with pytest.raises(AdmcError, match=r"x\.yaml: field 'a': expected an integer >= 0, got -1"):
        validate({"a": -1}, Outer, "x.yaml", complete=False)
    with pytest.raises(AdmcError, match="got True"):
        validate({"a": True, "s": {"b": 1}}, Outer, "x.yaml")
    merged = deep_merge({"s": {"b": 1, "c": [1, 2]}, "a": 1}, {"s": {"c": [3]}})
    assert merged == {"s": {"b": 1, "c": [3]}, "a": 1}
