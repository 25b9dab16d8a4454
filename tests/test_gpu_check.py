"""benchmarks/gpu_check.sh --tiny runs every part of the GPU check on this machine and writes its tables."""
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_rows(path):
    return [[c.strip() for c in ln.split("|")[1:-1]] for ln in open(path) if ln.startswith("| ")][1:]


def test_gpu_check_tiny_writes_every_table(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--tiny", "--output", str(out)],
                       env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "none")},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch" in (out / "env.md").read_text()
    tests = (out / "cuda_tests.txt").read_text()
    assert "# exit 0" in tests and ("passed" in tests or "CUDA is not available" in tests)
    train = {row[0]: row for row in _table_rows(out / "train_throughput.md")}
    assert {"baseline", "amp", "loader only (PNG 96 px)", "loader only (prepared 32x32 copy)",
            "amp + loader (prepared copy)"} <= set(train)
    assert all(float(row[2]) > 0 for row in train.values())
    e2e = {row[0]: row for row in _table_rows(out / "e2e.md")}
    assert "hard links: 60 queries + 180 database" in e2e
    amp, prepared = e2e["tools/test.py, amp auto"], e2e["tools/test.py, amp auto, prepared copy"]
    assert float(e2e["tools/test.py, fp32"][1]) > 0
    if not torch.cuda.is_available():
        # On a CPU "auto" extraction is float32 and the prepared copy gives the same tensors: equal results.
        assert amp[3:] == ["100.00%", "100.00%"] and prepared[3:] == ["100.00%", "100.00%"]
    assert (out / "work" / "e2e" / "data" / "test_data" / "codalab_test_set" / "lists" / "test_database.txt").read_text() \
        .count("\n") == 180
