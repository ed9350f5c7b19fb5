"""The exact velocity of the example's flow, for judging what guidance should do to the eight Gaussians.

Training pairs noise x0 ~ N(0, I) with a data point x1 and regresses x1 − x0 on x_t = t·x1 + (1 − t)·x0, so
the ideal model is the conditional expectation E[x1 − x0 | x_t] (and the class-conditional one given the
label). For a Gaussian mixture it is closed form: given component k, x_t ~ N(t·μ_k, v·I) with
v = t²s² + (1 − t)², and E[x1 − x0 | x_t, k] = μ_k + (t·s² − (1 − t)) / v · (x_t − t·μ_k); the unconditional
velocity mixes these with the components' posterior weights at x_t. Integrating the guided combination
(1 + W)·u_c − W·u gives what classifier-free guidance does to these data with a perfect model, independent of
any trained network or of admc.
"""

from __future__ import annotations

import numpy as np
from train_eight_gaussians import SPREAD, centres


def component_velocities(x: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Per component k: E[x1 − x0 | x_t, k] [n, K, 2] and the log-likelihood of x_t under it, up to a constant
    [n, K]."""
    means = centres()
    variance = t * t * SPREAD * SPREAD + (1.0 - t) ** 2
    offset = x[:, None, :] - t * means[None]
    velocities = means[None] + (t * SPREAD * SPREAD - (1.0 - t)) / variance * offset
    return velocities, -np.sum(offset * offset, axis=2) / (2.0 * variance)


def guided_velocity(x: np.ndarray, t: float, labels: np.ndarray, weight: float) -> np.ndarray:
    """(1 + W)·E[x1 − x0 | x_t, label] − W·E[x1 − x0 | x_t]: the exact classifier-free-guided velocity."""
    velocities, log_likelihood = component_velocities(x, t)
    posterior = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    unconditional = np.einsum("nk,nkd->nd", posterior, velocities)
    conditional = velocities[np.arange(x.shape[0]), labels]
    return (1.0 + weight) * conditional - weight * unconditional


def sample(noise: np.ndarray, labels: np.ndarray, weight: float, steps: int = 250) -> np.ndarray:
    """Integrate the exact guided flow from t = 0 to 1 with classical Runge-Kutta; 250 steps and 2,000 give
    samples within 2e-9 of each other at W = 0 and W = 3."""
    x = np.asarray(noise, dtype=np.float64).copy()
    step = 1.0 / steps
    for index in range(steps):
        t = index * step
        k1 = guided_velocity(x, t, labels, weight)
        k2 = guided_velocity(x + 0.5 * step * k1, t + 0.5 * step, labels, weight)
        k3 = guided_velocity(x + 0.5 * step * k2, t + 0.5 * step, labels, weight)
        k4 = guided_velocity(x + step * k3, t + step, labels, weight)
        x += step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x
