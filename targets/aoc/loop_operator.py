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
    """S as dense (row group, column group) blocks plus a sparse remainder; cost in weight units."""
    modules, outputs, inputs = scaled.shape
    size = len(group_index)
    rows = output_channel.unsqueeze(-1).expand(modules, outputs, inputs)
    columns = input_channel.unsqueeze(1).expand(modules, outputs, inputs)
    keep = (rows < size) & (columns < size) & (scaled != 0)
    # Channels fed by several ports (a block split over tiles) sum their entries: coalesce (row, column).
    keys, inverse = torch.unique(rows[keep] * size + columns[keep], return_inverse=True)
    values = torch.zeros(keys.numel(), dtype=scaled.dtype, device=scaled.device).index_add_(0, inverse,
                                                                                        scaled[keep])
    row, column = keys // size, keys % size
    count = len(group_slices)
    pair = group_index[row] * count + group_index[column]
    blocks, leftover, cost = [], torch.zeros_like(values, dtype=torch.bool), 0.0
    for key, number in zip(*(t.tolist() for t in torch.unique(pair, return_counts=True)), strict=True):
        row_slice, column_slice = group_slices[key // count], group_slices[key % count]
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
    remainder = (row[leftover], column[leftover], values[leftover]) if bool(leftover.any()) else None
    return LoopOperator("blocks", constant, cost, blocks=blocks, remainder=remainder)

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
