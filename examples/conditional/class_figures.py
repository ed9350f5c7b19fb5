"""The figures the conditional example is judged by, for one set of samples with their class labels.

Nearest-class-centre accuracy (a sample is correct when the nearest of the eight centres is its own class's),
the mean and median distance to the own centre, and the within-class spread (rms distance to the class's own
sample mean, averaged over classes). Guidance sharpens when the spread falls: on these data even the exact
guided flow moves each class outward along its ray (``exact_flow.py``), so the distance to the centre may rise
while the class concentrates.
"""

from __future__ import annotations

import numpy as np
from train_eight_gaussians import CLASSES, centres


def class_figures(samples: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    distances = np.linalg.norm(samples[:, None, :] - centres()[None], axis=2)
    own = distances[np.arange(labels.size), labels]
    spreads = [np.sqrt(np.mean(np.sum((samples[labels == k] - samples[labels == k].mean(0)) ** 2, axis=1)))
               for k in range(CLASSES) if np.any(labels == k)]
    return {"accuracy": float(np.mean(np.argmin(distances, axis=1) == labels)), "mean": float(np.mean(own)),
            "median": float(np.median(own)), "spread": float(np.mean(spreads))}
