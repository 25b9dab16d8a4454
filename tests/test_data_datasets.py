"""Datasets on small trees written by the tests: counts, ids, layouts and bad-input messages."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from fastreid.config import get_cfg
from fastreid.data import CommDataset, ImageReadError, build_reid_test_loader, build_reid_train_loader
from fastreid.data.datasets import (DeepPatent, DeepPatentTest, ImageFolderRetrieval, ListFileDataset,
                                    ListFormatError, datasets_root, query_count)


def write_png(path, value=128, size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8)).save(path)


def write_list(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def make_deeppatent(root, n_trn=(3, 2, 4), n_val=(2, 5)):
    """A DeepPatent tree: trn patents with the given image counts; val patents split by the query rule."""
    data = os.path.join(root, "train_data")
    trn, vq, vdb = [], [], []
    for label, n in enumerate(n_trn, start=1):
        for k in range(n):
            rel = f"patent_data/I20180102/USD0{800 + label}-20180102/USD0{800 + label}-20180102-D{k + 1:05d}.png"
            write_png(os.path.join(data, rel), 10 * k)
            trn.append(f"{rel} {label}")
    for label, n in enumerate(n_val, start=1):
        for k in range(n):
            rel = f"patent_data/I20180109/USD0{900 + label}-20180109/USD0{900 + label}-20180109-D{k + 1:05d}.png"
            write_png(os.path.join(data, rel), 10 * k)
            (vq if k < query_count(n) else vdb).append(f"{rel} {label}")
    write_list(os.path.join(data, "train_patent_trn.txt"), trn)
    write_list(os.path.join(data, "val_query_patent.txt"), vq)
    write_list(os.path.join(data, "val_db_patent.txt"), vdb)
    write_list(os.path.join(data, "train_patent_val.txt"), vq + vdb)
    return trn, vq, vdb


def test_deeppatent_counts_ids_and_combineall(tmp_path):
    trn, vq, vdb = make_deeppatent(str(tmp_path))
    cfg = get_cfg()
    ds = DeepPatent(root=str(tmp_path), cfg=cfg)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (len(trn), len(vq), len(vdb)) == (9, 3, 4)
    assert {pid for _, pid, _ in ds.train} == {"DeepPatent_1", "DeepPatent_2", "DeepPatent_3"}
    assert [pid for _, pid, _ in ds.query] == [1, 2, 2] and all(cam == 0 for _, _, cam in ds.train)
    assert all(os.path.isfile(p) for p, _, _ in ds.train + ds.query + ds.gallery)
    first = os.path.join(str(tmp_path), "train_data", trn[0].split()[0])
    assert ds.train[0][0] == os.path.normpath(first)

    cfg.DATASETS.COMBINEALL = True
    combined = DeepPatent(root=str(tmp_path), cfg=cfg)
    assert len(combined.train) == 9 + 7
    # val label 1 and 2 are shifted past the 3 train labels: 5 distinct identities, no collision
    assert {pid for _, pid, _ in combined.train} == {f"DeepPatent_{i}" for i in range(1, 6)}


def test_deeppatent_test_set_both_locations(tmp_path):
    for base in (tmp_path / "a" / "test_data" / "codalab_test_set", tmp_path / "b" / "codalab_test_set"):
        for i in range(2):
            write_png(str(base / "queries" / f"q{i}.png"))
        for i in range(3):
            write_png(str(base / "database" / f"d{i}.png"))
        write_list(str(base / "lists" / "test_queries.txt"), ["queries/q0.png", "queries/q1.png"])
        write_list(str(base / "lists" / "test_database.txt"), [f"database/d{i}.png" for i in range(3)])
    for sub in ("a", "b"):
        ds = DeepPatentTest(root=str(tmp_path / sub))
        assert ds.labeled is False and ds.train == []
        assert len(ds.query) == 2 and len(ds.gallery) == 3
        assert all(pid == -1 for _, pid, _ in ds.query + ds.gallery)
        assert all(os.path.isfile(p) for p, _, _ in ds.query + ds.gallery)
    with pytest.raises(FileNotFoundError, match="codalab_test_set"):
        DeepPatentTest(root=str(tmp_path / "missing"))


def test_lists_relative_to_patent_data_and_bare_test_names(tmp_path):
    trn, vq, vdb = make_deeppatent(str(tmp_path))
    data = tmp_path / "train_data"
    for name in ("train_patent_trn.txt", "val_query_patent.txt", "val_db_patent.txt"):
        lines = (data / name).read_text().splitlines()
        write_list(str(data / name), [x[len("patent_data/"):] for x in lines])
    ds = DeepPatent(root=str(tmp_path))
    assert len(ds.train) == len(trn) and all(os.path.isfile(p) for p, _, _ in ds.train + ds.query + ds.gallery)

    base = tmp_path / "codalab_test_set"
    write_png(str(base / "queries" / "q0.png"))
    write_png(str(base / "database" / "d0.png"))
    write_list(str(base / "lists" / "test_queries.txt"), ["q0.png"])
    write_list(str(base / "lists" / "test_database.txt"), ["d0.png"])
    test = DeepPatentTest(root=str(tmp_path))
    assert test.query[0][0] == str(base / "queries" / "q0.png")
    assert test.gallery[0][0] == str(base / "database" / "d0.png")


def test_image_folder_seeded_split(tmp_path):
    counts = [1, 2, 3, 4, 5, 2, 3, 6, 1, 4]
    for i, n in enumerate(counts):
        for k in range(n):
            write_png(str(tmp_path / "ids" / f"id{i:02d}" / f"{k}.png"))
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM.FOLDER = "ids"
    cfg.DATASETS.CUSTOM.TEST_FRACTION = 0.4
    ds = ImageFolderRetrieval(root=str(tmp_path), cfg=cfg)
    train_ids = {pid for _, pid, _ in ds.train}
    test_ids = {p.split(os.sep)[-2] for p, _, _ in ds.query + ds.gallery}
    assert len(train_ids) == 6 and len(test_ids) == 4
    assert not {t.replace("ImageFolderRetrieval_", "") for t in train_ids} & test_ids
    assert len(ds.train) + len(ds.query) + len(ds.gallery) == sum(counts)
    for name in test_ids:
        n = counts[int(name[2:])]
        q = [p for p, _, _ in ds.query if os.sep + name + os.sep in p]
        g = [p for p, _, _ in ds.gallery if os.sep + name + os.sep in p]
        assert len(q) == query_count(n) and len(g) == n - len(q) >= 1
    again = ImageFolderRetrieval(root=str(tmp_path), cfg=cfg)
    assert (again.train, again.query, again.gallery) == (ds.train, ds.query, ds.gallery)


def test_image_folder_explicit_subfolders_and_list_files(tmp_path):
    for split, ids in (("train", ["a", "b"]), ("query", ["c", "d"]), ("gallery", ["c", "d", "e"])):
        for name in ids:
            write_png(str(tmp_path / "f" / split / name / "0.png"))
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM.FOLDER = str(tmp_path / "f")
    ds = ImageFolderRetrieval(root="unused", cfg=cfg)
    assert sorted(pid for _, pid, _ in ds.train) == ["ImageFolderRetrieval_a", "ImageFolderRetrieval_b"]
    assert [pid for _, pid, _ in ds.query] == [0, 1] and [pid for _, pid, _ in ds.gallery] == [0, 1, 2]

    for i in range(4):
        write_png(str(tmp_path / "imgs" / f"{i}.png"))
    write_list(str(tmp_path / "lists" / "train.txt"), ["0.png 7", "1.png 7 2", "2.png 8"])
    write_list(str(tmp_path / "lists" / "query.txt"), ["3.png 1"])
    write_list(str(tmp_path / "lists" / "gallery.txt"), ["0.png 1", "1.png 2"])
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM.TRAIN_LIST = "lists/train.txt"
    cfg.DATASETS.CUSTOM.QUERY_LIST = "lists/query.txt"
    cfg.DATASETS.CUSTOM.GALLERY_LIST = "lists/gallery.txt"
    cfg.DATASETS.CUSTOM.IMAGE_ROOT = "imgs"
    ds = ListFileDataset(root=str(tmp_path), cfg=cfg)
    assert [(os.path.basename(p), pid, cam) for p, pid, cam in ds.train] == [
        ("0.png", "ListFileDataset_7", 0), ("1.png", "ListFileDataset_7", 2), ("2.png", "ListFileDataset_8", 0)]
    lists = tmp_path / "lists"
    assert ds.origins[ds.train[1][0]] == f"{lists / 'train.txt'}:2, {lists / 'gallery.txt'}:2"
    cfg.DATASETS.COMBINEALL = True
    combined = ListFileDataset(root=str(tmp_path), cfg=cfg)
    assert len({pid for _, pid, _ in combined.train}) == 4  # 7, 8 and test ids 1, 2 kept apart


def test_root_from_config_env_and_default(tmp_path, monkeypatch):
    cfg = get_cfg()
    monkeypatch.delenv("FASTREID_DATASETS", raising=False)
    assert datasets_root(cfg) == "datasets"
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    assert datasets_root(cfg) == str(tmp_path)
    cfg.DATASETS.ROOT = "/elsewhere"
    assert datasets_root(cfg) == "/elsewhere"


def test_malformed_list_lines_name_file_and_line(tmp_path):
    make_deeppatent(str(tmp_path))
    trn = tmp_path / "train_data" / "train_patent_trn.txt"
    lines = trn.read_text().splitlines()
    write_list(str(trn), lines[:2] + ["patent_data/x.png"] + lines[2:])
    with pytest.raises(ListFormatError, match=r"train_patent_trn\.txt:3: expected .*'patent_data/x\.png'"):
        DeepPatent(root=str(tmp_path))
    write_list(str(trn), lines[:4] + ["patent_data/x.png one"])
    with pytest.raises(ListFormatError, match=r"train_patent_trn\.txt:5: label .* integers"):
        DeepPatent(root=str(tmp_path))


def test_missing_and_unreadable_images_name_the_list_line(tmp_path):
    trn, _, _ = make_deeppatent(str(tmp_path))
    data = tmp_path / "train_data"
    os.remove(data / trn[1].split()[0])
    (data / trn[3].split()[0]).write_bytes(b"not a png")
    ds = DeepPatent(root=str(tmp_path))
    common = CommDataset(ds.train, origins=ds.origins)
    with pytest.raises(ImageReadError, match=r"Image not found: .*D00002\.png \(listed at .*train_patent_trn\.txt:2\)"):
        common[1]
    bad = r"Cannot read image .*D00001\.png \(listed at .*train_patent_trn\.txt:4\)"
    with pytest.raises(ImageReadError, match=bad):
        common[3]


def test_skip_unreadable_counts_and_keeps_index_consistent(tmp_path, caplog):
    trn, _, _ = make_deeppatent(str(tmp_path))
    data = tmp_path / "train_data"
    os.remove(data / trn[1].split()[0])
    (data / trn[3].split()[0]).write_bytes(b"not a png")
    cfg = get_cfg()
    cfg.DATASETS.SKIP_UNREADABLE = True
    with caplog.at_level(logging.WARNING, logger="fastreid.data.datasets.bases"):
        ds = DeepPatent(root=str(tmp_path), cfg=cfg)
    assert len(ds.train) == 7
    assert "skipped 2 unreadable or missing images of 9" in caplog.text
    common = CommDataset(ds.train, origins=ds.origins)
    assert all(common[i]["images"].size == (12, 10) for i in range(len(common)))


def test_empty_split_is_an_error_naming_dataset_and_split(tmp_path):
    make_deeppatent(str(tmp_path))
    write_list(str(tmp_path / "train_data" / "train_patent_trn.txt"), [])
    write_list(str(tmp_path / "train_data" / "val_query_patent.txt"), [])
    cfg = get_cfg()
    cfg.DATASETS.ROOT = str(tmp_path)
    with pytest.raises(ValueError, match="Dataset DeepPatent .*: the train split is empty"):
        build_reid_train_loader(cfg)
    with pytest.raises(ValueError, match="Dataset DeepPatent .*: the query split is empty"):
        build_reid_test_loader(cfg, "DeepPatent")
