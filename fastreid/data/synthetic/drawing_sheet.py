"""The "sheet" style of the synthetic patents: drawings that look like scanned design-patent sheets.

The clean style draws every view as thin orthographic lines on perfect white. Real DeepPatent sheets
vary in ways a retrieval model must ignore; each effect below reproduces one of them and can be
switched on alone (``SyntheticSpec.effects``), so that its cost to retrieval can be measured:

- ``projection``: the first view is isometric, axonometric (random angle) or a true perspective
  with foreshortening;
- ``line_weight``: the pen width varies from patent to patent (1 to 3 px at 128 px);
- ``shading``: surface shading lines (parallel hatching) on some faces, as design patents draw
  shiny or curved surfaces;
- ``environment``: broken (dashed) lines of the environment, which design patents use for what is
  not claimed (a ground line, a neighbouring part);
- ``partial``: a partial view, an enlarged detail of the drawing cut at the sheet's border;
- ``labels``: the "FIG. n" label under the drawing and the "Sheet k of n" header;
- ``scan``: scanning artefacts: a slight rotation, grey paper, blur and specks.

Every draw comes from the generator passed in, so a seed gives the same sheet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .line_render import Mesh, depth_edges, draw_lines, surface_depth_map, view_rotation

SHEET_EFFECTS = ("projection", "line_weight", "shading", "environment", "partial", "labels", "scan")

# Isometric: 45 degrees of yaw, and the pitch whose tangent is 1 / sqrt(2).
_ISO_YAW, _ISO_PITCH = np.radians(45.0), float(np.arctan(1 / np.sqrt(2)))


@dataclass
class PatentLook:
    """Draws shared by all sheets of one patent (one draftsman, one scanner)."""

    projection: str
    perspective: float
    line_width: int
    shading_period: int
    scan_angle_spread: float
    # Apply every per-sheet effect to every sheet (example figures, tests), not at its usual rate.
    always: bool = False

    def fires(self, rng: np.random.Generator, rate: float) -> bool:
        """Whether a per-sheet effect applies to this sheet (it happens on ``rate`` of the sheets)."""
        return self.always or bool(rng.random() < rate)


def check_effects(effects: Sequence[str]) -> None:
    """Refuse unknown effect names, listing the known ones."""
    unknown = [e for e in effects if e not in SHEET_EFFECTS]
    if unknown:
        raise ValueError(f"Unknown sheet effect(s) {unknown}; expected a subset of {SHEET_EFFECTS}")


def sample_look(rng: np.random.Generator, effects: Sequence[str], always: bool = False) -> PatentLook:
    """The patent-level choices; effects that are off keep the clean style's values.

    ``always`` makes every per-sheet effect fire and the first view a perspective (for figures).
    """
    projection = str(rng.choice(["isometric", "axonometric", "perspective"]))
    perspective = float(rng.uniform(1.8, 4.0))
    line_width = int(rng.integers(1, 4))
    period = int(rng.integers(4, 8))
    spread = float(rng.uniform(0.3, 1.5))
    if always:
        projection, line_width = "perspective", max(line_width, 2)
    return PatentLook(projection=projection if "projection" in effects else "axonometric",
                      perspective=perspective if "projection" in effects and projection == "perspective" else 0.0,
                      line_width=line_width if "line_weight" in effects else 1,
                      shading_period=period, scan_angle_spread=spread, always=always)


def _shading_mask(ids: np.ndarray, rng: np.random.Generator, period: int, supersample: int) -> np.ndarray:
    """Parallel hatching lines over one or two of the largest visible surfaces."""
    counts = np.bincount(ids.ravel())
    counts[0] = 0
    surfaces = np.argsort(counts)[::-1][:3]
    surfaces = surfaces[counts[surfaces] > 0]
    if len(surfaces) == 0:
        return np.zeros(ids.shape, dtype=bool)
    chosen = rng.choice(surfaces, size=min(len(surfaces), int(rng.integers(1, 3))), replace=False)
    yy, xx = np.indices(ids.shape)
    step = period * supersample
    stripes = ((xx + (yy if rng.random() < 0.5 else -yy)) % step) == 0
    return stripes & np.isin(ids, chosen)


def _dashed_line(draw: ImageDraw.ImageDraw, p0: np.ndarray, p1: np.ndarray, dash: float, width: int) -> None:
    length = float(np.hypot(*(p1 - p0)))
    n = max(int(length // (2 * dash)), 1)
    for i in range(n):
        a = p0 + (p1 - p0) * (2 * i * dash / length)
        b = p0 + (p1 - p0) * (min((2 * i + 1) * dash, length) / length)
        draw.line([tuple(a), tuple(b)], fill=0, width=width)


def _environment(img: Image.Image, rng: np.random.Generator, width: int) -> None:
    """A dashed ground line under the drawing and, sometimes, a dashed neighbouring part."""
    size = img.size[0]
    ink = np.argwhere(np.asarray(img) < 128)
    bottom = int(ink[:, 0].max()) if len(ink) else size // 2
    draw = ImageDraw.Draw(img)
    dash = max(size / 40, 2.0)
    y = min(bottom + rng.uniform(0.0, 0.04) * size, size - 2)
    _dashed_line(draw, np.array([0.03 * size, y]), np.array([0.97 * size, y]), dash, width)
    if rng.random() < 0.5:
        x0, y0 = rng.uniform(0.0, 0.3) * size, rng.uniform(0.05, 0.4) * size
        x1, y1 = x0 + rng.uniform(0.3, 0.6) * size, y0 + rng.uniform(0.2, 0.5) * size
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        for a, b in zip(corners[:-1], corners[1:]):
            _dashed_line(draw, a, b, dash, width)


def _partial(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An enlarged detail: a window of 50-75 % of the sheet around a random inked pixel, scaled up."""
    size = img.size[0]
    side = int(size * rng.uniform(0.5, 0.75))
    ink = np.argwhere(np.asarray(img) < 128)
    cy, cx = ink[int(rng.integers(len(ink)))] if len(ink) else (size // 2, size // 2)
    x0 = int(np.clip(cx - side * rng.uniform(0.2, 0.8), 0, size - side))
    y0 = int(np.clip(cy - side * rng.uniform(0.2, 0.8), 0, size - side))
    return img.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BICUBIC)


def _labels(img: Image.Image, fig: int, sheet: int, n_sheets: int, rng: np.random.Generator) -> None:
    size = img.size[0]
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(int(size * rng.uniform(0.06, 0.09)), 6))
    small = ImageFont.load_default(size=max(int(size * 0.045), 5))
    text = f"FIG. {fig}"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (size - (right - left)) * rng.uniform(0.3, 0.7)
    draw.text((x, size - (bottom - top) - 0.03 * size - top), text, fill=0, font=font)
    draw.text((0.55 * size, 0.01 * size), f"Sheet {sheet} of {n_sheets}", fill=0, font=small)


def _scan(img: Image.Image, rng: np.random.Generator, angle_spread: float) -> Image.Image:
    """Rotation by up to the patent's spread, grey paper, blur and dark specks."""
    img = img.rotate(float(rng.uniform(-angle_spread, angle_spread)), resample=Image.Resampling.BILINEAR,
                     fillcolor=255)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.7))))
    arr = np.asarray(img).astype(np.float32)
    paper = rng.uniform(225.0, 250.0)
    arr = arr * (paper / 255.0) + rng.normal(0.0, 3.0, size=arr.shape)
    specks = rng.random(arr.shape) < rng.uniform(1e-4, 1e-3)
    arr[specks] = rng.uniform(0.0, 120.0, size=int(specks.sum()))
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))


def render_sheet(mesh: Mesh, view: str, size: int, look: PatentLook, rng: np.random.Generator,
                 effects: Sequence[str], *, margin: float, yaw: float, pitch: float, fig: int, n_sheets: int,
                 supersample: int = 2, fold_jump: float = 0.0, hatch_scale: int = 1) -> np.ndarray:
    """One ``size x size`` uint8 sheet of ``mesh`` from ``view`` with the chosen effects.

    Args:
        look: the patent's draws (``sample_look``); ``rng`` draws what varies per sheet.
        fig: the figure number (1-based), also its sheet number; ``n_sheets`` the patent's total.
        fold_jump: when > 0, also draw where a surface passes behind itself by more than this share
            of the depth range (smooth real-world surfaces; the procedural shapes do not need it).
        hatch_scale: spacing multiplier of the shading lines (see :func:`finish_sheet`).
    """
    first = view == "perspective"
    if first and look.projection == "isometric":
        yaw, pitch = np.sign(yaw) * _ISO_YAW, _ISO_PITCH
    fit = margin + (0.08 if "labels" in effects else 0.0)
    ids, zbuf = surface_depth_map(mesh, view_rotation(view, yaw, pitch), size * supersample, fit,
                                  perspective=look.perspective if first else 0.0)
    folds = depth_edges(ids, zbuf, fold_jump) if fold_jump > 0 else None
    return finish_sheet(ids, look, rng, effects, supersample=supersample, fig=fig, n_sheets=n_sheets,
                        extra=folds, hatch_scale=hatch_scale)


def finish_sheet(ids: np.ndarray, look: PatentLook, rng: np.random.Generator, effects: Sequence[str], *,
                 supersample: int, fig: int, n_sheets: int, extra: Optional[np.ndarray] = None,
                 hatch_scale: int = 1) -> np.ndarray:
    """Lines of a surface-id map plus the sheet effects: the part shared by every drawn object.

    Args:
        ids: visible surface per (supersampled) pixel, 0 = paper.
        extra: more line pixels at the ``ids`` resolution (e.g. depth discontinuities).
        hatch_scale: spacing multiplier of the shading lines (sheets drawn larger than 128 px).
    """
    lines = None if extra is None else extra.astype(bool)
    if "shading" in effects and look.fires(rng, 0.6):
        shading = _shading_mask(ids, rng, look.shading_period * hatch_scale, supersample)
        lines = shading if lines is None else lines | shading
    img = Image.fromarray(draw_lines(ids, supersample, look.line_width, extra=lines))
    if "partial" in effects and look.fires(rng, 0.2):
        img = _partial(img, rng)
    if "environment" in effects and look.fires(rng, 0.4):
        _environment(img, rng, look.line_width)
    if "labels" in effects:
        _labels(img, fig, fig, n_sheets, rng)
    if "scan" in effects:
        img = _scan(img, rng, look.scan_angle_spread)
    return np.asarray(img, dtype=np.uint8)
