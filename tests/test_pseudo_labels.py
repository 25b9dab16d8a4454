"""Pseudo-labels of unlabeled drawings: sparse Jaccard distances against a dense computation, DBSCAN against
scikit-learn's, and the whole function on hand-made features with known groups."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

from fastreid.config import get_cfg
from fastreid.evaluation.pseudo_labels import dbscan, jaccard_distances, pseudo_labels, validate
from fastreid.evaluation.rerank import k_reciprocal_encoding
from fastreid.evaluation.search import normalize


def _groups(sizes, dim=16, noise=0.05, seed=0):
    """Features of ``len(sizes)`` well-separated groups (orthogonal directions plus noise)."""
    rng = np.random.default_rng(seed)
    parts = [np.eye(dim)[g] + rng.normal(0, noise, (n, dim)) for g, n in enumerate(sizes)]
    return np.concatenate(parts).astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def _same_partition(a, b):
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


def _dense(distances):
    """The sparse matrix as a dense one, pairs not stored at distance 1."""
    d = np.ones(distances.shape)
    coo = distances.tocoo()
    d[coo.row, coo.col] = coo.data
    np.fill_diagonal(d, 0.0)
    return d


@pytest.mark.parametrize("k1,k2", [(6, 3), (10, 1)])
def test_jaccard_distances_equal_the_dense_computation_from_the_encoding(k1, k2):
    feats = normalize(torch.randn(70, 8, generator=torch.Generator().manual_seed(1)))
    v = k_reciprocal_encoding(feats, k1, k2, "cosine")[0].toarray()
    common = np.minimum(v[:, None, :], v[None, :, :]).sum(-1)
    expected = 1 - common / (2 - common)
    got = jaccard_distances(feats, k1, k2)
    np.testing.assert_allclose(_dense(got), expected, atol=1e-9)
    assert abs(got - got.T).max() < 1e-12
    # Sparse: far fewer pairs stored than N^2, and exactly those with a shared neighbour.
    assert got.nnz == int((common > 0).sum()) < 70 * 70


def test_dbscan_matches_scikit_learn_on_core_items_and_counts():
    rng = np.random.default_rng(3)
    for trial in range(6):
        pts = np.concatenate([rng.normal(c, 0.3, (8, 2)) for c in rng.uniform(-4, 4, (4, 2))]
                             + [rng.uniform(-6, 6, (6, 2))])
        full = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) / 20
        for eps, ms in [(0.02, 3), (0.04, 2), (0.05, 5), (0.03, 1)]:
            sparse = sp.csr_matrix(np.where(full <= 0.5, full, 0.0))  # far pairs not stored
            sparse.setdiag(0.0)
            mine = dbscan(sparse, eps, ms)
            ref = DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit(full)
            core = np.zeros(len(pts), bool)
            core[ref.core_sample_indices_] = True
            assert _same_partition(mine[core], ref.labels_[core])
            # Outliers are the same items (a border item may join another of its clusters in scikit-learn).
            np.testing.assert_array_equal(mine == -1, ref.labels_ == -1)
            assert len(set(mine) - {-1}) == len(set(ref.labels_) - {-1})


def test_dbscan_border_item_joins_its_nearest_core_and_numbers_clusters_by_lowest_member():
    # Items 0-2 and 4-6 are two tight groups (cores with min_samples 3); item 3 is within eps of item 2
    # (0.30) and item 4 (0.25) but has only those two neighbours: a border item of the nearer group.
    n = 7
    d = np.ones((n, n))
    for group in ((0, 1, 2), (4, 5, 6)):
        for i in group:
            for j in group:
                d[i, j] = 0.1
    d[2, 3] = d[3, 2] = 0.30
    d[4, 3] = d[3, 4] = 0.25
    np.fill_diagonal(d, 0)
    labels = dbscan(sp.csr_matrix(np.where(d < 1, d, 0.0)), eps=0.35, min_samples=4)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 1])


def test_pseudo_labels_recover_hand_made_groups_and_leave_loners_out():
    feats, truth = _groups([5, 4, 6, 3])
    loners = np.eye(16, dtype=np.float32)[10:12]  # two drawings unlike anything else
    labels = pseudo_labels(np.concatenate([feats, loners]), eps=0.6, min_samples=2, k1=5, k2=2)
    assert _same_partition(labels[:len(truth)], truth)
    assert (labels[:len(truth)] >= 0).all() and (labels[len(truth):] == -1).all()
    assert labels[0] == 0 and set(labels) == {-1, 0, 1, 2, 3}
    # Torch input gives the same labels; the scale of a feature does not matter for cosine.
    again = pseudo_labels(torch.from_numpy(np.concatenate([feats * 3, loners])), eps=0.6, min_samples=2, k1=5, k2=2)
    np.testing.assert_array_equal(labels, again)


def test_edge_cases_and_bad_values():
    assert pseudo_labels(np.zeros((0, 4), np.float32)).shape == (0,)
    np.testing.assert_array_equal(pseudo_labels(np.ones((1, 4), np.float32), min_samples=2), [-1])
    np.testing.assert_array_equal(pseudo_labels(np.ones((1, 4), np.float32), min_samples=1), [0])
    # Identical drawings (every distance 0) within one neighbourhood: one cluster, no division by zero.
    same = pseudo_labels(np.ones((4, 4), np.float32), k1=3, k2=1)
    np.testing.assert_array_equal(same, np.zeros(4))
    with pytest.raises(ValueError, match="eps"):
        pseudo_labels(np.ones((3, 4), np.float32), eps=1.0)
    with pytest.raises(ValueError, match="N x D"):
        pseudo_labels(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="min_samples"):
        dbscan(sp.csr_matrix((2, 2)), 0.5, 0)
    cfg = get_cfg()
    assert validate(cfg) == []
    cfg.UNLABELED.EPS, cfg.UNLABELED.ROUNDS = 1.5, 0
    problems = " ".join(validate(cfg))
    assert "UNLABELED.EPS" in problems and "UNLABELED.ROUNDS" in problems
