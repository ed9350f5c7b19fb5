"""Run-time classifier-free guidance on the AOC twin: the guided tiles' gains β rescaled for a new weight W.

Requires: an ``AocTwin`` that has not run yet (its loop operators are built on first use, from ``beta``) and
the run's conditions (``admc.runtime.conditioning.RunConditions``) of a bundle whose W lives in the gains.
Guarantees: every tile of a block that carries (1 + W) or −W has its output ports' β multiplied by the
ratio for the requested W; a β above the target's ``beta_max`` is refused naming the block and module; a
run keeping the built W leaves the twin untouched.
"""

from __future__ import annotations

from admc.core.errors import AdmcError
from admc.ir.program import block_name
from admc.runtime.guidance import changed_guidance


def rescale_gains(twin, bundle, run) -> None:
    """Scale ``twin.beta`` on the guided tiles for the run's guidance weight (see the module docstring)."""
    factors = changed_guidance(run)
    if factors is None:
        return
    role_of = {block_name(index): role for role, indices in run.interface.guided_blocks.items()
               for index in indices}
    gain = bundle.manifest["target"].get("gain", {})
    for tile in bundle.manifest["aoc"]["tiles"]:
        role = role_of.get(tile["block"])
        if role:
            ports = slice(tile["output_port_start"], tile["output_port_start"] + tile["row_stop"] - tile["row_start"])
            twin.beta[tile["module"], ports] *= factors[role]
            peak = float(twin.beta[tile["module"], ports].max()) if tile["row_stop"] > tile["row_start"] else 0.0
            if "beta_max" in gain and peak > float(gain["beta_max"]) * (1 + 1e-12):
                raise AdmcError(f"{bundle.path}: --guidance {run.guidance} needs gain β = {peak:.4g} on "
                                f"{tile['block']} (module {tile['module']}), above the target's beta_max "
                                f"{float(gain['beta_max']):.4g}; rebuild with --guidance {run.guidance}")
