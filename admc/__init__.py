"""admc: compile trained flow-matching MLPs into fixed-point programs for analog hardware.

The public Python API, in the spirit of hls4ml's convert → compile → predict::

    import admc
    bundle = admc.build("examples/two_moons.onnx", target="aoc-48", output="out/two_moons")
    samples = bundle.simulate(noise)                   # the target's digital twin
    exact = bundle.simulate(noise, ideal=True)         # the program's exact execution
    report = bundle.verify(samples=256)                # source ≡ program ≈ twin; report.passed
    expected = admc.reference("examples/two_moons.onnx", noise, solver="implicit-euler", steps=16)

:func:`build`, :func:`load`, :func:`reference`, :func:`finetune`, :class:`Bundle`, :class:`VerifyReport` and
:class:`AdmcError` (every bad input: the message names the file, field or condition) are the supported names;
everything else in ``admc.*`` is internal. They are loaded on first use (``admc.api``), so ``import admc`` — which every
``admc`` command and every internal ``from admc import __version__`` pays — stays free of torch, onnx and
the solvers until a public name is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Where each public name lives: (module, attribute). A fixed table, read on attribute access; nothing is
# registered at import.
_PUBLIC = {
    "build": ("admc.api.model", "build"),
    "reference": ("admc.api.model", "reference"),
    "finetune": ("admc.api.finetune", "finetune"),
    "load": ("admc.api.bundle_handle", "load"),
    "Bundle": ("admc.api.bundle_handle", "Bundle"),
    "VerifyReport": ("admc.verify.result", "VerifyReport"),
    "AdmcError": ("admc.core.errors", "AdmcError"),
}

__all__ = ["AdmcError", "Bundle", "VerifyReport", "__version__", "build", "finetune", "load", "reference"]

if TYPE_CHECKING:  # what static tools and IDEs see; at run time the names load lazily
    from admc.api.bundle_handle import Bundle, load
    from admc.api.finetune import finetune
    from admc.api.model import build, reference
    from admc.core.errors import AdmcError
    from admc.verify.result import VerifyReport


def __getattr__(name: str) -> object:
    """Load a public name's module on first access (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'admc' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
