"""Real model, data and evaluator on a tiny synthetic patent set: two stages in one command, the test
tool writing and scoring result.npy, exact resume, and 2-process gloo DDP against one process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine_standins import InterruptAt, log_every_iteration
from fastreid.config import get_cfg
from fastreid.data.synthetic import SyntheticSpec, generate, load_test_ground_truth
from fastreid.engine import default_argument_parser, launch, seed_all
from fastreid.engine.commands import evaluate, train_main
from fastreid.engine.trainer import DefaultTrainer
from fastreid.evaluation import score_submission

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """MODEL:
  DEVICE: cpu
  BACKBONE: {{DEPTH: 18x, FEAT_DIM: 512, PRETRAIN: False}}
  LOSSES: {{NAME: [CrossEntropyLoss, TripletLoss]}}
INPUT: {{SIZE_TRAIN: [{size}, {size}], SIZE_TEST: [{size}, {size}]}}
DATASETS: {{NAMES: [DeepPatent], TESTS: [DeepPatent, DeepPatentTest], ROOT: {root}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: {batch}, MAX_EPOCH: 2, MAX_ITER: {iters}, WARMUP_ITERS: 2, CHECKPOINT_PERIOD: {period},
          BASE_LR: 0.001}}
TEST: {{EVAL_PERIOD: 0, IMS_PER_BATCH: 64, SEARCH: {{BACKEND: torch}}}}
SEED: 5
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = str(base / "data")
    generate(data, SyntheticSpec(num_patents=20, image_size=32, seed=0, min_views=3, max_views=4), workers=1)
    cfgs = base / "cfgs"
    cfgs.mkdir()
    (cfgs / "small.yml").write_text(TINY.format(size=32, root=data, iters=2, period=100, batch=8))
    (cfgs / "large.yml").write_text(TINY.format(size=36, root=data, iters=2, period=100, batch=8))
    (cfgs / "both.yml").write_text(f"STAGES: [small.yml, large.yml]\nOUTPUT_DIR: {base / 'runs'}\n")
    (cfgs / "resume.yml").write_text(TINY.format(size=32, root=data, iters=0, period=1, batch=16))
    return base, data


def _args(*argv):
    return default_argument_parser().parse_args(list(argv))


def test_two_stages_then_test_tool_writes_and_scores_result(tiny):
    base, data = tiny
    train_main(_args("--config-file", str(base / "cfgs" / "both.yml")))
    s0, s1 = base / "runs" / "stage1_small", base / "runs" / "stage2_large"
    for d in (s0, s1):
        assert {"model_best.pth", "model_final.pth", "metrics.json", "config.yaml", "last_checkpoint"} <= set(
            os.listdir(d))
    cfg1 = get_cfg()
    cfg1.merge_from_file(str(s1 / "config.yaml"))
    assert cfg1.MODEL.WEIGHTS == str(s0 / "model_best.pth") and cfg1.INPUT.SIZE_TRAIN == [36, 36]
    rows = [json.loads(x) for x in open(s1 / "metrics.json")]
    assert any("DeepPatent/mAP" in r for r in rows)

    out = base / "test_out"
    r = subprocess.run([sys.executable, "tools/test.py", "--config-file", str(base / "cfgs" / "both.yml"),
                        "TEST.RESULT_PATH", str(out / "result.npy")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mAP@10" in r.stdout + r.stderr
    result = np.load(out / "result.npy")
    q, db = load_test_ground_truth(data)
    assert result.shape == (len(q), min(10, len(db)))
    scores = score_submission(result, q, db)
    assert 0.0 <= scores["mAP@10"] <= 100.0


def _losses(out):
    return {r["iteration"]: r["total_loss"] for r in map(json.loads, open(os.path.join(out, "metrics.json")))
            if "total_loss" in r}


def _run(cfg_file, out, resume=False, stop=False):
    cfg = get_cfg()
    cfg.merge_from_file(cfg_file)
    cfg.merge_from_list(["OUTPUT_DIR", out, "DATASETS.TESTS", "()"])
    cfg.freeze()
    seed_all(cfg.SEED)  # as default_setup does: the same initial weights in every run
    t = log_every_iteration(DefaultTrainer(cfg))
    if stop:
        # Interrupted in the middle of the second epoch; the last checkpoint is the first epoch's.
        t.register_hooks([InterruptAt(t.iters_per_epoch + 1)])
    t.resume_or_load(resume=resume)
    try:
        t.train()
    except KeyboardInterrupt:
        pass
    return t


def test_resume_with_real_loader_matches_uninterrupted_run(tiny):
    base, _ = tiny
    cfg_file = str(base / "cfgs" / "resume.yml")
    full, cut = str(base / "full"), str(base / "cut")
    t = _run(cfg_file, full)
    epoch = t.epoch_iters
    assert epoch >= 2 and t.max_iter == 2 * epoch
    _run(cfg_file, cut, stop=True)
    resumed = _run(cfg_file, cut, resume=True)
    assert resumed.start_iter == epoch
    a, b = _losses(full), _losses(cut)
    assert [b[i] for i in range(epoch, t.max_iter)] == [a[i] for i in range(epoch, t.max_iter)]


def _ddp_main(cfg_file, out):
    from fastreid.utils import comm

    # The backbone is frozen for the first iteration: DDP then runs with unused parameters.
    results = train_main(_args("--config-file", cfg_file, "OUTPUT_DIR", out, "DATASETS.TESTS", '("DeepPatent",)',
                               "MODEL.FREEZE_LAYERS", "[backbone]", "SOLVER.FREEZE_ITERS", "1"))
    if comm.is_main_process():
        with open(os.path.join(out, "ddp_results.json"), "w") as f:
            json.dump(results, f)


def test_ddp_two_gloo_processes_match_single_process_evaluation(tiny):
    base, _ = tiny
    cfg_file, out = str(base / "cfgs" / "small.yml"), str(base / "ddp")
    launch(_ddp_main, 2, dist_url="auto", args=(cfg_file, out))
    files = os.listdir(out)
    assert "log.txt" in files and "log.txt.rank1" in files and "model_final.pth" in files
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 2 and len(ckpt["rng_states"]) == 2
    ddp = json.load(open(os.path.join(out, "ddp_results.json")))  # one test set: flat metrics
    cfg = get_cfg()
    cfg.merge_from_file(cfg_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "DATASETS.TESTS", '("DeepPatent",)',
                         "OUTPUT_DIR", str(base / "single")])
    single = evaluate(cfg)
    for k in ("mAP", "Rank-1", "mINP"):
        assert ddp[k] == pytest.approx(single[k], abs=1e-3), k
