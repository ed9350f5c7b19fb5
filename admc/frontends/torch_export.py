"""The torch.export frontend: an ``ExportedProgram`` (or a ``.pt2`` archive, or a live module) → graph IR.

Requires: a program from ``torch.export.export`` in its default (pre-decomposition) aten dialect, or any
later dialect (core aten ops such as ``addmm``/``mm`` are mapped too); ``.pt2`` files written by
``torch.export.save`` in the current archive format.

Guarantees:
- Every aten op becomes IR ops with ONNX names and ONNX semantics (see ``admc.ir.evaluate``), so
  ``evaluate_graph`` on the result computes what the module computes, in float64. ``Op.name`` is the fx node
  name (auxiliary ops, e.g. the ``Mul`` for ``add``'s ``alpha``, are named ``<node>/<role>``) and
  ``Op.source_op`` the aten overload name (``aten.linear.default``).
- Known-unsupported ops keep a recognisable ONNX name (``Conv``, ``Softmax``, ``Gelu``, ``Attention`` ...)
  and any other op keeps its aten overload name as ``op_type``, so later stages refuse both uniformly.
- Parameters, buffers and lifted tensor constants become ``Graph.constants`` (float64 for floating dtypes,
  int64 for integers), named by their placeholder names (``p_l1_weight``). Ops without runtime tensor inputs
  (``arange``, ``full``, ``ones`` ...) are evaluated at import time and become constants too.
- ``Graph.inputs`` are the user inputs only, named by their placeholder names, which torch.export takes from
  the ``forward()`` parameter names; a dynamic dimension appears as the string of its symbol (``"s13"``).
  ``Graph.outputs`` are the user outputs. ``state_input``/``time_input`` are left empty.
- ``load_pt2`` inspects the archive before torch opens it and refuses members torch would unpickle or load
  as native code, so only tensor payloads and JSON are read from a file.
Bad input raises ``AdmcError`` naming the source, the node, the op and the reason.

The translation is ``torch_importer`` (its op handlers ``torch_op_handlers`` and ``torch_shape_handlers``); the
archive check is ``pt2_archive``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.export import Dim, ExportedProgram

from admc.core import limits
from admc.core.errors import AdmcError
from admc.core.safe_files import check_regular
from admc.frontends.messages import quote
from admc.frontends.pt2_archive import check_archive_is_safe
from admc.frontends.torch_importer import TorchImporter
from admc.ir.graph import Graph


def import_exported_program(program: ExportedProgram, source: str) -> Graph:
    """Translate an exported program into the graph IR; ``source`` names it in error messages."""
    return TorchImporter(program, source).run()


def export_module(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  source: str = "<module>") -> ExportedProgram:
    """``torch.export`` of ``module`` in eval mode on ``example_inputs``.

    The leading (batch) dimension of every input with at least two rows is exported as ``Dim.AUTO``, so it
    stays symbolic unless the model ties it to a constant.
    """
    dynamic_shapes = tuple(
        {0: Dim.AUTO} if tensor.dim() >= 1 and tensor.shape[0] >= 2 else None for tensor in example_inputs
    )
    try:
        return torch.export.export(module.eval(), example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as error:  # torch raises many types here; the user needs one line, not torch's stack
        raise AdmcError(f"{source}: torch.export failed: {quote(error)}") from None


def import_module(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], source: str = "<module>") -> Graph:
    """Export ``module`` (see ``export_module``) and import it."""
    return import_exported_program(export_module(module, example_inputs, source), source)


def load_pt2(path: str | Path) -> Graph:
    """Load a ``torch.export.save`` archive and import it; the path is the graph's ``source``."""
    path = Path(path)
    check_regular(path, "model file")
    if path.stat().st_size > limits.MODEL_BYTES:
        raise AdmcError(f"{path}: model file is larger than {limits.MODEL_BYTES} bytes")
    if path.suffix != ".pt2":
        raise AdmcError(f"{path}: not a .pt2 file (expected an archive written by torch.export.save)")
    check_archive_is_safe(path)
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # corrupt archives surface as many torch exception types
        raise AdmcError(f"{path}: cannot read torch.export archive: {quote(error)}") from None
    return import_exported_program(program, str(path))
