"""Central finite differences against autograd, for the fine-tuning tests (one check, so both test it alike).

``worst_gradient_error(parameters, loss, generator)``: after ``loss().backward()``, for two random entries of
every parameter (``generator`` picks them), the relative error of the autograd gradient against
(loss(p + h) − loss(p − h)) / 2h with h = 1e-5, entries restored; returns the worst.
"""

from __future__ import annotations

import numpy as np
import torch

STEP = 1e-5


def worst_gradient_error(parameters, loss, generator: np.random.Generator) -> float:
    worst = 0.0
    for parameter in parameters:
        flat = parameter.data.view(-1)
        for index in generator.choice(flat.numel(), size=min(2, flat.numel()), replace=False):
            with torch.no_grad():
                original = float(flat[index])
                flat[index] = original + STEP
                up = float(loss())
                flat[index] = original - STEP
                down = float(loss())
                flat[index] = original
            difference = (up - down) / (2 * STEP)
            automatic = float(parameter.grad.view(-1)[index])
            worst = max(worst, abs(difference - automatic) / max(abs(difference), 1e-8))
    return worst
