"""INPUT.RESIZE_MODE: a thin line survives an 8x shrink with the ink mode and fades with bicubic; one
function shrinks a drawing for the test loader, the prepared copies and the search preprocessing."""
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fastreid.config import ConfigError, get_cfg
from fastreid.data import build_reid_test_loader
from fastreid.data.prepare import prepare_dataset, prepared_dir
from fastreid.data.preprocess import InferencePreprocess, preprocessing_signature
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.data.transforms import build_transforms
from fastreid.data.transforms.resize import resize_drawing


def line_sheet(size=512, width=1, offset=3):
    """White sheet with one vertical and one diagonal black line ``width`` px wide."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    draw.line([(size // 2 + offset, 20), (size // 2 + offset, size - 20)], fill=0, width=width)
    draw.line([(30, 40), (size - 40, size - 30)], fill=0, width=width)
    return img.convert("RGB")


def darkest_per_row(img):
    arr = np.asarray(img.convert("L")).astype(int)
    return arr[8:-8].min(axis=1)


@pytest.mark.parametrize("offset", [0, 1, 3, 5])
def test_ink_mode_keeps_a_one_pixel_line_visible_where_bicubic_fades_it(offset):
    sheet = line_sheet(offset=offset)
    bicubic = darkest_per_row(resize_drawing(sheet, (64, 64), "bicubic"))
    area = darkest_per_row(resize_drawing(sheet, (64, 64), "area"))
    ink = darkest_per_row(resize_drawing(sheet, (64, 64), "ink"))
    # 1 px of 8 is 1/8 of a pixel's area: area averaging gives about 255 * 7/8 at best.
    assert area.max() <= 255 - 255 // 8 + 2 and area.min() >= 255 - 255 // 4
    assert bicubic.min() > 150  # the thin line is a faint grey everywhere
    # Ink x 8 / 2: the line's 1/8 share becomes about half of a pixel's ink in every row.
    assert ink.max() <= 255 - 4 * (255 - area.max()) + 2 and ink.max() < 140
    out = np.asarray(resize_drawing(sheet, (64, 64), "ink").convert("L"))
    assert (out < 200).mean() < 0.06  # lines stay lines, not smeared


def test_ink_mode_leaves_specks_faint_and_grey_paper_white():
    arr = np.full((512, 512), 235, dtype=np.uint8)  # grey scanned paper
    arr[100, 100] = arr[300, 401] = 0  # two one-pixel specks
    arr[200:203, 40:480] = 0  # a 3-px line
    out = np.asarray(resize_drawing(Image.fromarray(arr).convert("RGB"), (64, 64), "ink").convert("L"))
    assert out[12, 12] > 230 and out[37, 50] > 230  # a speck's 1/64 share stays faint
    assert out[0, 0] == 255 and np.median(out) == 255  # the paper is white
    assert out[25, 10:58].max() < 60  # the line is dark


def test_small_shrinks_and_upscales_are_bicubic_in_every_mode():
    sheet = line_sheet(size=80)
    for size in ((64, 64), (120, 120)):
        ref = np.asarray(resize_drawing(sheet, size, "bicubic"))
        for mode in ("area", "ink"):
            assert np.array_equal(np.asarray(resize_drawing(sheet, size, mode)), ref)


def test_bad_mode_names_the_key():
    cfg = get_cfg()
    cfg.INPUT.RESIZE_MODE = "lanczos"
    with pytest.raises(ConfigError, match="INPUT.RESIZE_MODE"):
        build_transforms(cfg, is_train=False)
    with pytest.raises(ValueError, match="INPUT.RESIZE_MODE"):
        resize_drawing(line_sheet(64), (32, 32), "lanczos")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("resize") / "data")
    generate(root, SyntheticSpec(num_patents=6, image_size=160, seed=2, min_views=3, max_views=3), workers=1)
    return root


def _cfg(root, **kv):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", root, "INPUT.SIZE_TEST", "[32, 32]", "INPUT.RESIZE_MODE", "ink",
                         "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "500"]
                        + [x for k, v in kv.items() for x in (k.replace("__", "."), str(v))])
    return cfg


def test_loader_prepared_copy_and_search_preprocessing_give_the_same_tensors(data):
    orig_loader, _ = build_reid_test_loader(_cfg(data, DATASETS__PREPARED="never"), "DeepPatent")
    orig = next(iter(orig_loader))
    cfg = _cfg(data)
    prepare_dataset(cfg, [(32, 32)], workers=1)
    folder = prepared_dir(data, (32, 32), "ink")
    assert os.path.isfile(os.path.join(folder, "prepared.json")) and folder.endswith("32x32_ink")
    assert not os.path.exists(prepared_dir(data, (32, 32)))  # the bicubic copy is another folder
    prep_loader, _ = build_reid_test_loader(cfg, "DeepPatent")
    prep = next(iter(prep_loader))
    assert prep["img_paths"][0].startswith(folder)
    assert torch.equal(orig["images"], prep["images"])
    pre = InferencePreprocess(cfg)
    assert torch.equal(pre.batch(list(orig["img_paths"])), orig["images"])
    assert preprocessing_signature(cfg)["resize"] == "ink"
    # A bicubic run neither reads the ink copy nor gets the same input.
    bicubic = next(iter(build_reid_test_loader(_cfg(data, INPUT__RESIZE_MODE="bicubic"), "DeepPatent")[0]))
    assert not bicubic["img_paths"][0].startswith(os.path.join(data, "prepared"))
    assert not torch.equal(bicubic["images"], orig["images"])
    with pytest.raises(ConfigError, match="INPUT.RESIZE_MODE area"):
        build_reid_test_loader(_cfg(data, INPUT__RESIZE_MODE="area", DATASETS__PREPARED="always"), "DeepPatent")
