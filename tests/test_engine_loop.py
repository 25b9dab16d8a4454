"""The training loop and its hooks on the stand-in model: learning, freezing, NaN guard, best model,
writers, mixed precision fallback and exact resume."""
import os

import pytest
import torch

from engine_standins import (InterruptAt, TinyLoader, TinyReid, TinyTrainer, eval_accuracy, log_every_iteration, read_metrics,
                             tiny_cfg)
from fastreid.engine import hooks
from fastreid.engine.train_loop import SimpleTrainer
from fastreid.utils.checkpoint import Checkpointer


def _tensors(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("opt", ["Adam", "AdamW", "SGD"])
def test_weights_change_and_loss_falls(tmp_path, opt):
    cfg = tiny_cfg(str(tmp_path), SOLVER__OPT=opt, SOLVER__BASE_LR=0.05 if opt == "SGD" else 0.02,
                   SOLVER__MAX_EPOCH=10, TEST__EVAL_PERIOD=0, SOLVER__CHECKPOINT_PERIOD=100)
    trainer = TinyTrainer(cfg)
    before = _tensors(trainer.module)
    acc_before = eval_accuracy(trainer.module)
    trainer.train()
    after = _tensors(trainer.module)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "backbone.0.weight" in changed and "heads.weight" in changed
    losses = [m["loss_cls"] for m in read_metrics(str(tmp_path)) if "loss_cls" in m]
    assert losses[-1] < 0.7 * losses[0]
    assert eval_accuracy(trainer.module) > acc_before + 20


def test_freeze_keeps_weights_and_bn_statistics(tmp_path):
    cfg = tiny_cfg(str(tmp_path), MODEL__FREEZE_LAYERS=["backbone"], SOLVER__FREEZE_ITERS=5,
                   SOLVER__MAX_ITER=5, TEST__EVAL_PERIOD=0, SOLVER__CHECKPOINT_PERIOD=100)
    trainer = TinyTrainer(cfg)
    before = _tensors(trainer.module)
    trainer.train()
    after = _tensors(trainer.module)
    for k in before:
        if k.startswith("backbone."):
            assert torch.equal(before[k], after[k]), k  # weights, running_mean/var, num_batches_tracked
    assert not torch.equal(before["heads.weight"], after["heads.weight"])
    assert all(p.requires_grad for p in trainer.module.parameters())  # released at the end


def test_freeze_ends_after_freeze_iters(tmp_path):
    cfg = tiny_cfg(str(tmp_path), MODEL__FREEZE_LAYERS=["backbone"], SOLVER__FREEZE_ITERS=2,
                   SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=0, SOLVER__CHECKPOINT_PERIOD=100)
    trainer = TinyTrainer(cfg)
    before = _tensors(trainer.module)
    trainer.train()
    after = _tensors(trainer.module)
    assert not torch.equal(before["backbone.0.weight"], after["backbone.0.weight"])
    assert int(after["backbone.1.num_batches_tracked"]) == 2  # BN counted only the 2 unfrozen steps


def test_unknown_freeze_layer_names_the_key(tmp_path):
    cfg = tiny_cfg(str(tmp_path), MODEL__FREEZE_LAYERS=["backbon"], SOLVER__FREEZE_ITERS=2)
    with pytest.raises(ValueError, match="MODEL.FREEZE_LAYERS.*backbon"):
        TinyTrainer(cfg)


class _NanTrainer(TinyTrainer):
    @classmethod
    def build_model(cls, cfg):
        torch.manual_seed(0)
        return TinyReid(cfg.MODEL.HEADS.NUM_CLASSES, nan_at_call=6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(str(tmp_path), TEST__EVAL_PERIOD=0)  # 4 iterations per epoch, checkpoint every epoch
    trainer = _NanTrainer(cfg)
    with pytest.raises(FloatingPointError, match=r"iteration 6: loss_cls=nan"):
        trainer.train()
    files = sorted(os.listdir(tmp_path))
    assert "model_0000.pth" in files and "model_final.pth" not in files and "model_0001.pth" not in files
    ckpt = torch.load(tmp_path / "model_0000.pth", weights_only=True)
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000.pth"


def test_checkpointer_refuses_nan_model(tmp_path):
    model = TinyReid()
    with torch.no_grad():
        model.heads.weight[0, 0] = float("inf")
    hook = hooks.PeriodicCheckpointer(Checkpointer(model, str(tmp_path)), model, period_epochs=1)
    hook._save("model_0000", 1)
    assert not (tmp_path / "model_0000.pth").exists()


class _ScriptedEval(TinyTrainer):
    scores = [50.0, 70.0, 60.0]

    @classmethod
    def test(cls, cfg, model):
        s = cls.scores.pop(0)
        return {"tiny": {"mAP": s, "Rank-1": s + 10, "metric": s + 5}}


def test_best_checkpoint_follows_latest_evaluation(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__CHECKPOINT_PERIOD=100)  # eval after epochs 0, 1 and at the end
    trainer = _ScriptedEval(cfg)
    trainer.train()
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert best["iteration"] == 8 and best["best_metric"] == 75.0  # epoch 1's (70 + 80) / 2
    assert final["iteration"] == 12 and final["best_metric"] == 75.0
    evals = [m for m in read_metrics(str(tmp_path)) if "tiny/metric" in m]
    assert [m["tiny/metric"] for m in evals] == [55.0, 75.0, 65.0]
    assert [m["iteration"] for m in evals] == [3, 7, 12]


def test_writers_json_and_tensorboard(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__MAX_ITER=6, TEST__EVAL_PERIOD=0)
    trainer = TinyTrainer(cfg)
    trainer.train()
    rows = read_metrics(str(tmp_path))
    assert {"iteration", "loss_cls", "total_loss", "lr", "time", "data_time"} <= set(rows[0])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"lr", "loss_cls", "total_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("lr")] == [3, 5]  # after epoch 0 (4 iterations) and at the end


def test_console_line_has_eta_losses_lr_and_speed(tmp_path, capsys):
    from fastreid.utils.logger import setup_logger

    setup_logger(color=False)
    cfg = tiny_cfg(str(tmp_path), SOLVER__MAX_ITER=4, TEST__EVAL_PERIOD=0)
    TinyTrainer(cfg).train()
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if "iter: 3" in ln][0]
    for word in ("eta:", "loss_cls:", "lr:", "ims/s:"):
        assert word in line


def test_fp16_on_cpu_falls_back_to_bf16_and_trains(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__AMP__ENABLED=True, SOLVER__AMP__DTYPE="float16",
                   SOLVER__CHANNELS_LAST=True, SOLVER__MAX_ITER=3, TEST__EVAL_PERIOD=0)
    trainer = TinyTrainer(cfg)
    assert trainer.amp_dtype == "bfloat16" and trainer.grad_scaler is None
    before = _tensors(trainer.module)
    trainer.train()
    assert not torch.equal(before["heads.weight"], trainer.module.state_dict()["heads.weight"])


def _losses_by_iter(output_dir):
    return {m["iteration"]: m["loss_cls"] for m in read_metrics(output_dir) if "loss_cls" in m}


def test_resume_continues_exactly(tmp_path):
    common = dict(SOLVER__MAX_EPOCH=4, SOLVER__WARMUP_ITERS=3, SOLVER__CHECKPOINT_PERIOD=1)
    full_dir, cut_dir = str(tmp_path / "full"), str(tmp_path / "cut")
    log_every_iteration(TinyTrainer(tiny_cfg(full_dir, **common))).train()
    # Interrupted after 6 iterations (the last checkpoint is at iteration 4, end of epoch 0) ...
    cut = log_every_iteration(TinyTrainer(tiny_cfg(cut_dir, **common)))
    with pytest.raises(KeyboardInterrupt):
        cut.register_hooks([InterruptAt(6)])
        cut.train()
    # ... then resumed from last_checkpoint.
    resumed = log_every_iteration(TinyTrainer(tiny_cfg(cut_dir, **common)))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    full, after = _losses_by_iter(full_dir), _losses_by_iter(cut_dir)
    assert sorted(after) == list(range(16))
    for it in range(4, 16):
        assert after[it] == full[it], it
    a = torch.load(os.path.join(full_dir, "model_final.pth"), weights_only=True)["model"]
    b = torch.load(os.path.join(cut_dir, "model_final.pth"), weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_simple_trainer_rejects_eval_mode():
    cfg = tiny_cfg("")
    model = TinyReid()
    trainer = SimpleTrainer(model, TinyLoader(cfg), torch.optim.SGD(model.parameters(), lr=0.1))
    model.eval()
    with pytest.raises(AssertionError, match="eval mode"):
        trainer.train(0, 1, 1)


class _BNOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(3, momentum=0.5)

    def forward(self, batch):
        return self.bn(batch["x"])


def test_precise_bn_is_the_plain_average_over_batches():
    torch.manual_seed(0)
    batches = [{"x": torch.randn(16, 3) * (i + 1) + i} for i in range(3)]
    model = _BNOnly().train()
    hooks.update_bn_stats(model, iter(batches), num_iter=3)
    means = torch.stack([b["x"].mean(0) for b in batches])
    variances = torch.stack([b["x"].var(0, unbiased=True) for b in batches])
    assert torch.allclose(model.bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(model.bn.running_var, variances.mean(0), atol=1e-4)
    assert model.bn.momentum == 0.5  # restored


def test_launch_under_torchrun_env_with_one_process_runs_in_place(monkeypatch):
    from fastreid.engine import launch

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    seen = []
    launch(lambda x: seen.append(x), num_gpus_per_machine=4, args=(7,))  # env wins over --num-gpus
    assert seen == [7]


def _cyclic_ddp_worker(report_dir):
    """Leave a DDP wrapper in a reference cycle (as a trainer and its hooks do) and record, at exit,
    whether it outlived the worker: a surviving wrapper keeps gloo's threads for interpreter shutdown."""
    import atexit
    import gc

    from fastreid.utils import comm

    holder = {"ddp": torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))}
    holder["self"] = holder

    def report():
        alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
        with open(os.path.join(report_dir, f"rank{comm.get_rank()}_{os.getpid()}"), "w") as f:
            f.write(str(alive))

    atexit.register(report)


def test_launch_frees_ddp_wrappers_before_the_process_exits(tmp_path):
    from fastreid.engine import launch

    launch(_cyclic_ddp_worker, 2, dist_url="auto", args=(str(tmp_path),))
    reports = [p.read_text() for p in tmp_path.iterdir()]
    assert reports == ["0", "0"]


def test_compile_keeps_checkpoint_keys_and_trains(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__COMPILE=True, SOLVER__MAX_ITER=2, TEST__EVAL_PERIOD=0)
    trainer = TinyTrainer(cfg)
    before = _tensors(trainer.module)
    trainer.train()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert set(saved) == set(TinyReid().state_dict())  # no "_orig_mod." in the keys
    assert not torch.equal(before["backbone.0.weight"], saved["backbone.0.weight"])


def test_precise_bn_hook_recomputes_statistics_before_the_final_evaluation(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__MAX_ITER=5, TEST__EVAL_PERIOD=0, TEST__PRECISE_BN__ENABLED=True,
                   TEST__PRECISE_BN__NUM_ITER=3)
    trainer = TinyTrainer(cfg)
    trainer.train()
    bn = trainer.module.backbone[1]
    # Statistics were reset and averaged over exactly the 3 precise-BN batches; momentum is restored.
    assert int(bn.num_batches_tracked) == 3 and bn.momentum == 0.1
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert torch.equal(saved["backbone.1.running_mean"], bn.running_mean)
