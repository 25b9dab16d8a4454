"""tools/prepare_dataset.py writes a resized copy that the loaders read with identical results, and
mismatched or stale copies are refused."""
import json
import os
import subprocess
import sys

import pytest
import torch

from fastreid.config import ConfigError, get_cfg
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.prepare import MANIFEST, prepared_dir
from fastreid.data.synthetic import SyntheticSpec, generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("prep") / "data")
    generate(root, SyntheticSpec(num_patents=12, image_size=96, seed=1, min_views=3, max_views=4), workers=1)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_dataset.py"), "--root", root,
                        "--size", "40", "--workers", "2", "DATASETS.TESTS", '("DeepPatent", "DeepPatentTest")'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return root


def _cfg(root, **kv):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", root, "INPUT.SIZE_TRAIN", "[40, 40]", "INPUT.SIZE_TEST", "[40, 40]",
                         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8", "TEST.IMS_PER_BATCH", "500",
                         "SEED", "0"] + [x for k, v in kv.items() for x in (k.replace("__", "."), str(v))])
    return cfg


def _test_batch(cfg, name="DeepPatent"):
    loader, _ = build_reid_test_loader(cfg, name)
    return loader.dataset, next(iter(loader))


def test_copy_has_layout_lists_and_manifest(data):
    folder = prepared_dir(data, (40, 40))
    manifest = json.load(open(os.path.join(folder, MANIFEST)))
    assert manifest["size"] == [40, 40] and manifest["grayscale"] is True
    for rel in ("train_data/train_patent_trn.txt", "test_data/codalab_test_set/lists/test_queries.txt"):
        assert open(os.path.join(folder, rel)).read() == open(os.path.join(data, rel)).read()
        assert rel in manifest["files"]
    assert manifest["images"] == sum(1 for d, _, fs in os.walk(data) if "prepared" not in d
                                     for f in fs if f.endswith(".png"))


@pytest.mark.parametrize("name", ["DeepPatent", "DeepPatentTest"])
def test_test_loader_reads_the_copy_with_identical_tensors(data, name):
    ds_orig, orig = _test_batch(_cfg(data, DATASETS__PREPARED="never"), name)
    ds_prep, prep = _test_batch(_cfg(data), name)
    assert ds_prep.items[0][0].startswith(prepared_dir(data, (40, 40)))
    assert not ds_orig.items[0][0].startswith(os.path.join(data, "prepared"))
    assert torch.equal(orig["images"], prep["images"])


def test_train_loader_identical_without_autoaugment_and_originals_with_it(data):
    kw = dict(INPUT__FLIP__ENABLED=True, INPUT__PADDING__ENABLED=True, INPUT__REA__ENABLED=True)
    a = next(iter(build_reid_train_loader(_cfg(data, DATASETS__PREPARED="never", **kw))))
    b = next(iter(build_reid_train_loader(_cfg(data, **kw))))
    assert b["img_paths"][0].startswith(prepared_dir(data, (40, 40)))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    auto = _cfg(data, INPUT__AUTOAUG__ENABLED=True, INPUT__AUTOAUG__PROB=0.5)
    assert not next(iter(build_reid_train_loader(auto)))["img_paths"][0].startswith(os.path.join(data, "prepared"))


def test_mismatched_stale_or_missing_copies_are_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="grayscale"):
        _test_batch(_cfg(data, INPUT__GRAYSCALE=False))
    with pytest.raises(ConfigError, match=r"DATASETS.PREPARED is 'always' but .*48x48"):
        _test_batch(_cfg(data, DATASETS__PREPARED="always", INPUT__SIZE_TEST="[48, 48]"))
    with pytest.raises(ConfigError, match="DATASETS.PREPARED must be one of"):
        _test_batch(_cfg(data, DATASETS__PREPARED="yes"))
    lst = os.path.join(data, "train_data", "val_db_patent.txt")
    text = open(lst).read()
    try:
        open(lst, "w").write(text + "\n")
        with pytest.raises(ConfigError, match="val_db_patent.txt changed since the copy was prepared"):
            _test_batch(_cfg(data))
    finally:
        open(lst, "w").write(text)
