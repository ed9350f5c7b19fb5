"""The closed loop's Jacobian, block-sparse: J(z) = A_phase · diag(σ'(z)), never a dense n × n at scale.

Requires: a ``BlockProgram`` (blocks, groups with activation and σ gain) and a closed ``Phase``.
Guarantees: ``loop_matrix`` is the phase's linear part A_phase (each stored block times its scale-class
factor) as a ``scipy.sparse`` CSR matrix whose non-zeros are exactly the stored blocks' entries;
``slopes`` is σ' per channel at given states and ``slope_bounds`` the largest σ' per channel (the slope
restriction σ' ∈ [0, s] the certificates use); ``jacobian`` is the product at one state.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse

from admc.ir.adm import activation_slope, is_activation
from admc.ir.program import SCALE_CLASSES, BlockProgram, Phase, block_scale


def loop_matrix(program: BlockProgram, phase: Phase) -> sparse.csr_matrix:
    factors = {name: block_scale(name, phase.step_scale, phase.loop) for name in SCALE_CLASSES}
    rows, columns, values = [], [], []
    for block in program.blocks:
        factor = factors[block.scale_class]
        if factor == 0.0:
            continue
        row_offset = program.group(block.row_group).offset
        column_offset = program.group(block.column_group).offset
        block_rows, block_columns = np.nonzero(block.matrix)
        rows.append(block_rows + row_offset)
        columns.append(block_columns + column_offset)
        values.append(factor * block.matrix[block_rows, block_columns])
    if not rows:
        return sparse.csr_matrix((program.size, program.size))
    return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                             shape=(program.size, program.size))


def slopes(program: BlockProgram, states: np.ndarray) -> np.ndarray:
    """σ'(z) per channel at ``states`` [B, n]: g σ'(g z) for every activation (``activation_slope``: tanh,
    relu, the algebraic sigmoid), g on linear channels, 0 on unread ones."""
    result = np.zeros_like(states)
    for group in program.groups:
        channels = slice(group.offset, group.stop)
        if is_activation(group.activation):
            result[:, channels] = group.sigma_gain * activation_slope(group.activation,
                                                                      group.sigma_gain * states[:, channels])
        elif group.activation == "identity":
            result[:, channels] = group.sigma_gain
    return result


def slope_bounds(program: BlockProgram) -> np.ndarray:
    """The largest σ' of each channel (σ slope-restricted in [0, s]): g for every activation (each has slope
    at most 1, the algebraic sigmoid's at 0) and for linear channels."""
    bound = np.zeros(program.size)
    for group in program.groups:
        if is_activation(group.activation) or group.activation == "identity":
            bound[group.offset:group.stop] = group.sigma_gain
    return bound


def jacobian(matrix: sparse.csr_matrix, slope: np.ndarray) -> sparse.csr_matrix:
    """A · diag(slope): scales the columns, keeping the sparsity."""
    return sparse.csr_matrix(matrix.multiply(slope[None, :]))
