"""ONNX files whose weights live in a separate file (torch's dynamo exporter writes ``model.onnx.data``)."""

from __future__ import annotations

import onnx
from models import AdmForm, export_onnx, seeded

from admc.bundle.store import Bundle
from admc.cli import main


def test_external_weights_are_folded_into_the_bundles_copy_of_the_source(tmp_path, capsys):
    plain = export_onnx(seeded(AdmForm(), 8), tmp_path / "plain.onnx")
    model = onnx.load(str(plain))
    split = tmp_path / "split.onnx"
    onnx.save_model(model, str(split), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="split.onnx.data", size_threshold=0)
    assert (tmp_path / "split.onnx.data").is_file()
    bundle_path = tmp_path / "bundle"
    assert main(["build", str(split), "-o", str(bundle_path), "--target", "ideal", "--steps", "4"]) == 0
    # The weights file is gone: verification must run on the bundle alone.
    (tmp_path / "split.onnx.data").unlink()
    assert main(["verify", str(bundle_path), "--samples", "16"]) == 0
    copy = onnx.load_from_string(Bundle(bundle_path).read_bytes("source/model.onnx"))
    assert all(not onnx.external_data_helper.uses_external_data(tensor) for tensor in copy.graph.initializer)
    assert "verification passed" in capsys.readouterr().out
