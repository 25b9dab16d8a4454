"""The synthetic patent generator: determinism, DeepPatent layout, query rule, ground truth, drawing."""
import hashlib
import os
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from fastreid.data.datasets import DeepPatent, DeepPatentTest, query_count
from fastreid.data.synthetic.line_render import render_view
from fastreid.data.synthetic.shapes import ObjectSpec, Prism, build_mesh, circle, profile, rect, triangulate
from fastreid.data.synthetic import SyntheticSpec, generate, load_test_ground_truth


def read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def tree_digest(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn") / "a")
    counts = generate(root, SyntheticSpec(num_patents=12, image_size=64, seed=7), workers=1)
    return root, counts


def test_deterministic_whatever_the_workers(tiny, tmp_path):
    root, _ = tiny
    again = str(tmp_path / "b")
    generate(again, SyntheticSpec(num_patents=12, image_size=64, seed=7), workers=2)
    assert tree_digest(root) == tree_digest(again)
    other = str(tmp_path / "c")
    generate(other, SyntheticSpec(num_patents=12, image_size=64, seed=8, max_views=3), workers=1)
    assert tree_digest(other) != tree_digest(root)


def test_layout_lists_and_query_rule(tiny):
    root, counts = tiny
    data = os.path.join(root, "train_data")
    trn = read_lines(os.path.join(data, "train_patent_trn.txt"))
    vq = read_lines(os.path.join(data, "val_query_patent.txt"))
    vdb = read_lines(os.path.join(data, "val_db_patent.txt"))
    assert sorted(read_lines(os.path.join(data, "train_patent_val.txt"))) == sorted(vq + vdb)
    assert (len(trn), len(vq), len(vdb)) == (
        counts["train_images"], counts["val_query_images"], counts["val_db_images"])
    for line in trn + vq + vdb:
        rel, label = line.split(" ")
        parts = rel.split("/")
        assert parts[0] == "patent_data" and parts[1].startswith("I2018") and parts[3].startswith(parts[2] + "-D")
        img = Image.open(os.path.join(data, rel))
        assert img.size == (64, 64) and img.mode == "L" and int(label) >= 1
    trn_labels = {int(x.split()[1]) for x in trn}
    assert trn_labels == set(range(1, counts["train_patents"] + 1))
    per_patent = defaultdict(lambda: [0, 0])
    for x in vq:
        per_patent[x.split()[1]][0] += 1
    for x in vdb:
        per_patent[x.split()[1]][1] += 1
    assert len(per_patent) == counts["val_patents"]
    for nq, ndb in per_patent.values():
        assert nq == query_count(nq + ndb) and ndb >= 1
    patents = lambda lines: {x.split("/")[2] for x in lines}  # noqa: E731
    assert not patents(trn) & patents(vq + vdb)
    assert counts["train_patents"] + counts["val_patents"] + counts["test_patents"] == 12


def test_test_set_is_unlabeled_with_aligned_ground_truth(tiny):
    root, counts = tiny
    q, db = load_test_ground_truth(root)
    assert q.dtype == np.int64 and len(q) == counts["test_query_images"] and len(db) == counts["test_db_images"]
    sizes = Counter(q.tolist()) + Counter(db.tolist())
    for label, n in sizes.items():
        assert Counter(q.tolist())[label] == query_count(n)
    assert set(q.tolist()) <= set(db.tolist())
    ds = DeepPatentTest(root=root)
    assert ds.labeled is False and len(ds.query) == len(q) and len(ds.gallery) == len(db)
    assert all(os.path.isfile(p) and pid == -1 for p, pid, _ in ds.query + ds.gallery)
    assert [os.path.basename(p) for p, _, _ in ds.query] == sorted(os.path.basename(p) for p, _, _ in ds.query)


def test_deeppatent_loads_the_generated_set(tiny):
    root, counts = tiny
    ds = DeepPatent(root=root)
    assert len(ds.train) == counts["train_images"] and len(ds.query) == counts["val_query_images"]
    assert len({pid for _, pid, _ in ds.train}) == counts["train_patents"]


def test_drawings_are_black_lines_on_white(tiny):
    root, _ = tiny
    first = read_lines(os.path.join(root, "train_data", "train_patent_trn.txt"))[0].split()[0]
    img = np.asarray(Image.open(os.path.join(root, "train_data", first)))
    assert (img == 255).mean() > 0.7 and img.min() < 80


def test_cube_front_view_is_a_square_outline():
    mesh = build_mesh(ObjectSpec([Prism(rect(1.0, 1.0), "y", -0.5, 0.5)]))
    img = render_view(mesh, "front", 50, margin=0.1, supersample=2)
    ink = 255 - img.astype(int)
    # the square spans 5..45 (margin 0.1 of 50); its edges fall on pixel boundaries 5 and 45, so each
    # line is one pixel of ink shared by the two pixels that touch the boundary
    for line in (ink[25], ink[:, 25]):
        assert set(np.nonzero(line)[0].tolist()) == {4, 5, 44, 45}
        assert line[4] + line[5] == pytest.approx(255, abs=2) and line[44] + line[45] == pytest.approx(255, abs=2)
    assert not ink[7:43, 7:43].any() and not ink[:3].any() and not ink[:, 47:].any()


def test_hidden_parts_are_not_drawn():
    base = Prism(rect(1.0, 1.0), "y", 0.0, 0.5)
    boss = Prism(circle(0.2), "y", 0.25, 0.8)
    plain = render_view(build_mesh(ObjectSpec([base])), "bottom", 60, margin=0.1)
    with_boss = render_view(build_mesh(ObjectSpec([base, boss])), "bottom", 60, margin=0.1)
    assert np.array_equal(plain, with_boss)  # the boss sits on top: invisible from below
    top = render_view(build_mesh(ObjectSpec([base, boss])), "top", 60, margin=0.1)
    assert not np.array_equal(plain, top)


@pytest.mark.parametrize("kind", ["L", "U", "T"])
def test_triangulation_covers_the_outline(kind):
    pts = profile(kind, 1.0, 0.8, 0.25).points
    shoelace = 0.5 * abs(np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]))
    tris = triangulate(pts)
    cross = lambda u, v: u[0] * v[1] - u[1] * v[0]  # noqa: E731
    area = sum(0.5 * abs(cross(pts[b] - pts[a], pts[c] - pts[a])) for a, b, c in tris)
    assert len(tris) == len(pts) - 2 and area == pytest.approx(shoelace)


def test_bad_spec_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="min_views"):
        generate(str(tmp_path), SyntheticSpec(num_patents=5, min_views=5, max_views=3))
    with pytest.raises(ValueError, match="train_fraction"):
        generate(str(tmp_path), SyntheticSpec(num_patents=5, train_fraction=0.9, val_fraction=0.2))
