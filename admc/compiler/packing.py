"""The pack pass's layout choice: how a canonical network becomes a block program for a target.

Requires: a canonical network and whether the target allows linear (activation-free) channels.
Guarantees: the direct layout when the state can sit in the loop as it is read; the fold-input rewrite
(``passes.fold_input``) otherwise.
"""

from __future__ import annotations

from admc.ir.adm import IDENTITY, AdmNetwork
from admc.ir.program import BlockProgram
from admc.passes.fold_input import pack_folded
from admc.passes.pack import pack_direct


def pack_for_target(network: AdmNetwork, linear_channels: bool) -> BlockProgram:
    """Direct layout when the state can sit in the loop as it is read; the fold-input rewrite otherwise."""
    if IDENTITY in network.state_activations() and not linear_channels:
        return pack_folded(network)
    return pack_direct(network)
