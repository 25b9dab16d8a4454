"""Vectorised alpha-QE and DBA against a direct per-row implementation of the reference algorithm."""
import numpy as np
import torch
import torch.nn.functional as F

from fastreid.evaluation.query_expansion import aqe, aqe_queries_only, dba


def per_row_expand(feats, pool, k, alpha, sims_to_pool):
    """One pass of the reference: per row, the k most similar pool rows, weights sim ** alpha."""
    out = []
    for i in range(len(feats)):
        top = np.argsort(-sims_to_pool[i], kind="stable")[:k]
        w = np.power(sims_to_pool[i][top], alpha)[:, None]
        out.append(np.mean(pool[top] * w, axis=0))
    return np.stack(out)


def reference_aqe(q, g, times, k, alpha):
    feats = np.concatenate([q, g]).astype(np.float32)
    for _ in range(times):
        n = F.normalize(torch.from_numpy(feats), dim=1)
        feats = per_row_expand(feats, feats, k, alpha, (n @ n.t()).numpy())
    return feats[:len(q)], feats[len(q):]


def test_aqe_equals_reference_over_queries_and_database():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(25, 12)).astype(np.float32), rng.normal(size=(70, 12)).astype(np.float32)
    for times, k, alpha in [(1, 5, 2.0), (2, 10, 3.0)]:
        ref_q, ref_g = reference_aqe(q, g, times, k, alpha)
        for backend in ["torch", "faiss"]:
            out_q, out_g = aqe(torch.from_numpy(q), torch.from_numpy(g), times, k, alpha, backend=backend)
            np.testing.assert_allclose(out_q.numpy(), ref_q, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out_g.numpy(), ref_g, rtol=1e-5, atol=1e-6)


def test_query_only_expansion_and_dba():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    qn, gn = F.normalize(torch.from_numpy(q), dim=1), F.normalize(torch.from_numpy(g), dim=1)
    out = aqe_queries_only(torch.from_numpy(q), torch.from_numpy(g), qe_times=1, qe_k=4, alpha=3.0)
    expected = []
    for i in range(10):
        sims = (gn @ qn[i]).numpy()
        top = np.argsort(-sims, kind="stable")[:3]
        rows = np.concatenate([q[i:i + 1], g[top]])
        w = np.power(np.concatenate([[float(qn[i] @ qn[i])], sims[top]]), 3.0)[:, None]
        expected.append((rows * w).mean(0))
    np.testing.assert_allclose(out.numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)
    ref = per_row_expand(g, g, 5, 3.0, (gn @ gn.t()).numpy())
    np.testing.assert_allclose(dba(torch.from_numpy(g), k=5, alpha=3.0).numpy(), ref, rtol=1e-5, atol=1e-6)
