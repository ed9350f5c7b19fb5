"""The pass manager: timings, IR dumps, and verify mode catching a pass that changes the semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from models import AdmForm, StandardMlp, export_onnx, seeded

import admc.compiler.driver
from admc.cli import main
from admc.compiler.driver import build
from admc.core.errors import AdmcError
from admc.passes.manager import PassManager


@pytest.mark.parametrize("target", ["ideal", "aoc-48"])
def test_verify_mode_checks_every_pass_and_dumps_the_ir(tmp_path, target):
    model = export_onnx(seeded(StandardMlp(), 3), tmp_path / "model.onnx")
    passes = PassManager(verify=True, dump_directory=tmp_path / "ir")
    build(model, tmp_path / "bundle", target=target, solver="crank-nicolson", steps=4, passes=passes)
    checked = {record.name: record for record in passes.records if record.error is not None}
    assert {"canonicalise", "pack"} <= set(checked)
    assert all(record.error <= record.bound for record in checked.values())
    assert checked["canonicalise"].error < 1e-12 and checked["pack"].error < 1e-12
    if target == "aoc-48":
        # Quantisation adds an error, and it is within the 8-bit bound, not zero: per pixel in its own pass,
        # and over the whole lowering after the last one.
        assert 0 < checked["quantisation"].error <= checked["quantisation"].bound < 1e-2
        assert 0 < checked["emission"].error <= checked["emission"].bound == 1e-2
        assert checked["state scaling"].error < 1e-12 and checked["routing"].error == 0
    dumps = sorted(path.name for path in (tmp_path / "ir").iterdir())
    assert dumps[0] == "00_canonicalise.json" and all(name.isascii() for name in dumps)
    assert len(dumps) == len(passes.records)  # one file per pass, the backend's own passes included
    network = json.loads((tmp_path / "ir" / dumps[0]).read_text())
    assert network["kind"] == "canonical network" and len(network["nodes"]) == 2


def test_a_pass_that_breaks_the_semantics_is_caught_before_anything_is_written(tmp_path, monkeypatch):
    model = export_onnx(seeded(AdmForm(), 4), tmp_path / "model.onnx")
    original = admc.compiler.driver.pack_for_target

    def broken_pack(network, linear_channels):
        program = original(network, linear_channels)
        program.blocks[0].matrix = program.blocks[0].matrix * 1.001  # a 0.1 % weight error
        return program

    monkeypatch.setattr(admc.compiler.driver, "pack_for_target", broken_pack)
    with pytest.raises(AdmcError, match="pass 'pack' changed the program's semantics"):
        build(model, tmp_path / "bundle", target="ideal", passes=PassManager(verify=True))
    assert not (tmp_path / "bundle").exists()
    # Without verify mode the same broken pass goes unnoticed by the build (verify would catch it later).
    build(model, tmp_path / "bundle", target="ideal", passes=PassManager())
    assert (tmp_path / "bundle").exists()


def test_cli_prints_pass_timings(tmp_path, capsys):
    model = export_onnx(seeded(AdmForm(), 4), tmp_path / "model.onnx")
    assert main(["build", str(model), "-o", str(tmp_path / "bundle"), "--target", "ideal", "--timings"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().err.splitlines()[1:]}
    assert {"canonicalise", "pack"} <= set(rows)
    assert np.isfinite(float(rows["canonicalise"][1])) and float(rows["canonicalise"][1]) >= 0


def test_each_pass_records_the_memory_it_held_at_its_peak():
    """A pass that holds 400 MB shows it in its own record, and the next pass, after it is freed, does not."""
    from admc.core.process_memory import peak_bytes

    if peak_bytes() is None:
        pytest.skip("this kernel does not report the process's peak memory")
    passes = PassManager()

    def hold() -> float:
        block = np.ones(50_000_000)  # 400 MB, touched so it is resident
        return float(block[::4096].sum())

    passes.run("nothing", lambda: None)
    passes.run("holds 400 MB", hold)
    passes.run("after", lambda: None)
    before, holding, after = (record.peak_bytes for record in passes.records)
    assert holding >= before + 350 * 2 ** 20
    assert after < holding - 350 * 2 ** 20
    assert "peak MiB" in passes.table().splitlines()[0]
