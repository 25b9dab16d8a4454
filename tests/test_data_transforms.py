"""Image reading and the train/test transforms: exact test resize, augmentations on and off."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastreid.config import ConfigError, get_cfg
from fastreid.data import build_transforms, read_image


def gradient_image(w=40, h=30):
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.broadcast_to((x + y) / 2, (h, w, 1))], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def plain_train_cfg(size=(16, 12)):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = list(size)
    cfg.INPUT.SIZE_TEST = list(size)
    return cfg


def test_read_image_grayscale_rgb_and_exif(tmp_path):
    img = gradient_image()
    path = str(tmp_path / "a.png")
    img.save(path)
    gray = np.asarray(read_image(path))
    expected = np.asarray(img.convert("L"))
    assert gray.shape == (30, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(gray[:, :, c], expected)
    np.testing.assert_array_equal(np.asarray(read_image(path, grayscale=False)), np.asarray(img))

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = str(tmp_path / "r.png")
    img.save(rotated, exif=exif)
    shown = np.asarray(read_image(rotated, grayscale=False))
    assert shown.shape == (40, 30, 3)
    np.testing.assert_array_equal(shown, np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_test_transform_is_pil_bicubic_in_0_255():
    img = gradient_image()
    cfg = plain_train_cfg((20, 14))
    out = build_transforms(cfg, is_train=False)(img)
    assert out.dtype == torch.float32 and out.shape == (3, 20, 14)
    ref = np.asarray(img.resize((14, 20), Image.BICUBIC)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(out.numpy(), ref)
    assert out.max() > 200  # no division by 255


def test_train_transform_without_augmentation_equals_test():
    img = gradient_image()
    cfg = plain_train_cfg()
    assert torch.equal(build_transforms(cfg, True)(img), build_transforms(cfg, False)(img))


def test_flip_and_padding_crop():
    img = gradient_image()
    cfg = plain_train_cfg()
    base = build_transforms(cfg, False)(img)
    cfg.INPUT.FLIP.ENABLED = True
    cfg.INPUT.FLIP.PROB = 1.0
    assert torch.equal(build_transforms(cfg, True)(img), base.flip(-1))
    cfg.INPUT.FLIP.ENABLED = False
    cfg.INPUT.PADDING.ENABLED = True
    cfg.INPUT.PADDING.SIZE = 4
    torch.manual_seed(0)
    outs = [build_transforms(cfg, True)(img) for _ in range(6)]
    assert all(o.shape == (3, 16, 12) for o in outs)
    assert any(not torch.equal(o, base) for o in outs)  # a shifted crop, zero-padded at the border
    assert min(float(o.min()) for o in outs) == 0.0


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_autoaugment_applied_only_when_drawn(prob):
    img = gradient_image()
    cfg = plain_train_cfg()
    base = build_transforms(cfg, False)(img)
    cfg.INPUT.AUTOAUG.ENABLED = True
    cfg.INPUT.AUTOAUG.PROB = prob
    tf = build_transforms(cfg, True)
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = tf(img)
        assert out.shape == (3, 16, 12) and 0 <= out.min() and out.max() <= 255
        changed += not torch.equal(out, base)
    if prob == 0.0:
        assert changed == 0
    else:
        assert changed >= 6


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_random_erasing_fills_with_value(prob):
    img = Image.new("RGB", (12, 16), (255, 255, 255))
    cfg = plain_train_cfg()
    cfg.INPUT.REA.ENABLED = True
    cfg.INPUT.REA.PROB = prob
    cfg.INPUT.REA.VALUE = [1.0, 2.0, 3.0]
    tf = build_transforms(cfg, True)
    for seed in range(5):
        torch.manual_seed(seed)
        out = tf(img)
        erased = (out[0] == 1.0) & (out[1] == 2.0) & (out[2] == 3.0)
        untouched = (out == 255.0).all(0)
        assert bool((erased | untouched).all())
        assert int(erased.sum()) > 0 if prob == 1.0 else int(erased.sum()) == 0


def test_colour_jitter_keeps_range():
    cfg = plain_train_cfg()
    cfg.INPUT.CJ.ENABLED = True
    cfg.INPUT.CJ.PROB = 1.0
    torch.manual_seed(0)
    out = build_transforms(cfg, True)(gradient_image())
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255


@pytest.mark.parametrize("key,value,match", [
    ("INPUT.REA.VALUE", [0.5, 0.5], "INPUT.REA.VALUE"),
    ("INPUT.AUTOAUG.POLICY", "mine", "INPUT.AUTOAUG.POLICY"),
    ("INPUT.SIZE_TRAIN", [16, 8, 4], "INPUT.SIZE_TRAIN"),
    ("INPUT.SIZE_TRAIN", [-16], "INPUT.SIZE_TRAIN"),
    ("INPUT.FLIP.PROB", 2.0, "INPUT.FLIP.PROB"),
])
def test_bad_input_config_names_the_key(key, value, match):
    cfg = plain_train_cfg()
    cfg.INPUT.REA.ENABLED = cfg.INPUT.AUTOAUG.ENABLED = cfg.INPUT.FLIP.ENABLED = True
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=match):
        build_transforms(cfg, True)
