"""Write fine-tuned weights back into the source model's own file format, with the same inputs and graph.

Requires: the source model file (``.onnx``: initializers; ``.pt2``: a ``torch.export`` archive, its parameters
by placeholder name, as ``admc.frontends.torch_importer`` names the graph's constants) and weights by
graph constant name. Guarantees: :func:`writable_names` are the constants a file stores (what fine-tuning may
change); :func:`write_tuned` writes a copy of the source in which only those weights differ, each in its
original dtype, so ``admc build`` takes it as it took the source; the output is written atomically (nothing
half-written); the same weights give the same bytes; :func:`load_tuned` loads those bytes as ``admc build`` would.
An output whose suffix is not the source's is refused.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from admc.core.atomic import write_file_atomically
from admc.core.errors import AdmcError


def check_output(source: str | Path, output: str | Path) -> None:
    """Refuse an output in another format than the source's."""
    if Path(output).suffix != Path(source).suffix:
        raise AdmcError(f"-o {output}: the tuned model is written in the source's format; give a "
                        f"{Path(source).suffix} file name")


def _exported(source: Path):
    import torch

    from admc.frontends.pt2_archive import check_archive_is_safe

    check_archive_is_safe(source)
    return torch.export.load(source)


def _placeholders(program) -> dict[str, str]:
    """Placeholder name → state-dict key of the program's parameters (buffers, such as fixed frequencies, stay)."""
    return dict(program.graph_signature.inputs_to_parameters)


def writable_names(source: str | Path) -> set[str]:
    """The graph constant names the source file stores as weights (initializers; a .pt2's parameters)."""
    source = Path(source)
    if source.suffix == ".onnx":
        import onnx

        return {initializer.name for initializer in onnx.load(source, load_external_data=False).graph.initializer}
    return set(_placeholders(_exported(source)))


def tuned_bytes(source: str | Path, weights: Mapping[str, np.ndarray]) -> bytes:
    """The source file's bytes with ``weights`` in place of its own (see the module docstring)."""
    source = Path(source)
    if source.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        model = onnx.load(source)
        for initializer in model.graph.initializer:
            if initializer.name in weights:
                original = numpy_helper.to_array(initializer)
                value = np.asarray(weights[initializer.name]).astype(original.dtype).reshape(original.shape)
                initializer.CopyFrom(numpy_helper.from_array(value, initializer.name))
        return model.SerializeToString()
    import torch

    program = _exported(source)
    state = program.state_dict
    for placeholder, key in _placeholders(program).items():
        if placeholder in weights:
            with torch.no_grad():
                state[key].copy_(torch.as_tensor(np.asarray(weights[placeholder])).reshape(state[key].shape))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def write_tuned(source: str | Path, weights: Mapping[str, np.ndarray], output: str | Path) -> Path:
    """Write the tuned model at ``output`` (atomically); returns its path."""
    check_output(source, output)
    return write_file_atomically(output, tuned_bytes(source, weights))


def load_tuned(source: str | Path, weights: Mapping[str, np.ndarray], directory: str | Path,
               condition_inputs: tuple[str, ...] = ()):
    """The tuned model as ``admc build`` would read it (``condition_inputs`` as ``--condition`` names them):
    written into ``directory`` and loaded (a ``SourceModel``)."""
    from admc.compiler.driver import load_source

    path = Path(directory) / f"tuned{Path(source).suffix}"
    path.write_bytes(tuned_bytes(source, weights))
    return load_source(path, condition_inputs=tuple(condition_inputs))
