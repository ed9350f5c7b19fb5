"""Pack pass: canonical ADM network → block program with the diffusion state in the loop (direct layout).

Requires: an ``AdmNetwork``; the target either has linear channels or the state is read through tanh only
(otherwise use ``fold_input.pack_folded``). Guarantees: block 0 (``state``) holds the diffusion state and is
``held`` in open phases; each hidden node is a group; the velocity's blocks write the state rows with the
``step`` scale class, so one matrix serves every Δt (docs/design.md §1, Eq. 5-6). Residual and skip terms
become extra blocks (the matrix stops being purely cyclic; the fixed point is still the implicit step).
If the state is read both through tanh and linearly, it is duplicated (``state`` and ``state_linear``) with
identical rows, since one channel has one activation. Condition atoms are not blocks: they are injected
per sample (``condition_interface.condition_parts``). Blocks are stored sparse: one dense array each.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.adm import IDENTITY, STATE, TANH, AdmNetwork, AdmNode, Atom
from admc.ir.condition import is_condition_source
from admc.ir.program import (
    FEEDBACK,
    FIXED,
    INJECT,
    STEP,
    BiasPart,
    BlockProgram,
    InjectionPart,
    MatrixBlock,
    StateGroup,
)


def state_group_names(network: AdmNetwork) -> dict[str, str]:
    """Activation → group name for the state channels as the network reads them."""
    activations = network.state_activations()
    names = {}
    if TANH in activations:
        names[TANH] = "state"
    if IDENTITY in activations:
        names[IDENTITY] = "state_linear" if TANH in activations else "state"
    return names


def column_group(atom: Atom, state_groups: dict[str, str]) -> str:
    return state_groups[atom.activation] if atom.source == STATE else atom.source


def hidden_rows(node: AdmNode, layer: int, state_groups: dict[str, str],
                skip: Atom | None = None) -> tuple[list[MatrixBlock], BiasPart]:
    """The blocks and bias of a hidden node, all ``fixed`` (``skip`` leaves out one atom)."""
    blocks = [
        MatrixBlock(node.name, column_group(atom, state_groups), matrix, FIXED, layer)
        for atom, matrix in sorted(node.terms.items()) if atom != skip and not is_condition_source(atom.source)
    ]
    return blocks, BiasPart(node.name, node.bias, list(node.time_terms), FIXED)


def velocity_rows(output: AdmNode, row_group: str, layer: int,
                  state_groups: dict[str, str]) -> tuple[list[MatrixBlock], BiasPart]:
    """Rows computing x + Δt·f: the velocity's blocks and bias, scaled by the step (Eq. 6, block 0)."""
    blocks = [
        MatrixBlock(row_group, column_group(atom, state_groups), matrix, STEP, layer)
        for atom, matrix in sorted(output.terms.items()) if not is_condition_source(atom.source)
    ]
    return blocks, BiasPart(row_group, output.bias, list(output.time_terms), STEP)


def open_loop_depth(groups: list[StateGroup], blocks: list[MatrixBlock], readout: str) -> int:
    """Loop applications after which an open phase's readout is exact.

    Held groups are read as the held vector (depth 0); feedback blocks are off in open phases. The rest
    of the graph must be acyclic, since an open phase is a feed-forward pass.
    """
    held = {group.name for group in groups if group.held}
    incoming: dict[str, list[str]] = {group.name: [] for group in groups}
    for block in blocks:
        if block.scale_class != FEEDBACK:
            incoming[block.row_group].append(block.column_group)
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def output_depth(name: str) -> int:
        if name in depth:
            return depth[name]
        if name in visiting:
            raise AdmcError(f"internal: the open-loop graph has a cycle through group '{name}'")
        visiting.add(name)
        sources = [0 if source in held else output_depth(source) for source in incoming[name]]
        visiting.discard(name)
        depth[name] = 1 + max(sources, default=0)
        return depth[name]

    return output_depth(readout)


def pack_direct(network: AdmNetwork) -> BlockProgram:
    state_groups = state_group_names(network)
    d = network.state_dimension
    groups: list[StateGroup] = []
    offset = 0
    activations = sorted(state_groups, key=lambda activation: state_groups[activation]) or ["none"]
    names = [state_groups.get(activation, "state") for activation in activations]
    for name, activation in zip(names, activations, strict=True):
        groups.append(StateGroup(name, offset, d, activation, held=True, role="state"))
        offset += d
    for node in network.nodes:
        groups.append(StateGroup(node.name, offset, node.size, node.activation))
        offset += node.size
    blocks: list[MatrixBlock] = []
    biases: list[BiasPart] = []
    for layer, node in enumerate(network.nodes, start=1):
        node_blocks, bias = hidden_rows(node, layer, state_groups)
        blocks += node_blocks
        biases.append(bias)
    injections = []
    for name in names:
        output_blocks, bias = velocity_rows(network.output, name, len(network.nodes) + 1, state_groups)
        blocks += output_blocks
        biases.append(bias)
        injections.append(InjectionPart(name, np.eye(d), INJECT))
    return BlockProgram(d, groups, blocks, biases, injections, names[0],
                        open_loop_depth(groups, blocks, names[0]), "direct")
