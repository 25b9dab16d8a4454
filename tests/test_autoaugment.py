"""AutoAugment as the challenge code applies it: its policy table, grey fill where the image moved,
shear/rotation bounds, random bilinear/bicubic, its place in the pipeline, on PNG drawings on disk."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from fastreid.config import ConfigError, get_cfg
from fastreid.data import build_transforms, read_image
from fastreid.data.transforms import ORIGINAL_POLICY, OriginalAutoAugment
from fastreid.data.transforms.resize import DrawingResize
from fastreid.data.transforms.autoaugment import apply_op, draw_op_args


@pytest.fixture()
def drawing(tmp_path):
    """A line drawing (black on white, 120 x 90) saved as PNG and read back like training images."""
    img = Image.new("L", (90, 120), 255)
    d = ImageDraw.Draw(img)
    d.rectangle([20, 30, 70, 90], outline=0, width=2)
    d.line([45, 10, 45, 110], fill=0, width=1)
    path = tmp_path / "USD0000001-20180102-D00001.png"
    img.save(path)
    return read_image(str(path))


def test_policy_table_is_the_papers_imagenet_policy_in_original_form():
    assert len(ORIGINAL_POLICY) == 25 and all(len(sub) == 2 for sub in ORIGINAL_POLICY)
    ops = Counter(name for sub in ORIGINAL_POLICY for name, _, _ in sub)
    assert set(ops) == {"PosterizeOriginal", "Rotate", "Solarize", "AutoContrast", "Equalize", "Color",
                        "Contrast", "Invert", "Sharpness", "ShearX"}
    assert not any(name.startswith("Translate") for name in ops)  # the 57 px translation never acts
    assert ops == {"Equalize": 17, "Solarize": 7, "Rotate": 6, "Color": 6, "PosterizeOriginal": 5, "Invert": 3,
                   "AutoContrast": 2, "Contrast": 2, "Sharpness": 1, "ShearX": 1}
    assert all(0.0 <= p <= 1.0 and 0 <= m <= 10 for sub in ORIGINAL_POLICY for _, p, m in sub)
    assert ORIGINAL_POLICY[0] == (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9))
    assert ORIGINAL_POLICY[18] == (("ShearX", 0.6, 5), ("Equalize", 1.0, 9))


def test_magnitudes_map_to_the_original_ranges():
    torch.manual_seed(0)
    rotations = [draw_op_args("Rotate", 9) for _ in range(200)]
    assert all(abs(a["degrees"]) == pytest.approx(27.0) for a in rotations)
    assert {a["degrees"] > 0 for a in rotations} == {True, False}
    assert {a["interpolation"] for a in rotations} == {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}
    assert abs(draw_op_args("ShearX", 5)["factor"]) == pytest.approx(0.15)
    assert draw_op_args("PosterizeOriginal", 8) == {"bits": 7}
    assert draw_op_args("PosterizeOriginal", 10) == {"bits": 8}
    assert draw_op_args("Solarize", 5) == {"threshold": 128}
    assert draw_op_args("Contrast", 8)["factor"] == pytest.approx(1.54)
    assert draw_op_args("Color", 0)["factor"] == pytest.approx(0.1)
    assert draw_op_args("Equalize", 7) == {}


@pytest.mark.parametrize("fill", [128, 255])
def test_rotation_fills_the_uncovered_corners_with_the_fill(drawing, fill):
    out = np.asarray(apply_op(drawing, "Rotate", {"degrees": 27.0, "interpolation": InterpolationMode.BILINEAR},
                              [fill] * 3))
    assert out.shape == (120, 90, 3)
    for y, x in [(0, 0), (0, 89), (119, 0), (119, 89)]:  # moved in from outside the image
        assert tuple(out[y, x]) == (fill, fill, fill)
    assert out.min() < 64  # the drawing's lines survive
    if fill == 128:
        assert (out == 128).all(axis=2).mean() > 0.05


def test_shear_moves_rows_by_factor_times_y_and_fills_behind(drawing):
    factor = 0.15
    out = np.asarray(apply_op(drawing, "ShearX", {"factor": factor, "interpolation": InterpolationMode.BICUBIC},
                              [128] * 3))[:, :, 0]
    # The vertical line at x = 45 lands at x = 45 - factor * y in row y (sheared about the top-left corner).
    for y in (12, 20, 100, 110):  # rows where only that line is drawn
        assert abs(int(np.argmin(out[y])) - (45 - factor * y)) <= 1.0
    # Output pixels whose source x + factor * y falls outside the image get the fill; the largest
    # displacement is factor * height = 18 px at the bottom row.
    bottom = out[119]
    shift = factor * 119
    assert (bottom[int(math.ceil(90 - shift)) + 1:] == 128).all()
    assert (bottom[: int(90 - shift) - 1] != 128).all()
    assert (out[0] != 128).all()  # the top row does not move


def test_pixel_ops_keep_size_and_mode(drawing):
    for name, args in [("PosterizeOriginal", {"bits": 4}), ("Solarize", {"threshold": 128}), ("Invert", {}),
                       ("Equalize", {}), ("AutoContrast", {}), ("Color", {"factor": 1.9}),
                       ("Contrast", {"factor": 0.1}), ("Sharpness", {"factor": 1.9})]:
        out = apply_op(drawing, name, args, [128] * 3)
        assert out.size == drawing.size and out.mode == "RGB", name
    inverted = np.asarray(apply_op(drawing, "Invert", {}, [128] * 3))
    np.testing.assert_array_equal(inverted, 255 - np.asarray(drawing))


def test_policy_applied_with_probability_and_never_black_fill(drawing):
    aug = OriginalAutoAugment(fill=128)
    moved = 0
    for seed in range(60):
        torch.manual_seed(seed)
        out = np.asarray(aug(drawing))
        assert out.shape == (120, 90, 3)
        corners = {tuple(out[0, 0]), tuple(out[119, 89])}
        if (128, 128, 128) in corners:
            moved += 1
    assert moved >= 3  # rotations drawn in some of the 60 images


def test_pipeline_applies_it_first_with_prob_and_config_keys(drawing):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [64, 48]
    cfg.INPUT.AUTOAUG.ENABLED = True
    cfg.INPUT.AUTOAUG.PROB = 0.1
    tf = build_transforms(cfg, is_train=True)
    first = tf.transforms[0]
    assert isinstance(first, T.RandomApply) and first.p == 0.1
    assert isinstance(first.transforms[0], OriginalAutoAugment) and first.transforms[0].fill == [128] * 3
    # As the original: on the image as read, then resized (bicubic by default).
    assert isinstance(tf.transforms[1], DrawingResize) and tf.transforms[1].mode == "bicubic"
    cfg.INPUT.AUTOAUG.FILL = 255
    cfg.INPUT.AUTOAUG.PROB = 1.0
    white = build_transforms(cfg, is_train=True)
    assert white.transforms[0].transforms[0].fill == [255] * 3
    torch.manual_seed(1)
    assert white(drawing).shape == (3, 64, 48)
    cfg.INPUT.AUTOAUG.POLICY = "imagenet"  # torchvision's policy stays available, with the same fill
    tv = build_transforms(cfg, is_train=True).transforms[0].transforms[0]
    assert isinstance(tv, T.AutoAugment)
    cfg.INPUT.AUTOAUG.FILL = 300
    with pytest.raises(ConfigError, match="INPUT.AUTOAUG.FILL"):
        build_transforms(cfg, is_train=True)
