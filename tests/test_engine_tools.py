"""Command-line behaviour of tools/train_net.py and tools/test.py (in subprocesses, as a user runs them)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*argv, env_extra=None):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("tool", ["tools/train_net.py", "tools/test.py"])
def test_help_works_without_gpu_or_data(tool):
    r = _run(tool, "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--config-file", "--resume", "--eval-only", "--num-gpus", "--dist-url"):
        assert flag in r.stdout


@pytest.mark.parametrize("config", ["configs/patent/sbs_R101-ibn_patent_256.yml",
                                    "configs/patent/sbs_R101-ibn_patent_2stage.yml"])
def test_unknown_key_exits_nonzero_before_any_work(config, tmp_path):
    r = _run("tools/train_net.py", "--config-file", config, "--eval-only", "MODEL.NO_SUCH_KEY", "1",
             "OUTPUT_DIR", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "MODEL.NO_SUCH_KEY" in r.stderr
    assert not (tmp_path / "out").exists()


def test_test_tool_rejects_bad_value_type(tmp_path):
    r = _run("tools/test.py", "--config-file", "configs/patent/sbs_R101-ibn_patent_test.yml",
             "SOLVER.IMS_PER_BATCH", "many")
    assert r.returncode != 0 and "SOLVER.IMS_PER_BATCH" in r.stderr
