"""The linear part of one phase's twin loop, realised once per class scaling: summed = S σ + constant.

Requires: per module, the gain-scaled optics [M, P_out, P_in] (every linear path effect folded in) and the
routing of its ports to state channels (index n = unused). Guarantees: ``accumulate`` adds S · activated
per batch row without ever storing S as n × n — either as dense (row group, column group) blocks plus a
sparse remainder, or as one batched product per used module — and the two forms agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Relative per-iteration costs used by operator="auto" (measured on CPU: a weight in a sparse remainder or in
# a 48 × 48 module product costs more than one in a large dense block).
REMAINDER_COST = 4.0
MODULE_COST = 2.0


@dataclass
class LoopOperator:
    """The linear part of one phase's loop, realised once: summed = S σ + constant, S never stored n × n.

    ``kind`` "blocks": ``blocks`` holds (rows, columns, S[rows, columns]ᵀ) for every (row group, column
    group) pair dense enough to be worth a matmul, ``remainder`` the other non-zeros as (rows, columns,
    values). ``kind`` "modules": ``modules`` holds each used module's gain-scaled optics transposed,
    [M, P_in, P_out], with its input and output channel indices ([M·P], index n reads / drops a zero).
    ``constant`` holds the offsets summed per channel (zero when offsets are off). ``cost`` is the estimate
    the "auto" choice compared.
    """

    kind: str
    constant: torch.Tensor
    cost: float
    blocks: list[tuple[slice, slice, torch.Tensor]] = field(default_factory=list)
    remainder: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    modules: torch.Tensor | None = None
    input_channel: torch.Tensor | None = None
    output_channel: torch.Tensor | None = None

    def accumulate(self, activated: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """result += S · activated (per batch row), in place; returns ``result``."""
        if self.kind == "modules":
            return self._accumulate_modules(activated, result)
        for rows, columns, matrix in self.blocks:
            result[:, rows].addmm_(activated[:, columns], matrix)
        if self.remainder is not None:
            rows, columns, values = self.remainder
            result.index_add_(1, rows, activated[:, columns] * values)
        return result

    def _accumulate_modules(self, activated: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        batch, size = activated.shape
        modules, inputs, outputs = self.modules.shape
        padded = torch.nn.functional.pad(activated, (0, 1))
        led = padded.index_select(1, self.input_channel).view(batch, modules, inputs).transpose(0, 1)
        signal = torch.bmm(led, self.modules)  # [M, B, P_out]
        summed = activated.new_zeros(batch, size + 1)
        summed.index_add_(1, self.output_channel, signal.transpose(0, 1).reshape(batch, -1))
        return result.add_(summed[:, :size])


@dataclass
class PathOperators:
    """The measured chain's loop: one operator per LED path, summed = S⁺ l⁺ + S⁻ l⁻ + constant."""

    positive: LoopOperator
    negative: LoopOperator
    constant: torch.Tensor

    def accumulate(self, lights: tuple[torch.Tensor, torch.Tensor], result: torch.Tensor) -> torch.Tensor:
        """result += S⁺ l⁺ + S⁻ l⁻ (per batch row), in place; returns ``result``."""
        self.positive.accumulate(lights[0], result)
        return self.negative.accumulate(lights[1], result)


def block_form(scaled: torch.Tensor, constant: torch.Tensor, input_channel: torch.Tensor,
           output_channel: torch.Tensor, group_slices: list[slice], group_index: torch.Tensor) -> LoopOperator:
    """S as dense (row group, column group) blocks plus a sparse remainder; cost in weight units.

    Built one row group at a time (the coalescing sort holds one group's entries, not every weight: 2.7 GB less
    at 36M weights in float64); the blocks come in (row group, column group) order and the remainder in
    (row, column) order, as from one sort of all entries, so every sum is taken in the same order."""
    size = len(group_index)
    blocks, pieces, cost = [], [], 0.0
    for row_index, row_slice in enumerate(group_slices):
        row, column, values = _coalesced(scaled, input_channel, output_channel, row_slice, size)
        pair = group_index[column]
        leftover = torch.zeros_like(values, dtype=torch.bool)
        for key, number in zip(*(t.tolist() for t in torch.unique(pair, return_counts=True)), strict=True):
            column_slice = group_slices[key]
            area = (row_slice.stop - row_slice.start) * (column_slice.stop - column_slice.start)
            selected = pair == key
            if area > REMAINDER_COST * number:
                leftover |= selected
                cost += REMAINDER_COST * number
                continue
            matrix = torch.zeros(row_slice.stop - row_slice.start, column_slice.stop - column_slice.start,
                                 dtype=scaled.dtype, device=scaled.device)
            matrix[row[selected] - row_slice.start, column[selected] - column_slice.start] = values[selected]
            blocks.append((row_slice, column_slice, matrix.T.contiguous()))
            cost += area
        if bool(leftover.any()):
            pieces.append((row_slice.start, row_index, (row[leftover], column[leftover], values[leftover])))
    pieces.sort(key=lambda piece: piece[:2])  # channel order
    remainder = tuple(torch.cat(parts) for parts in zip(*(piece[2] for piece in pieces), strict=True)) or None
    return LoopOperator("blocks", constant, cost, blocks=blocks, remainder=remainder)


def _coalesced(scaled: torch.Tensor, input_channel: torch.Tensor, output_channel: torch.Tensor, rows: slice,
               size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero entries of S in the rows ``rows`` as (row, column, value) sorted by (row, column); entries of
    one channel pair fed by several ports (a block split over tiles) summed in port order."""
    module, port = torch.nonzero((output_channel >= rows.start) & (output_channel < rows.stop), as_tuple=True)
    entries = scaled[module, port]  # [ports feeding these rows, P_in]
    columns = input_channel[module]
    keep = (columns < size) & (entries != 0)
    row = output_channel[module, port].unsqueeze(-1).expand_as(entries)
    keys, inverse = torch.unique(row[keep] * size + columns[keep], return_inverse=True)
    values = torch.zeros(keys.numel(), dtype=scaled.dtype, device=scaled.device).index_add_(0, inverse,
                                                                                        entries[keep])
    return keys // size, keys % size, values


def _used_modules(scaled: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(scaled.flatten(1).abs().amax(dim=1) > 0).flatten()


def module_cost(scaled: torch.Tensor) -> float:
    """The cost ``module_form`` would report, without building it (a copy of every used module's optics)."""
    _, outputs, inputs = scaled.shape
    return MODULE_COST * _used_modules(scaled).numel() * outputs * inputs


def module_form(scaled: torch.Tensor, constant: torch.Tensor, input_channel: torch.Tensor,
            output_channel: torch.Tensor) -> LoopOperator:
    """One [P_in, P_out] product per module that holds any weight; cost in weight units."""
    used = _used_modules(scaled)
    matrices = scaled[used].transpose(1, 2).contiguous()
    cost = MODULE_COST * matrices.numel()
    return LoopOperator("modules", constant, cost, modules=matrices,
                        input_channel=input_channel[used].reshape(-1),
                        output_channel=output_channel[used].reshape(-1))
