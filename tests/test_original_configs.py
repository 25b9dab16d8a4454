"""The DIRA challenge repository's configs/ folder, reproduced key for key, runs through our tools.

Base-bagtricks.yml, Base-SBS.yml and configs/patent/*.yml as the original repository has them (values and
layout; its comments left out) train one iteration on the synthetic set with tools/train_net.py (256 px
stage, then the 384 px stage from its best model) and write result.npy with tools/test.py. Overrides
are only what a CPU machine without the data or the ImageNet download needs: data root, device, depth
(ResNet18, whose feature width is 512, without ImageNet weights), image size, output folder, weights of
the previous stage, and one iteration.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastreid.data.synthetic import SyntheticSpec, generate, load_test_ground_truth
from fastreid.evaluation import score_submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ORIGINAL_CONFIGS = {
    "Base-bagtricks.yml": """MODEL:
  META_ARCHITECTURE: Baseline

  BACKBONE:
    NAME: build_resnet_backbone
    NORM: BN
    DEPTH: 50x
    LAST_STRIDE: 1
    FEAT_DIM: 2048
    WITH_IBN: False
    PRETRAIN: True

  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: GlobalAvgPool
    NECK_FEAT: before
    CLS_LAYER: Linear

  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)

    CE:
      EPSILON: 0.1
      SCALE: 1.

    TRI:
      MARGIN: 0.3
      HARD_MINING: True
      NORM_FEAT: False
      SCALE: 1.

INPUT:
  SIZE_TRAIN: [ 256, 128 ]
  SIZE_TEST: [ 256, 128 ]

  REA:
    ENABLED: True
    PROB: 0.5

  FLIP:
    ENABLED: True

  PADDING:
    ENABLED: True

DATALOADER:
  SAMPLER_TRAIN: NaiveIdentitySampler
  NUM_INSTANCE: 4
  NUM_WORKERS: 8

SOLVER:
  AMP:
    ENABLED: True
  OPT: Adam
  MAX_EPOCH: 120
  BASE_LR: 0.00035
  WEIGHT_DECAY: 0.0005
  WEIGHT_DECAY_NORM: 0.0005
  IMS_PER_BATCH: 64

  SCHED: MultiStepLR
  STEPS: [ 40, 90 ]
  GAMMA: 0.1

  WARMUP_FACTOR: 0.1
  WARMUP_ITERS: 2000

  CHECKPOINT_PERIOD: 30

TEST:
  EVAL_PERIOD: 30
  IMS_PER_BATCH: 128

CUDNN_BENCHMARK: True
""",
    "Base-SBS.yml": """_BASE_: Base-bagtricks.yml

MODEL:
  FREEZE_LAYERS: [ backbone ]

  BACKBONE:
    WITH_NL: True

  HEADS:
    NECK_FEAT: after
    POOL_LAYER: GeneralizedMeanPoolingP
    CLS_LAYER: CircleSoftmax
    SCALE: 64
    MARGIN: 0.35
  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)
    CE:
      EPSILON: 0.1
      SCALE: 1.0
    TRI:
      MARGIN: 0.0
      HARD_MINING: True
      NORM_FEAT: False
      SCALE: 1.0
INPUT:
  SIZE_TRAIN: [ 384, 128 ]
  SIZE_TEST: [ 384, 128 ]

  AUTOAUG:
    ENABLED: True
    PROB: 0.1
DATALOADER:
  NUM_INSTANCE: 16
SOLVER:
  AMP:
    ENABLED: True
  OPT: Adam
  MAX_EPOCH: 60
  BASE_LR: 0.00035
  WEIGHT_DECAY: 0.0005
  IMS_PER_BATCH: 64
  SCHED: CosineAnnealingLR
  DELAY_EPOCHS: 30
  ETA_MIN_LR: 0.0000007
  WARMUP_FACTOR: 0.1
  WARMUP_ITERS: 2000

  FREEZE_ITERS: 1000
  CHECKPOINT_PERIOD: 20
TEST:
  EVAL_PERIOD: 5
  IMS_PER_BATCH: 128

CUDNN_BENCHMARK: True""",
    "patent/sbs_R101-ibn_patent_256.yml": """_BASE_: ../Base-SBS.yml

INPUT:
  SIZE_TRAIN: [256, 256]
  SIZE_TEST: [256, 256]
MODEL:
  BACKBONE:
    DEPTH: 101x
    WITH_IBN: True
    WITH_NL: True
SOLVER:
  BIAS_LR_FACTOR: 1.
  BASE_LR: 0.00035
  IMS_PER_BATCH: 128
  MAX_EPOCH: 70
  STEPS: [25, 35]
  WARMUP_ITERS: 3000
  CHECKPOINT_PERIOD: 5

DATASETS:
  NAMES: ("Patent",)
  TESTS: ("Patent",)

DATALOADER:
  SAMPLER_TRAIN: BalancedIdentitySampler
TEST:
  EVAL_PERIOD: 5
  IMS_PER_BATCH: 128
  AQE:
    ENABLED: False
    ALPHA : 2.0
    QE_TIME : 1
    QE_K: 5


OUTPUT_DIR: logs/Patent/R101_256""",
    "patent/sbs_R101-ibn_patent_384.yml": """_BASE_: ../Base-SBS.yml

INPUT:
  SIZE_TRAIN: [384, 384]
  SIZE_TEST: [384, 384]
MODEL:
  BACKBONE:
    DEPTH: 101x
    WITH_IBN: True
    WITH_NL: True
  WEIGHTS: "./logs/Patent/R101_256/model_best.pth"
SOLVER:
  BIAS_LR_FACTOR: 1.
  BASE_LR: 0.000035
  IMS_PER_BATCH: 64
  MAX_EPOCH: 90
  STEPS: [15, 30]
  WARMUP_ITERS: 3000
  CHECKPOINT_PERIOD: 5

DATASETS:
  NAMES: ("Patent",)
  TESTS: ("Patent",)

DATALOADER:
  SAMPLER_TRAIN: BalancedIdentitySampler
TEST:
  EVAL_PERIOD: 5
  IMS_PER_BATCH: 128
  AQE:
    ENABLED: False
    ALPHA : 2.0
    QE_TIME : 1
    QE_K: 5
OUTPUT_DIR: logs/Patent/R101_384
""",
    "patent/sbs_R101-ibn_patent_test.yml": """_BASE_: ../Base-SBS.yml

INPUT:
  SIZE_TRAIN: [384, 384]
  SIZE_TEST: [384, 384]
MODEL:
  BACKBONE:
    DEPTH: 101x
    WITH_IBN: True
    WITH_NL: True
  WEIGHTS: "./logs/Patent/R101_384/model_best.pth"

SOLVER:
  BIAS_LR_FACTOR: 1.
  BASE_LR: 0.000035
  IMS_PER_BATCH: 64
  MAX_EPOCH: 60
  STEPS: [10, 20]
  WARMUP_ITERS: 3000
  CHECKPOINT_PERIOD: 5


DATASETS:
  NAMES: ("PatentTest",)
  TESTS: ("PatentTest",)

DATALOADER:
  SAMPLER_TRAIN: BalancedIdentitySampler
TEST:
  EVAL_PERIOD: 5
  IMS_PER_BATCH: 32
  AQE:
    ENABLED: True
    ALPHA : 2.0
    QE_TIME : 1
    QE_K: 5
OUTPUT_DIR: logs/Patent/submit_log
""",
}


@pytest.fixture(scope="module")
def original_repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("dira")
    data = str(base / "datasets")
    generate(data, SyntheticSpec(num_patents=24, image_size=32, seed=4, min_views=3, max_views=4), workers=1)
    for name, text in ORIGINAL_CONFIGS.items():
        path = base / "configs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base, data


def _run(tool, config, *overrides):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), "--config-file", str(config), *overrides],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r.stdout + r.stderr


def test_original_configs_train_and_write_result(original_repo):
    base, data = original_repo
    cpu = ["DATASETS.ROOT", data, "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x",
           "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.MAX_ITER", "1"]
    runs = base / "logs"
    stage1, stage2, submit = runs / "R101_256", runs / "R101_384", runs / "submit_log"
    _run("train_net.py", base / "configs/patent/sbs_R101-ibn_patent_256.yml", *cpu,
         "INPUT.SIZE_TRAIN", "[24, 24]", "INPUT.SIZE_TEST", "[24, 24]", "OUTPUT_DIR", str(stage1))
    assert {"model_best.pth", "model_final.pth", "config.yaml"} <= set(os.listdir(stage1))
    _run("train_net.py", base / "configs/patent/sbs_R101-ibn_patent_384.yml", *cpu,
         "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "OUTPUT_DIR", str(stage2),
         "MODEL.WEIGHTS", str(stage1 / "model_best.pth"))
    assert "model_final.pth" in os.listdir(stage2)
    log = _run("test.py", base / "configs/patent/sbs_R101-ibn_patent_test.yml", *cpu[:-2],
               "INPUT.SIZE_TEST", "[32, 32]", "OUTPUT_DIR", str(submit),
               "MODEL.WEIGHTS", str(stage2 / "model_best.pth"))
    result = np.load(submit / "result.npy")
    queries, database = load_test_ground_truth(data)
    assert result.shape == (len(queries), min(10, len(database))), log[-2000:]
    assert 0.0 <= score_submission(result, queries, database)["mAP@10"] <= 100.0


def test_original_configs_rely_on_no_default_that_differs_here(original_repo):
    """Every key whose fast-reid default differs from ours is set by the challenge's files themselves
    (except precise BN's data set, unused while precise BN is off), so they mean the same here."""
    from fastreid.config import get_cfg, iter_dotted, load_yaml_with_base
    from fastreid.config.fastreid_compat import FASTREID_DEFAULTS

    base, _ = original_repo
    ours = dict(iter_dotted(get_cfg()))
    differing = {k for k, v in FASTREID_DEFAULTS.items() if k in ours and repr(ours[k]) != repr(v)
                 and not (isinstance(v, (int, float)) and ours[k] == v)}
    for name in ("sbs_R101-ibn_patent_256.yml", "sbs_R101-ibn_patent_384.yml", "sbs_R101-ibn_patent_test.yml"):
        _, sources = load_yaml_with_base(str(base / "configs" / "patent" / name))
        assert differing - set(sources) == {"TEST.PRECISE_BN.DATASET"}, name
        cfg = get_cfg()
        cfg.merge_from_file(str(base / "configs" / "patent" / name))
        assert cfg.MODEL.BACKBONE.DEPTH == "101x" and cfg.MODEL.HEADS.CLS_LAYER == "CircleSoftmax"
        assert not cfg.TEST.PRECISE_BN.ENABLED
