"""``--check`` finds what the run would refuse (fastreid/engine/run_checks.py), and an evaluation into a training
run's folder keeps that run's config.yaml: the real tools on a tiny synthetic set and a one-iteration run."""
import os

import pytest
import yaml

import retrieval_helpers as rh
from tool_runs import run_tool_here, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic set, its config and one real training run (model_final.pth, config.yaml, result.npy)."""
    base = tmp_path_factory.mktemp("check_coverage")
    return train_tiny(base, rh.make_data(str(base / "data")))


@pytest.fixture(scope="module")
def trained(run):
    return run[2] / "model_final.pth"


def _check(capsys, tool, cfg, out, *opts):
    return run_tool_here(capsys, tool, "--config-file", cfg, "OUTPUT_DIR", str(out), *opts, "--check")


def test_check_reads_the_checkpoint_and_refuses_a_truncated_one(run, trained, capsys):
    base, cfg, _ = run
    cut = base / "cut.pth"
    cut.write_bytes(trained.read_bytes()[:4096])
    for tool in ("tools/test.py", "tools/train_net.py"):  # training reads MODEL.WEIGHTS too
        r = _check(capsys, tool, cfg, base / "c1", "MODEL.WEIGHTS", str(cut))
        assert r.returncode == 1, r.output[-2000:]
        assert r.last.startswith(f"Error: --check failed: MODEL.WEIGHTS: Cannot read checkpoint {cut} (4096 bytes)")
        assert not (base / "c1").exists()


def test_check_matches_the_checkpoint_against_the_model_of_the_config(run, trained, capsys):
    """An R18 checkpoint with an R101 config: refused by --check with the table and the cause, on the CPU."""
    base, cfg, _ = run
    r = _check(capsys, "tools/test.py", cfg, base / "c2", "MODEL.WEIGHTS", str(trained),
               "MODEL.BACKBONE.DEPTH", "101x", "MODEL.BACKBONE.FEAT_DIM", "2048")
    assert r.returncode == 1
    assert r.last.startswith(f"Error: --check failed: MODEL.WEIGHTS: {trained} does not fit the model")
    assert "nothing was loaded" in r.last
    assert "Likely cause: MODEL.BACKBONE.DEPTH: the checkpoint holds a 18x ResNet" in r.output
    assert "| shape mismatch " in r.output and "(skipped)" not in r.output and "(ignored)" not in r.output
    assert not (base / "c2").exists()


def test_unlabeled_set_with_auto_expansion_and_no_recorded_choice_is_refused_before_the_model(run, trained, capsys):
    base, cfg, _ = run
    opts = ("MODEL.WEIGHTS", str(trained), "TEST.AQE.AUTO", "True")
    r = _check(capsys, "tools/test.py", cfg, base / "c3", *opts)
    assert r.returncode == 1
    assert r.last.startswith("Error: --check failed: DATASETS.TESTS entry 'DeepPatentTest' is unlabeled and "
                             "TEST.AQE.AUTO is True")
    assert str(base / "c3" / "qe_choice.json") in r.last and not (base / "c3").exists()
    real = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(base / "c3"), *opts)
    assert real.returncode == 1 and "TEST.AQE.AUTO" in real.last and "(preflight; nothing was run)" in real.last
    assert "Model:" not in real.output and not (base / "c3").exists()
    # A labeled set first records the choice the unlabeled one applies: nothing to refuse.
    ok = _check(capsys, "tools/test.py", cfg, base / "c3", *opts, "DATASETS.TESTS", "('DeepPatent', 'DeepPatentTest')")
    assert ok.returncode == 0, ok.output[-2000:]


def test_check_refuses_a_missing_prepared_copy_and_lists_what_it_cannot_know(run, trained, capsys):
    base, cfg, _ = run
    r = _check(capsys, "tools/test.py", cfg, base / "c4", "MODEL.WEIGHTS", str(trained), "DATASETS.PREPARED", "always")
    assert r.returncode == 1
    assert "DATASETS.PREPARED is 'always'" in r.last and "tools/prepare_dataset.py" in r.last
    passed = _check(capsys, "tools/test.py", cfg, base / "c4", "MODEL.WEIGHTS", str(trained))
    assert passed.returncode == 0 and "Preflight passed." in passed.output
    assert "Not checked (only the run can know):" in passed.output and "cannot be decoded" in passed.output
    assert not (base / "c4").exists()


def test_evaluation_into_the_training_folder_keeps_its_config(run, trained, capsys):
    base, cfg, out = run
    before = (out / "config.yaml").read_bytes()
    r = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS",
                      str(trained), "TEST.IMS_PER_BATCH", "16")
    assert r.returncode == 0, r.output[-2000:]
    assert (out / "config.yaml").read_bytes() == before
    evaluated = yaml.safe_load((out / "config_eval.yaml").read_text())
    trained_cfg = yaml.safe_load(before)
    assert evaluated["TEST"]["IMS_PER_BATCH"] == 16 and trained_cfg["TEST"]["IMS_PER_BATCH"] == 64
    assert evaluated["MODEL"]["WEIGHTS"] == str(trained) and os.path.isfile(out / "result.npy")
