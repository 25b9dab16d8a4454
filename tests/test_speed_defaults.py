"""Speed defaults: losses read back every metrics period (NaN stop at the next read), fused optimizer
kernels, and the 'auto' values of loader workers, test batch, extraction precision and search
backend as they resolve on a CPU-only machine."""
import os

import pytest
import torch

from engine_standins import TinyLoader, TinyReid, tiny_cfg
from fastreid.config import get_cfg
from fastreid.data.build import _loader_kwargs, auto_num_workers, resolve_test_batch
from fastreid.engine.events import EventStorage
from fastreid.engine.train_loop import SimpleTrainer
from fastreid.evaluation import search
from fastreid.evaluation.evaluator import extract_features, resolve_amp_dtype
from fastreid.solver import build_optimizer


class _CountingStorage(EventStorage):
    """Counts how often loss values arrive (each flush puts every pending iteration)."""

    puts = []

    def put_scalar(self, name, value, smoothing_hint=True):
        if name == "loss_cls":
            self.puts.append(self.iter)
        super().put_scalar(name, value, smoothing_hint)


def _trainer(nan_at=-1, period=3):
    cfg = tiny_cfg("")
    torch.manual_seed(0)
    model = TinyReid(nan_at_call=nan_at)
    return SimpleTrainer(model, TinyLoader(cfg), torch.optim.SGD(model.parameters(), lr=0.1), metrics_period=period)


def test_losses_are_read_every_period_with_their_iterations(monkeypatch):
    import fastreid.engine.train_loop as loop

    _CountingStorage.puts = []
    monkeypatch.setattr(loop, "EventStorage", _CountingStorage)
    t = _trainer(period=3)
    flushes = []
    original = t.flush_metrics
    monkeypatch.setattr(t, "flush_metrics", lambda: (flushes.append(t.iter), original()))
    t.train(0, 7, 100)
    assert flushes == [2, 5, 6]  # every 3 iterations and at the last one
    assert _CountingStorage.puts == list(range(7))  # every iteration recorded under its own number


def test_nan_stops_at_the_next_read_naming_its_iteration():
    t = _trainer(nan_at=1, period=3)
    with pytest.raises(FloatingPointError, match=r"iteration 1: loss_cls=nan \(rank 0\).*every 3 iterations"):
        t.train(0, 10, 100)
    assert t.iter == 2  # found when iteration 2 read the values back, before its update


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_optimizer_is_fused_with_few_groups(name):
    cfg = get_cfg()
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.OPT = name
    opt = build_optimizer(cfg, TinyReid())
    assert opt.defaults["fused"] is True  # torch >= 2.4 has fused CPU kernels for all three
    # Default WEIGHT_DECAY_NORM equals WEIGHT_DECAY: all weights in one group, all biases in another.
    assert [g["names"] for g in opt.param_groups] == [["backbone.0.weight", "backbone.1.weight", "heads.weight"],
                                                      ["backbone.0.bias", "backbone.1.bias", "heads.bias"]]


def test_auto_values_on_cpu(monkeypatch):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.DATALOADER.NUM_WORKERS == -1 and cfg.TEST.IMS_PER_BATCH == -1
    cores = len(os.sched_getaffinity(0))
    assert auto_num_workers(cfg) == max(1, cores // 2) == _loader_kwargs(cfg)["num_workers"]
    assert resolve_test_batch(cfg) == 64
    cfg.TEST.IMS_PER_BATCH = 0
    with pytest.raises(Exception, match="TEST.IMS_PER_BATCH"):
        resolve_test_batch(cfg)
    cfg.DATALOADER.NUM_WORKERS = -2
    with pytest.raises(Exception, match="DATALOADER.NUM_WORKERS"):
        _loader_kwargs(cfg)
    assert resolve_amp_dtype("auto", torch.device("cpu")) == ""
    assert resolve_amp_dtype("auto", torch.device("cuda")) == "float16"
    with pytest.raises(ValueError, match="TEST.AMP_DTYPE"):
        resolve_amp_dtype("fp8", torch.device("cpu"))
    assert search.resolve_backend("auto") == "torch"
    assert search.resolve_backend("auto", "ivf") == ("faiss" if search.faiss is not None else "torch")
    with pytest.raises(ValueError, match="TEST.SEARCH.BACKEND"):
        search.resolve_backend("annoy")


def test_cpu_extraction_auto_is_float32_and_ignores_channels_last():
    torch.manual_seed(0)
    model = TinyReid().eval()
    images = torch.rand(4, 3, 8, 8) * 255
    with torch.no_grad():
        plain = model(images)
        auto = extract_features(model, {"images": images}, amp_dtype="auto", channels_last=True)
    assert auto.dtype == torch.float32 and torch.equal(plain, auto)
