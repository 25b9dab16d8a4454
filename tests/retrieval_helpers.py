"""Shared set-up of the retrieval and search-page tests: a tiny synthetic patent set and small checkpoints.

The model is the demo's ResNet18-IBN at 32 px with random weights saved to a real checkpoint file
(search results only need a fixed model, not a good one).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List

import torch

from fastreid.config import CfgNode, get_cfg
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "demo_R18-ibn_64.yml")
# Small and fast on CPU; every tool gets the same overrides. The expansion is fixed by each test (the demo
# config chooses it on a labeled split, which these tests of the unlabeled test split do not evaluate).
OPTS = ["INPUT.SIZE_TEST", "[32, 32]", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "16",
        "TEST.AQE.AUTO", "False"]


def make_data(root: str, num_patents: int = 16) -> str:
    """A synthetic DeepPatent-layout set (32 px drawings) in ``root``; returns ``root``."""
    generate(root, SyntheticSpec(num_patents=num_patents, image_size=32, seed=3, min_views=3, max_views=4), workers=1)
    return root


def split_lists(data: str) -> List[str]:
    """(query list, database list) of the synthetic challenge-style test split."""
    lists = os.path.join(data, "test_data", "codalab_test_set", "lists")
    return [os.path.join(lists, "test_queries.txt"), os.path.join(lists, "test_database.txt")]


def model_cfg(weights: str = "") -> CfgNode:
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(OPTS + (["MODEL.WEIGHTS", weights] if weights else []))
    return cfg


def make_checkpoint(path: str, seed: int) -> str:
    """Random weights of the test model (seeded), saved as a ``{"model": state_dict}`` checkpoint."""
    torch.manual_seed(seed)
    model = build_model(model_cfg())
    torch.save({"model": model.state_dict()}, path)
    return path


def run_tool(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``tools/<name>`` in a subprocess with the test environment; output captured."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args], capture_output=True,
                          text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
