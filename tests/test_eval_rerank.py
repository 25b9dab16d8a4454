"""Sparse k-reciprocal re-ranking against the dense textbook algorithm (Zhong et al. 2017)."""
import numpy as np
import pytest
import torch

from fastreid.evaluation.metrics import per_query_metrics, rank_positives_chunked
from fastreid.evaluation.pipeline import reranked_positive_ranks
from fastreid.evaluation.rerank import k_reciprocal_rerank
from fastreid.evaluation.search import normalize


def dense_rerank(q, g, k1, k2, lam, metric):
    """Textbook re-ranking with dense N x N matrices; returns the Q x G final distance."""
    feats = torch.cat([q, g]).double().numpy()
    nq, n = len(q), len(feats)
    sims = feats @ feats.T
    sq = (feats * feats).sum(1)
    dist = 2 - 2 * sims if metric == "cosine" else sq[:, None] + sq[None, :] - 2 * sims
    dist = dist / dist.max(1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        recip = fwd[np.where(rank[fwd, :k1 + 1] == i)[0]]
        expansion = recip
        for j in recip:
            cand = rank[j, :half + 1]
            cand_recip = cand[np.where(rank[cand, :half + 1] == j)[0]]
            if len(np.intersect1d(cand_recip, recip)) > 2 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        v[i, expansion] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.zeros((nq, n))
    for i in range(nq):
        common = np.minimum(v[i][None, :], v).sum(1)
        jaccard[i] = 1 - common / (2 - common)
    return (jaccard * (1 - lam) + dist[:nq] * lam)[:, nq:]


@pytest.mark.parametrize("metric,k1,k2", [("cosine", 10, 4), ("euclidean", 6, 1)])
def test_sparse_rerank_equals_dense_when_candidates_cover_gallery(metric, k1, k2):
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(15, 6, generator=gen), torch.randn(60, 6, generator=gen)
    if metric == "cosine":
        q, g = normalize(q), normalize(g)
    ref = dense_rerank(q, g, k1, k2, 0.3, metric)
    cand = np.tile(np.arange(60), (15, 1))
    dist, order = k_reciprocal_rerank(q, g, cand, k1, k2, 0.3, metric)
    np.testing.assert_array_equal(order, np.argsort(ref, axis=1, kind="stable"))
    np.testing.assert_allclose(dist, np.take_along_axis(ref, order, 1), atol=1e-6)


def test_truncated_candidates_reorder_only_the_top_k():
    gen = torch.Generator().manual_seed(1)
    q, g = normalize(torch.randn(12, 6, generator=gen)), normalize(torch.randn(50, 6, generator=gen))
    q_pids, g_pids = np.arange(12) % 5, np.arange(50) % 5
    full = dense_rerank(q, g, 8, 3, 0.3, "cosine")
    res = rank_positives_chunked(q, g, q_pids, g_pids, topk=20)
    dist, order = k_reciprocal_rerank(q, g, res["topk_idx"], 8, 3, 0.3, "cosine")
    # Within the candidates the order is the textbook one restricted to them.
    for i in range(12):
        cand = res["topk_idx"][i]
        expected = cand[np.argsort(full[i, cand], kind="stable")]
        assert sorted(cand) == sorted(order[i]) and list(order[i]) == list(expected)
    ranks = reranked_positive_ranks(res["ranks"], order, g_pids[order] == q_pids[:, None])
    # Direct construction of the new ranking: re-ordered candidates, then the rest in original order.
    scores = (q @ g.t()).numpy()
    for i in range(12):
        rest = [j for j in np.argsort(-scores[i], kind="stable") if j not in set(order[i])]
        ranking = np.concatenate([order[i], rest])
        expected = sorted(np.flatnonzero(g_pids[ranking] == q_pids[i]) + 1)
        assert sorted(r for r in ranks[i] if r) == expected
    assert per_query_metrics(ranks, res["num_pos"]).ap.shape == (12,)
