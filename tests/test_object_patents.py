"""tools/make_object_patents.py on a catalogue the test writes: DeepPatent layout split by object,
degenerate models skipped with a reason, hidden lines removed, credits kept, deterministic output."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from fastreid.data.datasets import DeepPatent, DeepPatentTest
from fastreid.data.synthetic.catalog import read_catalog
from fastreid.data.synthetic.object_patents import ObjectPatentSpec, generate_objects, object_mesh, render_object_patent
from fastreid.data.synthetic.raster import rasterize
from test_data_synthetic import read_lines, tree_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ("Kitchen", "Office", "Bedroom")


def box_obj(size=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> str:
    """An OBJ box with quad faces (trimesh triangulates them, as for the real catalogues)."""
    sx, sy, sz = size
    ox, oy, oz = offset
    corners = [(ox + x * sx, oy + y * sy, oz + z * sz) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    return "".join(f"v {x} {y} {z}\n" for x, y, z in corners) + "".join(f"f {a} {b} {c} {d}\n" for a, b, c, d in quads)


def cylinder_obj(segments=48) -> str:
    angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    lines = [f"v {np.cos(a):.6f} {y} {np.sin(a):.6f}\n" for y in (0, 2) for a in angles]
    for i in range(segments):
        j = (i + 1) % segments
        lines.append(f"f {i + 1} {j + 1} {j + 1 + segments} {i + 1 + segments}\n")
    lines.append("f " + " ".join(str(i + 1) for i in range(segments)) + "\n")
    lines.append("f " + " ".join(str(i + 1 + segments) for i in range(segments)) + "\n")
    return "".join(lines)


def write_catalog(path, models):
    """A .sh3f zip like Sweet Home 3D's: the properties file and one folder per model."""
    props = ["# test catalogue", "license=CC0 test licence", ""]
    with zipfile.ZipFile(path, "w") as z:
        for n, (name, category, obj) in enumerate(models, start=1):
            z.writestr(f"test/{name}/{name}.obj", obj)
            props += [f"name#{n}={name.title()}", f"category#{n}={category}", f"model#{n}=/test/{name}/{name}.obj",
                      f"creator#{n}=Tester {n}", ""]
        z.writestr("PluginFurnitureCatalog.properties", "\n".join(props))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cat") / "test.sh3f")
    models = []
    for i in range(9):
        shape = box_obj((1 + 0.3 * i, 1 + 0.1 * (i % 3), 0.5 + 0.2 * (i % 4))) if i % 2 else cylinder_obj(24 + 4 * i)
        models.append((f"model{i:02d}", CATEGORIES[i % 3], shape))
    models.append(("rug", "Office", box_obj((2.0, 0.0, 1.0))))  # flat: skipped
    models.append(("broken", "Office", "this is not an obj\n"))  # no faces: skipped
    write_catalog(path, models)
    return path


@pytest.fixture(scope="module")
def generated(catalog, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("objects") / "set")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_object_patents.py"), "--output", out,
                        "--catalogs", catalog, "--image-size", "64", "--workers", "2", "--seed", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_catalog_is_read_with_categories_and_credits(catalog):
    models = read_catalog(catalog)
    assert len(models) == 11 and models[0].category == "Kitchen" and models[0].creator == "Tester 1"
    assert models[0].licence == "CC0 test licence" and models[0].model == "test/model00/model00.obj"


def test_layout_split_by_object_with_ground_truth(generated):
    info = json.load(open(os.path.join(generated, "objects_info.json")))
    reasons = {s["model"].split(":")[1]: s["reason"] for s in info["skipped"]}
    assert set(reasons) == {"test/rug/rug.obj", "test/broken/broken.obj"}
    assert "flat" in reasons["test/rug/rug.obj"]
    patents = info["patents"]
    assert len(patents) == 9 and {p["split"] for p in patents} == {"train", "val", "test"}
    # Each split sees every category (stratified) when there are enough objects per category.
    assert {p["category"] for p in patents if p["split"] == "train"} == set(CATEGORIES)
    assert all(p["views"][0] == "perspective" and 3 <= len(p["views"]) <= 7 for p in patents)
    assert all(os.path.isfile(os.path.join(generated, d)) for p in patents for d in p["drawings"])
    assert all(p["creator"].startswith("Tester") and p["licence"] == "CC0 test licence" for p in patents)
    train = DeepPatent(generated)
    assert len({pid for _, pid, _ in train.train}) == sum(p["split"] == "train" for p in patents)
    test = DeepPatentTest(generated)
    n_test = sum(len(p["views"]) for p in patents if p["split"] == "test")
    assert len(test.query) + len(test.gallery) == n_test
    lists = os.path.join(generated, "test_data", "codalab_test_set", "lists")
    assert len(read_lines(os.path.join(lists, "test_queries_labels.txt"))) == len(test.query)
    img = Image.open(os.path.join(generated, patents[0]["drawings"][0]))
    assert img.size == (64, 64) and img.mode == "L"


def test_same_seed_same_bytes_whatever_the_workers(generated, catalog, tmp_path):
    again = str(tmp_path / "again")
    generate_objects(again, ObjectPatentSpec(catalogs=(catalog,), image_size=64, seed=3), workers=1)
    assert tree_digest(again) == tree_digest(generated)


def test_hidden_lines_removed_and_creases_drawn(tmp_path):
    """Two boxes, a small one behind a large one: the front view shows only the large box's outline;
    a 48-gon cylinder's side (facets 7.5 degrees apart) shows no facet lines, its rim a crease."""
    path = str(tmp_path / "c.sh3f")
    # Re-index the second box's faces after the first box's 8 vertices.
    first, second = box_obj((2, 2, 1)), box_obj((1, 1, 1), (0.5, 0.5, -2))
    shifted = "".join(("f " + " ".join(str(int(t) + 8) for t in line.split()[1:]) + "\n") if line.startswith("f")
                      else line for line in second.splitlines(True))
    two = first + shifted
    write_catalog(path, [("two", "Office", two), ("cyl", "Office", cylinder_obj(48))])
    boxes, cyl = read_catalog(path)
    spec = ObjectPatentSpec(catalogs=(path,), image_size=128, effects=())
    front = render_object_patent(boxes, ["perspective", "front"], spec, 0)[1]
    ink = front < 128
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    inner = ink[rows[0] + 3:rows[-1] - 2, cols[0] + 3:cols[-1] - 2]
    assert ink.sum() > 0 and not inner.any()  # the hidden box draws nothing inside the outline
    side = render_object_patent(cyl, ["perspective", "front"], spec, 0)[1] < 128
    rows, cols = np.flatnonzero(side.any(1)), np.flatnonzero(side.any(0))
    assert not side[rows[0] + 3:rows[-1] - 2, cols[0] + 3:cols[-1] - 2].any()
    assert side[rows[0]:rows[-1] + 1, cols[0]].sum() > 0.8 * (rows[-1] - rows[0])  # the outline is there


def test_vectorised_raster_equals_the_per_triangle_loop():
    """Hand-written loop z-buffer (first triangle wins ties) as the oracle, on random overlapping triangles."""
    rng = np.random.default_rng(0)
    size = 40
    xy = rng.uniform(-5, size + 5, size=(60, 3, 2))
    depth = rng.integers(0, 4, size=(60, 3)).astype(float)  # coarse depths: many exact ties
    zbuf = np.full((size, size), np.inf)
    want = np.full((size, size), -1)
    for t in range(len(xy)):
        p = xy[t]
        area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
        for y in range(size):
            for x in range(size):
                xs, ys = x + 0.5, y + 0.5
                w0 = ((p[1, 0] - xs) * (p[2, 1] - ys) - (p[2, 0] - xs) * (p[1, 1] - ys)) / area
                w1 = ((p[2, 0] - xs) * (p[0, 1] - ys) - (p[0, 0] - xs) * (p[2, 1] - ys)) / area
                w2 = 1.0 - w0 - w1
                if min(w0, w1, w2) >= -1e-7:
                    z = w0 * depth[t, 0] + w1 * depth[t, 1] + w2 * depth[t, 2]
                    if z < zbuf[y, x]:
                        zbuf[y, x], want[y, x] = z, t
    winner, got_z = rasterize(xy, depth, size)
    assert np.array_equal(winner, want)
    assert np.array_equal(got_z, zbuf)


def test_degenerate_meshes_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="no faces"):
        object_mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64), 35.0)
    flat = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0.0]])
    with pytest.raises(ValueError, match="faces with an area|flat"):
        object_mesh(flat, np.array([[0, 1, 2], [0, 2, 3]]), 35.0)


def test_bad_catalogue_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.sh3f"
    bad.write_text("not a zip")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_object_patents.py"), "--output",
                        str(tmp_path / "out"), "--catalogs", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("Error:") and "bad.sh3f" in r.stderr
    assert not os.path.exists(tmp_path / "out" / "objects_info.json")
