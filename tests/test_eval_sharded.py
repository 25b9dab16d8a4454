"""Evaluation over a gallery split across processes: the pure merge functions on hand-computed numbers,
and 3 gloo processes, each holding only its gallery part, against one process (metrics, result.npy)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from fastreid.evaluation import ReidEvaluator, positive_ranks
from fastreid.evaluation.metrics import items_above
from fastreid.evaluation.search import merge_topk

from test_eval_evaluator import _cfg as evaluator_cfg

NQ, NG, DIM = 12, 40, 8
WORLD = 3
# Where each rank's rows start: rank 0's end inside the gallery / before the queries end / exactly after
# them (an empty gallery part).
LAYOUTS = {"mid_gallery": [0, 30, 41, NQ + NG], "in_queries": [0, 10, 30, NQ + NG], "queries_only": [0, NQ, 20, NQ + NG]}
CASES = {
    "plain": dict(),
    "cameras_vis": dict(VIS__ENABLED=True, VIS__NUM_QUERIES=2),
    "dba_qe_all": dict(DBA__ENABLED=True, DBA__K=3, AQE__ENABLED=True, AQE__QE_K=3, AQE__QE_TIME=2),
    "qe_query": dict(AQE__ENABLED=True, AQE__MODE="query", AQE__QE_K=4, AQE__ALPHA=2.0),
    "euclidean": dict(METRIC="euclidean"),
    # Each part searched through its own faiss IVF structure, every list probed (so exact): merged as exact lists.
    "ivf_all_lists": dict(SEARCH__BACKEND="faiss", SEARCH__INDEX="ivf", SEARCH__NLIST=2, SEARCH__NPROBE=2),
}


def test_merge_topk_by_hand():
    # Two parts' lists with global indices; 0.9 ties across parts and goes to the lower index.
    a = (torch.tensor([[0.9, 0.5]]), torch.tensor([[3, 1]]))
    b = (torch.tensor([[0.9, 0.7]]), torch.tensor([[0, 5]]))
    scores, idx = merge_topk([a, b], 3)
    assert idx.tolist() == [[0, 3, 5]]
    assert scores[0].tolist() == pytest.approx([0.9, 0.9, 0.7])
    # A missing result (-1, as faiss pads) sorts last whatever its score.
    scores, idx = merge_topk([(torch.tensor([[2.0, 0.1]]), torch.tensor([[-1, 4]]))], 2)
    assert idx.tolist() == [[4, -1]]


def test_items_above_by_hand_and_summed_over_parts_is_the_rank():
    # One part holds gallery items 4, 5, 6 with scores 0.8, 0.5, 0.8.
    scores = torch.tensor([[0.8, 0.5, 0.8]])
    pos_idx = torch.tensor([[5, 2, -1]])  # item 5 is here; item 2 is in another part (score 0.6)
    pos_scores = torch.tensor([[0.5, 0.6, 0.0]])
    above = items_above(scores, pos_scores, pos_idx, torch.tensor([4, 5, 6]))
    assert above.tolist() == [[2, 2, 0]]  # 0.8 twice above each; padding 0
    # A positive tied with a lower-index item: item 6 at 0.8 has item 4 (0.8) above it, not itself.
    above = items_above(scores, torch.tensor([[0.8]]), torch.tensor([[6]]), torch.tensor([4, 5, 6]))
    assert above.tolist() == [[1]]
    # Over random parts with ties, 1 + the summed counts equals the rank in the whole gallery.
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(0, 5, (4, 30), generator=gen).float()  # many exact ties
    pos = torch.stack([torch.randperm(30, generator=gen)[:3] for _ in range(4)])
    pos[0, 2] = -1
    whole = positive_ranks(full, pos)
    pos_scores = full.gather(1, pos.clamp(min=0))
    summed = sum(items_above(full[:, lo:hi], pos_scores, pos, torch.arange(lo, hi)) for lo, hi in ((0, 7), (7, 30)))
    assert torch.equal(torch.where(pos >= 0, 1 + summed, torch.zeros_like(summed)), whole)


def _data():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, DIM))
    pids = np.concatenate([np.arange(NQ) % 6, rng.integers(0, 6, NG)])
    feats = (centres[pids] + 0.9 * rng.normal(size=(NQ + NG, DIM))).astype(np.float32)
    feats[NQ + 35] = feats[NQ + 3]  # identical gallery items in different parts: exact ties across ranks
    pids[NQ + 35] = pids[NQ + 3]
    camids = rng.integers(0, 2, NQ + NG)
    return torch.from_numpy(feats), pids, camids


def _cfg(out, case):
    return evaluator_cfg(out, **CASES[case])


def _evaluate(cfg, labeled, paths, start=0, stop=NQ + NG, cameras=False):
    feats, pids, camids = _data()
    camids = camids if cameras else np.zeros_like(camids)
    ev = ReidEvaluator(cfg, NQ, labeled=labeled)
    for s in range(start, stop, 5):
        e = min(stop, s + 5)
        ev.process({"targets": torch.as_tensor(pids[s:e] if labeled else np.full(e - s, -1)),
                    "camids": torch.as_tensor(camids[s:e]), "img_paths": paths[s:e]}, feats[s:e])
    return ev.evaluate(), ev.gallery_rows_held


def _worker(rank, tmp, paths):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=WORLD)
    try:
        held = {}
        for layout, bounds in LAYOUTS.items():
            for case in CASES:
                for labeled in (True, False):
                    out = os.path.join(tmp, "ddp", layout, case, str(labeled))
                    res, rows = _evaluate(_cfg(out, case), labeled, paths, bounds[rank], bounds[rank + 1],
                                          cameras=case == "cameras_vis")
                    held[f"{layout}/{case}/{labeled}"] = rows
                    if rank == 0:
                        with open(os.path.join(out, "metrics.json"), "w") as f:
                            json.dump(res, f)
                    else:
                        assert res == {}
        with open(os.path.join(tmp, f"held{rank}.json"), "w") as f:
            json.dump(held, f)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    paths = []
    for i in range(NQ + NG):  # real drawings for the visualisation
        path = str(tmp / f"img{i}.png")
        Image.new("L", (16, 16), 255 - 4 * i).save(path)
        paths.append(path)
    for layout in LAYOUTS:
        for case in CASES:
            for labeled in (True, False):
                os.makedirs(tmp / "ddp" / layout / case / str(labeled))
    mp.spawn(_worker, args=(str(tmp), paths), nprocs=WORLD, join=True)
    return tmp, paths


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_with_gallery_parts_equal_one_process(ddp_run, case):
    tmp, paths = ddp_run
    for labeled in (True, False):
        single_out = tmp / "single" / case / str(labeled)
        single, _ = _evaluate(_cfg(str(single_out), case), labeled, paths, cameras=case == "cameras_vis")
        for layout in LAYOUTS:
            out = tmp / "ddp" / layout / case / str(labeled)
            with open(out / "metrics.json") as f:
                ddp = json.load(f)
            if labeled:
                assert single["mAP"] > 0
                assert ddp == pytest.approx(single, rel=1e-6), layout
            else:
                assert ddp == single == {}
                got, want = np.load(out / "result.npy"), np.load(single_out / "result.npy")
                # Scores come from matrix products of other shapes (a part's columns), equal up to the last
                # bit: the two identical drawings (3 and 35) may swap; nothing else may move.
                got, want = np.where(got == 35, 3, got), np.where(want == 35, 3, want)
                np.testing.assert_array_equal(got, want)
            if case == "cameras_vis":
                assert sorted(os.listdir(out / "vis")) == sorted(os.listdir(single_out / "vis"))


def test_each_process_holds_only_its_gallery_part(ddp_run):
    tmp, _ = ddp_run
    held = [json.load(open(tmp / f"held{r}.json")) for r in range(WORLD)]
    for layout, bounds in LAYOUTS.items():
        own = [max(0, hi - NQ) - max(0, lo - NQ) for lo, hi in zip(bounds, bounds[1:])]  # gallery rows per rank
        for case in CASES:
            for labeled in ("True", "False"):
                for r in range(WORLD):
                    rows = held[r][f"{layout}/{case}/{labeled}"]
                    if case in ("dba_qe_all", "qe_query"):
                        # Neighbours are found and picked while the other parts visit, one at a time.
                        assert rows == own[r] + max(n for i, n in enumerate(own) if i != r), (layout, case, r)
                    else:
                        assert rows == own[r], (layout, case, r)
                    if all(own):  # three parts: never the whole gallery in one process
                        assert rows < NG
