"""Procedural 3-D objects for synthetic design patents: unions of extruded outlines (boxes,
chamfered and rounded boxes, cylinders, prisms, L/U/T profiles) with bosses, knobs, feet, an axle
and hole/slot rims. Objects come in families: members share the coarse shape and differ in small
details (hole count and place, counterbores, knobs, feet, chamfers, proportions within a few %).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .line_render import Mesh

SMOOTH = -1  # edge group of facets that belong to one smooth surface (a circle's arc)


@dataclass
class Outline:
    """A closed 2-D polygon ``points (n, 2)``; ``groups[i]`` labels edge i -> i+1 (equal labels, or
    SMOOTH, make one side surface)."""

    points: np.ndarray
    groups: List[int]


def rect(w: float, d: float, chamfer: float = 0.0) -> Outline:
    """A ``w x d`` rectangle centred at 0, corners cut by ``chamfer``."""
    a, b, c = w / 2, d / 2, min(chamfer, 0.45 * min(w, d))
    if c <= 0:
        return Outline(np.array([[-a, -b], [a, -b], [a, b], [-a, b]]), [0, 1, 2, 3])
    pts = [[-a + c, -b], [a - c, -b], [a, -b + c], [a, b - c], [a - c, b], [-a + c, b], [-a, b - c], [-a, -b + c]]
    return Outline(np.array(pts), list(range(8)))


def rounded_rect(w: float, d: float, r: float, segments: int = 4) -> Outline:
    """A ``w x d`` rectangle with corner arcs of radius ``r`` (each arc one smooth surface)."""
    r = min(r, 0.45 * min(w, d))
    pts, groups = [], []
    corners = [(w / 2 - r, -d / 2 + r, -np.pi / 2), (w / 2 - r, d / 2 - r, 0.0),
               (-w / 2 + r, d / 2 - r, np.pi / 2), (-w / 2 + r, -d / 2 + r, np.pi)]
    for k, (cx, cy, start) in enumerate(corners):
        for j in range(segments + 1):
            t = start + (np.pi / 2) * j / segments
            pts.append([cx + r * np.cos(t), cy + r * np.sin(t)])
            groups.append(100 + k if j < segments else k)
    return Outline(np.array(pts), groups)


def circle(r: float, segments: int = 24) -> Outline:
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    return Outline(np.stack([r * np.cos(t), r * np.sin(t)], 1), [SMOOTH] * segments)


def regular(n: int, r: float) -> Outline:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / 2
    return Outline(np.stack([r * np.cos(t), r * np.sin(t)], 1), list(range(n)))


def profile(kind: str, w: float, d: float, t: float) -> Outline:
    """L, U or T shaped outline in a ``w x d`` box with bar thickness ``t``."""
    a, b = w / 2, d / 2
    t = min(t, 0.45 * min(w, d))
    shapes = {
        "L": [[-a, -b], [a, -b], [a, -b + t], [-a + t, -b + t], [-a + t, b], [-a, b]],
        "U": [[-a, -b], [a, -b], [a, b], [a - t, b], [a - t, -b + t], [-a + t, -b + t], [-a + t, b], [-a, b]],
        "T": [[-t / 2, -b], [t / 2, -b], [t / 2, b - t], [a, b - t], [a, b], [-a, b], [-a, b - t], [-t / 2, b - t]],
    }
    pts = np.array(shapes[kind])
    return Outline(pts, list(range(len(pts))))


def inside(pt: np.ndarray, poly: np.ndarray) -> bool:
    """Point-in-polygon by ray casting."""
    x, y = pt
    hit = False
    for i in range(len(poly)):
        (x1, y1), (x2, y2) = poly[i], poly[i - 1]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def triangulate(points: np.ndarray) -> List[Tuple[int, int, int]]:
    """Ear-clipping triangulation of a simple polygon (either winding)."""
    area = np.sum(points[:, 0] * np.roll(points[:, 1], -1) - np.roll(points[:, 0], -1) * points[:, 1])
    idx = list(range(len(points))) if area > 0 else list(range(len(points)))[::-1]
    tris = []
    while len(idx) > 3:
        for i in range(len(idx)):
            a, b, c = idx[i - 1], idx[i], idx[(i + 1) % len(idx)]
            pa, pb, pc = points[a], points[b], points[c]
            if (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pc[0] - pa[0]) * (pb[1] - pa[1]) <= 1e-12:
                continue
            tri = np.array([pa, pb, pc])
            if any(inside(points[j], tri) for j in idx if j not in (a, b, c)):
                continue
            tris.append((a, b, c))
            idx.pop(i)
            break
        else:  # numerically stuck: fan the rest
            tris += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
            return tris
    tris.append(tuple(idx))
    return tris


@dataclass
class Prism:
    """``outline`` (in the plane across ``axis``, shifted by ``offset``) extruded from h0 to h1 along axis."""

    outline: Outline
    axis: str
    h0: float
    h1: float
    offset: Tuple[float, float] = (0.0, 0.0)

    def to_world(self, uv: np.ndarray, h: np.ndarray) -> np.ndarray:
        u, v = uv[:, 0] + self.offset[0], uv[:, 1] + self.offset[1]
        cols = {"y": (u, h, v), "z": (u, v, h), "x": (h, u, v)}[self.axis]
        return np.stack(cols, 1)


@dataclass
class Decal:
    """A convex rim drawn on a cap of prism ``prim`` (``cap`` +1 for h1, -1 for h0), nested by ``level``."""

    prim: int
    cap: int
    outline: Outline
    level: int = 0


@dataclass
class ObjectSpec:
    prisms: List[Prism] = field(default_factory=list)
    decals: List[Decal] = field(default_factory=list)


def build_mesh(spec: ObjectSpec) -> Mesh:
    """Triangles and surface ids of every prism, then the decals resolved to 3-D polygons."""
    verts, tris, sids, decals = [], [], [], []
    caps = {}
    next_id, base = 1, 0
    for pi, pr in enumerate(spec.prisms):
        pts = pr.outline.points
        n = len(pts)
        lo = pr.to_world(pts, np.full(n, pr.h0))
        hi = pr.to_world(pts, np.full(n, pr.h1))
        verts += [lo, hi]
        caps[(pi, -1)], caps[(pi, 1)] = next_id, next_id + 1
        for a, b, c in triangulate(pts):
            tris += [(base + a, base + b, base + c), (base + n + a, base + n + b, base + n + c)]
            sids += [next_id, next_id + 1]
        next_id += 2
        group_ids = {}
        for i in range(n):
            g = pr.outline.groups[i]
            if g not in group_ids:
                group_ids[g] = next_id
                next_id += 1
            j = (i + 1) % n
            tris += [(base + i, base + j, base + n + j), (base + i, base + n + j, base + n + i)]
            sids += [group_ids[g]] * 2
        base += 2 * n
    hosts = {}
    for dc in sorted(spec.decals, key=lambda d: d.level):
        pr = spec.prisms[dc.prim]
        h = pr.h1 if dc.cap > 0 else pr.h0
        poly = pr.to_world(dc.outline.points, np.full(len(dc.outline.points), h))
        host = hosts.get((dc.prim, dc.cap, dc.level - 1), caps[(dc.prim, dc.cap)])
        decals.append((poly, host, next_id))
        hosts[(dc.prim, dc.cap, dc.level)] = next_id
        next_id += 1
    return Mesh(np.concatenate(verts), np.asarray(tris, dtype=np.int64), np.asarray(sids), decals)


def _place(rng: np.random.Generator, poly: np.ndarray, radius: float, taken: List[Tuple[float, float, float]],
           tries: int = 60) -> Optional[Tuple[float, float]]:
    """A centre whose circle of ``radius`` lies inside ``poly`` and clear of the ``taken`` circles."""
    lo, hi = poly.min(0), poly.max(0)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], 1)
    for _ in range(tries):
        c = rng.uniform(lo, hi)
        if not all(inside(p, poly) for p in c + ring * radius * 1.15):
            continue
        if all(np.hypot(c[0] - x, c[1] - y) > r + radius * 1.1 for x, y, r in taken):
            return float(c[0]), float(c[1])
    return None


def _base_outline(kind: str, w: float, d: float, rng: np.random.Generator) -> Outline:
    if kind == "box":
        return rect(w, d)
    if kind == "chamfer_box":
        return rect(w, d, chamfer=0.15 * min(w, d))
    if kind == "rounded_box":
        return rounded_rect(w, d, 0.2 * min(w, d))
    if kind == "cylinder":
        return circle(min(w, d) / 2, 32)
    if kind == "hexagon":
        return regular(6, min(w, d) / 2)
    return profile(kind, w, d, rng.uniform(0.25, 0.4) * min(w, d))


def _small_outline(kind: str, r: float) -> Outline:
    return {"cylinder": lambda: circle(r), "box": lambda: rect(1.6 * r, 1.6 * r),
            "chamfer_box": lambda: rect(1.6 * r, 1.6 * r, 0.35 * r), "hexagon": lambda: regular(6, r)}[kind]()


BASE_KINDS = ("box", "chamfer_box", "rounded_box", "cylinder", "hexagon", "L", "U", "T")
SMALL_KINDS = ("cylinder", "box", "chamfer_box", "hexagon")


def sample_family(rng: np.random.Generator, base_kinds: Sequence[str] = BASE_KINDS) -> dict:
    """The coarse shape shared by a family: base outline (one of ``base_kinds``) and height, bosses,
    feet, axle."""
    w, d = rng.uniform(0.6, 1.4, size=2)
    return {
        "base": str(rng.choice(list(base_kinds))), "axis": "y" if rng.random() < 0.6 else "z",
        "w": float(w), "d": float(d), "h": float(rng.uniform(0.2, 0.9)), "seed": int(rng.integers(2 ** 31)),
        "bosses": [{"kind": str(rng.choice(SMALL_KINDS)), "r": float(rng.uniform(0.08, 0.22)),
                    "h": float(rng.uniform(0.1, 0.5))} for _ in range(int(rng.integers(1, 4)))],
        "feet": bool(rng.random() < 0.3), "axle": bool(rng.random() < 0.25),
    }


def sample_member(family: dict, rng: np.random.Generator) -> ObjectSpec:
    """One patent of ``family``: the shared shape with jittered proportions and its own details."""
    j = lambda v: v * rng.uniform(0.96, 1.04)  # noqa: E731  (proportions vary by a few percent)
    frng = np.random.default_rng(family["seed"])  # family-level draws stay equal across members
    base = _base_outline(family["base"], j(family["w"]), j(family["d"]), frng)
    if family["base"] == "box" and rng.random() < 0.3:
        base = rect(np.ptp(base.points[:, 0]), np.ptp(base.points[:, 1]), chamfer=rng.uniform(0.05, 0.12))
    axis, h = family["axis"], j(family["h"])
    spec = ObjectSpec([Prism(base, axis, 0.0, h)])
    taken: List[Tuple[float, float, float]] = []
    for boss in family["bosses"]:
        r = j(boss["r"])
        at = _place(frng, base.points, r, taken)
        if at is None:
            continue
        taken.append((at[0], at[1], r))
        spec.prisms.append(Prism(_small_outline(boss["kind"], r), axis, 0.5 * h, h + j(boss["h"]), at))
        if rng.random() < 0.5:  # knob on top of the boss
            top = spec.prisms[-1].h1
            spec.prisms.append(Prism(circle(0.4 * r, 16), axis, top - 0.01, top + rng.uniform(0.04, 0.12), at))
    if family["feet"] or rng.random() < 0.15:
        fr = 0.06 * min(family["w"], family["d"])
        kind = "cylinder" if rng.random() < 0.5 else "box"
        for sx in (-1, 1):
            for sz in (-1, 1):
                c = (sx * 0.3 * family["w"], sz * 0.3 * family["d"])
                if inside(np.array(c), base.points):
                    spec.prisms.append(Prism(_small_outline(kind, fr), axis, -0.08, 0.3 * h, c))
    if family["axle"]:
        ext = 0.62 * max(family["w"], family["d"])
        ar = 0.22 * h
        out = Outline(circle(ar, 20).points, [SMOOTH] * 20)
        if axis == "y":
            spec.prisms.append(Prism(out, "x", -ext, ext, (0.5 * h, 0.0)))
        else:
            spec.prisms.append(Prism(out, "x", -ext, ext, (0.0, 0.5 * h)))
    for _ in range(int(rng.integers(0, 4))):  # through holes, some counterbored
        r = rng.uniform(0.04, 0.09) * min(family["w"], family["d"])
        at = _place(rng, base.points, r * (1.6 if rng.random() < 0.5 else 1.0), taken)
        if at is None:
            continue
        taken.append((at[0], at[1], r * 1.6))
        hole = circle(r, 20)
        hole.points = hole.points + np.array(at)
        bore = rng.random() < 0.5
        for cap in (1, -1):
            if bore and cap == 1:
                outer = circle(1.6 * r, 20)
                outer.points = outer.points + np.array(at)
                spec.decals += [Decal(0, cap, outer, 0), Decal(0, cap, hole, 1)]
            else:
                spec.decals.append(Decal(0, cap, hole, 0))
    if rng.random() < 0.3:  # a slot
        sw, sd = rng.uniform(0.15, 0.3) * family["w"], rng.uniform(0.04, 0.08) * family["d"]
        at = _place(rng, base.points, max(sw, sd) / 2, taken)
        if at is not None:
            slot = rect(sw, sd)
            spec.decals.append(Decal(0, 1, replace(slot, points=slot.points + np.array(at)), 0))
    return spec
