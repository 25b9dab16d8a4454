"""Indexes that scale: the IVF structure built shard by shard (and by two processes merging their parts) equals
the one built over all features in memory; an opened index is memory-mapped and answers without building the
in-memory database, as the evaluator's pipeline answers; --index-type auto's choice. Real faiss, real files."""
import os

import faiss
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastreid.evaluation.pipeline import RetrievalOptions, post_process, rank
from fastreid.evaluation.search import FaissIndex, auto_nlist, auto_structure, normalize
from fastreid.retrieval import BuildOptions, Index, store
from fastreid.retrieval.build import finalize_build
from fastreid.retrieval.structure import StoredFeatures, build_structure

DIM, COUNT, SHARD = 32, 1200, 100


def _features(count=COUNT, seed=0):
    """Groups of 4 around random centres (so neighbours mean something), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count // 4, DIM)).astype(np.float32)
    return centres[np.arange(count) // 4] + 0.5 * rng.standard_normal((count, DIM)).astype(np.float32)


def _write_shards(root, feats, dtype):
    for i, s in enumerate(range(0, len(feats), SHARD)):
        rows = feats[s:s + SHARD].astype(dtype)
        store.write_shard(str(root), i, rows, [f"{s + j}.png" for j in range(len(rows))], [""] * len(rows))
    return -(-len(feats) // SHARD)


def _folder(root, feats, dtype="float16", **retrieval):
    """An index folder over ``feats`` built by the index's own build code (no model: features given)."""
    os.makedirs(root / store.SHARD_DIR)
    num = _write_shards(root, feats, dtype)
    options = BuildOptions(dtype=dtype, shard_size=SHARD, train_size=600,
                           retrieval=RetrievalOptions(**{"nlist": 8, "nprobe": 2, "pq_m": 4, **retrieval}))
    finalize_build(str(root), options, num, {"test": True}, {"kind": "none"})
    return Index.open(str(root), load_extractor=False)


def _in_memory(feats, dtype, kind):
    """The structure as the index built it before: all features normalised in memory, one FaissIndex."""
    stored = torch.from_numpy(feats.astype(dtype).astype(np.float32))
    return FaissIndex(normalize(stored), "cosine", kind, nlist=8, nprobe=2, use_gpu=False, pq_m=4, train_size=600)


@pytest.mark.parametrize("kind,dtype", [("ivf", "float16"), ("ivf-pq", "float32")])
def test_shard_by_shard_build_equals_the_in_memory_build(tmp_path, kind, dtype):
    feats = _features()
    _folder(tmp_path / "i", feats, dtype, index=kind)
    written = open(tmp_path / "i" / store.FAISS_FILE, "rb").read()
    assert written == faiss.serialize_index(_in_memory(feats, dtype, kind).index).tobytes()


def _rank_builds_its_part(rank, root, world):
    dist.init_process_group("gloo", init_method=f"file://{root}/rdzv", rank=rank, world_size=world)
    try:
        stored = StoredFeatures.of_index(root, COUNT // SHARD, dba=False)
        build_structure(root, stored, "ivf-pq", nlist=8, nprobe=2, pq_m=4, train_size=600)
    finally:
        dist.destroy_process_group()


def test_two_processes_add_their_shards_and_rank0_merges_the_same_structure(tmp_path):
    """Each process adds its own shards to the trained structure and writes a part; rank 0 appends the parts'
    inverted lists: the file equals the single-process (and the in-memory) build, and no part file is left."""
    feats = _features()
    os.makedirs(tmp_path / store.SHARD_DIR)
    _write_shards(tmp_path, feats, "float16")
    (tmp_path / "faiss.part-00002.tmp").write_bytes(b"a part left by an interrupted build with 3 processes")
    mp.spawn(_rank_builds_its_part, args=(str(tmp_path), 2), nprocs=2, join=True)
    assert set(os.listdir(tmp_path)) - {"rdzv"} == {store.SHARD_DIR, store.FAISS_FILE}  # no part file left
    written = open(tmp_path / store.FAISS_FILE, "rb").read()
    assert written == faiss.serialize_index(_in_memory(feats, "float16", "ivf-pq").index).tobytes()


def _reference(index, feats, query, options):
    """What the evaluator's pipeline answers over all features in memory (the structure read fully)."""
    gallery = torch.from_numpy(np.asarray(feats, dtype=np.float16).astype(np.float32))
    q, g = post_process(query, gallery, options, gallery_prepared=True)
    structure = None
    if options.index != "flat" and not options.changes_gallery:
        structure = FaissIndex.read(os.path.join(index.root, store.FAISS_FILE), mmap=False)
    return rank(q, g, 10, options, structure)


@pytest.mark.parametrize("retrieval", [dict(index="ivf"), dict(index="ivf-pq"), dict(index="flat"),
                                       dict(index="ivf", qe_k=3, qe_mode="query"),
                                       dict(index="flat", qe_k=2, qe_mode="query", qe_times=2)])
def test_opened_index_is_memory_mapped_and_answers_without_the_in_memory_database(tmp_path, retrieval):
    feats = _features()
    index = _folder(tmp_path / "i", feats, **retrieval)
    query = torch.from_numpy(_features(40, seed=1))
    scores, items = index.search_features(query, 10)
    assert index._prepared is None  # the N x D matrix was never built
    if retrieval["index"] != "flat":
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.structure().index).invlists)
        assert isinstance(lists, faiss.OnDiskInvertedLists)  # the lists stay in the file, mapped read-only
    else:
        assert index.manifest["faiss"]["file"] is None and not (tmp_path / "i" / store.FAISS_FILE).exists()
    ref_scores, ref_items = _reference(index, feats, query, index.options)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)


def test_ivf_pq_rescores_its_candidates_exactly_on_the_stored_features(tmp_path):
    feats = _features()
    index = _folder(tmp_path / "i", feats, index="ivf-pq", nprobe=8)
    query = torch.from_numpy(_features(40, seed=1))

    def cosine(items):
        rows = normalize(index.stored().rows(items.reshape(-1))).view(*items.shape, DIM)
        return (normalize(query)[:, None, :] * rows).sum(-1).numpy()

    assert index.options.refine == 4
    scores, items = index.search_features(query, 10)
    np.testing.assert_allclose(scores, cosine(items), atol=1e-6)
    index.options = index.options.replace(refine=0)  # the compressed scores of IVF-PQ alone
    scores, items = index.search_features(query, 10)
    assert np.abs(scores - cosine(items)).max() > 1e-3


def test_expansion_of_all_still_reads_the_whole_database(tmp_path):
    """Mode ``all`` expands the database with the queries: the one search that needs all features in memory."""
    index = _folder(tmp_path / "i", _features(), index="ivf", qe_k=2, qe_mode="all")
    index.search_features(torch.from_numpy(_features(40, seed=1)), 10)
    assert index._prepared is not None and tuple(index._prepared.shape) == (COUNT, DIM)


def test_auto_structure_by_collection_size():
    assert auto_nlist(20_000) == 512 and auto_nlist(2_700_000) == 4096 and auto_nlist(100) == 2
    assert auto_structure(50_000, 512) == ("flat", 512, 32)
    assert auto_structure(500_000, 512) == ("ivf", 2048, 128)  # 1 GiB of full vectors
    assert auto_structure(2_700_000, 512) == ("ivf-pq", 4096, 256)


def test_build_index_auto_records_the_structure_chosen_for_the_collection(tmp_path, capsys, monkeypatch):
    """tools/build_index.py --index-type auto on 12 drawings, with the exact-search limit lowered to 4 so that the
    IVF branch is taken: the manifest records ivf and the nlist chosen by size, and the index answers."""
    import retrieval_helpers as rh
    from PIL import Image
    from tool_runs import run_tool_here

    from fastreid.evaluation import search

    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "img")
    for i in range(12):
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(tmp_path / "img" / f"d{i:02d}.png")
    monkeypatch.setattr(search, "AUTO_EXACT_MAX", 4)
    weights = rh.make_checkpoint(str(tmp_path / "m.pth"), 1)
    r = run_tool_here(capsys, "tools/build_index.py", "--config-file", rh.CONFIG, *rh.OPTS, "MODEL.WEIGHTS", weights,
                      "--images", str(tmp_path / "img"), "--output", str(tmp_path / "index"), "--index-type", "auto")
    assert r.returncode == 0, r.output[-2000:]
    assert "--index-type auto: ivf (nlist 1, nprobe 1) for 12 drawings of 512-d features" in r.output
    index = Index.open(str(tmp_path / "index"))
    assert index.options.index == "ivf" and index.options.nlist == auto_nlist(12) == 1 == index.options.nprobe
    assert index.search([str(tmp_path / "img" / "d03.png")], k=1)[0][0].item == 3
