"""Issue 9, through the real tools: tools/train_net.py and tools/test.py in subprocesses on a tiny
synthetic patent set. Every refusal exits non-zero, names the key, file or checkpoint, and leaves no
result behind; every success leaves only the current run's files (mode 0666 minus the umask)."""
import os
import shutil
import stat

import numpy as np
import pytest
import torch

from fastreid.data.synthetic import SyntheticSpec, generate
from tool_runs import run_tool, run_tool_here, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic set, its config and one real training run (model_final.pth, result.npy, metrics.json)."""
    base = tmp_path_factory.mktemp("trust")
    data = str(base / "data")
    generate(data, SyntheticSpec(num_patents=16, image_size=32, seed=1, min_views=3, max_views=4), workers=1)
    return train_tiny(base, data)


def _umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_case7_outputs_follow_the_umask(run):
    _, _, out = run
    for name in ("model_final.pth", "last_checkpoint", "config.yaml", "result.npy"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == _umask_mode(), name
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_case1_checkpoint_of_another_depth_is_refused_with_cause(run, capsys):
    base, cfg, out = run
    ev = base / "ev_depth"
    # --eval-only after the overrides is accepted (case 8).
    r = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(ev),
                      "MODEL.BACKBONE.DEPTH", "34x", "MODEL.WEIGHTS", str(out / "model_final.pth"), "--eval-only")
    assert r.returncode != 0
    assert "model_final.pth does not fit the model" in r.output
    assert "missing in checkpoint" in r.output and "MODEL.BACKBONE.DEPTH" in r.output and "18x" in r.output
    assert r.output.count("Traceback") == 0
    assert not (ev / "result.npy").exists()


def test_case2_no_weights_is_refused_before_any_work(run, capsys):
    base, cfg, _ = run
    ev = base / "ev_none"
    r = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(ev), "MODEL.WEIGHTS", "")
    assert r.returncode != 0
    assert "MODEL.WEIGHTS is empty" in r.output and "MODEL.WEIGHTS random" in r.output
    assert not ev.exists()


def test_case3_misspelt_test_set_and_metric_stop_training_before_the_first_iteration(run, capsys):
    base, cfg, _ = run
    out = base / "run_typo"
    r = run_tool_here(capsys, "tools/train_net.py", "--config-file", cfg, "OUTPUT_DIR", str(out),
                      "DATASETS.TESTS", "('DeepPatnt',)", "TEST.METRIC", "cosin")
    assert r.returncode != 0
    assert "DATASETS.TESTS entry is 'DeepPatnt' (did you mean 'DeepPatent'?)" in r.output
    assert "TEST.METRIC is 'cosin' (did you mean 'cosine'?)" in r.output
    assert "Starting training" not in r.output and not out.exists()


def test_case5_empty_string_values_and_check_flag_after_overrides(run, capsys):
    base, cfg, _ = run
    r = run_tool_here(capsys, "tools/train_net.py", "--config-file", cfg, "OUTPUT_DIR", str(base / "checked"),
                      "MODEL.WEIGHTS", "", "TEST.RESULT_PATH", "", "MODEL.DEVICE", "cpu", "--check")
    assert r.returncode == 0, r.output[-3000:]
    assert "Preflight passed." in r.output and "DeepPatentTest" in r.output
    assert "listed image files checked" in r.output and str(base / "checked") in r.output
    assert not (base / "checked").exists()


def test_case6_new_run_into_a_used_folder_is_refused_and_leaves_it_intact(run, capsys):
    _, cfg, out = run
    before = {n: os.path.getmtime(out / n) for n in os.listdir(out)}
    r = run_tool_here(capsys, "tools/train_net.py", "--config-file", cfg, "OUTPUT_DIR", str(out))
    assert r.returncode != 0
    assert f"OUTPUT_DIR {out} holds an earlier run" in r.output and "--resume" in r.output
    assert str(out / "model_final.pth") in r.output
    assert {n: os.path.getmtime(out / n) for n in os.listdir(out)} == before


def test_case7_result_path_that_cannot_be_written_is_found_before_extraction(run, capsys):
    base, cfg, out = run
    blocker = base / "a_file"
    blocker.write_text("not a folder")
    r = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(base / "ev_rp"),
                      "MODEL.WEIGHTS", str(out / "model_final.pth"), "TEST.RESULT_PATH", str(blocker / "result.npy"))
    assert r.returncode != 0
    assert f"TEST.RESULT_PATH {blocker / 'result.npy'} is not writable" in r.output
    assert "Model:" not in r.output  # refused before the model was built


def test_case8_corrupt_checkpoint_is_named_without_traceback(run, capsys):
    base, cfg, out = run
    bad = base / "corrupt.pth"
    bad.write_bytes((out / "model_final.pth").read_bytes()[:4096])
    r = run_tool_here(capsys, "tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(base / "ev_bad"),
                      "MODEL.WEIGHTS", str(bad))
    assert r.returncode != 0
    assert f"Cannot read checkpoint {bad}" in r.output and "Traceback" not in r.output
    assert not (base / "ev_bad" / "result.npy").exists()


def test_case8_no_config_file_is_an_error(capsys):
    r = run_tool_here(capsys, "tools/train_net.py", "SOLVER.MAX_ITER", "1")
    assert r.returncode != 0 and "--config-file is required" in r.output


def test_case8_training_error_prints_its_traceback_once(run):
    base, cfg, _ = run
    data = base / "data_corrupt"
    shutil.copytree(base / "data", data)
    lines = (data / "train_data" / "train_patent_trn.txt").read_text().split("\n")
    for line in lines:
        if line.strip():
            (data / "train_data" / line.split()[0]).write_bytes(b"not a png")  # exists, cannot be decoded
    out = base / "run_corrupt"
    r = run_tool("tools/train_net.py", "--config-file", cfg, "OUTPUT_DIR", str(out), "DATASETS.ROOT", str(data))
    assert r.returncode != 0
    # Logged once by the training loop (with its cause), then one line from the tool.
    assert r.output.count("Exception during training") == 1, r.output[-3000:]
    assert r.output.count("raise ImageReadError(") == 1 and r.output.count("stopped by ImageReadError") == 1
    assert r.output.strip().splitlines()[-1].startswith("Error: Cannot read image")
    assert "Cannot read image" in r.output and "listed at" in r.output
    assert not (out / "model_final.pth").exists()


def test_case4_evaluation_never_loads_imagenet_weights(run):
    """PRETRAIN True with an unreachable PRETRAIN_PATH: evaluation still works, from the checkpoint alone."""
    base, cfg, out = run
    ev = base / "ev_pretrain"
    r = run_tool("tools/test.py", "--config-file", cfg, "OUTPUT_DIR", str(ev), "MODEL.WEIGHTS",
                 str(out / "model_final.pth"), "MODEL.BACKBONE.PRETRAIN", "True",
                 "MODEL.BACKBONE.PRETRAIN_PATH", str(base / "no_such_imagenet.pth"))
    assert r.returncode == 0, r.output[-3000:]
    assert "Loaded all" in r.output
    ours, trained = np.load(ev / "result.npy"), np.load(out / "result.npy")
    assert np.array_equal(ours, trained)  # same model, same data: the same ranking as at the end of training
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 1
