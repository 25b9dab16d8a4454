"""The scanned-sheet style of the synthetic patents: each effect, determinism, held-out shape families."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastreid.data.synthetic.drawing_sheet import SHEET_EFFECTS
from fastreid.data.synthetic.line_render import render_view, surface_map, draw_lines, view_rotation
from fastreid.data.synthetic.shapes import ObjectSpec, Prism, build_mesh, circle, rect
from fastreid.data.synthetic import SyntheticSpec, generate, plan_patents, render_patent

from test_data_synthetic import tree_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 96


@pytest.fixture(scope="module")
def patent():
    patents, families = plan_patents(SyntheticSpec(num_patents=6, image_size=SIZE, seed=3))
    p = patents[0]
    return families[p.family], p.views[:3], p.index


def _ink(img, level=128):
    return np.asarray(img) < level


def _darkness(img):
    return int((255 - np.asarray(img, dtype=np.int64)).sum())


@pytest.mark.parametrize("effect", SHEET_EFFECTS)
def test_each_effect_changes_the_drawing_it_should(patent, effect):
    family, views, index = patent
    clean = render_patent(3, SIZE, family, views, index)
    drawn = render_patent(3, SIZE, family, views, index, (effect,), always=True)
    assert all(d.shape == (SIZE, SIZE) and d.dtype == np.uint8 for d in drawn)
    changed = [not np.array_equal(c, d) for c, d in zip(clean, drawn)]
    if effect == "projection":  # only the first (perspective) view gets a central projection
        assert changed == [True, False, False]
    else:
        assert all(changed)
    if effect == "line_weight":
        assert all(_ink(d).sum() > _ink(c).sum() for c, d in zip(clean, drawn))
    if effect == "labels":  # "FIG. n" under the drawing, the sheet header above it
        assert all(_ink(d)[-SIZE // 6:].any() and _ink(d)[:SIZE // 12].any() for d in drawn)
    if effect == "scan":  # grey paper, no longer pure white
        assert all(np.median(d) < 252 for d in drawn)
    if effect == "shading":  # extra (thin, grey after anti-aliasing) lines inside the object's faces
        assert all(_darkness(d) > _darkness(c) for c, d in zip(clean, drawn))


def test_perspective_projection_enlarges_what_is_nearer():
    """From the top, a boss on a plate is nearer to the camera than the plate: a central projection draws
    its top face larger relative to the plate than the orthographic one does; hidden faces stay hidden."""
    mesh = build_mesh(ObjectSpec([Prism(rect(1.0, 1.0), "y", 0.0, 0.25), Prism(circle(0.2), "y", 0.25, 0.8)]))
    rot = view_rotation("top")
    size = 2 * SIZE
    ortho = surface_map(mesh, rot, size, 0.1)
    near = surface_map(mesh, rot, size, 0.1, perspective=1.5)
    far = surface_map(mesh, rot, size, 0.1, perspective=50.0)

    def boss_share(ids):
        centre = ids[size // 2, size // 2]
        return (ids == centre).sum() / (ids > 0).sum()

    assert boss_share(near) > 1.3 * boss_share(ortho)
    assert boss_share(far) == pytest.approx(boss_share(ortho), rel=0.05)  # a distant camera is orthographic
    assert set(np.unique(near)) == set(np.unique(ortho))  # the same faces are visible
    assert np.array_equal(draw_lines(ortho, 2), render_view(mesh, "top", SIZE, margin=0.1))


def test_sheet_set_is_deterministic_and_keeps_the_objects(tmp_path):
    spec = dict(num_patents=8, image_size=48, seed=5, max_views=3)
    a, b, clean = (str(tmp_path / n) for n in "abc")
    generate(a, SyntheticSpec(effects=SHEET_EFFECTS, **spec), workers=1)
    generate(b, SyntheticSpec(effects=SHEET_EFFECTS, **spec), workers=2)
    generate(clean, SyntheticSpec(**spec), workers=1)
    digest_a, digest_clean = tree_digest(a), tree_digest(clean)
    assert digest_a == tree_digest(b)
    # Same lists (same patents, views and splits); different drawings.
    lists = [k for k in digest_a if k.endswith(".txt")]
    assert lists and all(digest_a[k] == digest_clean[k] for k in lists)
    pngs = [k for k in digest_a if k.endswith(".png")]
    assert pngs and all(digest_a[k] != digest_clean[k] for k in pngs)


def test_base_kinds_hold_shape_families_out():
    patents, families = plan_patents(SyntheticSpec(num_patents=40, seed=2, base_kinds=("cylinder", "hexagon")))
    assert {f["base"] for f in families} == {"cylinder", "hexagon"}
    with pytest.raises(ValueError, match="base kind"):
        SyntheticSpec(base_kinds=("sphere",)).check()
    with pytest.raises(ValueError, match="sheet effect"):
        SyntheticSpec(effects=("smudge",)).check()


def test_tool_writes_the_effect_figure_and_sheet_sets(tmp_path):
    png = tmp_path / "effects.png"
    subprocess.run([sys.executable, "tools/make_synthetic_patents.py", "--examples", str(png), "--image-size", "48"],
                   cwd=ROOT, check=True, capture_output=True)
    grid = Image.open(png)
    assert grid.height == (len(SHEET_EFFECTS) + 2) * (48 + 4)
    out = subprocess.run([sys.executable, "tools/make_synthetic_patents.py", "--output", str(tmp_path / "s"),
                          "--num-patents", "6", "--image-size", "32", "--effects", "scan", "labels",
                          "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = (tmp_path / "s" / "synthetic_info.json").read_text()
    assert '"scan"' in info and '"labels"' in info
    bad = subprocess.run([sys.executable, "tools/make_synthetic_patents.py", "--output", str(tmp_path / "x"),
                          "--effects", "smudge"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "smudge" in bad.stderr


def test_holdout_kinds_keep_their_families_out_of_training():
    spec = SyntheticSpec(num_patents=120, seed=3, holdout_kinds=("cylinder", "hexagon"), val_fraction=0.2,
                         train_fraction=0.6)
    patents, families = plan_patents(spec)
    base = {p.index: families[p.family]["base"] for p in patents}
    train = [p for p in patents if p.split == "train"]
    held = [p for p in patents if p.split != "train"]
    assert train and all(base[p.index] not in spec.holdout_kinds for p in train)
    assert held and all(base[p.index] in spec.holdout_kinds for p in held)
    n_val = sum(p.split == "val" for p in held)
    assert n_val == round(len(held) * 0.5)  # val : test = 0.2 : 0.2
    assert plan_patents(SyntheticSpec(num_patents=120, seed=3))[1] == families  # same families as without
    with pytest.raises(ValueError, match="proper subset"):
        SyntheticSpec(base_kinds=("cylinder",), holdout_kinds=("cylinder",)).check()
    with pytest.raises(ValueError, match="base kind"):
        SyntheticSpec(holdout_kinds=("sphere",)).check()
