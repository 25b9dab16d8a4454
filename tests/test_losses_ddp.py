"""Under DDP (2 gloo processes, half the batch each) the metric losses and gradients equal one process's."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fastreid.config import get_cfg
from fastreid.modeling import build_model

WORLD = 2
LOSS_NAMES = ("TripletLoss", "CircleLoss", "Cosface")


def _setup():
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    proj = nn.Linear(5, 4)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    cfg.MODEL.LOSSES.NAME = LOSS_NAMES
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.0
    cfg.MODEL.LOSSES.CIRCLE.GAMMA = 8.0
    cfg.MODEL.LOSSES.COSFACE.GAMMA = 8.0
    return x, labels, proj, build_model(cfg)


def _losses_and_grads(model, proj, x, labels):
    """Each loss's value and the projection's gradient of each loss (Baseline.losses on projected features)."""
    values, grads = {}, {}
    for name in ("loss_triplet", "loss_circle", "loss_cosface"):
        proj.zero_grad()
        loss = model.losses({"features": proj(x)}, labels)[name]
        loss.backward()
        values[name] = loss.detach()
        weight = proj.module.weight if hasattr(proj, "module") else proj.weight
        grads[name] = weight.grad.clone()
    return values, grads


def _worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=WORLD)
    try:
        x, labels, proj, model = _setup()
        ddp = nn.parallel.DistributedDataParallel(proj)
        half = len(x) // WORLD
        part = slice(rank * half, (rank + 1) * half)
        values, grads = _losses_and_grads(model, ddp, x[part], labels[part])
        torch.save({"values": values, "grads": grads}, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_metric_losses_match_single_process(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    x, labels, proj, model = _setup()
    values, grads = _losses_and_grads(model, proj, x, labels)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for name in values:
            assert torch.allclose(result["values"][name], values[name], atol=1e-6), (rank, name)
            assert torch.allclose(result["grads"][name], grads[name], atol=1e-6), (rank, name)
    # without the gathering each rank would mine within its own half: a different loss
    local = model.losses({"features": proj(x[:4])}, labels[:4])["loss_triplet"]
    assert not torch.allclose(local, values["loss_triplet"])
