"""Opening a model file by its format: the one place that maps a file to its frontend.

Requires: a path to an ONNX file (``.onnx``) or an archive written by ``torch.export.save`` (``.pt2``).
Guarantees: ``model_format`` names the format from the file's suffix and refuses any other suffix with an
``AdmcError`` naming the file; ``import_model`` imports a file of a named format into the graph IR through that
format's frontend, with all of its checks (``onnx_import``, ``torch_export``); ``model_content`` is the model as
a bundle stores it (an ONNX model as one protobuf with any external weights folded in, a ``.pt2`` archive as it
is); ``open_model`` gives the graph, the format and the content of one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from admc.core.errors import AdmcError
from admc.frontends.onnx_import import import_onnx, open_onnx, self_contained_bytes
from admc.ir.graph import Graph

ONNX = "onnx"
PT2 = "pt2"
FORMAT_OF_SUFFIX = {".onnx": ONNX, ".pt2": PT2}


@dataclass(frozen=True)
class OpenedModel:
    """A model file imported into the graph IR, with its format and the bytes a bundle keeps of it."""

    graph: Graph
    format: str
    content: bytes


def model_format(path: str | Path) -> str:
    """``"onnx"`` or ``"pt2"``, from the file's suffix."""
    path = Path(path)
    file_format = FORMAT_OF_SUFFIX.get(path.suffix)
    if file_format is None:
        raise AdmcError(f"{path}: unknown model format '{path.suffix}'; give an .onnx or a .pt2 file")
    return file_format


def import_model(path: str | Path, file_format: str) -> Graph:
    """The graph IR of a model file of the named format (a bundled source names its format in the manifest)."""
    if file_format == ONNX:
        return import_onnx(path)
    if file_format == PT2:
        from admc.frontends.torch_export import load_pt2  # torch loads for a .pt2 model only

        return load_pt2(path)
    raise AdmcError(f"{path}: unknown model format {file_format!r}; expected '{ONNX}' or '{PT2}'")


def model_content(path: str | Path, file_format: str) -> bytes:
    """The model as a bundle stores it: self-contained ONNX, or the ``.pt2`` archive's bytes."""
    return self_contained_bytes(path) if file_format == ONNX else Path(path).read_bytes()


def open_model(path: str | Path) -> OpenedModel:
    """Import a model file by its suffix; its content is read after the frontend has checked it."""
    file_format = model_format(path)
    if file_format == ONNX:  # read and checked once for both
        graph, content = open_onnx(path)
        return OpenedModel(graph, file_format, content)
    graph = import_model(path, file_format)
    return OpenedModel(graph, file_format, model_content(path, file_format))
