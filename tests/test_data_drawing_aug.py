"""INPUT.DRAWING augmentations on a real line drawing written to and read from a PNG file."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastreid.config import ConfigError, get_cfg
from fastreid.data.synthetic.line_render import render_view
from fastreid.data.synthetic.shapes import ObjectSpec, Prism, build_mesh, circle, rect
from fastreid.data.transforms import build_transforms
from fastreid.data.transforms.drawing import CropRescale, InkJitter, LineWidthJitter, RandomQuarterTurn


@pytest.fixture(scope="module")
def drawing(tmp_path_factory):
    mesh = build_mesh(ObjectSpec([Prism(rect(1.0, 0.7), "y", 0.0, 0.3), Prism(circle(0.2), "y", 0.3, 0.6)]))
    path = tmp_path_factory.mktemp("draw") / "d.png"
    Image.fromarray(render_view(mesh, "perspective", 64)).convert("RGB").save(path)
    return Image.open(path).convert("RGB")


def _ink(img):
    return int((np.asarray(img)[..., 0] < 128).sum())


def _darkness(img):
    return int((255 - np.asarray(img, dtype=np.int64)).sum())


def _outcomes(transform, img, n=12):
    outs = []
    for seed in range(n):
        torch.manual_seed(seed)
        outs.append(np.asarray(transform(img)))
    return outs


def test_line_width_thickens_or_lightens_but_never_erases(drawing):
    outs = _outcomes(LineWidthJitter(1.0, max_px=2), drawing)
    thicker = [o for o in outs if _ink(Image.fromarray(o)) > _ink(drawing)]
    lighter = [o for o in outs if _darkness(o) < _darkness(drawing)]
    assert thicker and lighter and len(thicker) + len(lighter) == len(outs)
    assert all(_darkness(o) > 0.4 * _darkness(drawing) for o in lighter)
    assert all(o.shape == np.asarray(drawing).shape for o in outs)


def test_ink_jitter_maps_paper_and_ink_levels(drawing):
    for out in _outcomes(InkJitter(1.0, ink_range=(0.5, 0.8), paper_range=(230, 240)), drawing):
        paper = np.median(out)
        assert 229 <= paper <= 241
        darkest = out.min()
        assert paper * (1 - 0.8) - 1 <= darkest <= paper * (1 - 0.5) + 1


def test_quarter_turn_is_an_exact_rotation_with_white_fill(drawing):
    arr = np.asarray(drawing)
    turns = {k: np.rot90(arr, k) for k in (1, 2, 3)}
    seen = set()
    for out in _outcomes(RandomQuarterTurn(1.0), drawing):
        match = [k for k, t in turns.items() if np.array_equal(out, t)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {1, 2, 3}
    wide = Image.new("RGB", (80, 40), (255, 255, 255))
    wide.paste(drawing.resize((40, 40)), (0, 0))
    torch.manual_seed(0)
    out = RandomQuarterTurn(1.0)(wide)
    assert out.size == (80, 40) and np.asarray(out)[:, :5].min() == 255  # white margins, nothing black


def test_crop_rescale_keeps_the_size_and_enlarges(drawing):
    outs = _outcomes(CropRescale(1.0, (0.5, 0.6)), drawing)
    assert all(o.shape == np.asarray(drawing).shape for o in outs)
    assert any(not np.array_equal(o, np.asarray(drawing)) for o in outs)
    torch.manual_seed(0)
    assert np.array_equal(np.asarray(CropRescale(1.0, (1.0, 1.0))(drawing)), np.asarray(drawing))


def test_probability_zero_and_seeded_repeats(drawing):
    for t in (LineWidthJitter(0.0), InkJitter(0.0), RandomQuarterTurn(0.0), CropRescale(0.0)):
        assert t(drawing) is drawing
    a = _outcomes(InkJitter(0.5), drawing, 4)
    b = _outcomes(InkJitter(0.5), drawing, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_config_builds_them_after_the_resize_and_checks_values(drawing):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [48, 48]
    cfg.INPUT.DRAWING.LINE_PROB = 1.0
    cfg.INPUT.DRAWING.ROT90_PROB = 0.5
    cfg.INPUT.DRAWING.VFLIP_PROB = 0.5
    cfg.INPUT.DRAWING.CROP_PROB = 0.5
    cfg.INPUT.DRAWING.INK_PROB = 0.5
    pipeline = build_transforms(cfg, is_train=True)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names.index("DrawingResize") < names.index("LineWidthJitter") < names.index("RandomQuarterTurn")
    assert {"InkJitter", "CropRescale", "RandomVerticalFlip"} <= set(names)
    torch.manual_seed(0)
    out = pipeline(drawing)
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32 and out.max() <= 255
    cfg.INPUT.DRAWING.CROP_SCALE = (0.0, 1.0)
    with pytest.raises(ConfigError, match="INPUT.DRAWING.CROP_SCALE"):
        build_transforms(cfg, is_train=True)
    cfg.INPUT.DRAWING.CROP_SCALE = (0.6, 1.0)
    cfg.INPUT.DRAWING.ROT90_PROB = 1.5
    with pytest.raises(ConfigError, match="INPUT.DRAWING.ROT90_PROB"):
        build_transforms(cfg, is_train=True)
    default_names = [type(t).__name__ for t in build_transforms(get_cfg(), is_train=True).transforms]
    assert not {"LineWidthJitter", "InkJitter", "RandomQuarterTurn", "CropRescale"} & set(default_names)
