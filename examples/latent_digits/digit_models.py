"""The latent-digits example's digital parts in numpy: the VAE decoder, the classifier's features, the metric.

Requires: the shipped ``vae_decoder.npz`` and ``classifier.npz`` (written by ``train.py``; plain arrays,
read with ``allow_pickle=False``). Guarantees: ``decode`` maps latent codes [B, k] to images [B, 64] in
[0, 1] exactly as the trained torch decoder (ReLU, ReLU, sigmoid); ``features`` returns the classifier's
penultimate (tanh) activations; ``frechet_distance`` is the Fréchet distance between Gaussians fitted to two
feature sets (the metric FID computes on Inception features, here on the small classifier's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as arrays:
        count = len([name for name in arrays.files if name.startswith("weight_")])
        return [(arrays[f"weight_{index}"].astype(np.float64), arrays[f"bias_{index}"].astype(np.float64))
                for index in range(count)]


def decode(codes: np.ndarray, directory: Path = HERE) -> np.ndarray:
    """Images [B, 64] in [0, 1] of latent codes [B, k] (the decoder: ReLU hidden layers, sigmoid output)."""
    layers = load_layers(directory / "vae_decoder.npz")
    h = np.asarray(codes, dtype=np.float64)
    for index, (weight, bias) in enumerate(layers):
        h = h @ weight.T + bias
        if index < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return 1.0 / (1.0 + np.exp(-h))


def classifier_layers(directory: Path = HERE) -> list[tuple[np.ndarray, np.ndarray]]:
    return load_layers(directory / "classifier.npz")


def features(images: np.ndarray, directory: Path = HERE) -> np.ndarray:
    """The classifier's penultimate activations [B, 32] of images [B, 64] (tanh hidden layers)."""
    h = np.asarray(images, dtype=np.float64)
    for weight, bias in classifier_layers(directory)[:-1]:
        h = np.tanh(h @ weight.T + bias)
    return h


def predict(images: np.ndarray, directory: Path = HERE) -> np.ndarray:
    """The classifier's digit for each image."""
    weight, bias = classifier_layers(directory)[-1]
    return np.argmax(features(images, directory) @ weight.T + bias, axis=1)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + Tr(C₁ + C₂ − 2 (C₁^½ C₂ C₁^½)^½) between Gaussians fitted to two sample sets [B, f]."""
    mean_first, mean_second = first.mean(axis=0), second.mean(axis=0)
    covariance_first = np.cov(first, rowvar=False)
    covariance_second = np.cov(second, rowvar=False)
    root = _symmetric_sqrt(covariance_first)
    cross = np.linalg.eigvalsh(root @ covariance_second @ root)
    trace_cross = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    distance = float(np.sum((mean_first - mean_second) ** 2) + np.trace(covariance_first)
                     + np.trace(covariance_second) - 2.0 * trace_cross)
    return max(distance, 0.0)


def real_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits scaled to [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data / 16.0, digits.target
