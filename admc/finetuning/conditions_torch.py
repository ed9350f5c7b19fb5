"""Condition inputs and classifier-free guidance in the torch program map, as the compiler builds them.

The compiler (``passes/condition_interface.py``) turns a conditional model into (a) a canonical network whose
nodes read boundary atoms ``condition:k`` (values of the conditions and t alone, computed digitally per sample),
(b) with ``--guidance W``, the guided twin chain: every hidden node copied as ``<node>_null`` reading the
boundaries at the null condition (``condition:k:null``), the velocity's rows reading the conditional copy with
(1 + W) and the null copy with −W, and (c) the condition injection parts, per program row group the matrix that
injects a boundary's per-sample value, with its scale class. This module applies the same rules to the probed
torch forms, so they stay functions of the source weights.

Requires: the probed forms of the *unguided* canonical network (``canonical_torch``), the compiled interface's
parts and guidance weight. Guarantees: :func:`guided_forms` gives the guided network's forms (term for term as
``guided_network``); :func:`part_matrix` a part's matrix in spine units (as ``condition_parts``);
:func:`condition_drive` the per-sample drive [B, n] per scale class that the bundle twin adds to each phase's
static injection (``ConditioningInterface.drive_function`` at the built guidance, before the phase's class
factor); :func:`with_null` the conditions with the null condition's values put in.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from admc.finetuning.canonical_torch import OUTPUT, CanonicalForms
from admc.ir.adm import IDENTITY, STATE, Atom
from admc.ir.condition import NULL_SUFFIX, is_condition_source
from admc.ir.program import FEEDBACK, FIXED, SCALE_CLASSES, STEP
from admc.passes.condition_interface import NULL_COPY

LINEAR_STATE = Atom(STATE, IDENTITY)


def _null_atom(atom: Atom) -> Atom:
    if atom.source == STATE:
        return atom
    if is_condition_source(atom.source):
        return Atom(atom.source + NULL_SUFFIX, atom.activation)
    return Atom(atom.source + NULL_COPY, atom.activation)


def guided_forms(forms: CanonicalForms, weight: float) -> CanonicalForms:
    """The forms of (1 + W)·f(x, t, c) − W·f(x, t, ∅) as one network (``guided_network``'s rules)."""
    matrices, constants = dict(forms.matrices), dict(forms.constants)
    for node in [name for name in forms.matrices if name != OUTPUT]:
        matrices[node + NULL_COPY] = {_null_atom(atom): matrix for atom, matrix in forms.matrices[node].items()}
        constants[node + NULL_COPY] = forms.constants[node]
    output = {}
    for atom, matrix in forms.matrices[OUTPUT].items():
        if atom.source == STATE:  # (1 + W)·M − W·M: the state's own terms are the same in both copies
            output[atom] = matrix
            continue
        output[atom] = (1.0 + weight) * matrix
        output[_null_atom(atom)] = -weight * matrix
    matrices[OUTPUT] = output
    return CanonicalForms(matrices, constants)


def part_matrix(part, forms: CanonicalForms) -> torch.Tensor:
    """A condition part's matrix (spine units) from the (guided) forms: a hidden node's boundary term (``fixed``),
    the velocity's (``step``), or the folded row's linear state term times the velocity's (``feedback``)."""
    atom = Atom(part.source, IDENTITY)
    if part.scale_class == FIXED:
        return forms.matrices[part.group][atom]
    if part.scale_class == STEP:
        return forms.matrices[OUTPUT][atom]
    if part.scale_class == FEEDBACK:
        return forms.matrices[part.group][LINEAR_STATE] @ forms.matrices[OUTPUT][atom]
    raise ValueError(f"internal: condition part of scale class {part.scale_class!r}")


def with_null(conditions: Mapping[str, torch.Tensor], null: Mapping[str, np.ndarray], rows: int
              ) -> dict[str, torch.Tensor]:
    """``conditions`` with each nulled input replaced by its null value, one per sample."""
    result = dict(conditions)
    for name, value in null.items():
        value = torch.as_tensor(np.asarray(value))
        result[name] = value.reshape(1, *value.shape).expand(rows, *value.shape)
    return result


def condition_drive(program, parts, matrices: list[torch.Tensor], values: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """Per scale class, Σ_parts matrix · value(source) placed on the part's rows: [B, n] (voltage units when the
    matrices are)."""
    rows = next(iter(values.values())).shape[0]
    dtype = next(iter(values.values())).dtype
    groups = {group.name: group for group in program.groups}
    columns: dict[str, list[torch.Tensor]] = {name: [torch.zeros(rows, program.size, dtype=dtype)]
                                              for name in SCALE_CLASSES}
    for part, matrix in zip(parts, matrices, strict=True):
        group = groups[part.group]
        columns[part.scale_class].append(torch.nn.functional.pad(values[part.source] @ matrix.T,
                                                                 (group.offset, program.size - group.stop)))
    return {name: torch.stack(entries).sum(0) for name, entries in columns.items()}
