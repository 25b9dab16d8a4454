"""Our patent configs carry the DIRA challenge recipe value for value, and train as it does.

The tables below are the original values, written here by hand from the challenge repository
(configs/Base-bagtricks.yml, Base-SBS.yml, patent/*.yml merged over fast-reid's defaults); they
are never read from our configs. Differences are listed with their reason, and nothing else may
differ.
"""
import math
import os

import pytest
import torch
from torch import nn

from fastreid.config import get_cfg
from fastreid.data.build import build_train_sampler
from fastreid.data.samplers import BalancedIdentitySampler
from fastreid.engine import hooks
from fastreid.engine.train_loop import HookBase, SimpleTrainer
from fastreid.solver import build_lr_scheduler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]

# Stage 1 (sbs_R101-ibn_patent_256.yml over Base-SBS over Base-bagtricks over fast-reid's defaults).
ORIGINAL_256 = {
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.FREEZE_LAYERS": ["backbone"],
    "MODEL.WEIGHTS": "",
    "MODEL.PIXEL_MEAN": IMAGENET_MEAN,
    "MODEL.PIXEL_STD": [0.229 * 255, 0.224 * 255, 0.225 * 255],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.DEPTH": "101x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.FEAT_DIM": 2048,
    "MODEL.BACKBONE.WITH_IBN": True,
    "MODEL.BACKBONE.WITH_NL": True,
    "MODEL.BACKBONE.PRETRAIN": True,
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.NUM_CLASSES": 0,
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.HEADS.WITH_BNNECK": True,
    "MODEL.HEADS.NECK_FEAT": "after",
    "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPoolingP",
    "MODEL.HEADS.CLS_LAYER": "CircleSoftmax",
    "MODEL.HEADS.SCALE": 64,
    "MODEL.HEADS.MARGIN": 0.35,
    "MODEL.LOSSES.NAME": ("CrossEntropyLoss", "TripletLoss"),
    "MODEL.LOSSES.CE.EPSILON": 0.1,
    "MODEL.LOSSES.CE.SCALE": 1.0,
    "MODEL.LOSSES.TRI.MARGIN": 0.0,
    "MODEL.LOSSES.TRI.HARD_MINING": True,
    "MODEL.LOSSES.TRI.NORM_FEAT": False,
    "MODEL.LOSSES.TRI.SCALE": 1.0,
    "INPUT.SIZE_TRAIN": [256, 256],
    "INPUT.SIZE_TEST": [256, 256],
    "INPUT.FLIP.ENABLED": True,
    "INPUT.FLIP.PROB": 0.5,
    "INPUT.PADDING.ENABLED": True,
    "INPUT.PADDING.MODE": "constant",
    "INPUT.PADDING.SIZE": 10,
    "INPUT.CJ.ENABLED": False,
    "INPUT.AUTOAUG.ENABLED": True,
    "INPUT.AUTOAUG.PROB": 0.1,
    "INPUT.REA.ENABLED": True,
    "INPUT.REA.PROB": 0.5,
    "INPUT.REA.VALUE": IMAGENET_MEAN,
    "DATASETS.NAMES": ("Patent",),
    "DATASETS.TESTS": ("Patent",),
    "DATASETS.COMBINEALL": False,
    "DATALOADER.SAMPLER_TRAIN": "BalancedIdentitySampler",
    "DATALOADER.NUM_INSTANCE": 16,
    "DATALOADER.NUM_WORKERS": 8,
    "SOLVER.AMP.ENABLED": True,
    "SOLVER.OPT": "Adam",
    "SOLVER.MAX_EPOCH": 70,
    "SOLVER.BASE_LR": 0.00035,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.HEADS_LR_FACTOR": 1.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY": 0.0005,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0005,
    "SOLVER.SCHED": "CosineAnnealingLR",
    "SOLVER.DELAY_EPOCHS": 30,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.STEPS": [25, 35],
    "SOLVER.ETA_MIN_LR": 7e-7,
    "SOLVER.WARMUP_FACTOR": 0.1,
    "SOLVER.WARMUP_ITERS": 3000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.FREEZE_ITERS": 1000,
    "SOLVER.CHECKPOINT_PERIOD": 5,
    "SOLVER.IMS_PER_BATCH": 128,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "TEST.EVAL_PERIOD": 5,
    "TEST.IMS_PER_BATCH": 128,
    "TEST.METRIC": "cosine",
    "TEST.FLIP.ENABLED": False,
    "TEST.AQE.ENABLED": False,
    "TEST.AQE.ALPHA": 2.0,
    "TEST.AQE.QE_TIME": 1,
    "TEST.AQE.QE_K": 5,
    "TEST.RERANK.ENABLED": False,
    "TEST.PRECISE_BN.ENABLED": False,
    "CUDNN_BENCHMARK": True,
    "OUTPUT_DIR": "logs/Patent/R101_256",
}

# Stage 2 (sbs_R101-ibn_patent_384.yml): built on Base-SBS too, not on stage 1.
ORIGINAL_384 = dict(ORIGINAL_256, **{
    "INPUT.SIZE_TRAIN": [384, 384],
    "INPUT.SIZE_TEST": [384, 384],
    "MODEL.WEIGHTS": "./logs/Patent/R101_256/model_best.pth",
    "SOLVER.BASE_LR": 0.000035,
    "SOLVER.IMS_PER_BATCH": 64,
    "SOLVER.MAX_EPOCH": 90,
    "SOLVER.STEPS": [15, 30],
    "OUTPUT_DIR": "logs/Patent/R101_384",
})

# Submission (sbs_R101-ibn_patent_test.yml), also on Base-SBS.
ORIGINAL_TEST = dict(ORIGINAL_256, **{
    "INPUT.SIZE_TRAIN": [384, 384],
    "INPUT.SIZE_TEST": [384, 384],
    "MODEL.WEIGHTS": "./logs/Patent/R101_384/model_best.pth",
    "SOLVER.BASE_LR": 0.000035,
    "SOLVER.IMS_PER_BATCH": 64,
    "SOLVER.MAX_EPOCH": 60,
    "SOLVER.STEPS": [10, 20],
    "DATASETS.NAMES": ("PatentTest",),
    "DATASETS.TESTS": ("PatentTest",),
    "TEST.IMS_PER_BATCH": 32,
    "TEST.AQE.ENABLED": True,
    "OUTPUT_DIR": "logs/Patent/submit_log",
})

# What the original code did without a config key (our keys that spell it out).
ORIGINAL_IMPLICIT = {
    "INPUT.GRAYSCALE": True,  # the patent readers convert to 8-bit grey repeated to 3 channels
    "INPUT.AUTOAUG.POLICY": "original",  # its AutoAugment() always uses the paper's ImageNet policy
    "INPUT.AUTOAUG.FILL": 128,  # grey fill of rotated / sheared areas
    "MODEL.BACKBONE.NL_WIDTH": 1,  # non-local g/theta/phi with 1 channel
    "SOLVER.AMP.DTYPE": "float16",  # torch.cuda.amp autocast default
}

# Known, documented differences: key -> (why, check of our value).
DATASET_RENAMES = {"Patent": "DeepPatent", "PatentTest": "DeepPatentTest"}
DIFFERENCES = {
    "DATASETS.NAMES": "our reader DeepPatent(Test) reads the same list files (also registered as Patent(Test))",
    "DATASETS.TESTS": "same as DATASETS.NAMES",
    "OUTPUT_DIR": "run folders under logs/patent/; the stages still chain through MODEL.WEIGHTS",
    "MODEL.WEIGHTS": "points at our stage folders (checked below: stage 2 <- stage 1 <- test)",
}
PRETRAIN_NOTE = "stage 2 and the test replace every weight from MODEL.WEIGHTS: no ImageNet download"

CONFIGS = {
    "sbs_R101-ibn_patent_256.yml": ORIGINAL_256,
    "sbs_R101-ibn_patent_384.yml": ORIGINAL_384,
    "sbs_R101-ibn_patent_test.yml": ORIGINAL_TEST,
}


def _merged(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "patent", name))
    return cfg


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(ours, original):
    if isinstance(original, (list, tuple)):
        return isinstance(ours, (list, tuple)) and len(ours) == len(original) and all(
            _same(a, b) for a, b in zip(ours, original))
    if isinstance(original, float) or isinstance(ours, float):
        return ours == pytest.approx(original, rel=1e-9)
    return ours == original


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_patent_config_carries_the_original_values(name):
    cfg = _merged(name)
    original = CONFIGS[name]
    wrong = {}
    for key, value in {**original, **ORIGINAL_IMPLICIT}.items():
        ours = _get(cfg, key)
        if key in ("DATASETS.NAMES", "DATASETS.TESTS"):
            value = tuple(DATASET_RENAMES[v] for v in value)
        elif key in DIFFERENCES:
            continue
        elif key == "MODEL.BACKBONE.PRETRAIN" and name != "sbs_R101-ibn_patent_256.yml":
            assert ours is False, PRETRAIN_NOTE
            continue
        if not _same(ours, value):
            wrong[key] = (ours, value)
    assert not wrong, f"{name}: (ours, original) differ for {wrong}"


def test_stages_chain_like_the_original():
    s1, s2, test = (_merged(n) for n in sorted(CONFIGS))
    assert s2.MODEL.WEIGHTS == os.path.join(s1.OUTPUT_DIR, "model_best.pth")
    assert test.MODEL.WEIGHTS == os.path.join(s2.OUTPUT_DIR, "model_best.pth")


def test_original_dataset_names_are_our_readers():
    from fastreid.utils.registry import DATASET_REGISTRY

    for theirs, ours in DATASET_RENAMES.items():
        assert DATASET_REGISTRY.get(ours) is not None
        if theirs in DATASET_REGISTRY:
            # The compatibility name must read the same list files as ours.
            assert issubclass(DATASET_REGISTRY.get(theirs), DATASET_REGISTRY.get(ours)) or \
                issubclass(DATASET_REGISTRY.get(ours), DATASET_REGISTRY.get(theirs))


def test_recipe_builds_the_camera_aware_balanced_sampler():
    cfg = _merged("sbs_R101-ibn_patent_256.yml")
    pids = [f"p{i // 20}" for i in range(20 * 8)]  # 8 patents x 20 drawings, one camera
    sampler = build_train_sampler(cfg, pids, seed=0, camids=[1] * len(pids))
    assert isinstance(sampler, BalancedIdentitySampler)
    assert (sampler.num_instances, sampler.num_pids_per_batch) == (16, 8)
    batch = sampler.epoch_plan(0)[0]
    assert len(batch) == 128 and len({pids[i] for i in batch}) == 8


# DeepPatent training list: 254,787 drawings.
TRAIN_IMAGES = 254787


@pytest.mark.parametrize("name,ipe,start,span", [
    ("sbs_R101-ibn_patent_256.yml", 254787 // 128, 30, 70 - 30),
    ("sbs_R101-ibn_patent_384.yml", 254787 // 64, 30, 90 - 30),
])
def test_recipe_learning_rates_at_deeppatent_scale(name, ipe, start, span):
    cfg = _merged(name)
    base, eta = cfg.SOLVER.BASE_LR, 7e-7
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=base)
    sched = build_lr_scheduler(cfg, opt, TRAIN_IMAGES // cfg.SOLVER.IMS_PER_BATCH)
    assert (sched.params.iters_per_epoch, sched.params.start_epoch, sched.params.span) == (ipe, start, span)
    seen = {0: opt.param_groups[0]["lr"]}
    checkpoints = {1500, 3000, start * ipe + 5, (start + 1) * ipe, (start + 10) * ipe + 7,
                   (cfg.SOLVER.MAX_EPOCH - 1) * ipe}
    for it in range(1, max(checkpoints) + 1):
        sched.step()
        if it in checkpoints:
            seen[it] = opt.param_groups[0]["lr"]
    assert seen[0] == pytest.approx(base * 0.1)
    assert seen[1500] == pytest.approx(base * (0.1 * 0.5 + 0.5))
    assert seen[3000] == pytest.approx(base)
    assert seen[start * ipe + 5] == pytest.approx(base)  # the delay epochs hold the base rate
    for it, k in [((start + 1) * ipe, 1), ((start + 10) * ipe + 7, 10), ((cfg.SOLVER.MAX_EPOCH - 1) * ipe, span - 1)]:
        assert seen[it] == pytest.approx(eta + (base - eta) * (1 + math.cos(math.pi * k / span)) / 2)


class _Loss(nn.Module):
    """loss = w * x; a huge x makes the scaled gradient overflow, so the GradScaler skips that step."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return {"loss": (self.w * batch["x"]).sum()}


class _RecordLR(HookBase):
    def __init__(self, opt):
        self.opt, self.lrs = opt, []

    def before_step(self):
        self.lrs.append(self.opt.param_groups[0]["lr"])


def test_warmup_step_skipped_when_the_grad_scaler_skips_an_update():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_ITERS", "6", "SOLVER.WARMUP_FACTOR", "0.1",
                         "SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.MAX_EPOCH", "4", "SOLVER.DELAY_EPOCHS", "1",
                         "SOLVER.ETA_MIN_LR", "0.0"])
    overflow_at = {1, 4}
    xs = [1e35 if i in overflow_at else 1.0 for i in range(12)]
    model = _Loss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleTrainer(model, [{"x": torch.tensor([x])} for x in xs], opt)
    trainer.grad_scaler = torch.amp.GradScaler("cpu")
    sched = build_lr_scheduler(cfg, opt, 3)
    recorder = _RecordLR(opt)
    trainer.register_hooks([recorder, hooks.LRScheduler(opt, sched)])
    trainer.train(0, 12, 3)
    assert trainer.grad_scaler.get_scale() == 65536.0 / 4  # both overflows were skipped updates
    # By hand: warmup steps are taken after iterations 0, 2, 3, 5 (not 1, 4), so iterations 0-5 run
    # after w = 0, 1, 1, 2, 3, 3 steps; the warmup ends at 4 of 6 steps, below the base rate.
    expected = [0.1 * (0.1 * (1 - w / 6) + w / 6) for w in [0, 1, 1, 2, 3, 3]]
    end = 0.1 * (0.1 * (1 - 4 / 6) + 4 / 6)
    # The cosine (span 4 - max(ceil(6 / 3), 1) = 2) continues from there: epochs 2 and 3 are its steps 1, 2.
    expected += [end * (1 + math.cos(math.pi * 1 / 2)) / 2] * 3 + [end * (1 + math.cos(math.pi * 2 / 2)) / 2] * 3
    assert recorder.lrs == pytest.approx(expected)
    assert sched.state_dict() == {"last_iter": 12, "warmup_steps": 4}


def _train_lrs(cfg, scheduler_fn, xs, ipe):
    model = _Loss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    trainer = SimpleTrainer(model, [{"x": torch.tensor([x])} for x in xs], opt)
    trainer.grad_scaler = torch.amp.GradScaler("cpu")
    trainer.cfg = cfg
    recorder = _RecordLR(opt)
    trainer.register_hooks([recorder, hooks.LRScheduler(opt, scheduler_fn(opt))])
    trainer.train(0, len(xs), ipe)
    return recorder.lrs


def test_fastreid_style_scheduler_dict_is_stepped_like_the_original():
    """A ``build_lr_scheduler`` override returning fast-reid's dict of torch schedulers (epoch scheduler
    built first, then a per-iteration warmup) gives the same rates as our scheduler."""
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_ITERS", "7", "SOLVER.WARMUP_FACTOR", "0.1",
                         "SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.MAX_EPOCH", "6", "SOLVER.DELAY_EPOCHS", "2",
                         "SOLVER.ETA_MIN_LR", "0.001"])
    ipe, warmup = 3, 7
    xs = [1e35 if i in (2, 3) else 1.0 for i in range(18)]

    def fastreid_dict(opt):
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=6 - max(math.ceil(warmup / ipe), 2), eta_min=0.001)
        linear = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda n: 1.0 if n >= warmup else 0.1 * (1 - n / warmup) + n / warmup)
        return {"lr_sched": cosine, "warmup_sched": linear}

    theirs = _train_lrs(cfg, fastreid_dict, xs, ipe)
    ours = _train_lrs(cfg, lambda opt: build_lr_scheduler(cfg, opt, ipe), xs, ipe)
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert max(ours) < 0.1  # two skipped warmup steps: the base rate is never reached
