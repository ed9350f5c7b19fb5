"""``admc build --verify-passes`` on conditional models: every pass is checked against an independent
computation (the source graph evaluated with the conditions, twice for guidance), and a wrong pass is caught."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conditional_models import CLASSES, INPUT_NAMES, example_condition, make
from models import example_inputs, export_onnx

from admc.compiler.driver import build, load_source, pack_for_target
from admc.compiler.pass_checks import Probe, guidance_check, pack_check
from admc.core.errors import AdmcError
from admc.ir.program import BlockProgram
from admc.passes.canonicalize import canonicalize
from admc.passes.condition_interface import guided_network
from admc.passes.manager import PassManager

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

KINDS = ("embedding", "dense", "concat")
NULL = {"embedding": {"label": np.asarray(CLASSES)}, "dense": {"cond": np.zeros(3)},
        "concat": {"class_vector": np.zeros(CLASSES)}}
CHECKED = ("canonicalise", "condition interface and guidance", "pack")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("conditional-checks")
    return {kind: export_onnx(make(kind, seed), directory / f"{kind}.onnx",
                              (*example_inputs(), example_condition(kind)), INPUT_NAMES[kind])
            for seed, kind in enumerate(KINDS)}


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_every_pass_of_a_conditional_build_is_checked(model_files, tmp_path: Path, kind: str, guided: bool) -> None:
    passes = PassManager(verify=True)
    build(model_files[kind], tmp_path / "bundle", target="ideal", solver="implicit-euler", steps=2, passes=passes,
          guidance=3.0 if guided else None, null_conditions=NULL[kind] if guided else None)
    records = {record.name: record for record in passes.records}
    for name in CHECKED:
        assert records[name].error is not None, name
        assert records[name].error <= records[name].bound, name


def test_aoc_lowering_of_a_guided_program_is_checked(model_files, tmp_path: Path) -> None:
    passes = PassManager(verify=True)
    build(model_files["embedding"], tmp_path / "bundle", target="aoc-48", solver="implicit-euler", steps=2,
          passes=passes, guidance=1.0, null_conditions=NULL["embedding"])
    lowering = next(record for record in passes.records if record.name == "emission")  # the lowering's last pass
    assert lowering.error is not None and 0.0 < lowering.error <= lowering.bound


def _probe_and_network(path: Path, null: dict) -> tuple[Probe, object]:
    source = load_source(path)
    name = source.signature.conditions[0].name
    distribution = {name: {"kind": "uniform", "classes": CLASSES}} if name == "label" else {}
    probe = Probe(source.graph, source.signature, distribution, null)
    return probe, canonicalize(source.graph, ("tanh",), "ideal")


@pytest.mark.parametrize("kind", KINDS)
def test_the_guidance_check_catches_a_wrong_weight(model_files, kind: str) -> None:
    """The check must be able to fail: a network guided with W = 3 is far from the W = 2 combination."""
    probe, network = _probe_and_network(model_files[kind], NULL[kind])
    guided = guided_network(network, 3.0, NULL[kind])
    right, bound = guidance_check(probe, 3.0)(guided)
    wrong, _ = guidance_check(probe, 2.0)(guided)
    assert right <= bound < wrong
    assert wrong > 1e-3


def test_the_pack_check_catches_a_wrong_block(model_files) -> None:
    probe, network = _probe_and_network(model_files["embedding"], NULL["embedding"])
    program: BlockProgram = pack_for_target(network, False)
    right, bound = pack_check(probe, network, None)(program)
    assert right <= bound
    # The read-out block acts in the open explicit step the check runs (feedback blocks act in closed loops only).
    # (a changed copy: the blocks share their arrays with the network the check compares against)
    blocks = [replace(block, matrix=1.1 * block.matrix) if block.scale_class == "step" else block
              for block in program.blocks]
    wrong, _ = pack_check(probe, network, None)(replace(program, blocks=blocks))
    assert wrong > 1e-3


def test_a_failed_check_stops_the_build_before_writing(model_files, tmp_path: Path, monkeypatch) -> None:
    import admc.compiler.pass_checks as checks

    monkeypatch.setattr(checks, "EXACT_BOUND", -1.0)  # no error can meet it: the manager must refuse
    with pytest.raises(AdmcError, match="canonicalise"):
        build(model_files["dense"], tmp_path / "bundle", target="ideal", steps=2, passes=PassManager(verify=True))
    assert not (tmp_path / "bundle").exists()
