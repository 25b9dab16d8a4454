"""The loaders: batch format, exact resume with 0 and 2 workers, test order and worker options."""
import itertools
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastreid.config import ConfigError, get_cfg
from fastreid.data import ImageReadError, build_reid_test_loader, build_reid_train_loader
from fastreid.data.build import _loader_kwargs
from fastreid.utils.registry import DATASET_REGISTRY


def write_lists(root, n_ids=6, per_id=3, size=24):
    rng = np.random.default_rng(0)
    lines = []
    for p in range(n_ids):
        for k in range(per_id):
            rel = f"imgs/{p}_{k}.png"
            os.makedirs(os.path.join(root, "imgs"), exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(os.path.join(root, rel))
            lines.append(f"{rel} {p}")
    gallery = [x for i, x in enumerate(lines) if i % per_id]
    for name, sel in (("train", lines), ("query", lines[::per_id]), ("gallery", gallery)):
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.write("\n".join(sel) + "\n")
    return lines


def make_cfg(root, workers=0, sampler="NaiveIdentitySampler"):
    cfg = get_cfg()
    cfg.DATASETS.ROOT = root
    cfg.DATASETS.NAMES = ("ListFileDataset",)
    cfg.DATASETS.CUSTOM.TRAIN_LIST = "train.txt"
    cfg.DATASETS.CUSTOM.QUERY_LIST = "query.txt"
    cfg.DATASETS.CUSTOM.GALLERY_LIST = "gallery.txt"
    cfg.INPUT.SIZE_TRAIN = [16, 16]
    cfg.INPUT.SIZE_TEST = [16, 16]
    cfg.INPUT.FLIP.ENABLED = cfg.INPUT.PADDING.ENABLED = cfg.INPUT.REA.ENABLED = True
    cfg.INPUT.PADDING.SIZE = 3
    cfg.INPUT.AUTOAUG.ENABLED = cfg.INPUT.CJ.ENABLED = True
    cfg.INPUT.AUTOAUG.PROB = 0.5
    cfg.DATALOADER.SAMPLER_TRAIN = sampler
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.TEST.IMS_PER_BATCH = 5
    cfg.SEED = 3
    return cfg


def first_batches(loader, n):
    return list(itertools.islice(iter(loader), n))


def same(a, b):
    return (torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
            and a["img_paths"] == b["img_paths"])


def test_train_batches_format(tmp_path):
    write_lists(str(tmp_path))
    loader = build_reid_train_loader(make_cfg(str(tmp_path)))
    assert loader.dataset.num_classes == 6 and len(loader.dataset) == 18
    b = next(iter(loader))
    assert set(b) == {"images", "targets", "camids", "img_paths"}
    assert b["images"].shape == (4, 3, 16, 16) and b["images"].dtype == torch.float32
    assert b["targets"].dtype == torch.int64 and int(b["targets"].max()) < 6
    assert float(b["images"].max()) <= 255 and float(b["images"].max()) > 1
    assert b["targets"][0] == b["targets"][1] and b["targets"][2] == b["targets"][3]


@pytest.mark.parametrize("sampler", ["NaiveIdentitySampler", "TrainingSampler"])
def test_exact_resume_with_0_and_2_workers(tmp_path, sampler):
    write_lists(str(tmp_path))
    full = first_batches(build_reid_train_loader(make_cfg(str(tmp_path), 0, sampler)), 7)
    assert not torch.equal(full[0]["images"], full[5]["images"])
    resumed0 = first_batches(build_reid_train_loader(make_cfg(str(tmp_path), 0, sampler), start_iter=4), 3)
    resumed2 = first_batches(build_reid_train_loader(make_cfg(str(tmp_path), 2, sampler), start_iter=4), 3)
    for a, b, c in zip(full[4:], resumed0, resumed2):
        assert same(a, b) and same(a, c)


def test_augmentation_is_not_constant_across_epochs(tmp_path):
    write_lists(str(tmp_path), n_ids=2, per_id=2)
    cfg = make_cfg(str(tmp_path), sampler="TrainingSampler")
    batches = first_batches(build_reid_train_loader(cfg), 6)  # each image seen 6 times
    by_path = {}
    for b in batches:
        for path, img in zip(b["img_paths"], b["images"]):
            by_path.setdefault(path, []).append(img)
    assert all(len(v) == 6 and any(not torch.equal(v[0], x) for x in v[1:]) for v in by_path.values())


def test_test_loader_order_and_num_query(tmp_path):
    lines = write_lists(str(tmp_path))
    loader, num_query = build_reid_test_loader(make_cfg(str(tmp_path)), "ListFileDataset")
    assert num_query == 6 and loader.dataset.labeled is True
    batches = list(loader)
    paths = [p for b in batches for p in b["img_paths"]]
    expected = [x.split()[0] for x in lines[::3]] + [x.split()[0] for i, x in enumerate(lines) if i % 3]
    assert paths == [os.path.normpath(os.path.join(str(tmp_path), p)) for p in expected]
    assert [int(t) for b in batches for t in b["targets"]] == [int(x.split()[1]) for x in lines[::3]] + \
        [int(x.split()[1]) for i, x in enumerate(lines) if i % 3]
    assert [len(b["img_paths"]) for b in batches] == [5, 5, 5, 3]
    img = Image.open(os.path.join(str(tmp_path), expected[0])).convert("L").convert("RGB")
    img = img.resize((16, 16), Image.BICUBIC)
    np.testing.assert_array_equal(batches[0]["images"][0].numpy(), np.asarray(img).transpose(2, 0, 1))


def test_missing_image_error_through_loader(tmp_path):
    write_lists(str(tmp_path))
    os.remove(str(tmp_path / "imgs" / "0_0.png"))
    loader, _ = build_reid_test_loader(make_cfg(str(tmp_path)), "ListFileDataset")
    with pytest.raises(ImageReadError, match=r"0_0\.png \(listed at .*query\.txt:1\)"):
        next(iter(loader))


def test_worker_options():
    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    assert _loader_kwargs(cfg) == {"num_workers": 0, "pin_memory": torch.cuda.is_available()}
    cfg.DATALOADER.NUM_WORKERS = 3
    cfg.DATALOADER.PREFETCH_FACTOR = 5
    kw = _loader_kwargs(cfg)
    assert kw["persistent_workers"] is True and kw["prefetch_factor"] == 5 and kw["num_workers"] == 3


@DATASET_REGISTRY.register()
class PlainIntIdsForTest:
    """A user dataset as in docs/extending.md: no base class, integer training ids."""

    labeled = True

    def __init__(self, root, cfg=None):
        lines = open(os.path.join(root, "train.txt")).read().split("\n")
        self.train = [(os.path.join(root, x.split()[0]), int(x.split()[1]), 0) for x in lines if x]
        self.query, self.gallery = self.train[:2], self.train[2:]


def test_combined_datasets_never_collide(tmp_path):
    write_lists(str(tmp_path))
    cfg = make_cfg(str(tmp_path))
    cfg.DATASETS.NAMES = ("ListFileDataset", "PlainIntIdsForTest")
    loader = build_reid_train_loader(cfg)
    assert len(loader.dataset) == 36 and loader.dataset.num_classes == 12
    assert "PlainIntIdsForTest_0" in loader.dataset.pid_dict and "ListFileDataset_0" in loader.dataset.pid_dict
    test_loader, num_query = build_reid_test_loader(cfg, "PlainIntIdsForTest")
    assert num_query == 2 and len(test_loader.dataset) == 18 and test_loader.dataset.labeled


def test_bad_batch_config_fails_at_build_naming_keys(tmp_path):
    write_lists(str(tmp_path))
    cfg = make_cfg(str(tmp_path))
    cfg.SOLVER.IMS_PER_BATCH = 5
    with pytest.raises(ConfigError, match=r"SOLVER.IMS_PER_BATCH \(5\) .*DATALOADER.NUM_INSTANCE \(2\)"):
        build_reid_train_loader(cfg)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.SAMPLER_TRAIN = "RandomSampler"
    with pytest.raises(ConfigError, match="DATALOADER.SAMPLER_TRAIN"):
        build_reid_train_loader(cfg)


def test_negative_seed_draws_a_seed(tmp_path):
    write_lists(str(tmp_path))
    cfg = make_cfg(str(tmp_path))
    cfg.SEED = -1
    loader = build_reid_train_loader(cfg)
    assert 0 <= loader.batch_sampler.sampler.seed < 2 ** 31
    assert next(iter(loader))["images"].shape == (4, 3, 16, 16)
