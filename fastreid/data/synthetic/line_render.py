"""Hidden-line drawings of triangle meshes, as in design patents: black lines on white.

A z-buffer rasteriser records which surface is visible at each (supersampled) pixel; a line is
drawn wherever the visible surface changes, which gives the silhouette and all visible edges
with exact hidden-line removal. Triangles of one smooth surface (a cylinder's side) share a
surface id, so their facet edges are not drawn. Decals (hole rims, slots) are flat polygons
that relabel the pixels of their host surface. Orthographic projection, or a central one on request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .raster import rasterize

ORTHO_VIEWS = ("front", "rear", "left", "right", "top", "bottom")
VIEWS = ("perspective",) + ORTHO_VIEWS


@dataclass
class Mesh:
    """Triangles with a surface id each (>= 1; 0 is the background) and decals on top of them.

    ``decals`` holds ``(polygon (n, 3), host surface id, own surface id)``; the polygon is convex.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    surfaces: np.ndarray
    decals: List[Tuple[np.ndarray, int, int]] = field(default_factory=list)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def view_rotation(view: str, yaw: float = np.radians(35), pitch: float = np.radians(25)) -> np.ndarray:
    """Rotation taking world coordinates (x right, y up, z towards the front viewer) to camera
    coordinates (x right, y up, z towards the camera) for the named design-patent view."""
    rotations: Dict[str, np.ndarray] = {
        "front": np.eye(3), "rear": _rot_y(np.pi), "left": _rot_y(np.pi / 2), "right": _rot_y(-np.pi / 2),
        "top": _rot_x(np.pi / 2), "bottom": _rot_x(-np.pi / 2),
        "perspective": _rot_x(pitch) @ _rot_y(-yaw),
    }
    if view not in rotations:
        raise ValueError(f"Unknown view {view!r}; expected one of {VIEWS}")
    return rotations[view]


def _raster_triangle(p: np.ndarray, fill: int, ids: np.ndarray, host: int) -> None:
    """Relabel the pixels of ``ids`` inside one 2-D triangle (pixel centres) that show surface ``host``
    (decals: hole rims and slots painted onto their host surface)."""
    area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
    if abs(area) < 1e-9:
        return
    h, w = ids.shape
    x0, x1 = max(int(np.floor(p[:, 0].min())), 0), min(int(np.ceil(p[:, 0].max())), w - 1)
    y0, y1 = max(int(np.floor(p[:, 1].min())), 0), min(int(np.ceil(p[:, 1].max())), h - 1)
    if x0 > x1 or y0 > y1:
        return
    xs = np.arange(x0, x1 + 1) + 0.5
    ys = (np.arange(y0, y1 + 1) + 0.5)[:, None]
    w0 = ((p[1, 0] - xs) * (p[2, 1] - ys) - (p[2, 0] - xs) * (p[1, 1] - ys)) / area
    w1 = ((p[2, 0] - xs) * (p[0, 1] - ys) - (p[0, 0] - xs) * (p[2, 1] - ys)) / area
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -1e-7) & (w1 >= -1e-7) & (w2 >= -1e-7)
    sub_ids = ids[y0:y1 + 1, x0:x1 + 1]
    sub_ids[inside & (sub_ids == host)] = fill


def surface_depth_map(mesh: Mesh, rotation: np.ndarray, size: int, margin: float,
                      perspective: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Visible surface id per pixel of a ``size x size`` view (0 = background) and its depth.

    The drawing is scaled to fit inside ``size * (1 - 2 * margin)`` and centred. ``perspective`` 0 is
    an orthographic projection; a positive value is a central projection from a camera that far in
    front of the object, in object extents (2 gives strong foreshortening, 6 a mild one). Depth is
    then tested on ``-1 / distance``, which is affine in screen space, so hidden lines stay exact.
    The depth map (``inf`` on the background) is in the projection's depth units.
    """
    cam = mesh.vertices @ rotation.T
    if perspective > 0:
        focal = perspective * float(np.ptp(cam, axis=0).max())
        eye = float(cam[:, 2].max()) + focal

    def to_view(pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        c = pts @ rotation.T
        if perspective <= 0:
            return c[:, :2], -c[:, 2]
        dist = eye - c[:, 2]
        return c[:, :2] * (focal / dist)[:, None], -1.0 / dist

    plane, depth = to_view(mesh.vertices)
    lo, hi = plane.min(0), plane.max(0)
    scale = size * (1.0 - 2.0 * margin) / max(float((hi - lo).max()), 1e-9)
    centre = (lo + hi) / 2.0

    def project(pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        v, d = to_view(pts)
        xy = np.stack([(v[:, 0] - centre[0]) * scale + size / 2.0, (centre[1] - v[:, 1]) * scale + size / 2.0], 1)
        return xy, d

    xy, depth = project(mesh.vertices)
    winner, zbuf = rasterize(xy[mesh.triangles], depth[mesh.triangles], size)
    surfaces = np.asarray(mesh.surfaces, dtype=np.int32)
    ids = np.where(winner >= 0, surfaces[np.maximum(winner, 0)], 0).astype(np.int32)
    for poly, host, sid in mesh.decals:
        pxy, _ = project(poly)
        for i in range(1, len(pxy) - 1):
            _raster_triangle(pxy[[0, i, i + 1]], sid, ids, host)
    return ids, zbuf


def surface_map(mesh: Mesh, rotation: np.ndarray, size: int, margin: float,
                perspective: float = 0.0) -> np.ndarray:
    """Visible surface id per pixel (0 = background); see :func:`surface_depth_map`."""
    return surface_depth_map(mesh, rotation, size, margin, perspective)[0]


def depth_edges(ids: np.ndarray, zbuf: np.ndarray, jump: float) -> np.ndarray:
    """Pixels where one surface passes behind itself: neighbours of the same surface whose depths
    differ by more than ``jump`` times the drawing's depth range (a fold of one smooth surface)."""
    finite = np.isfinite(zbuf)
    if not finite.any():
        return np.zeros(ids.shape, dtype=bool)
    limit = jump * max(float(zbuf[finite].max() - zbuf[finite].min()), 1e-12)
    z = np.where(finite, zbuf, 0.0)
    edge = np.zeros(ids.shape, dtype=bool)
    dx = (ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] > 0) & (np.abs(z[:, 1:] - z[:, :-1]) > limit)
    dy = (ids[1:, :] == ids[:-1, :]) & (ids[1:, :] > 0) & (np.abs(z[1:, :] - z[:-1, :]) > limit)
    edge[:, 1:] |= dx
    edge[1:, :] |= dy
    return edge


def draw_lines(ids: np.ndarray, supersample: int, line_width: int = 1,
               extra: Optional[np.ndarray] = None) -> np.ndarray:
    """Black lines where the visible surface changes (plus the ``extra`` mask, e.g. shading lines),
    thickened to ``line_width``, downsampled to an anti-aliased uint8 image."""
    edge = np.zeros(ids.shape, dtype=bool) if extra is None else extra.astype(bool)
    dx = ids[:, 1:] != ids[:, :-1]
    dy = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    for _ in range(max(line_width, 1) - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    s = supersample
    n = ids.shape[0] // s
    cover = edge[:n * s, :n * s].reshape(n, s, n, s).mean(axis=(1, 3))
    return np.clip(np.round(255.0 * (1.0 - cover)), 0, 255).astype(np.uint8)


def render_view(mesh: Mesh, view: str, size: int, margin: float = 0.08, yaw: float = np.radians(35),
                pitch: float = np.radians(25), supersample: int = 2, line_width: int = 1) -> np.ndarray:
    """One ``size x size`` uint8 line drawing (255 = white paper) of ``mesh`` from ``view``."""
    ids = surface_map(mesh, view_rotation(view, yaw, pitch), size * supersample, margin)
    return draw_lines(ids, supersample, line_width)
