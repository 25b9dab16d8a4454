"""Chunked exact metrics against a dense argsort reference and scikit-learn."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from fastreid.evaluation.metrics import (cmc_curve, per_query_metrics, positive_ranks, rank_positives,
                                         rank_positives_chunked, summarize)
from fastreid.evaluation.rank import evaluate_rank
from fastreid.evaluation.search import normalize
from fastreid.evaluation.submission import score_submission


def dense_reference(scores, q_pids, g_pids, q_cams=None, g_cams=None):
    """Per-query AP, AP@10, INP, first-hit rank by a full stable argsort (NaN when no positive)."""
    out = []
    for i in range(scores.shape[0]):
        keep = np.ones(scores.shape[1], bool)
        if q_cams is not None:
            keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(-scores[i], kind="stable")
        order = order[keep[order]]
        match = g_pids[order] == q_pids[i]
        if not match.any():
            out.append((np.nan, np.nan, np.nan, 0))
            continue
        pos_ranks = np.flatnonzero(match) + 1
        prec = np.arange(1, len(pos_ranks) + 1) / pos_ranks
        ap10 = prec[pos_ranks <= 10].sum() / min(10, len(pos_ranks))
        out.append((prec.mean(), ap10, len(pos_ranks) / pos_ranks[-1], pos_ranks[0]))
    return [np.array(c) for c in zip(*out)]


def _compare(pq, ref):
    np.testing.assert_allclose(pq.ap, ref[0], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(pq.ap_at_10, ref[1], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(pq.inp, ref[2], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(pq.first_rank, ref[3])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunked_metrics_equal_dense_reference_and_sklearn(metric):
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.normal(size=(40, 6)).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=(250, 6)).astype(np.float32))
    if metric == "cosine":
        q, g = normalize(q), normalize(g)
    q_pids, g_pids = rng.integers(0, 15, 40), rng.integers(0, 15, 250)
    q_pids[0] = 99  # a query without positives
    res = rank_positives_chunked(q, g, q_pids, g_pids, metric=metric, topk=10, chunk_bytes=250 * 48 * 7)
    pq = per_query_metrics(res["ranks"], res["num_pos"])
    if metric == "cosine":
        scores = (q @ g.t()).numpy()
    else:
        scores = -torch.cdist(q.double(), g.double()).pow(2).numpy()
    _compare(pq, dense_reference(scores, q_pids, g_pids))
    sk = [average_precision_score(g_pids == q_pids[i], scores[i]) for i in range(1, 40)]
    np.testing.assert_allclose(pq.ap[1:], sk, rtol=1e-9)
    np.testing.assert_array_equal(res["topk_idx"], np.argsort(-scores, 1, kind="stable")[:, :10])
    summary = summarize(pq)
    assert summary["num_queries_without_positive"] == 1 and summary["num_valid_queries"] == 39
    assert summary["mAP"] == pytest.approx(100 * np.mean(sk))


def test_ties_follow_stable_index_order_and_camera_filter():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(30, 60)).astype(np.float32)  # many exact ties
    q_pids, g_pids = rng.integers(0, 5, 30), rng.integers(0, 5, 60)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 60)
    s = torch.from_numpy(scores)
    for cams in [(None, None), (q_cams, g_cams)]:
        res = rank_positives(lambda a, b: s[a:b], 30, q_pids, g_pids, *cams, topk=7, step=4)
        pq = per_query_metrics(res["ranks"], res["num_pos"])
        _compare(pq, dense_reference(scores, q_pids, g_pids, *cams))
    expected = np.argsort(-scores, 1, kind="stable")[:, :7]
    res = rank_positives(lambda a, b: s[a:b], 30, q_pids, g_pids, topk=7, step=4)
    np.testing.assert_array_equal(res["topk_idx"], expected)


def test_single_item_gallery_and_empty_positive_slots():
    ranks = positive_ranks(torch.tensor([[0.5], [0.1]]), torch.tensor([[0], [-1]]))
    assert ranks.tolist() == [[1], [0]]
    pq = per_query_metrics(ranks.numpy(), np.array([1, 0]))
    assert pq.ap[0] == 1.0 and pq.ap_at_10[0] == 1.0 and pq.inp[0] == 1.0 and np.isnan(pq.ap[1])
    with pytest.raises(ValueError, match="No query has a positive"):
        summarize(per_query_metrics(np.zeros((2, 0), np.int64), np.array([0, 0])))


def test_ap_at_10_hand_example():
    # Positives at ranks 2, 4 and 12 of 3 positives: AP@10 = (1/2 + 2/4) / 3; AP = (1/2 + 2/4 + 3/12) / 3.
    pq = per_query_metrics(np.array([[12, 2, 4]]), np.array([3]))
    assert pq.ap_at_10[0] == pytest.approx((0.5 + 0.5) / 3)
    assert pq.ap[0] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert pq.inp[0] == pytest.approx(3 / 12) and pq.first_rank[0] == 2
    np.testing.assert_allclose(cmc_curve(np.array([1, 3]), 3), [0.5, 0.5, 1.0])


def test_evaluate_rank_is_fastreid_compatible():
    rng = np.random.default_rng(2)
    dist = rng.random((25, 80))
    q_pids, g_pids = rng.integers(0, 8, 25), rng.integers(0, 8, 80)
    q_cams, g_cams = rng.integers(0, 2, 25), rng.integers(0, 2, 80)
    cmc, all_ap, all_inp = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    ap, _, inp, first = dense_reference(-dist, q_pids, g_pids, q_cams, g_cams)
    valid = ~np.isnan(ap)
    np.testing.assert_allclose(all_ap, ap[valid])
    np.testing.assert_allclose(all_inp, inp[valid])
    assert cmc.shape == (50,)
    np.testing.assert_allclose(cmc, [(first[valid] <= k).mean() for k in range(1, 51)], rtol=1e-6)


def test_score_submission_against_direct_count():
    rng = np.random.default_rng(3)
    db_labels = rng.integers(0, 6, 40)
    q_labels = np.array([0, 1, 2, 77])
    result = np.stack([rng.permutation(40)[:10] for _ in range(4)])
    out = score_submission(result, q_labels, db_labels)
    ap10, r1, r5 = [], [], []
    for i in range(3):
        hit = db_labels[result[i]] == q_labels[i]
        prec = [hit[:j + 1].sum() / (j + 1) for j in range(10)]
        ap10.append(sum(p for p, h in zip(prec, hit) if h) / min(10, (db_labels == q_labels[i]).sum()))
        r1.append(hit[:1].any())
        r5.append(hit[:5].any())
    assert out["mAP@10"] == pytest.approx(100 * np.mean(ap10))
    assert out["Recall@1"] == pytest.approx(100 * np.mean(r1))
    assert out["Recall@5"] == pytest.approx(100 * np.mean(r5))
    assert out["num_queries_without_positive"] == 1
    with pytest.raises(ValueError, match="outside the database"):
        score_submission(result + 40, q_labels, db_labels)
