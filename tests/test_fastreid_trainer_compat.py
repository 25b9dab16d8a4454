"""fast-reid user code runs unchanged: a registered backbone and a DefaultTrainer subclass overriding
build_evaluator, written against fast-reid's import paths; and --resume continues a folder written by the
original code (its checkpoint built here in the original's format)."""
import json
import logging
import math
import os

import pytest
import torch
import yaml
from torch import nn

from engine_standins import InterruptAt, log_every_iteration
from fastreid.config import get_cfg
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine import DefaultTrainer, HookBase, default_argument_parser, default_setup
from fastreid.evaluation import ReidEvaluator
from fastreid.layers import get_norm
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.utils.events import get_event_storage


@BACKBONE_REGISTRY.register()
def build_compat_test_backbone(cfg):
    """A user's backbone, registered the fast-reid way."""
    dim = cfg.MODEL.BACKBONE.FEAT_DIM
    return nn.Sequential(nn.Conv2d(3, dim, 5, stride=4, padding=2, bias=False),
                         get_norm(cfg.MODEL.BACKBONE.NORM, dim), nn.ReLU(inplace=True))


class UserHook(HookBase):
    """A hook written for fast-reid: reads the trainer's fast-reid attributes and the event storage."""

    seen = []

    def after_epoch(self):
        storage = get_event_storage()
        UserHook.seen.append((self.trainer.epoch, self.trainer.iter, self.trainer.max_epoch,
                              self.trainer.warmup_iters, "lr" in storage.latest()))


class UserTrainer(DefaultTrainer):
    """A fast-reid-style trainer subclass: build_evaluator overridden, one hook added."""

    evaluators_built = []

    def build_hooks(self):
        ret = super().build_hooks()
        ret.insert(-1, UserHook())
        return ret

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        cls.evaluators_built.append(dataset_name)
        return data_loader, ReidEvaluator(cfg, num_query, output_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("compat_data"))
    generate(root, SyntheticSpec(num_patents=12, image_size=32, seed=3, min_views=3, max_views=4), workers=1)
    return root


def _user_main(config_file, opts, resume=False):
    """fast-reid's tools/train_net.py main, as users have it."""
    args = default_argument_parser().parse_args(["--config-file", config_file] + (["--resume"] if resume else [])
                                                + opts)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    trainer = UserTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer, trainer.train()


def test_fastreid_style_extension_trains_evaluates_and_records_seed(data, tmp_path):
    cfg_file = tmp_path / "user.yml"
    cfg_file.write_text(f"""MODEL:
  DEVICE: cpu
  BACKBONE: {{NAME: build_compat_test_backbone, FEAT_DIM: 16, PRETRAIN: False}}
  HEADS: {{POOL_LAYER: GlobalAvgPool}}
  LOSSES: {{NAME: [CrossEntropyLoss, TripletLoss]}}
INPUT: {{SIZE_TRAIN: [32, 32], SIZE_TEST: [32, 32]}}
DATASETS: {{NAMES: [Patent], TESTS: [Patent], ROOT: {data}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 8, MAX_EPOCH: 1, MAX_ITER: 3, WARMUP_ITERS: 0, BASE_LR: 0.001, CHECKPOINT_PERIOD: 1}}
TEST: {{EVAL_PERIOD: 0, IMS_PER_BATCH: 32, SEARCH: {{BACKEND: torch}}}}
""")
    out = str(tmp_path / "out")
    UserTrainer.evaluators_built.clear()
    UserHook.seen.clear()
    trainer, results = _user_main(str(cfg_file), ["OUTPUT_DIR", out])
    assert UserHook.seen == [(0, 2, 1, 0, True)]  # after the only epoch (3 iterations), lr recorded
    # One test set: test() returns the metrics themselves, as fast-reid does.
    assert UserTrainer.evaluators_built == ["Patent"]
    assert set(results) >= {"mAP", "Rank-1", "metric"} and 0 <= results["mAP"] <= 100
    assert set(UserTrainer.test(trainer.cfg, trainer.module)) >= {"mAP", "Rank-1"}
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert any("mAP" in r for r in rows)
    # SEED -1 was resolved once: config.yaml and the checkpoint hold the same concrete seed, and
    # config.yaml records the number of classes taken from the training set.
    saved = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert saved["SEED"] >= 0 and saved["SEED"] == trainer.cfg.SEED
    assert saved["MODEL"]["HEADS"]["NUM_CLASSES"] == trainer.module.heads.weight.shape[0] > 0
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["seed"] == saved["SEED"]


def test_resume_with_seed_minus_one_reuses_the_recorded_seed(data, tmp_path):
    from fastreid.utils.env import resolve_seed

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "iteration": 4, "seed": 1234}, out / "model_0000.pth")
    (out / "last_checkpoint").write_text("model_0000.pth")
    assert resolve_seed(-1, str(out), resume=True) == 1234
    assert resolve_seed(7, str(out), resume=True) == 7
    fresh = {resolve_seed(-1, str(out), resume=False) for _ in range(3)}
    assert len(fresh) > 1 and all(0 <= s < 2 ** 31 for s in fresh)


# ---- resume from a folder written by the original code ----------------------------------------------

ORIGINAL = """MODEL:
  DEVICE: cpu
  FREEZE_LAYERS: [backbone]
  BACKBONE: {{DEPTH: 18x, FEAT_DIM: 512, WITH_IBN: True, PRETRAIN: False}}
  HEADS: {{POOL_LAYER: GeneralizedMeanPoolingP, CLS_LAYER: CircleSoftmax, SCALE: 64, MARGIN: 0.35,
          NECK_FEAT: after}}
  LOSSES: {{NAME: [CrossEntropyLoss, TripletLoss], TRI: {{MARGIN: 0.0}}}}
INPUT: {{SIZE_TRAIN: [32, 32], SIZE_TEST: [32, 32]}}
DATASETS: {{NAMES: [Patent], TESTS: [], ROOT: {root}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{OPT: Adam, IMS_PER_BATCH: 8, MAX_EPOCH: 3, BASE_LR: 0.001, HEADS_LR_FACTOR: 2.0, WEIGHT_DECAY_NORM: 0.0,
          SCHED: CosineAnnealingLR, ETA_MIN_LR: 0.00001, WARMUP_ITERS: 3, FREEZE_ITERS: 2, CHECKPOINT_PERIOD: 1}}
TEST: {{EVAL_PERIOD: 0}}
SEED: 3
OUTPUT_DIR: {out}
"""

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def _original_optimizer(model, cfg, lr_factor):
    """An optimizer state as fast-reid's ContiguousParams + Adam saves it, with known per-parameter moments.

    Written from fast-reid's rules: norm parameters take WEIGHT_DECAY_NORM, biases WEIGHT_DECAY_BIAS
    (default 0.0005), heads parameters HEADS_LR_FACTOR x the rate, FREEZE_LAYERS prefixes the "freeze"
    status; parameters sharing (status, lr, wd) share one flat buffer, in model order.
    """
    modules = dict(model.named_modules())
    moments, groups = {}, {}
    for i, (name, p) in enumerate(model.named_parameters()):
        if not p.requires_grad:
            continue
        owner, leaf = name.rsplit(".", 1)
        wd = 0.0005 if leaf == "bias" else (0.0 if isinstance(modules[owner], _NORMS) else 0.0005)
        lr = 0.001 * (2.0 if name.startswith("heads.") else 1.0)
        status = "freeze" if name.startswith("backbone") else "normal"
        moments[name] = torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) * 1e-3 + i
        groups.setdefault((status, lr, wd), []).append(name)
    state, param_groups = {}, []
    for gi, ((status, lr, wd), names) in enumerate(groups.items()):
        flat = torch.cat([moments[n].reshape(-1) for n in names])
        state[gi] = {"step": 10, "exp_avg": flat, "exp_avg_sq": flat * flat}
        param_groups.append({"freeze_status": status, "lr": lr * lr_factor, "initial_lr": lr, "weight_decay": wd,
                             "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "params": [gi]})
    return {"state": state, "param_groups": param_groups}, moments


def _write_original_run(out, trainer, optimizer_state):
    os.makedirs(out, exist_ok=True)
    ckpt = {"model": trainer.module.state_dict(), "optimizer": optimizer_state,
            "lr_sched": {"T_max": 2, "eta_min": 1e-5, "last_epoch": 1}, "warmup_sched": {"last_epoch": 3},
            "epoch": 0, "metric": 12.5}
    torch.save(ckpt, os.path.join(out, "model_0000.pth"))
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000.pth")
    return ckpt


def _cfg(data, out):
    path = os.path.join(os.path.dirname(out), "original.yml")
    with open(path, "w") as f:
        f.write(ORIGINAL.format(root=data, out=out))
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.freeze()
    return cfg


def test_resume_from_original_checkpoint_carries_optimizer_state(data, tmp_path, caplog):
    out = str(tmp_path / "original_run")
    cfg = _cfg(data, out)
    source = DefaultTrainer(cfg)
    ipe = source.epoch_iters
    assert ipe >= 3  # the warmup (3 iterations) ends within the saved epoch
    # The original after epoch 0: warmup done, cosine over MAX_EPOCH - ceil(3 / ipe) = 2 epochs stepped once.
    eta, lr0 = 1e-5, 0.001
    factor = (eta + (lr0 - eta) * (1 + math.cos(math.pi / 2)) / 2) / lr0
    opt_state, moments = _original_optimizer(source.module, cfg, factor)
    ckpt = _write_original_run(out, source, opt_state)

    resumed = DefaultTrainer(cfg)
    with caplog.at_level(logging.INFO):
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == ipe  # the epoch after the saved one
    for name, p in resumed.module.named_parameters():
        assert torch.equal(p.detach(), ckpt["model"][name]), name
        if name in moments:
            st = resumed.optimizer.state[p]
            assert torch.equal(st["exp_avg"], moments[name]) and torch.equal(st["exp_avg_sq"], moments[name] ** 2)
            assert float(st["step"]) == 10
    warning = next(r.getMessage() for r in caplog.records if "Not carried over" in r.getMessage())
    assert "random states" in warning and "best score" in warning and "optimizer state" not in warning
    assert "learning-rate factor" not in warning
    for group in resumed.optimizer.param_groups:  # the rate the original would use at this iteration
        assert group["lr"] == pytest.approx(eta + (group["initial_lr"] - eta) * 0.5, rel=1e-6)
    resumed.train()
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert final["iteration"] == resumed.max_iter == 3 * ipe


def test_resume_from_original_reports_what_does_not_match(data, tmp_path, caplog):
    out = str(tmp_path / "other_run")
    cfg = _cfg(data, out)
    source = DefaultTrainer(cfg)
    opt_state, _ = _original_optimizer(source.module, cfg, 1.0)
    opt_state["param_groups"][0]["weight_decay"] = 0.1  # a run with another weight decay
    _write_original_run(out, source, opt_state)
    resumed = DefaultTrainer(cfg)
    with caplog.at_level(logging.WARNING):
        resumed.resume_or_load(resume=True)
    warning = next(r.getMessage() for r in caplog.records if "Not carried over" in r.getMessage())
    assert "optimizer group 0 (freeze=freeze, lr=0.001, weight_decay=0.1) matches no parameter group" in warning
    assert not resumed.optimizer.state  # nothing half-loaded
    assert resumed.start_iter == resumed.epoch_iters


# ---- exact resume with SEED -1 -------------------------------------------------------------------------

def _seeded_run(cfg_file, out, seed, resume=False, stop_at=None):
    args = default_argument_parser().parse_args(["--config-file", cfg_file, *(["--resume"] if resume else []),
                                                 "OUTPUT_DIR", out, "SEED", str(seed)])
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    trainer = log_every_iteration(UserTrainer(cfg))
    if stop_at is not None:
        trainer.register_hooks([InterruptAt(stop_at)])
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    losses = {r["iteration"]: r["total_loss"] for r in map(json.loads, open(os.path.join(out, "metrics.json")))
              if "total_loss" in r}
    return trainer, losses


def test_exact_resume_with_seed_minus_one(data, tmp_path):
    cfg_file = tmp_path / "seeded.yml"
    cfg_file.write_text(f"""MODEL:
  DEVICE: cpu
  BACKBONE: {{NAME: build_compat_test_backbone, FEAT_DIM: 16, PRETRAIN: False}}
INPUT: {{SIZE_TRAIN: [32, 32], SIZE_TEST: [32, 32], FLIP: {{ENABLED: True}}, REA: {{ENABLED: True}}}}
DATASETS: {{NAMES: [Patent], TESTS: [], ROOT: {data}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 8, MAX_EPOCH: 2, WARMUP_ITERS: 0, BASE_LR: 0.01, CHECKPOINT_PERIOD: 1}}
TEST: {{EVAL_PERIOD: 0}}
""")
    cut = str(tmp_path / "cut")
    interrupted, _ = _seeded_run(str(cfg_file), cut, -1, stop_at=3 + 1)
    ipe, total, drawn = interrupted.epoch_iters, interrupted.max_iter, interrupted.cfg.SEED
    assert ipe == 3 and drawn >= 0  # interrupted in the second epoch, after the first epoch's checkpoint
    resumed, cut_losses = _seeded_run(str(cfg_file), cut, -1, resume=True)
    assert resumed.cfg.SEED == drawn and resumed.start_iter == ipe
    assert yaml.safe_load(open(os.path.join(cut, "config.yaml")))["SEED"] == drawn
    _, full = _seeded_run(str(cfg_file), str(tmp_path / "full"), drawn)
    assert [cut_losses[i] for i in range(ipe, total)] == [full[i] for i in range(ipe, total)]
