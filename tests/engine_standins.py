"""Small stand-ins for the model and data parts, so engine tests run in seconds on CPU.

The data stream is a pure function of (SEED, rank, position), like the real loader's contract.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Dict, Iterator, List

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import CfgNode, get_cfg
from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm

NUM_CLASSES = 4
IMG = 8


class TinyDataset:
    def __init__(self, n: int = 32) -> None:
        self.num_classes = NUM_CLASSES
        self._n = n

    def __len__(self) -> int:
        return self._n


def _prototypes() -> torch.Tensor:
    # Classes differ in their per-channel grey level, which survives global pooling.
    g = torch.Generator().manual_seed(1234)
    return (torch.rand(NUM_CLASSES, 3, 1, 1, generator=g) * 255).expand(NUM_CLASSES, 3, IMG, IMG)


def make_batch(seed: int, rank: int, position: int, batch: int) -> Dict[str, torch.Tensor]:
    """The batch at ``position`` of the stream: class prototypes plus noise."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + position)
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    images = _prototypes()[targets] + 40 * torch.randn(batch, 3, IMG, IMG, generator=g)
    return {"images": images, "targets": targets}


class TinyLoader:
    """Infinite stream starting at ``start_iter``; local batch = global batch // world size."""

    def __init__(self, cfg: CfgNode, start_iter: int = 0, n: int = 32) -> None:
        self.dataset = TinyDataset(n)
        self.seed = max(cfg.SEED, 0)
        self.batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        self.start_iter = start_iter

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        pos = self.start_iter
        while True:
            yield make_batch(self.seed, comm.get_rank(), pos, self.batch)
            pos += 1


class TinyReid(nn.Module):
    """``backbone`` (conv + BN) and ``heads`` (linear classifier), as the real meta-architecture."""

    def __init__(self, num_classes: int = NUM_CLASSES, nan_at_call: int = -1) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.Linear(6, num_classes)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, batch: Any) -> Any:
        images = batch["images"] if isinstance(batch, dict) else batch
        feat = self.backbone((images - 127.5) / 64.0)
        if not self.training:
            return feat
        loss = F.cross_entropy(self.heads(feat), batch["targets"])
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        self.calls += 1
        return {"loss_cls": loss}


def eval_accuracy(model: nn.Module) -> float:
    """Classification accuracy (percent) on a fixed held-out batch, as a stand-in metric."""
    batch = make_batch(999, 0, 0, 64)
    was = model.training
    model.eval()
    with torch.no_grad():
        feats = model(batch["images"])
        pred = model.heads(feats).argmax(1)
    model.train(was)
    return float((pred == batch["targets"]).float().mean() * 100)


class TinyTrainer(DefaultTrainer):
    """DefaultTrainer over the stand-ins; ``test`` reports the accuracy as mAP and Rank-1."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0) -> TinyLoader:
        return TinyLoader(cfg, start_iter)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        torch.manual_seed(max(cfg.SEED, 0))
        return TinyReid(cfg.MODEL.HEADS.NUM_CLASSES)

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module) -> "OrderedDict[str, Dict[str, float]]":
        acc = eval_accuracy(model)
        return OrderedDict(tiny={"mAP": acc, "Rank-1": acc, "metric": acc})


def tiny_cfg(output_dir: str, **overrides: Any) -> CfgNode:
    """A config for TinyTrainer: 32 images, batch 8 -> 4 iterations per epoch."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = output_dir
    cfg.SEED = 3
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.MAX_EPOCH = 3
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.SCHED = "CosineAnnealingLR"
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    cfg.TEST.EVAL_PERIOD = 1
    flat: List[str] = []
    for k, v in overrides.items():
        flat += [k.replace("__", "."), repr(v) if not isinstance(v, str) else v]
    cfg.merge_from_list(flat)
    cfg.freeze()
    return cfg


def log_every_iteration(trainer: DefaultTrainer) -> DefaultTrainer:
    """Read the losses back and write metrics at every iteration (the trainer batches both, every 20),
    so that a test can compare each iteration's loss; returns ``trainer``."""
    trainer.metrics_period = 1
    for h in trainer._hooks:
        if isinstance(h, hooks.PeriodicWriter):
            h._period = 1
    return trainer


class InterruptAt(hooks.HookBase):
    """Stop a run as Ctrl-C would, just before iteration ``iteration`` (tests of exact resume)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt


def read_metrics(output_dir: str) -> List[Dict[str, float]]:
    import json

    with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
