"""Real 3D product models from Sweet Home 3D furniture catalogues (``.sh3f`` zip files).

Debian's ``sweethome3d-furniture`` package installs five catalogues under
``/usr/share/sweethome3d/furniture`` (about 820 OBJ models of chairs, lamps, appliances, vehicles,
...). Each catalogue is a zip with ``PluginFurnitureCatalog.properties`` listing its models as
numbered keys (``name#3``, ``category#3``, ``model#3``, ``creator#3``) and a licence for all of them.
"""
from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

DEFAULT_CATALOG_DIR = "/usr/share/sweethome3d/furniture"
PROPERTIES = "PluginFurnitureCatalog.properties"


@dataclass(frozen=True)
class CatalogModel:
    """One model of a catalogue, with what its licence asks to credit."""

    archive: str
    model: str
    name: str
    category: str
    creator: str
    licence: str

    @property
    def key(self) -> str:
        """A stable identifier: catalogue file name and model path."""
        return f"{os.path.basename(self.archive)}:{self.model}"


def _properties(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def read_catalog(archive: str) -> List[CatalogModel]:
    """The OBJ models listed by one ``.sh3f`` catalogue, in its own order.

    Raises:
        ValueError: the file is not a catalogue (names the file and what is missing).
    """
    try:
        with zipfile.ZipFile(archive) as z:
            text = z.read(PROPERTIES).decode("latin-1")
            names = set(z.namelist())
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ValueError(f"{archive}: not a Sweet Home 3D furniture catalogue with {PROPERTIES} ({e})") from e
    props = _properties(text)
    licence = props.get("license", "see the catalogue's LICENSE.TXT")
    models = []
    numbers = sorted(int(m.group(1)) for m in (re.fullmatch(r"model#(\d+)", k) for k in props) if m)
    for n in numbers:
        path = props[f"model#{n}"].lstrip("/")
        if not path.lower().endswith(".obj") or path not in names:
            continue
        models.append(CatalogModel(archive=archive, model=path, name=props.get(f"name#{n}", path),
                                   category=props.get(f"category#{n}", "Miscellaneous"),
                                   creator=props.get(f"creator#{n}", ""), licence=licence))
    return models


def find_catalogs(folder: str = DEFAULT_CATALOG_DIR) -> List[str]:
    """The ``.sh3f`` files of ``folder``, sorted.

    Raises:
        FileNotFoundError: none there, with the command that installs them.
    """
    found = sorted(os.path.join(folder, f) for f in os.listdir(folder)) if os.path.isdir(folder) else []
    found = [f for f in found if f.endswith(".sh3f")]
    if not found:
        raise FileNotFoundError(f"No .sh3f furniture catalogues in {folder}; install them with "
                                f"'apt-get install sweethome3d-furniture' or pass --catalogs")
    return found


def read_catalogs(paths: Sequence[str]) -> List[CatalogModel]:
    """All models of several catalogues (files or folders of ``.sh3f`` files)."""
    archives: List[str] = []
    for p in paths:
        archives += find_catalogs(p) if os.path.isdir(p) else [p]
    return [m for a in archives for m in read_catalog(a)]


def load_mesh(model: CatalogModel) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices ``(V, 3)`` float64 and triangles ``(F, 3)`` int64 of a catalogue model, all its
    parts in one mesh with coincident vertices merged (so parts and facets know their neighbours)."""
    import trimesh

    logging.getLogger("trimesh").setLevel(logging.WARNING)  # it logs every triangulated quad at INFO
    with zipfile.ZipFile(model.archive) as z:
        data = z.read(model.model)
    mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", skip_materials=True, process=True)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
