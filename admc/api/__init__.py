"""The public Python API, re-exported by ``admc`` (``admc.build``, ``admc.reference`` in ``model``;
``admc.load``, ``admc.Bundle`` in ``bundle_handle``; ``admc.VerifyReport`` is the verification chain's
typed result): a thin layer over the compiler driver, the bundle store, the runtime and the verification
chain, so a notebook can build, load, run, verify and inspect a program as objects. Each entry checks its
arguments, calls one internal function and returns numpy arrays, JSON-ready dicts or those objects;
nothing here computes anything of its own."""
