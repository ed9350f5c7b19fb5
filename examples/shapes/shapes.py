"""Twelve 2-D shapes as point clouds in [-1, 1]², the paper's Fig. 2a set (Kremer et al., "Analog Diffusion
Models", 2026): A, D, M, O, heart, triangle, C, square, arrow, lightning, star and diagonal line.

    from shapes import SHAPES, sample
    points = sample("heart", 1000, seed=0)     # float64 [1000, 2], every point inside [-1, 1]²

Each shape is drawn procedurally: letters and outlines as strokes of width ``STROKE`` along polylines and
arcs (uniform in arc length), solid shapes uniformly over a polygon (rejection sampling), then a small
Gaussian jitter truncated at ``JITTER_LIMIT``. Every figure's geometry lies inside [-0.85, 0.85]², so stroke
and jitter keep all points inside [-1, 1]² without clipping (the paper normalises each cloud to the square).
Same name, count and seed: the same array (numpy's PCG64 generator, no global state).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

STROKE = 0.14        # width of letter and outline strokes
JITTER = 0.015       # standard deviation of the Gaussian jitter on every point
JITTER_LIMIT = 0.04  # the jitter is truncated here, so a point moves at most this far per axis

Polyline = list[tuple[float, float]]


def _jitter(points: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    noise = np.clip(JITTER * generator.standard_normal(points.shape), -JITTER_LIMIT, JITTER_LIMIT)
    return points + noise


def _segments(polylines: list[Polyline]) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = [], []
    for line in polylines:
        for start, end in zip(line[:-1], line[1:], strict=True):
            starts.append(start)
            ends.append(end)
    return np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64)


def strokes(polylines: list[Polyline], count: int, generator: np.random.Generator,
            width: float = STROKE) -> np.ndarray:
    """``count`` points uniform along the polylines' total length, spread uniformly across a stroke of
    ``width`` (perpendicular to each segment)."""
    starts, ends = _segments(polylines)
    lengths = np.linalg.norm(ends - starts, axis=1)
    segment = generator.choice(lengths.size, size=count, p=lengths / lengths.sum())
    along = generator.random(count)[:, None]
    direction = (ends - starts)[segment] / lengths[segment, None]
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    across = (generator.random(count)[:, None] - 0.5) * width
    return starts[segment] + along * (ends - starts)[segment] + across * normal


def arc(centre: tuple[float, float], radii: tuple[float, float], start: float, stop: float,
        pieces: int = 64) -> Polyline:
    """An elliptic arc from angle ``start`` to ``stop`` (radians) as a polyline of ``pieces`` segments."""
    angles = np.linspace(start, stop, pieces + 1)
    return [(centre[0] + radii[0] * math.cos(a), centre[1] + radii[1] * math.sin(a)) for a in angles]


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: a horizontal ray from each point crosses the polygon's edges an odd number of times."""
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return np.count_nonzero(straddles & (x < crossing), axis=1) % 2 == 1


def filled(polygon: Polyline, count: int, generator: np.random.Generator) -> np.ndarray:
    """``count`` points uniform over the polygon's area (rejection sampling in its bounding box)."""
    vertices = np.array(polygon, dtype=np.float64)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    kept: list[np.ndarray] = []
    total = 0
    while total < count:
        candidates = low + (high - low) * generator.random((2 * count + 16, 2))
        inside = candidates[_inside(candidates, vertices)]
        kept.append(inside)
        total += inside.shape[0]
    return np.concatenate(kept)[:count]


def _letter_a(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([[(-0.7, -0.8), (0.0, 0.8), (0.7, -0.8)], [(-0.38, -0.1), (0.38, -0.1)]], count, generator)


def _letter_c(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([arc((0.05, 0.0), (0.72, 0.78), math.radians(45), math.radians(315))], count, generator)


def _letter_d(count: int, generator: np.random.Generator) -> np.ndarray:
    bowl = arc((-0.55, 0.0), (1.15, 0.8), -math.pi / 2, math.pi / 2)
    return strokes([[(-0.55, 0.8), (-0.55, -0.8)], bowl], count, generator)


def _letter_m(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([[(-0.75, -0.8), (-0.75, 0.8), (0.0, -0.2), (0.75, 0.8), (0.75, -0.8)]], count, generator)


def _letter_o(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([arc((0.0, 0.0), (0.62, 0.78), 0.0, 2 * math.pi)], count, generator)


def _heart(count: int, generator: np.random.Generator) -> np.ndarray:
    # The classic parametric heart curve, scaled into [-0.85, 0.85]².
    angles = np.linspace(0.0, 2 * math.pi, 200, endpoint=False)
    x = 16 * np.sin(angles) ** 3
    y = 13 * np.cos(angles) - 5 * np.cos(2 * angles) - 2 * np.cos(3 * angles) - np.cos(4 * angles)
    outline = [(0.85 * a / 17.0, 0.85 * (b + 2.5) / 14.5) for a, b in zip(x, y, strict=True)]
    return filled(outline, count, generator)


def _triangle(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([[(-0.75, -0.7), (0.75, -0.7), (0.0, 0.8), (-0.75, -0.7)]], count, generator)


def _square(count: int, generator: np.random.Generator) -> np.ndarray:
    return filled([(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)], count, generator)


def _arrow(count: int, generator: np.random.Generator) -> np.ndarray:
    return filled([(-0.8, -0.18), (0.15, -0.18), (0.15, -0.55), (0.8, 0.0), (0.15, 0.55), (0.15, 0.18),
                   (-0.8, 0.18)], count, generator)


def _lightning(count: int, generator: np.random.Generator) -> np.ndarray:
    return filled([(0.15, 0.85), (-0.55, -0.05), (-0.05, -0.05), (-0.3, -0.85), (0.55, 0.15), (0.05, 0.15),
                   (0.4, 0.85)], count, generator)


def _star(count: int, generator: np.random.Generator) -> np.ndarray:
    outline = []
    for corner in range(10):
        radius = 0.85 if corner % 2 == 0 else 0.36
        angle = math.pi / 2 + corner * math.pi / 5
        outline.append((radius * math.cos(angle), radius * math.sin(angle) - 0.05))
    return filled(outline, count, generator)


def _diagonal_line(count: int, generator: np.random.Generator) -> np.ndarray:
    return strokes([[(-0.8, -0.8), (0.8, 0.8)]], count, generator, width=0.1)


# The paper's Fig. 2a order: top row A, D, M, O, heart, triangle; bottom row C, square, arrow, lightning,
# star, diagonal line.
SHAPES: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "A": _letter_a,
    "D": _letter_d,
    "M": _letter_m,
    "O": _letter_o,
    "heart": _heart,
    "triangle": _triangle,
    "C": _letter_c,
    "square": _square,
    "arrow": _arrow,
    "lightning": _lightning,
    "star": _star,
    "diagonal_line": _diagonal_line,
}


def sample(name: str, count: int, seed: int) -> np.ndarray:
    """``count`` points of shape ``name`` drawn with ``seed``: float64 [count, 2] inside [-1, 1]²."""
    if name not in SHAPES:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    generator = np.random.default_rng(seed)
    points = _jitter(SHAPES[name](count, generator), generator)
    return points.astype(np.float64)
