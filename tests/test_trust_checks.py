"""Issue 9 in-process: the preflight on broken copies of a real synthetic set, strict evaluation weights,
output-folder discipline, command-line values and checkpoint robustness (real files in tmp_path)."""
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engine_standins import InterruptAt, TinyTrainer, read_metrics, tiny_cfg
from fastreid.config import ConfigError, get_cfg
from fastreid.data.datasets import read_list
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine import default_argument_parser, hooks
from fastreid.engine.commands import build_eval_model, eval_config, evaluate, train_main
from fastreid.engine.preflight import preflight
from fastreid.modeling import build_model
from fastreid.utils.checkpoint import CheckpointError, Checkpointer
from fastreid.utils.file_io import atomic_open, remove_stale_temporaries


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("trust_data") / "data")
    generate(root, SyntheticSpec(num_patents=12, image_size=32, seed=2, min_views=3, max_views=4), workers=1)
    return root


def _cfg(root, out, **opts):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                         "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "DATASETS.ROOT", root,
                         "DATASETS.TESTS", "('DeepPatent', 'DeepPatentTest')", "DATALOADER.NUM_WORKERS", "0",
                         "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler", "SOLVER.IMS_PER_BATCH", "8",
                         "SOLVER.MAX_ITER", "1", "SOLVER.OPT", "SGD", "SOLVER.MOMENTUM", "0.0",
                         "TEST.EVAL_PERIOD", "0", "TEST.SEARCH.BACKEND", "torch", "OUTPUT_DIR", str(out), "SEED", "1"])
    for k, v in opts.items():
        cfg.merge_from_list([k.replace("__", "."), v])
    cfg.freeze()
    return cfg


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [x for x in f.read().split("\n") if x.strip()]


def test_case3_preflight_reports_every_problem_at_once_naming_list_and_line(data, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(data, broken)
    lists = os.path.join(broken, "train_data")
    train_first = _lines(os.path.join(lists, "train_patent_trn.txt"))[0].split()[0]
    os.remove(os.path.join(lists, train_first))
    db = _lines(os.path.join(lists, "val_db_patent.txt"))
    os.remove(os.path.join(lists, db[2].split()[0]))
    open(os.path.join(lists, "val_query_patent.txt"), "w").close()
    shutil.rmtree(os.path.join(broken, "test_data"))
    cfg = _cfg(broken, tmp_path / "out", TEST__METRIC="cosin", DATALOADER__NUM_INSTANCE="16")
    report = preflight(cfg, train=True)
    text = "\n".join(report.errors)
    assert not report.ok and len(report.errors) == 4, text
    assert "TEST.METRIC is 'cosin'" in text
    assert "DeepPatent" in text and "the query split is empty" in text
    assert "DeepPatentTest: none of" in text and "codalab_test_set" in text
    assert "2 listed image(s) do not exist" in text
    assert "train_patent_trn.txt:1)" in text and "val_db_patent.txt:3)" in text
    assert any("NUM_INSTANCE is 16" in w and "no training identity has more than 4" in w for w in report.warnings)
    assert not os.path.exists(tmp_path / "out")


def test_case3_evaluation_failure_during_training_keeps_the_model(tmp_path):
    class _FailingEval(TinyTrainer):
        @classmethod
        def test(cls, cfg, model):
            raise OSError("validation image unreadable")

    cfg = tiny_cfg(str(tmp_path), SOLVER__MAX_EPOCH=2, TEST__EVAL_PERIOD=1, SOLVER__CHECKPOINT_PERIOD=1)
    trainer = _FailingEval(cfg)
    with pytest.raises(OSError, match="validation image unreadable"):
        trainer.train()
    saved = torch.load(tmp_path / "model_eval_failed.pth", weights_only=True)
    assert saved["iteration"] == 4  # the first epoch, evaluated after its 4 iterations
    assert trainer.checkpointer.get_checkpoint_file() == str(tmp_path / "model_eval_failed.pth")
    assert all(torch.equal(v, trainer.module.state_dict()[k]) for k, v in saved["model"].items())
    resumed = TinyTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4


def _checkpoint(cfg, path, **changes):
    c = cfg.clone()
    c.defrost()
    c.MODEL.HEADS.NUM_CLASSES = 5
    for k, v in changes.items():
        c.merge_from_list([k.replace("__", "."), v])
    model = build_model(c)
    Checkpointer(model, os.path.dirname(path)).save(os.path.basename(path))
    return model


def test_case1_and_4_strict_weights_embedding_cause_and_no_imagenet(data, tmp_path):
    cfg = _cfg(data, tmp_path / "ev")
    model = _checkpoint(cfg, str(tmp_path / "ckpt.pth"), MODEL__HEADS__EMBEDDING_DIM="64")
    other = cfg.clone()
    other.defrost()
    other.MODEL.WEIGHTS = str(tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match=r"MODEL.HEADS.EMBEDDING_DIM: 64 in the checkpoint, 0 in the config"):
        build_eval_model(other)
    # The right config loads every feature key; ImageNet weights are never read (the path does not exist).
    other.merge_from_list(["MODEL.HEADS.EMBEDDING_DIM", "64", "MODEL.BACKBONE.PRETRAIN", "True",
                           "MODEL.BACKBONE.PRETRAIN_PATH", str(tmp_path / "missing_imagenet.pth")])
    assert eval_config(other).MODEL.BACKBONE.PRETRAIN is False
    loaded = build_eval_model(other)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_case2_random_weights_only_on_request(data, tmp_path):
    cfg = _cfg(data, tmp_path / "ev", MODEL__WEIGHTS="")
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS is empty"):
        build_eval_model(cfg)
    assert any("MODEL.WEIGHTS is empty" in e for e in preflight(cfg, train=False).errors)
    cfg = _cfg(data, tmp_path / "ev", MODEL__WEIGHTS="random", DATASETS__TESTS="('DeepPatentTest',)")
    assert preflight(cfg, train=False).ok
    evaluate(cfg)
    assert os.path.isfile(tmp_path / "ev" / "result.npy")


def test_case6_interrupted_evaluation_leaves_no_old_result(data, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(data, broken)
    cfg = _cfg(broken, tmp_path / "ev", MODEL__WEIGHTS=str(tmp_path / "ckpt.pth"),
               DATASETS__TESTS="('DeepPatentTest',)")
    _checkpoint(cfg, str(tmp_path / "ckpt.pth"))
    np.save(tmp_path / "old.npy", np.zeros((2, 2), dtype=np.int64))
    os.makedirs(tmp_path / "ev")
    os.replace(tmp_path / "old.npy", tmp_path / "ev" / "result.npy")
    query_dir = os.path.join(broken, "test_data", "codalab_test_set", "queries")
    with open(os.path.join(query_dir, sorted(os.listdir(query_dir))[0]), "wb") as f:
        f.write(b"cut off")
    with pytest.raises(OSError, match="Cannot read image"):
        evaluate(cfg)
    assert not os.path.exists(tmp_path / "ev" / "result.npy")


def test_case6_resume_with_nothing_warns_and_stale_tmp_is_removed(data, tmp_path):
    out = tmp_path / "fresh"
    os.makedirs(out)
    (out / "model_0003.pth.k2j4l5m6.tmp").write_bytes(b"half a checkpoint")
    cfg_file = tmp_path / "c.yml"
    cfg_file.write_text(_cfg(data, out, DATASETS__TESTS="()").dump())
    args = default_argument_parser().parse_args(["--config-file", str(cfg_file), "--resume"])
    train_main(args)
    log = (out / "log.txt").read_text()
    assert f"--resume given but {out} holds no checkpoint to resume from" in log
    assert "model_0003.pth.k2j4l5m6.tmp" in log and not (out / "model_0003.pth.k2j4l5m6.tmp").exists()
    assert (out / "model_final.pth").exists()


def _every_step(trainer):
    trainer.metrics_period = 1
    for h in trainer._hooks:
        if isinstance(h, hooks.PeriodicWriter):
            h._period = 1
    return trainer


def test_case7_metrics_json_has_one_row_per_iteration_after_resume(tmp_path):
    cfg = tiny_cfg(str(tmp_path), SOLVER__MAX_EPOCH=3, SOLVER__CHECKPOINT_PERIOD=1)
    cut = _every_step(TinyTrainer(cfg))
    cut.register_hooks([InterruptAt(6)])
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert max(r["iteration"] for r in read_metrics(str(tmp_path))) == 5
    resumed = _every_step(TinyTrainer(cfg))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    loss_iters = [r["iteration"] for r in read_metrics(str(tmp_path)) if "loss_cls" in r]
    assert loss_iters == list(range(12))


def test_case7_atomic_files_respect_the_umask_and_tmp_cleanup_is_narrow(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_open(str(tmp_path / "x.bin")) as f:
            f.write(b"1")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "x.bin").st_mode & 0o777 == 0o640
    (tmp_path / "notes.tmp").write_text("a user's file")
    (tmp_path / "result.npy.ab_cd123.tmp").write_text("left by a kill")
    assert remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / "result.npy.ab_cd123.tmp")]
    assert (tmp_path / "notes.tmp").exists()


@pytest.mark.parametrize("key", ["MODEL.WEIGHTS", "DATASETS.ROOT", "TEST.RESULT_PATH"])
def test_case5_empty_string_on_the_command_line(key):
    args = default_argument_parser().parse_args(["--config-file", "x.yml", key, ""])
    cfg = get_cfg()
    cfg.merge_from_list(args.opts)
    assert cfg.get(key.split(".")[0]) is not None and eval(f"cfg.{key}") == ""


def test_case5_yacs_value_rule_and_options_anywhere():
    args = default_argument_parser().parse_args(
        ["--config-file", "x.yml", "OUTPUT_DIR", "on", "--eval-only", "DATASETS.ROOT", "null", "INPUT.FLIP.ENABLED",
         "true", "MODEL.FREEZE_LAYERS", "[backbone]", "SOLVER.BASE_LR", "1e-3", "--resume"])
    assert args.eval_only and args.resume and len(args.opts) == 10
    cfg = get_cfg()
    cfg.merge_from_list(args.opts)
    assert cfg.OUTPUT_DIR == "on" and cfg.DATASETS.ROOT == "null" and cfg.INPUT.FLIP.ENABLED is True
    assert cfg.MODEL.FREEZE_LAYERS == ["backbone"] and cfg.SOLVER.BASE_LR == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="INPUT.FLIP.ENABLED.*expects bool, got str"):
        get_cfg().merge_from_list(["INPUT.FLIP.ENABLED", "yes"])


def test_case8_lower_case_key_gets_the_real_key():
    with pytest.raises(ConfigError, match=r"Did you mean: MODEL\.WEIGHTS\?"):
        get_cfg().merge_from_list(["model.weights", "x.pth"])


def test_case8_last_checkpoint_naming_a_deleted_file_falls_back(tmp_path):
    model = torch.nn.Linear(2, 2)
    ck = Checkpointer(model, str(tmp_path))
    ck.save("model_0000", iteration=4)
    ck.save("model_0001", iteration=8)
    os.remove(tmp_path / "model_0001.pth")
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000.pth")
    assert ck.resume_or_load("", resume=True)["iteration"] == 4
    os.remove(tmp_path / "model_0000.pth")
    assert not ck.has_checkpoint()


def test_case8_bom_in_list_file_is_not_part_of_the_path(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_bytes("\ufeffa.png 1\n".encode("utf-8"))
    assert read_list(str(tmp_path / "list.txt")) == [(str(tmp_path / "a.png"), 1, 0)]


def test_case8_skip_unreadable_names_the_files(data, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(data, broken)
    first = _lines(os.path.join(broken, "train_data", "train_patent_trn.txt"))[0].split()[0]
    with open(os.path.join(broken, "train_data", first), "wb") as f:
        f.write(b"not a png")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fastreid.data.datasets.bases")
    logger.addHandler(handler)
    try:
        from fastreid.data.datasets import DeepPatent

        ds = DeepPatent(root=broken, cfg=_cfg(broken, tmp_path / "o", DATASETS__SKIP_UNREADABLE="True"))
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert "skipped 1 unreadable" in text and os.path.basename(first) in text and "train_patent_trn.txt:1" in text
    assert all(os.path.basename(first) not in p for p, _, _ in ds.train)


def test_case3_every_stage_is_checked_before_the_first_one_trains(data, tmp_path):
    from fastreid.engine.preflight import PreflightError

    first = tmp_path / "first.yml"
    first.write_text(_cfg(data, tmp_path / "unused").dump())
    second = tmp_path / "second.yml"
    second.write_text("_BASE_: first.yml\nTEST:\n  METRIC: cosin\n")
    runs = tmp_path / "runs"
    (tmp_path / "two.yml").write_text(f"STAGES: [first.yml, second.yml]\nOUTPUT_DIR: {runs}\n")
    os.makedirs(runs / "stage2_second")
    (runs / "stage2_second" / "metrics.json").write_text('{"iteration": 0}\n')
    args = default_argument_parser().parse_args(["--config-file", str(tmp_path / "two.yml")])
    with pytest.raises(PreflightError) as e:
        train_main(args)
    assert "Stage 2 (second.yml): TEST.METRIC is 'cosin'" in str(e.value)
    assert f"Stage 2 (second.yml): OUTPUT_DIR {runs / 'stage2_second'} holds an earlier run" in str(e.value)
    assert not (runs / "stage1_first").exists()


def test_preflight_checks_the_query_expansion_criterion(data, tmp_path):
    cfg = _cfg(data, tmp_path / "out", TEST__AQE__AUTO="True", TEST__AQE__AUTO_CRITERION="mAP@5")
    report = preflight(cfg, train=False)
    assert not report.ok
    assert any("TEST.AQE.AUTO_CRITERION is 'mAP@5'" in e and "'mAP@10'" in e for e in report.errors), report.errors
