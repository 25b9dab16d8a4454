"""Sampler properties: P x K composition, disjoint ranks, determinism, cheap exact skipping, errors."""
import itertools
from collections import Counter

import pytest

from fastreid.config import ConfigError
from fastreid.data.samplers import (BalancedIdentitySampler, InferenceSampler, NaiveIdentitySampler,
                                    TrainingSampler)

# 9 identities with 1..6 images (some fewer than K = 4)
PIDS = [f"id{p}" for p, n in enumerate([1, 2, 6, 3, 4, 5, 2, 6, 4]) for _ in range(n)]


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def batches(sampler, n_batches):
    items = take(sampler, n_batches * sampler.local_batch_size)
    b = sampler.local_batch_size
    return [items[i * b:(i + 1) * b] for i in range(n_batches)]


def make(kind, **kw):
    args = dict(batch_size=8, seed=5)
    args.update(kw)
    if kind is TrainingSampler:
        return TrainingSampler(len(PIDS), **args)
    return kind(PIDS, num_instances=args.pop("num_instances", 2), **args)


def test_training_sampler_covers_each_epoch_once():
    s = TrainingSampler(len(PIDS), batch_size=4, seed=1)
    idx = [i for i, _ in take(s, 3 * len(PIDS))]
    for e in range(3):
        assert sorted(idx[e * len(PIDS):(e + 1) * len(PIDS)]) == list(range(len(PIDS)))
    seeds = [sd for _, sd in take(s, 100)]
    assert len(set(seeds)) == 100  # every position has its own augmentation seed


@pytest.mark.parametrize("kind", [NaiveIdentitySampler, BalancedIdentitySampler])
def test_identity_batches_are_p_by_k(kind):
    s = make(kind, batch_size=12, num_instances=4)  # P = 3, K = 4
    for batch in batches(s, 20):
        pids = [PIDS[i] for i, _ in batch]
        groups = [pids[j:j + 4] for j in range(0, 12, 4)]
        assert all(len(set(g)) == 1 for g in groups)
        assert len({g[0] for g in groups}) == 3
    # identities with fewer than K images still appear (drawn with replacement)
    seen = Counter(PIDS[i] for b in batches(s, 30) for i, _ in b)
    assert seen["id0"] > 0 and seen["id1"] > 0


def test_naive_uses_every_image_of_large_ids_and_balanced_every_id_once():
    naive = NaiveIdentitySampler(PIDS, batch_size=4, num_instances=2, seed=0)
    plan = naive.epoch_plan(0)
    used = Counter(int(i) for b in plan for i in b)
    # chunks per id (K = 2): [1, 1, 3, 1, 2, 2, 1, 3, 2]; rounds of 9, 5 and 2 chunks give 4 + 2 + 1 batches
    assert len(plan) == 7 and sum(used.values()) == 4 * 7
    assert all(c == 1 for i, c in used.items() if PIDS[i] != "id0")  # distinct images, id0 repeated
    for b in plan:
        assert PIDS[b[0]] != PIDS[b[2]]
    balanced = BalancedIdentitySampler(PIDS, batch_size=6, num_instances=2, seed=0)
    epoch = balanced.epoch_plan(0)
    assert len(epoch) == 9 // 3
    assert sorted(PIDS[int(b[j])] for b in epoch for j in range(0, 6, 2)) == sorted(set(PIDS))


@pytest.mark.parametrize("kind", [TrainingSampler, NaiveIdentitySampler, BalancedIdentitySampler])
def test_two_ranks_split_each_global_batch(kind):
    whole = batches(make(kind), 12)
    r0 = batches(make(kind, rank=0, world_size=2), 12)
    r1 = batches(make(kind, rank=1, world_size=2), 12)
    for g, a, b in zip(whole, r0, r1):
        assert a + b == g
        if kind is not TrainingSampler:
            assert not {PIDS[i] for i, _ in a} & {PIDS[i] for i, _ in b}


@pytest.mark.parametrize("kind", [TrainingSampler, NaiveIdentitySampler, BalancedIdentitySampler])
def test_deterministic_by_seed_and_exact_skip(kind):
    full = batches(make(kind), 40)  # crosses several epochs
    assert full == batches(make(kind), 40)
    assert full != batches(make(kind, seed=6), 40)
    for k in (1, 7, 23):
        assert batches(make(kind, start_iter=k), 40 - k) == full[k:]
        assert batches(make(kind, start_iter=k, rank=1, world_size=2), 3) == \
            batches(make(kind, rank=1, world_size=2), k + 3)[k:]


def test_bad_batch_arithmetic_is_a_clear_error():
    msg = r"SOLVER.IMS_PER_BATCH \(10\) must be divisible by DATALOADER.NUM_INSTANCE \(4\)"
    with pytest.raises(ConfigError, match=msg):
        NaiveIdentitySampler(PIDS, batch_size=10, num_instances=4, seed=0)
    with pytest.raises(ConfigError, match=r"identities per batch must be divisible by the number of processes \(2\)"):
        BalancedIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=0, world_size=2)
    msg = r"SOLVER.IMS_PER_BATCH \(9\) must be divisible by the number of processes \(2\)"
    with pytest.raises(ConfigError, match=msg):
        TrainingSampler(len(PIDS), batch_size=9, seed=0, world_size=2)
    with pytest.raises(ConfigError, match="needs at least .* 10 identities, the training set has 9"):
        NaiveIdentitySampler(PIDS, batch_size=20, num_instances=2, seed=0)


def test_inference_sampler_contiguous_shards():
    shards = [list(InferenceSampler(10, r, 3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(InferenceSampler(2, 2, 3)) == [] and len(InferenceSampler(10, 0, 1)) == 10


def _balanced_rows(pids, cams, k, epochs):
    """Every identity row (K dataset indices) of ``epochs`` epochs, batch = one identity."""
    s = BalancedIdentitySampler(pids, batch_size=k, num_instances=k, seed=3, camids=cams)
    return [list(map(int, row)) for e in range(epochs) for row in s.epoch_plan(e)]


def test_balanced_is_camera_aware_like_the_challenge_code():
    # id "a": cameras 0,0,1,1,1; id "b": one camera, K + 1 images; id "c": exactly K images; id "d": one image
    k = 4
    pids = ["a"] * 5 + ["b"] * 5 + ["c"] * 4 + ["d"]
    cams = [0, 0, 1, 1, 1] + [0] * 5 + [2] * 4 + [0]
    rows = _balanced_rows(pids, cams, k, 200)
    anchors, repeats_c = Counter(), 0
    for row in rows:
        anchor, others = row[0], row[1:]
        anchors[anchor] += 1
        assert len(row) == k and {pids[i] for i in row} == {pids[anchor]}
        if pids[anchor] == "a":  # always the other camera's images
            assert all(cams[i] != cams[anchor] for i in others)
        if pids[anchor] == "b":  # one camera, >= K candidates: K - 1 distinct siblings, never the anchor
            assert anchor not in others and len(set(others)) == k - 1
        if pids[anchor] == "c":  # K - 1 candidates < K: drawn with replacement (the original's threshold)
            assert anchor not in others
            repeats_c += len(set(others)) < k - 1
        if pids[anchor] == "d":
            assert others == [anchor] * (k - 1)
    assert repeats_c > 0
    assert set(anchors) == set(range(len(pids)))  # every image serves as anchor sometimes
    # with cameras, the anchor's camera decides the pool: 3 of the 5 anchors of "a" have two candidates
    a_rows = [r for r in rows if pids[r[0]] == "a" and cams[r[0]] == 1]
    assert a_rows and all(set(r[1:]) <= {0, 1} for r in a_rows)


def test_balanced_camids_reach_the_sampler_from_the_loader_builder():
    from fastreid.config import get_cfg
    from fastreid.data.build import build_train_sampler

    cfg = get_cfg()
    cfg.DATALOADER.SAMPLER_TRAIN = "BalancedIdentitySampler"
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.SOLVER.IMS_PER_BATCH = 2
    pids, cams = ["x", "x", "x"], [0, 0, 1]
    s = build_train_sampler(cfg, pids, seed=0, camids=cams)
    for row in s.epoch_plan(0).tolist() + s.epoch_plan(1).tolist() + s.epoch_plan(2).tolist():
        assert cams[row[1]] != cams[row[0]]
