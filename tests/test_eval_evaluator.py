"""ReidEvaluator end to end: metrics, result.npy, flip TTA, visualisation, and 2 gloo processes vs 1."""
import contextlib
import json
import logging
import os
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fastreid.config import get_cfg
from fastreid.evaluation import (DatasetEvaluator, ReidEvaluator, aqe_queries_only, dba, inference_on_dataset,
                                 metrics_table, normalize, per_query_metrics, print_csv_format, rank_positives_chunked,
                                 summarize)

NQ, NG, DIM = 12, 40, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, DIM))
    pids = np.concatenate([np.arange(NQ) % 6, rng.integers(0, 6, NG)])
    feats = centres[pids] + 0.9 * rng.normal(size=(NQ + NG, DIM))
    return torch.from_numpy(feats.astype(np.float32)), pids


def _cfg(tmp, **test):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp)
    cfg.TEST.SEARCH.BACKEND = "torch"
    for key, value in test.items():
        node, name = cfg.TEST, key
        while "__" in name:
            head, name = name.split("__", 1)
            node = getattr(node, head)
        setattr(node, name, value)
    return cfg


def _feed(evaluator, feats, pids, start=0, stop=None, batch=5, paths=None):
    stop = len(feats) if stop is None else stop
    for s in range(start, stop, batch):
        e = min(stop, s + batch)
        evaluator.process({"targets": torch.as_tensor(pids[s:e]), "camids": torch.zeros(e - s, dtype=torch.long),
                           "img_paths": (paths or [f"img{i}.png" for i in range(len(feats))])[s:e]}, feats[s:e])


@contextlib.contextmanager
def _captured(caplog, name):
    """Attach caplog's handler to ``name`` itself: the project logger may not propagate to root."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)


def _dense_metrics(q, g, q_pids, g_pids):
    sims = F.normalize(q, dim=1) @ F.normalize(g, dim=1).t()
    aps, ap10, first, inp = [], [], [], []
    for i in range(len(q)):
        order = torch.argsort(1 - sims[i], stable=True).numpy()
        ranks = np.flatnonzero(g_pids[order] == q_pids[i]) + 1
        prec = np.arange(1, len(ranks) + 1) / ranks
        aps.append(prec.mean())
        ap10.append(prec[ranks <= 10].sum() / min(10, len(ranks)))
        first.append(ranks[0])
        inp.append(len(ranks) / ranks[-1])
    first = np.array(first)
    return {"mAP": 100 * np.mean(aps), "mAP@10": 100 * np.mean(ap10), "Rank-1": 100 * np.mean(first <= 1),
            "Rank-5": 100 * np.mean(first <= 5), "Rank-10": 100 * np.mean(first <= 10), "mINP": 100 * np.mean(inp)}


def test_labeled_metrics_match_dense_computation(tmp_path, caplog):
    feats, pids = _data()
    ev = ReidEvaluator(_cfg(tmp_path), NQ, labeled=True)
    _feed(ev, feats, pids)
    res = ev.evaluate()
    expected = _dense_metrics(feats[:NQ], feats[NQ:], pids[:NQ], pids[NQ:])
    assert list(res) == ["mAP", "mAP@10", "Rank-1", "Rank-5", "Rank-10", "mINP", "metric"]
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, rel=1e-6)
    assert res["metric"] == pytest.approx((res["mAP"] + res["Rank-1"]) / 2)
    table = metrics_table(res)
    assert "mAP@10" in table and f"{res['mAP']:.2f}" in table
    with _captured(caplog, "fastreid.evaluation.testing"):
        print_csv_format(res)
    assert "Rank-1" in caplog.text


def test_unlabeled_set_writes_reference_result_npy(tmp_path):
    feats, _ = _data(1)
    cfg = _cfg(tmp_path, AQE__ENABLED=True, AQE__QE_K=5, AQE__ALPHA=2.0, AQE__MODE="all")
    ev = ReidEvaluator(cfg, NQ, labeled=False)
    _feed(ev, feats, np.full(NQ + NG, -1))
    assert ev.evaluate() == {}
    result = np.load(tmp_path / "result.npy")
    assert result.dtype == np.int64 and result.shape == (NQ, 10)
    # The reference: per-row alpha-QE over all rows, cosine distance, ascending stable sort, first 10.
    all_f = feats.numpy()
    normed = F.normalize(feats, dim=1).numpy()
    expanded = []
    for row in normed @ normed.T:
        top = np.argsort(-row, kind="stable")[:5]
        expanded.append(np.mean(all_f[top] * np.power(row[top], 2.0)[:, None], axis=0))
    expanded = F.normalize(torch.from_numpy(np.stack(expanded)), dim=1)
    dist = 1 - expanded[:NQ] @ expanded[NQ:].t()
    np.testing.assert_array_equal(result, torch.argsort(dist, dim=1, stable=True)[:, :10].numpy())
    cfg.TEST.RESULT_PATH = str(tmp_path / "sub" / "custom.npy")
    ev = ReidEvaluator(cfg, NQ, labeled=False)
    _feed(ev, feats, np.full(NQ + NG, -1))
    ev.evaluate()
    np.testing.assert_array_equal(np.load(cfg.TEST.RESULT_PATH), result)
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]


class _MirrorSensitive(nn.Module):
    """Features = linear map of the flattened image: a horizontal flip changes them."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 6, DIM)

    def forward(self, batch):
        assert not torch.is_grad_enabled() and not self.training
        return self.proj(batch["images"].flatten(1))


class _Recorder(DatasetEvaluator):
    def __init__(self):
        self.outputs = []

    def process(self, inputs, outputs):
        self.outputs.append(outputs)

    def evaluate(self):
        return {"batches": float(len(self.outputs))}


def test_flip_tta_averages_image_and_mirror_and_restores_training_mode():
    torch.manual_seed(0)
    model = _MirrorSensitive().train()
    images = torch.rand(7, 3, 4, 6) * 255
    loader = [{"images": images[:4]}, {"images": images[4:]}]
    rec = _Recorder()
    assert inference_on_dataset(model, loader, rec, flip_test=True) == {"batches": 2.0}
    assert model.training
    with torch.no_grad():
        plain = model.proj(images.flatten(1))
        mirrored = model.proj(images.flip(3).flatten(1))
    got = torch.cat(rec.outputs)
    torch.testing.assert_close(got, (plain + mirrored) / 2, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(plain, mirrored)
    rec = _Recorder()
    inference_on_dataset(model, loader, rec, flip_test=False, amp_dtype="bfloat16")
    torch.testing.assert_close(torch.cat(rec.outputs), plain, atol=0.5, rtol=0.05)


class _LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("a", "img"):
            self.links.append(attrs.get("href") or attrs.get("src"))


def test_visualisation_writes_valid_pngs_and_html(tmp_path):
    feats, pids = _data(2)
    paths = []
    for i in range(NQ + NG):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("L", (20 + i % 5, 30), color=int(pids[i]) * 40).save(path)
        paths.append(str(path))
    cfg = _cfg(tmp_path / "out", VIS__ENABLED=True, VIS__NUM_QUERIES=3, TOPK=5, FEAT_DTYPE="float16")
    ev = ReidEvaluator(cfg, NQ)
    _feed(ev, feats, pids, paths=paths)
    assert ev.evaluate()["mAP"] > 0
    vis = tmp_path / "out" / "vis"
    parser = _LinkCollector()
    parser.feed((vis / "index.html").read_text())
    pngs = sorted(set(parser.links))
    assert len(pngs) == 3
    for name in pngs:
        with Image.open(vis / name) as im:
            im.verify()
        with Image.open(vis / name) as im:
            assert im.format == "PNG" and im.width > 6 * 128


def _ddp_worker(rank, tmp, bounds):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=2)
    try:
        feats, pids = _data(3)
        cfg = _cfg(os.path.join(tmp, "ddp"), AQE__ENABLED=True, RERANK__ENABLED=True, RERANK__K1=6, RERANK__K2=3)
        for labeled in (True, False):
            ev = ReidEvaluator(cfg, NQ, labeled=labeled)
            _feed(ev, feats, pids if labeled else np.full(NQ + NG, -1), bounds[rank], bounds[rank + 1], batch=4)
            res = ev.evaluate()
            if rank == 0:
                with open(os.path.join(tmp, f"rank0_{labeled}.json"), "w") as f:
                    json.dump(res, f)
            else:
                assert res == {}
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(tmp_path):
    bounds = [0, 23, NQ + NG]  # uneven contiguous shards, the first ending inside the gallery
    mp.spawn(_ddp_worker, args=(str(tmp_path), bounds), nprocs=2, join=True)
    feats, pids = _data(3)
    cfg = _cfg(tmp_path / "single", AQE__ENABLED=True, RERANK__ENABLED=True, RERANK__K1=6, RERANK__K2=3)
    for labeled in (True, False):
        ev = ReidEvaluator(cfg, NQ, labeled=labeled)
        _feed(ev, feats, pids if labeled else np.full(NQ + NG, -1))
        single = ev.evaluate()
        with open(tmp_path / f"rank0_{labeled}.json") as f:
            assert json.load(f) == pytest.approx(single)
        assert (single["mAP"] > 0) if labeled else single == {}
    np.testing.assert_array_equal(np.load(tmp_path / "ddp" / "result.npy"),
                                  np.load(tmp_path / "single" / "result.npy"))


def test_dba_and_query_only_qe_wiring_and_ivf_submission(tmp_path, caplog):
    feats, pids = _data(4)
    cfg = _cfg(tmp_path, DBA__ENABLED=True, DBA__K=3, AQE__ENABLED=True, AQE__MODE="query", AQE__QE_K=4)
    ev = ReidEvaluator(cfg, NQ)
    _feed(ev, feats, pids)
    res = ev.evaluate()
    g = dba(feats[NQ:], 3, cfg.TEST.DBA.ALPHA)
    q = aqe_queries_only(feats[:NQ], g, 1, 4, cfg.TEST.AQE.ALPHA)
    ranked = rank_positives_chunked(normalize(q), normalize(g), pids[:NQ], pids[NQ:])
    assert res["mAP"] == pytest.approx(summarize(per_query_metrics(ranked["ranks"], ranked["num_pos"]))["mAP"])
    cfg = _cfg(tmp_path, SEARCH__BACKEND="faiss", SEARCH__INDEX="ivf", SEARCH__NLIST=4, SEARCH__NPROBE=4)
    ev = ReidEvaluator(cfg, NQ, labeled=False)
    _feed(ev, feats, np.full(NQ + NG, -1))
    with _captured(caplog, "fastreid.evaluation"):
        assert ev.evaluate() == {}
    assert "recall@10 against exact search" in caplog.text and "result.npy" in caplog.text
    sims = F.normalize(feats[:NQ], dim=1) @ F.normalize(feats[NQ:], dim=1).t()
    expected = torch.argsort(sims, dim=1, descending=True, stable=True)[:, :10].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "result.npy"), expected)  # a single list: exact
