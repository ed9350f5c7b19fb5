"""The bundle's manifest and payloads, gathered in one place after every pass of the build ran.

Requires: a ``CompiledProgram`` the passes are done with. Guarantees: ``bundle_contents`` is the only place
sections are attached: the spine's program sections, the source model, the report (the spine's, the
backend's, the conditioning's), the backend's own sections (``extra_sections``, which its lowering owns),
the ``conditions`` section (none for an unconditional program: ``compiler.conditions``) and the loop budget
(``convergence``, for discrete-time solvers). No pass depends on another having attached its section first.
"""

from __future__ import annotations

from typing import Any

from admc import __version__
from admc.bundle.program_io import program_sections
from admc.compiler.conditions import conditions_output


def bundle_contents(compiled: Any) -> tuple[dict, dict[str, bytes]]:
    """The manifest (without the fields ``write_bundle`` adds) and the payloads of a compiled program."""
    sections, payloads = program_sections(compiled.program, compiled.schedule, compiled.alpha,
                                          block_arrays=compiled.block_arrays)
    source_path = f"source/model.{compiled.source.format}"
    payloads[source_path] = compiled.source.content
    payloads.update(compiled.extra_payloads)
    conditions = conditions_output(compiled)
    payloads.update(conditions.payloads)
    signature = compiled.source.signature
    convergence = {} if compiled.convergence is None else {"convergence": compiled.convergence}
    manifest = {
        "admc_version": __version__,
        "target": compiled.target.to_dict(),
        "source": {"payload": source_path, "format": compiled.source.format, "name": compiled.source.name,
                   "sha256": compiled.source.sha256, "state_input": signature.state_input,
                   "time_input": signature.time_input, "state_dimension": signature.state_dimension},
        "report": {**compiled.report, **conditions.report},
        **sections,
        **compiled.extra_sections,
        **conditions.sections,
        **convergence,
    }
    return manifest, payloads
