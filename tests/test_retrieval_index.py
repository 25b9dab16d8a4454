"""The search index API on real drawings: add equals a fresh build, QE/DBA equal the evaluator's,
model refusal, duplicates, patent ids, IVF and the stored format."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fastreid.data import build_reid_test_loader
from fastreid.engine import DefaultPredictor
from fastreid.engine.commands import build_eval_model
from fastreid.evaluation import ReidEvaluator, inference_on_dataset
from fastreid.retrieval import (BuildOptions, DuplicateError, FingerprintMismatch, Index, Items, TorchExtractor,
                                collect_images, patent_id)
from fastreid.retrieval.index import SearchHit
from fastreid.retrieval.patents import group_by_patent, patent_search_depth
from fastreid.evaluation.search import FaissIndex, normalize, torch_knn

import retrieval_helpers as rh
from retrieval_helpers import make_checkpoint, make_data, model_cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval_index")
    data = make_data(str(tmp / "data"), num_patents=30)
    m1 = make_checkpoint(str(tmp / "m1.pth"), seed=1)
    m2 = make_checkpoint(str(tmp / "m2.pth"), seed=2)
    queries, database = rh.split_lists(data)
    return {"tmp": tmp, "data": data, "m1": m1, "m2": m2, "queries": collect_images(queries),
            "database": collect_images(database), "extractor": TorchExtractor(model_cfg(m1))}


def _hits(index, queries, **kw):
    return [[(h.item, h.path, h.patent) for h in row] for row in index.search(queries, **kw)], \
        np.array([[h.score for h in row] for row in index.search(queries, **kw)])


def _half(items, lo, hi):
    return Items(items.paths[lo:hi], items.patents[lo:hi], items.origins)


def test_add_equals_fresh_build_with_dba(setup):
    tmp, ex, db, q = setup["tmp"], setup["extractor"], setup["database"], setup["queries"].paths
    opts = BuildOptions.from_config(ex.cfg, shard_size=5, dba=True)
    fresh = Index.build(str(tmp / "fresh"), db, ex, opts)
    half = len(db) // 2
    grown = Index.build(str(tmp / "grown"), _half(db, 0, half), ex, opts)
    assert grown.add(_half(db, half, len(db))) == len(db) - half
    again = Index.open(str(tmp / "grown"))
    assert len(again) == len(fresh) == len(db) and again.paths == fresh.paths == db.paths
    for index in (grown, again):
        items, scores = _hits(index, q, k=len(db))
        ref_items, ref_scores = _hits(fresh, q, k=len(db))
        assert items == ref_items
        np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    np.testing.assert_allclose(again.features(), fresh.features(), rtol=1e-5, atol=1e-6)
    # Shards stay as they were: the first build's are not rewritten, the added ones follow.
    assert [s["count"] for s in again.manifest["shards"]] == [5] * (half // 5) + [half % 5] * (half % 5 > 0) + \
        [5] * ((len(db) - half) // 5) + [(len(db) - half) % 5] * ((len(db) - half) % 5 > 0)


def test_search_with_qe_and_dba_equals_evaluator_result(setup, tmp_path):
    """index.search(qe=True) over a DBA index gives the evaluator's result.npy (DBA + query-only AQE)."""
    ex = setup["extractor"]
    cfg = ex.cfg.clone()
    cfg.defrost()
    cfg.DATASETS.ROOT = setup["data"]
    cfg.TEST.DBA.ENABLED, cfg.TEST.AQE.ENABLED, cfg.TEST.AQE.MODE = True, True, "query"
    cfg.TEST.SEARCH.BACKEND = "faiss"
    cfg.TEST.RESULT_PATH = str(tmp_path / "result.npy")
    cfg.freeze()
    loader, num_query = build_reid_test_loader(cfg, "DeepPatentTest")
    # The one preprocessing function gives the test loader's tensors, for paths and for opened images alike.
    item = loader.dataset[0]
    assert torch.equal(ex.preprocess(item["img_paths"]), item["images"])
    with Image.open(item["img_paths"]) as im:
        assert torch.equal(ex.preprocess(im), item["images"])
    inference_on_dataset(build_eval_model(cfg), loader, ReidEvaluator(cfg, num_query, str(tmp_path), labeled=False))
    expected = np.load(cfg.TEST.RESULT_PATH)
    index = Index.build(str(tmp_path / "index"), setup["database"], ex, BuildOptions.from_config(cfg))
    got = [[h.item for h in row] for row in index.search(setup["queries"].paths, k=cfg.TEST.TOPK, qe=True)]
    np.testing.assert_array_equal(np.array(got), expected)
    plain = [[h.item for h in row] for row in index.search(setup["queries"].paths, k=cfg.TEST.TOPK, qe=False)]
    assert plain != got  # QE changes the answers here, so the equality above is not vacuous


def test_other_checkpoint_or_changed_file_is_refused(setup, tmp_path):
    index_dir = str(tmp_path / "index")
    weights = str(tmp_path / "m.pth")
    shutil.copy(setup["m1"], weights)
    Index.build(index_dir, setup["database"], TorchExtractor(model_cfg(weights)), BuildOptions(shard_size=8))
    other = TorchExtractor(model_cfg(setup["m2"]))
    with pytest.raises(FingerprintMismatch, match=r"checkpoint \(MODEL.WEIGHTS\)"):
        Index.open(index_dir, extractor=other)
    bigger = model_cfg(setup["m1"])
    bigger.merge_from_list(["INPUT.SIZE_TEST", "[48, 48]"])
    with pytest.raises(FingerprintMismatch, match="preprocessing"):
        Index.open(index_dir, extractor=TorchExtractor(bigger))
    # Same weights under another file name are the same model.
    assert len(Index.open(index_dir, extractor=setup["extractor"])) == len(setup["database"])
    shutil.copy(setup["m2"], weights)  # the recorded checkpoint file was overwritten after the build
    with pytest.raises(FingerprintMismatch):
        Index.open(index_dir)


def test_duplicates_are_refused_or_skipped_with_a_count(setup, tmp_path, caplog):
    db = setup["database"]
    doubled = Items(db.paths + db.paths[:3], db.patents + db.patents[:3], db.origins)
    with pytest.raises(DuplicateError, match=os.path.basename(db.paths[0])):
        Index.build(str(tmp_path / "a"), doubled, setup["extractor"], BuildOptions())
    index = Index.build(str(tmp_path / "b"), doubled, setup["extractor"], BuildOptions(), skip_duplicates=True)
    assert index.paths == db.paths
    assert "Skipped 3 duplicate drawings" in caplog.text
    with pytest.raises(DuplicateError):
        index.add(_half(db, 0, 2))
    assert index.add(_half(db, 0, 2), skip_duplicates=True) == 0


def test_format_predictor_embed_and_patents(setup, tmp_path):
    ex, db = setup["extractor"], setup["database"]
    index = Index.build(str(tmp_path / "i"), db, ex, BuildOptions(dtype="float16", shard_size=7))
    manifest = json.load(open(tmp_path / "i" / "manifest.json"))
    assert manifest["count"] == len(db) and manifest["dim"] == 512 and manifest["dtype"] == "float16"
    assert manifest["fingerprint"]["preprocessing"]["size_test"] == [32, 32]
    shard = np.load(tmp_path / "i" / manifest["shards"][0]["features"], mmap_mode="r")
    assert isinstance(shard, np.memmap) and shard.dtype == np.float16 and shard.shape == (7, 512)
    # Stored features are DefaultPredictor's (fast-reid's call convention) on the same files.
    predictor = DefaultPredictor(ex.cfg)
    ref = predictor(db.paths)
    np.testing.assert_allclose(index.features(), ref.half().float(), atol=0)
    emb = index.embed(db.paths[:2])
    np.testing.assert_allclose(emb, torch.nn.functional.normalize(ref[:2]), atol=1e-6)
    hits = index.search(emb, k=3)  # feature queries: each drawing finds itself first
    assert [row[0].item for row in hits] == [0, 1] and hits[0][0].rank == 1
    # The challenge's anonymised database has no known patent: none, not the folder's name ("database").
    assert set(index.patents) == {""}
    assert os.path.isfile(index.file(0)) and os.path.isabs(index.file(0))
    assert os.path.normpath(os.path.join(index.root, index.relative_path(0))) == index.file(0)
    for unknown in ("no such patent", ""):
        with pytest.raises(KeyError):
            index.items_of_patent(unknown)
    assert patent_id("x/USD0810412-20180220-D00005.png") == "USD0810412"
    assert patent_id("a/b/folder7/001.png") == ""
    assert patent_id("x/USD0810412-20180220-D00005.png", listed="17") == "USD0810412"
    assert patent_id("queries/000003.png", listed="17") == "17"


def test_ivf_pq_search_and_nprobe():
    """Visiting every list, IVF is exact and IVF-PQ close; the structure is the one the index builds."""
    rng = np.random.default_rng(0)
    feats = torch.from_numpy(rng.standard_normal((3000, 32)).astype(np.float32))
    normed = normalize(feats)
    exact = torch_knn(normed[:50], normed, 10)[1]
    for kind in ("ivf", "ivf-pq"):
        ann = FaissIndex(normed, "cosine", kind, nlist=32, nprobe=32, use_gpu=False, pq_m=8)
        got = ann.search(normed[:50], 10)[1]
        recall = (got[:, :, None] == exact[:, None, :]).any(1).float().mean().item()
        assert recall > (0.99 if kind == "ivf" else 0.3), (kind, recall)
        ann.nprobe = 1
        assert ann.nprobe == 1


def test_unfinished_build_resumes_only_with_the_same_plan(setup, tmp_path):
    """A missing drawing stops a build after its first shard; other options into that folder are refused
    (--restart discards), and the list without the bad line finishes it (the finished shard is kept)."""
    from fastreid.data import ImageReadError

    db, ex = setup["database"], setup["extractor"]
    broken = Items(db.paths[:4] + [str(tmp_path / "missing.png")], db.patents[:5], db.origins)
    with pytest.raises(ImageReadError, match="missing.png"):
        Index.build(str(tmp_path / "i"), broken, ex, BuildOptions(shard_size=4, batch_size=4))
    assert (tmp_path / "i" / "shards" / "00000.npy").is_file() and not (tmp_path / "i" / "manifest.json").exists()
    with pytest.raises(ValueError, match=r"with other options .* --restart"):
        Index.build(str(tmp_path / "i"), broken, ex, BuildOptions(shard_size=4, batch_size=4, dtype="float16"))
    stamp = (tmp_path / "i" / "shards" / "00000.npy").stat().st_mtime_ns
    index = Index.build(str(tmp_path / "i"), _half(db, 0, 5), ex, BuildOptions(shard_size=4, batch_size=4))
    assert len(index) == 5 and (tmp_path / "i" / "shards" / "00000.npy").stat().st_mtime_ns == stamp


def _hit(rank, item, patent, score):
    return SearchHit(rank, item, f"{item}.png", patent, score)


def test_group_by_patent_ranks_each_patent_once_by_its_best_drawing():
    """Hand-made ranking: A twice, an unknown drawing, B, A again, C; unknown drawings stand alone."""
    hits = [_hit(1, 10, "A", 0.9), _hit(2, 11, "", 0.8), _hit(3, 12, "B", 0.7), _hit(4, 13, "A", 0.6),
            _hit(5, 14, "", 0.5), _hit(6, 15, "C", 0.4)]
    groups = group_by_patent(hits, 3)
    assert [(g.rank, g.patent, g.score) for g in groups] == [(1, "A", 0.9), (2, "", 0.8), (3, "B", 0.7)]
    assert [h.item for h in groups[0].drawings] == [10, 13]  # A's drawings together, best first
    assert [len(g.drawings) for g in group_by_patent(hits, 10)] == [2, 1, 1, 1, 1]
    assert group_by_patent([], 5) == [] and group_by_patent(hits, 0) == []
    assert patent_search_depth(["A", "A", "A", "B", "", ""], 2) == 6 and patent_search_depth(["", ""], 1) == 1
    assert patent_search_depth(["A", "B"], 5) == 2


def test_search_by_patent_equals_grouping_a_full_ranking(setup, tmp_path):
    """On an index with real patent ids (DeepPatent names), the top patents from the bounded depth are those
    of the complete ranking, in its order and with its best scores."""
    items = collect_images(os.path.join(setup["data"], "train_data", "patent_data"))
    index = Index.build(str(tmp_path / "i"), items, setup["extractor"], BuildOptions(shard_size=50))
    assert "" not in index.patents and len(set(index.patents)) < len(index)
    query = setup["queries"].paths[:3]
    deep = index.search(query, k=patent_search_depth(index.patents, 5))
    full = index.search(query, k=len(index))
    for short, long in zip(deep, full):
        got, want = group_by_patent(short, 5), group_by_patent(long, 5)
        assert [(g.patent, g.score) for g in got] == [(g.patent, g.score) for g in want]
        assert len({g.patent for g in got}) == 5
        for g, w in zip(got, want):  # the drawings found within the depth, in the full ranking's order
            assert [h.item for h in g.drawings] == [h.item for h in w.drawings][:len(g.drawings)]
