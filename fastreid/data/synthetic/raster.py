"""Vectorised z-buffer rasterisation of many triangles at once (hidden-surface removal).

The line drawings need, for every pixel, which triangle is the nearest one. Looping over triangles
in Python is fine for the procedural shapes (hundreds of triangles) but not for real product models
(tens of thousands), so all pixel candidates of a chunk of triangles are evaluated together and
reduced per pixel with ``np.minimum.at``. The arithmetic is the per-triangle loop's, term for term,
and ties go to the lowest triangle index (the loop's "first triangle wins"), so both give the same map.
NumPy only: the generators draw in forked worker processes, where torch's thread pool can hang.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

# Candidate pixels evaluated at once; bounds the temporary memory to a few hundred MB.
_CHUNK_PIXELS = 4_000_000


def _candidates(p: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (triangle, pixel) pair inside the triangles' clipped bounding boxes."""
    x0 = np.maximum(np.floor(p[:, :, 0].min(1)).astype(np.int64), 0)
    x1 = np.minimum(np.ceil(p[:, :, 0].max(1)).astype(np.int64), size - 1)
    y0 = np.maximum(np.floor(p[:, :, 1].min(1)).astype(np.int64), 0)
    y1 = np.minimum(np.ceil(p[:, :, 1].max(1)).astype(np.int64), size - 1)
    width = np.maximum(x1 - x0 + 1, 0)
    counts = width * np.maximum(y1 - y0 + 1, 0)
    tri = np.repeat(np.arange(len(p)), counts)
    offset = np.arange(len(tri)) - np.repeat(np.cumsum(counts) - counts, counts)
    return tri, x0[tri] + offset % width[tri], y0[tri] + offset // width[tri], counts


def rasterize(xy: np.ndarray, depth: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest triangle per pixel of a ``size x size`` image.

    Args:
        xy: ``(T, 3, 2)`` vertex positions in pixels (pixel centres at ``i + 0.5``).
        depth: ``(T, 3)`` depth per vertex, smaller is nearer; interpolated linearly in screen space.
        size: image side in pixels.

    Returns:
        ``(winner, zbuf)``: the ``(size, size)`` int64 index of the visible triangle (-1: none) and
        its float64 depth (``inf``: none).
    """
    xy = np.asarray(xy, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    area = ((xy[:, 1, 0] - xy[:, 0, 0]) * (xy[:, 2, 1] - xy[:, 0, 1])
            - (xy[:, 2, 0] - xy[:, 0, 0]) * (xy[:, 1, 1] - xy[:, 0, 1]))
    keep = np.flatnonzero(np.abs(area) >= 1e-9)
    zbuf = np.full(size * size, np.inf)
    winner = np.full(size * size, -1, dtype=np.int64)
    if len(keep) == 0:
        return winner.reshape(size, size), zbuf.reshape(size, size)
    _, _, _, counts = _candidates(xy[keep], size)
    # Chunks of whole triangles in index order, so a later chunk only wins on strictly nearer pixels.
    bounds = np.searchsorted(np.cumsum(counts), np.arange(1, int(counts.sum()) // _CHUNK_PIXELS + 1) * _CHUNK_PIXELS)
    for part in np.split(keep, np.unique(bounds[bounds < len(keep)]) + 1):
        if len(part) == 0:
            continue
        p, a, d = xy[part], area[part], depth[part]
        tri, px, py, _ = _candidates(p, size)
        if len(tri) == 0:
            continue
        xs, ys = px + 0.5, py + 0.5
        q, at, dt = p[tri], a[tri], d[tri]
        w0 = ((q[:, 1, 0] - xs) * (q[:, 2, 1] - ys) - (q[:, 2, 0] - xs) * (q[:, 1, 1] - ys)) / at
        w1 = ((q[:, 2, 0] - xs) * (q[:, 0, 1] - ys) - (q[:, 0, 0] - xs) * (q[:, 2, 1] - ys)) / at
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-7) & (w1 >= -1e-7) & (w2 >= -1e-7)
        z = (w0 * dt[:, 0] + w1 * dt[:, 1] + w2 * dt[:, 2])[inside]
        pix = (py * size + px)[inside]
        order = part[tri[inside]]
        near = np.full(size * size, np.inf)
        np.minimum.at(near, pix, z)
        best = z == near[pix]
        first = np.full(size * size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, pix[best], order[best])
        update = near < zbuf
        zbuf[update] = near[update]
        winner[update] = first[update]
    return winner.reshape(size, size), zbuf.reshape(size, size)
