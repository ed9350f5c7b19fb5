"""A target's own manifest section and its sweep twin come from the target's backend (issue 21, item 2).

- the RRAM section (``manifest["rram"]``) is validated by the model the RRAM backend declares, like the AOC's:
  a corrupted field is refused when the bundle is opened, in one line naming the file and the dotted field, and its
  arrays' dtypes and shapes are checked against it;
- a section belongs to its target: a bundle without its own is refused, and so is another target's;
- the sweep runs chips on the twin a backend declares (``make_twin``) and refuses a target without one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import cli, copy_bundle, read_manifest, refused, replace_payload, write_manifest
from models import gemm_model

from admc.bundle.store import npy_bytes
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.sweep.points import has_twin
from admc.sweep.spec import load_spec
from admc.targets.loader import load_target

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
MODEL = Path(__file__).resolve().parents[1] / "examples" / "two_moons.onnx"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bundles")
    model = gemm_model(directory / "model.onnx", "transB", hidden=8, seed=2)
    return {"ideal": build(model, directory / "ideal", target="ideal", solver="heun", steps=3),
            "aoc": build(model, directory / "aoc", target="aoc-48", solver="implicit-euler", steps=3),
            "rram": build(model, directory / "rram", target="rram-128", solver="continuous", steps=3)}


@pytest.fixture
def ideal(bundles, tmp_path) -> Path:
    return copy_bundle(bundles["ideal"], tmp_path / "ideal")


@pytest.fixture
def rram_bundle(bundles) -> Path:
    return bundles["rram"]


EDITS = {
    "rram_dac_bits_text": ("rram", lambda section: section["dac"].update(bits="twelve"), "rram.dac.bits"),
    "rram_no_time_scale": ("rram", lambda section: section["timing"].pop("seconds_per_unit_model_time"),
                           "rram.timing.seconds_per_unit_model_time"),
    "rram_one_sided_pair": ("rram", lambda section: section["conductance"].pop("negative"),
                            "rram.conductance.negative"),
    "rram_unknown_dac_field": ("rram", lambda section: section["dac"].update(gain=2), "rram.dac.gain"),
    "rram_tile_of_another_block": ("rram", lambda section: section["tiles"][0].update(block_index=7),
                                   "rram.tiles.0.block_index"),
    "rram_tile_outside_its_crossbar": ("rram", lambda section: section["tiles"][0].update(input_port_start=127),
                                       "rram.tiles.0"),
    "rram_unlisted_conductance": ("rram", lambda section: section["conductance"].update(positive="rram/x.npy"),
                                  "rram.conductance.positive"),
    "rram_periphery_of_no_group": ("rram", lambda section: section["periphery"][0].update(group="nowhere"),
                                   "rram.periphery.0.group"),
    "aoc_gains_flag_text": ("aoc", lambda section: section.update(gains_per_channel="yes"), "aoc.gains_per_channel"),
    "aoc_tile_of_no_block": ("aoc", lambda section: section["tiles"][0].update(block="block_0099"),
                             "aoc.tiles.0.block"),
    "aoc_tile_off_the_machine": ("aoc", lambda section: section["tiles"][0].update(module=4096), "aoc.tiles.0"),
    "aoc_unlisted_gains": ("aoc", lambda section: section.update(beta="aoc/x.npy"), "aoc.beta"),
    "aoc_images_without_grey_levels": ("aoc", lambda section: section["image_sets"][0].update(
        grey=None, transmission={"positive": "aoc/x.npy", "negative": "aoc/y.npy"}), "aoc.image_sets.0"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_corrupted_target_section_refused_naming_the_field(capsys, bundles, tmp_path, edit):
    """Each target's section is validated by the model its backend declares."""
    kind, change, field = EDITS[edit]
    bundle = copy_bundle(bundles[kind], tmp_path / "bundle")
    manifest = read_manifest(bundle)
    change(manifest[kind])
    write_manifest(bundle, manifest)
    assert f"field '{field}'" in refused(capsys, "inspect", bundle)


def test_target_sections_belong_to_their_target(capsys, ideal, rram_bundle, tmp_path):
    bundle = copy_bundle(rram_bundle, tmp_path / "rram")
    manifest = read_manifest(bundle)
    section = manifest.pop("rram")
    write_manifest(bundle, manifest)
    assert "field 'rram'" in refused(capsys, "inspect", bundle, fragments=("needs its 'rram' section",))
    manifest = read_manifest(ideal)
    manifest["rram"] = section
    write_manifest(ideal, manifest)
    assert "field 'rram'" in refused(capsys, "inspect", ideal, fragments=("target is of kind 'ideal'",))


def test_rram_payload_shapes_checked_against_the_section(capsys, rram_bundle, tmp_path):
    bundle = copy_bundle(rram_bundle, tmp_path / "bundle")
    name = read_manifest(bundle)["rram"]["conductance"]["positive"]
    replace_payload(bundle, name, npy_bytes(np.zeros((1, 127, 128))))
    refused(capsys, "inspect", bundle, fragments=("shape", str(bundle / name)))
    status, _, err = cli(capsys, "inspect", rram_bundle)
    assert status == 0, err


def test_the_sweep_finds_twins_through_the_backend(tmp_path: Path) -> None:
    assert has_twin(load_target("aoc-48"))
    assert not has_twin(load_target("rram-128")) and not has_twin(load_target("ideal"))
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"name: test\nmodel: {MODEL}\nchips: 2\nsamples: 8\nbuild:\n  target: rram-128\n"
                    "  solver: continuous\n")
    with pytest.raises(AdmcError, match=r"field 'build.target': target kind 'rram' has no digital twin to sweep"):
        load_spec(spec)
