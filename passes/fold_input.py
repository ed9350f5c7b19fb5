"""Fold-input pass: pack a network whose first layer reads the state linearly, for targets without linear
channels (docs/design.md §2).

Requires: an ``AdmNetwork`` whose hidden nodes read ``x`` through the identity; the velocity itself must
not read ``x`` linearly. Guarantees: with h = V y + rest and y = x_t + Δt·(W σ(·) + c), the loop runs on
the hidden channels alone: each such node gets ``feedback`` blocks Δt·V W, a ``feedback`` bias Δt·V c and a
``feedback`` injection V x_t (digital work per step, reported in ``notes``); y is read out by
extra ``readout`` rows that nothing reads back. Open phases turn feedback off and inject V·hold, which is
the feed-forward pass at the held input. Fixed points and explicit steps are unchanged, exactly.
"""

from __future__ import annotations

import numpy as np

from admc.core.errors import AdmcError
from admc.ir.adm import IDENTITY, STATE, TANH, AdmNetwork, Atom, TimeTerm
from admc.ir.condition import is_condition_source
from admc.ir.program import FEEDBACK, INJECT, BiasPart, BlockProgram, InjectionPart, MatrixBlock, StateGroup
from admc.passes.pack import column_group, hidden_rows, open_loop_depth, velocity_rows

LINEAR_STATE = Atom(STATE, IDENTITY)


def pack_folded(network: AdmNetwork) -> BlockProgram:
    if LINEAR_STATE in network.output.terms:
        raise AdmcError(
            f"{network.source}: the velocity reads the state x linearly (a residual x + g(x) around the "
            "whole network); a target without linear channels cannot fold this — use a target with "
            "linear channels"
        )
    d = network.state_dimension
    reads_tanh = TANH in network.state_activations()
    state_groups = {TANH: "state"} if reads_tanh else {}
    readout = "state" if reads_tanh else "readout"
    groups = [StateGroup(readout, 0, d, TANH if reads_tanh else "none", held=reads_tanh,
                         role="state" if reads_tanh else "readout")]
    offset = d
    for node in network.nodes:
        groups.append(StateGroup(node.name, offset, node.size, node.activation))
        offset += node.size
    output = network.output
    blocks: list[MatrixBlock] = []
    biases: list[BiasPart] = []
    injections: list[InjectionPart] = []
    folded_weights = 0
    for layer, node in enumerate(network.nodes, start=1):
        node_blocks, bias = hidden_rows(node, layer, state_groups, skip=LINEAR_STATE)
        blocks += node_blocks
        biases.append(bias)
        linear = node.terms.get(LINEAR_STATE)
        if linear is None:
            continue
        folded_weights += int(np.count_nonzero(linear))
        for atom, matrix in sorted(output.terms.items()):
            if is_condition_source(atom.source):
                continue  # injected per sample (condition_interface.condition_parts)
            blocks.append(MatrixBlock(node.name, column_group(atom, state_groups), linear @ matrix,
                                      FEEDBACK, layer, low_rank=(linear, matrix)))
        time_terms = [TimeTerm(linear @ term.matrix, term.function, term.description)
                      for term in output.time_terms]
        biases.append(BiasPart(node.name, linear @ output.bias, time_terms, FEEDBACK))
        injections.append(InjectionPart(node.name, linear, FEEDBACK))
    output_blocks, output_bias = velocity_rows(output, readout, len(network.nodes) + 1, state_groups)
    blocks += output_blocks
    biases.append(output_bias)
    injections.append(InjectionPart(readout, np.eye(d), INJECT))
    note = (f"folded-input layout: the state is read linearly, the target has no linear channels; the host "
            f"computes V·x ({folded_weights} multiply-adds) for every injected vector")
    return BlockProgram(d, groups, blocks, biases, injections, readout,
                        open_loop_depth(groups, blocks, readout), "folded-input", [note])
