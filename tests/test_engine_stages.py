"""The STAGES driver: folders, weight hand-over, overrides for every stage, skip and resume."""
import os

import pytest
import torch

from engine_standins import TinyTrainer
from fastreid.config import ConfigError
from fastreid.engine import hooks
from fastreid.engine.stages import plan_stages, previous_stage_weights, run_stages


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def stage_files(tmp_path):
    common = ("SEED: 3\nTEST:\n  EVAL_PERIOD: 1\n"
              "SOLVER:\n  IMS_PER_BATCH: 8\n  WARMUP_ITERS: 1\n  CHECKPOINT_PERIOD: 1\n  MAX_EPOCH: 2\n")
    os.makedirs(tmp_path / "cfgs" / "sub")
    _write(tmp_path / "cfgs" / "sub" / "first.yml", common + "  BASE_LR: 0.01\nMODEL:\n  DEVICE: cpu\n")
    _write(tmp_path / "cfgs" / "second.yml", common + "  BASE_LR: 0.001\n"
           "MODEL:\n  DEVICE: cpu\n  BACKBONE:\n    PRETRAIN: True\n")
    out = tmp_path / "runs"
    return _write(tmp_path / "cfgs" / "two.yml",
                  f"STAGES: [ sub/first.yml, second.yml ]\nOUTPUT_DIR: {out}\n"), out


class _Recorder(hooks.HookBase):
    def __init__(self, log):
        self.log = log

    def before_train(self):
        self.log.append((self.trainer.cfg, self.trainer.start_iter,
                         self.trainer.module.heads.weight.detach().clone()))


class _NoEval(TinyTrainer):
    @classmethod
    def test(cls, cfg, model):
        return {}


def _runner(log, trainer_cls=TinyTrainer):
    def run_one(cfg, resume):
        t = trainer_cls(cfg)
        t.register_hooks([_Recorder(log)])
        t.resume_or_load(resume=resume)
        t.train()
    return run_one


def test_plan_resolves_paths_relative_to_the_listing_file(stage_files):
    cfg_file, out = stage_files
    stages = plan_stages(cfg_file, ["OUTPUT_DIR", str(out / "x")])
    assert [os.path.basename(s.config_file) for s in stages] == ["first.yml", "second.yml"]
    assert [s.output_dir for s in stages] == [str(out / "x" / "stage1_first"), str(out / "x" / "stage2_second")]


def test_missing_stage_file_names_it(tmp_path):
    f = _write(tmp_path / "bad.yml", "STAGES: [ nope.yml ]\n")
    with pytest.raises(ConfigError, match=r"STAGES\[0\].*nope.yml"):
        plan_stages(f, [])


def test_two_stages_hand_over_best_model_and_apply_overrides(stage_files):
    cfg_file, out = stage_files
    log = []
    run_stages(cfg_file, ["SOLVER.WEIGHT_DECAY", "0.0"], resume=False, run_one=_runner(log))
    (cfg0, start0, _), (cfg1, start1, init1) = log
    assert cfg0.OUTPUT_DIR == str(out / "stage1_first") and cfg1.OUTPUT_DIR == str(out / "stage2_second")
    assert cfg0.SOLVER.WEIGHT_DECAY == 0.0 and cfg1.SOLVER.WEIGHT_DECAY == 0.0
    assert cfg1.MODEL.WEIGHTS == str(out / "stage1_first" / "model_best.pth")
    assert cfg1.MODEL.BACKBONE.PRETRAIN is False
    assert cfg1.SOLVER.BASE_LR == 0.001 and start0 == start1 == 0
    best0 = torch.load(cfg1.MODEL.WEIGHTS, weights_only=True)["model"]
    assert torch.equal(init1, best0["heads.weight"])  # stage 2 starts from stage 1's best model
    assert os.path.isfile(out / "stage2_second" / "model_final.pth")


def test_without_evaluation_the_final_model_is_handed_over(stage_files):
    cfg_file, out = stage_files
    log = []
    run_stages(cfg_file, ["TEST.EVAL_PERIOD", "0"], resume=False, run_one=_runner(log, _NoEval))
    assert log[1][0].MODEL.WEIGHTS == str(out / "stage1_first" / "model_final.pth")
    assert previous_stage_weights(str(out / "stage2_second")).endswith("model_final.pth")


def test_resume_skips_finished_stage_and_resumes_running_one(stage_files):
    cfg_file, out = stage_files
    run_stages(cfg_file, [], resume=False, run_one=_runner([]))
    # Pretend stage 1 was interrupted after its first epoch (its last checkpoint is model_0000).
    s1 = out / "stage2_second"
    os.remove(s1 / "model_final.pth")
    _write(s1 / "last_checkpoint", "model_0000.pth")
    log = []
    run_stages(cfg_file, [], resume=True, run_one=_runner(log))
    assert len(log) == 1  # stage 0 skipped
    cfg, start, _ = log[0]
    assert cfg.OUTPUT_DIR == str(s1) and start == 4
    assert os.path.isfile(s1 / "model_final.pth")
