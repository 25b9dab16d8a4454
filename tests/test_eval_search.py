"""k-NN search: faiss and torch agree, ties are stable, IVF recall is measured."""
import numpy as np
import pytest
import torch

from fastreid.evaluation import search
from fastreid.evaluation.search import faiss_knn, knn, normalize, recall_against_exact, topk_stable, torch_knn


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_cpu_and_torch_fallback_give_identical_neighbours(metric):
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(60, 16, generator=gen), torch.randn(500, 16, generator=gen)
    if metric == "cosine":
        q, g = normalize(q), normalize(g)
    ts, ti = torch_knn(q, g, 12, metric, chunk_bytes=500 * 8 * 7)
    fs, fi = faiss_knn(q, g, 12, metric, use_gpu=False)
    assert torch.equal(ti, fi)
    torch.testing.assert_close(ts, fs, rtol=1e-5, atol=1e-5)
    dense = q @ g.t() if metric == "cosine" else -torch.cdist(q, g).pow(2)
    assert torch.equal(ti, torch.argsort(dense.double(), dim=1, descending=True, stable=True)[:, :12])


def test_topk_stable_breaks_ties_by_index_even_at_the_boundary():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    vals, idx = topk_stable(scores, 3)
    assert idx.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert vals.tolist() == [[3.0, 3.0, 3.0], [0.0, 0.0, 0.0]]


def test_ivf_recall_is_reported_and_torch_backend_is_exact(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    g = normalize(torch.randn(2000, 8, generator=gen))
    q = normalize(torch.randn(50, 8, generator=gen))
    exact = torch_knn(q, g, 10)[1]
    approx = faiss_knn(q, g, 10, index_type="ivf", nlist=16, nprobe=16, use_gpu=False)[1]
    assert recall_against_exact(approx, exact) == 1.0  # every list probed: exact
    partial = faiss_knn(q, g, 10, index_type="ivf", nlist=16, nprobe=1, use_gpu=False)[1]
    direct = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(partial, exact)])
    assert recall_against_exact(partial, exact) == pytest.approx(direct)
    monkeypatch.setattr(search, "faiss", None)
    assert torch.equal(knn(q, g, 10, backend="faiss")[1], exact)
    with pytest.raises(ValueError, match="TEST.SEARCH.BACKEND"):
        knn(q, g, 10, backend="annoy")
    with pytest.raises(ValueError, match="TEST.METRIC"):
        torch_knn(q, g, 10, metric="manhattan")
