"""The one model opener: a file's format from its suffix, its graph through that format's frontend, its bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from admc.core.errors import AdmcError
from admc.frontends.model_file import import_model, model_content, model_format, open_model
from admc.frontends.onnx_import import import_onnx, self_contained_bytes
from admc.frontends.torch_export import load_pt2
from admc.runtime.source_model import make_velocity

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name,file_format,frontend", [("two_moons.onnx", "onnx", import_onnx),
                                                        ("two_moons.pt2", "pt2", load_pt2)])
def test_open_model_imports_through_the_format_s_frontend(name: str, file_format: str, frontend) -> None:
    path = EXAMPLES / name
    opened = open_model(path)
    assert opened.format == model_format(path) == file_format
    expected = frontend(path)
    assert [op.op_type for op in opened.graph.ops] == [op.op_type for op in expected.ops]
    assert [graph_input.name for graph_input in opened.graph.inputs] == [item.name for item in expected.inputs]
    assert opened.content == model_content(path, file_format)
    assert opened.content == (self_contained_bytes(path) if file_format == "onnx" else path.read_bytes())


def test_a_bundled_source_is_imported_by_its_declared_format(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(EXAMPLES / "two_moons.onnx", copy)
    assert [op.name for op in import_model(copy, "onnx").ops] == [op.name for op in import_onnx(copy).ops]
    with pytest.raises(AdmcError, match="unknown model format 'tflite'"):
        import_model(copy, "tflite")


@pytest.mark.parametrize("opener", [open_model, model_format, make_velocity])
def test_an_unknown_suffix_is_refused_naming_the_file(tmp_path: Path, opener) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    with pytest.raises(AdmcError, match=r"model\.bin: unknown model format '\.bin'; give an \.onnx or a \.pt2"):
        opener(path)
