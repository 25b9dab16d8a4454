"""Running the command-line tools as a user does: in a subprocess, or their ``__main__`` in this process.

Both return a :class:`Result` with the exit code, everything printed, and the last line printed to
stderr (where every failure ends in one ``Error: ...`` line, see fastreid/utils/errors.py).
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from typing import Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A ResNet18 config of one training iteration at 32 px on a synthetic set at {root} (TINY.format(root=...)).
TINY = """MODEL:
  DEVICE: cpu
  BACKBONE: {{DEPTH: 18x, FEAT_DIM: 512, PRETRAIN: False}}
  LOSSES: {{NAME: [CrossEntropyLoss, TripletLoss]}}
INPUT: {{SIZE_TRAIN: [32, 32], SIZE_TEST: [32, 32]}}
DATASETS: {{NAMES: [DeepPatent], TESTS: [DeepPatentTest], ROOT: {root}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{OPT: SGD, MOMENTUM: 0.0, IMS_PER_BATCH: 8, MAX_EPOCH: 1, MAX_ITER: 1, WARMUP_ITERS: 1,
          CHECKPOINT_PERIOD: 100, BASE_LR: 0.001}}
TEST: {{EVAL_PERIOD: 0, IMS_PER_BATCH: 64, SEARCH: {{BACKEND: torch}}}}
SEED: 5
"""


def train_tiny(base, data: str):
    """One real ``TINY`` training run on the data set ``data``, under the folder ``base`` (a pathlib.Path).

    Returns:
        ``(base, config path, output folder)``, as the module fixtures of the tool tests hand them on.
    """
    cfg = base / "tiny.yml"
    cfg.write_text(TINY.format(root=data))
    out = base / "run"
    r = run_tool("tools/train_net.py", "--config-file", str(cfg), "OUTPUT_DIR", str(out))
    assert r.returncode == 0, r.output[-3000:]
    return base, str(cfg), out


class Result:
    """A finished tool: ``returncode``, ``output`` (all it printed) and ``last`` (its last line on stderr)."""

    def __init__(self, returncode: int, output: str, err: str = "") -> None:
        self.returncode, self.output = returncode, output
        lines = [line for line in (err or output).splitlines() if line.strip()]
        self.last = lines[-1].strip() if lines else ""


def run_tool(*argv: str, env: Optional[Dict[str, str]] = None) -> Result:
    """The tool in a subprocess, as a user runs it (exit code, everything printed)."""
    full = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, env=full)
    return Result(r.returncode, r.stdout + r.stderr, r.stderr)


def run_tool_here(capsys, tool: str, *argv: str) -> Result:
    """The tool's own ``__main__`` in this process (saves the interpreter start-up of a subprocess); a
    SystemExit message is what Python would print to stderr."""
    old = sys.argv
    sys.argv = [tool, *argv]
    code = 0
    try:
        runpy.run_path(os.path.join(ROOT, tool), run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    message = code if isinstance(code, str) else ""
    err = captured.err + (message + "\n" if message else "")
    return Result(1 if message else int(code or 0), captured.out + err, err)
