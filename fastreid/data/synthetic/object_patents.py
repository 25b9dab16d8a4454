"""Design-patent sheet sets of real 3D product models, written in the DeepPatent layout.

Each catalogue model (:mod:`fastreid.data.synthetic.catalog`) becomes one patent: its perspective
view plus a random subset of the six orthographic views, hidden lines removed, drawn large (1,024 px
by default) with the scanned-sheet effects of the synthetic ``sheet`` style, so that a loader has to
shrink it as it shrinks DeepPatent's 1,000-1,500 px sheets. Lines are where the visible surface
changes: the outline, where one part passes in front of another, and creases, i.e. edges between
facets that meet at more than ``crease_deg`` (facets of one smooth surface are merged first, so a
tessellated cylinder shows no facet lines), plus folds of one smooth surface behind itself.

Patents are split by object, stratified by catalogue category, into train / val / a codalab-style
test set with ground truth, exactly as :func:`fastreid.data.synthetic.generator.generate` writes it.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fastreid.utils.file_io import atomic_open

from .catalog import DEFAULT_CATALOG_DIR, CatalogModel, load_mesh, read_catalogs
from .drawing_sheet import SHEET_EFFECTS, render_sheet, sample_look
from .generator import PlannedPatent, _rng, check_views_and_splits, layout_patents, run_jobs, write_list_files
from .line_render import ORTHO_VIEWS, Mesh

logger = logging.getLogger(__name__)

INFO_FILE = "objects_info.json"
# A smooth surface passing behind itself jumps in depth by a good share of the object's depth; a
# surface seen edge-on (a cylinder's flank) is steep only within a pixel or two of its outline.
FOLD_JUMP = 0.1


@dataclass
class ObjectPatentSpec:
    """What to render; see ``tools/make_object_patents.py`` for each field."""

    catalogs: Tuple[str, ...] = (DEFAULT_CATALOG_DIR,)
    image_size: int = 1024
    seed: int = 0
    min_views: int = 3
    max_views: int = 7
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    crease_deg: float = 35.0
    max_faces: int = 300_000
    limit: int = 0
    effects: Tuple[str, ...] = SHEET_EFFECTS

    def check(self) -> None:
        if self.image_size < 64:
            raise ValueError(f"image_size must be >= 64, got {self.image_size}")
        check_views_and_splits(self.min_views, self.max_views, 2, self.train_fraction, self.val_fraction)
        if not 0 < self.crease_deg < 180:
            raise ValueError(f"crease_deg must be in (0, 180), got {self.crease_deg}")


def smooth_surfaces(vertices: np.ndarray, faces: np.ndarray, crease_deg: float) -> np.ndarray:
    """A surface id (>= 1) per face: facets joined across edges whose normals differ by less than
    ``crease_deg``, regardless of winding (OBJ exports mix orientations)."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    pairs = mesh.face_adjacency
    angle = mesh.face_adjacency_angles
    smooth = pairs[np.minimum(angle, np.pi - angle) < np.radians(crease_deg)]
    graph = coo_matrix((np.ones(len(smooth)), (smooth[:, 0], smooth[:, 1])), shape=(len(faces), len(faces)))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int32) + 1


def object_mesh(vertices: np.ndarray, faces: np.ndarray, crease_deg: float) -> Mesh:
    """A drawable mesh: centred, unit size, faces with zero area dropped, smooth surfaces labelled.

    Raises:
        ValueError: the model is degenerate (no faces, or flat: it has no depth in some direction).
    """
    if len(faces) == 0:
        raise ValueError("no faces")
    tri = vertices[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    faces = faces[area > 1e-12 * max(float(area.max()), 1e-300)]
    if len(faces) < 4:
        raise ValueError(f"only {len(faces)} faces with an area")
    used = vertices[np.unique(faces)]
    lo, hi = used.min(0), used.max(0)
    extent = hi - lo
    if extent.min() < 0.005 * extent.max():
        raise ValueError(f"flat (extents {np.round(extent, 4).tolist()}): its side views would be lines")
    verts = (vertices - (lo + hi) / 2) / float(extent.max())
    return Mesh(verts, faces, smooth_surfaces(verts, faces, crease_deg))


@dataclass
class _ObjectPatent:
    model: CatalogModel
    plan: PlannedPatent
    faces: int = 0


def _split(models: Sequence[CatalogModel], spec: ObjectPatentSpec, rng: np.random.Generator) -> List[str]:
    """Train / val / test per model, stratified by category so every split sees every category."""
    split = ["train"] * len(models)
    by_cat: Dict[str, List[int]] = {}
    for i, m in enumerate(models):
        by_cat.setdefault(m.category, []).append(i)
    carry = {"val": 0.0, "test": 0.0}
    test_fraction = 1 - spec.train_fraction - spec.val_fraction
    for cat in sorted(by_cat):
        idx = rng.permutation(by_cat[cat])
        # Fractional shares carry over between categories, so small categories still add up.
        carry["val"] += len(idx) * spec.val_fraction
        carry["test"] += len(idx) * test_fraction
        n_val, n_test = int(carry["val"]), int(carry["test"])
        n_val, n_test = min(n_val, len(idx)), min(n_test, len(idx) - min(n_val, len(idx)))
        carry["val"] -= n_val
        carry["test"] -= n_test
        for k, i in enumerate(idx):
            split[i] = "val" if k < n_val else ("test" if k < n_val + n_test else "train")
    return split


def render_object_patent(model: CatalogModel, views: Sequence[str], spec: ObjectPatentSpec, index: int
                         ) -> List[np.ndarray]:
    """The sheets of one object patent (perspective first); a pure function of its arguments."""
    vertices, faces = load_mesh(model)
    if len(faces) > spec.max_faces:
        raise ValueError(f"{len(faces)} faces, more than max_faces {spec.max_faces}")
    mesh = object_mesh(vertices, faces, spec.crease_deg)
    rng = _rng(spec.seed, 2, index)
    sheet_rng = _rng(spec.seed, 4, index)
    look = sample_look(sheet_rng, spec.effects)
    yaw = np.radians(rng.uniform(25, 50)) * (1 if rng.random() < 0.5 else -1)
    pitch = np.radians(rng.uniform(15, 35))
    scale = max(spec.image_size // 128, 1)
    out = []
    for fig, view in enumerate(views, start=1):
        margin = float(rng.uniform(0.04, 0.12))
        out.append(render_sheet(mesh, view, spec.image_size, look, sheet_rng, spec.effects, margin=margin,
                                yaw=yaw, pitch=pitch, fig=fig, n_sheets=len(views), supersample=1,
                                fold_jump=FOLD_JUMP, hatch_scale=scale))
    return out


def _check_model(job: Tuple[CatalogModel, ObjectPatentSpec]) -> Tuple[str, int, str]:
    """(key, faces, reason to skip or '') for one model (runs in a worker process)."""
    model, spec = job
    try:
        vertices, faces = load_mesh(model)
        if len(faces) > spec.max_faces:
            return model.key, len(faces), f"{len(faces)} faces, more than max_faces {spec.max_faces}"
        object_mesh(vertices, faces, spec.crease_deg)
        return model.key, len(faces), ""
    except Exception as e:  # a model that trimesh cannot read is skipped, not fatal
        return model.key, 0, f"{type(e).__name__}: {e}"


def _render_job(job: Tuple[CatalogModel, List[str], List[str], ObjectPatentSpec, int]) -> None:
    model, views, paths, spec, index = job
    for img, path in zip(render_object_patent(model, views, spec, index), paths):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.png"
        Image.fromarray(img).save(tmp)
        os.replace(tmp, path)


def generate_objects(output: str, spec: Optional[ObjectPatentSpec] = None, workers: int = 0) -> Dict[str, object]:
    """Render every usable catalogue model as a patent into ``output``; returns counts and skips.

    Degenerate models (unreadable, no faces, flat, more than ``max_faces``) are skipped with their
    reason, listed in ``objects_info.json`` next to every patent's source, category and credit.
    """
    spec = spec or ObjectPatentSpec()
    spec.check()
    models = read_catalogs(spec.catalogs)
    if not models:
        raise ValueError(f"No OBJ models in {list(spec.catalogs)}")
    checked = run_jobs(_check_model, [(m, spec) for m in models], workers)
    skipped = [{"model": key, "reason": why} for key, _, why in checked if why]
    usable = [(m, n) for m, (_, n, why) in zip(models, checked) if not why]
    if spec.limit:
        usable = usable[:spec.limit]
    if len(usable) < 3:
        raise ValueError(f"Only {len(usable)} usable models in {list(spec.catalogs)} (need 3: train, val, test); "
                         f"skipped: {skipped[:5]}")
    rng = _rng(spec.seed, 0)
    splits = _split([m for m, _ in usable], spec, rng)
    patents = []
    for i, ((model, faces), split) in enumerate(zip(usable, splits)):
        day = datetime.date(2018, 1, 2) + datetime.timedelta(weeks=i // 25)
        date = day.strftime("%Y%m%d")
        n_views = int(rng.integers(spec.min_views, spec.max_views + 1))
        ortho = sorted(rng.choice(len(ORTHO_VIEWS), size=n_views - 1, replace=False).tolist())
        plan = PlannedPatent(i, i, f"USD0{910000 + i}-{date}", f"I{date}", split,
                             ["perspective"] + [ORTHO_VIEWS[k] for k in ortho])
        patents.append(_ObjectPatent(model, plan, faces))
    paths, files, counts = layout_patents(output, [p.plan for p in patents], _rng(spec.seed, 3))
    # Largest models first, so the last worker does not finish alone on a 300k-face mesh.
    order = sorted(range(len(patents)), key=lambda i: -patents[i].faces)
    run_jobs(_render_job, [(patents[i].model, patents[i].plan.views, paths[i], spec, i) for i in order], workers)
    write_list_files(output, files)
    info = {"spec": asdict(spec), "counts": counts, "skipped": skipped,
            "patents": [{"patent": p.plan.name, "split": p.plan.split, "views": p.plan.views,
                         "drawings": [os.path.relpath(x, output) for x in paths[i]], "name": p.model.name,
                         "category": p.model.category, "creator": p.model.creator, "licence": p.model.licence,
                         "source": p.model.key, "faces": p.faces} for i, p in enumerate(patents)]}
    with atomic_open(os.path.join(output, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)
    logger.info("Object patents in %s: %s (%d models skipped)", output, counts, len(skipped))
    return {**counts, "skipped": len(skipped)}
