"""Two "machines" on this one (gloo, CPU): tools/train_net.py, tools/test.py and tools/build_index.py started as
two nodes, with torchrun's c10d rendezvous (two ``torchrun --nnodes 2`` agents) and with the original flags
(``--num-machines 2 --machine-rank R --dist-url``), each compared with one process; and the refusal of output
folders that are not shared and of machines that read different data (two nodes in different working folders
given a relative folder: as two machines' local disks).

Training compares the loss of the second iteration (after one optimizer step: forward and gradients) and the
final weights with one process over the same global batch. That holds because the sampler splits each
global batch by global rank in rank order, the cross-entropy is a mean over equal local batches (DDP averages
the gradients), and the triplet loss mines over the all-gathered batch with its gradient scaled back
(fastreid/modeling/losses/distributed.py). It does not hold with batch norm in training mode: each process
normalises with the statistics of its own half batch (SyncBN needs CUDA), so the model is a different
function of the batch. The tiny model here therefore uses frozen BN (MODEL.*.NORM FrozenBN); with BN, the
two-node run equals two processes on one machine, not one process (measured bitwise, not repeated here for
time: docs/training.md, "Several processes").
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch

from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine.launch import find_free_port
from fastreid.retrieval import Index
from fastreid.utils.dist_checks import _message

from tool_runs import ROOT, TINY, run_tool

# Frozen BN (see the module docstring), two iterations, a labeled and the unlabeled test set evaluated at the end.
OPTS = ["MODEL.BACKBONE.NORM", "FrozenBN", "MODEL.HEADS.NORM", "FrozenBN", "SOLVER.MAX_ITER", "2",
        "DATASETS.TESTS", "[DeepPatent, DeepPatentTest]"]
ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
KINDS = ("torchrun", "flags")
TIMEOUT_S = 120


def two_nodes(kind: str, tool: str, argv: Sequence[str], log_dir, cwds: Tuple[str, str] = (ROOT, ROOT)
              ) -> List[Tuple[int, str]]:
    """``tools/<tool>`` started as two single-process nodes (``kind``: torchrun or the original flags), each in
    its own session and working folder; (exit code, output) of each. A hung rendezvous fails the test after
    TIMEOUT_S (both process groups killed) instead of hanging it."""
    port = find_free_port()
    script = os.path.join(ROOT, "tools", tool)
    procs, logs = [], []
    for node in range(2):
        if kind == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", script, *argv]
        else:
            cmd = [sys.executable, script, "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(node),
                   "--dist-url", f"tcp://127.0.0.1:{port}", *argv]
        log = open(os.path.join(str(log_dir), f"{kind}_{tool}_{port}_node{node}.log"), "w+", encoding="utf-8")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, cwd=cwds[node], env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        pytest.fail(f"two-node {kind} run of {tool} did not finish in {TIMEOUT_S} s (hung rendezvous?): "
                    f"logs in {log_dir}")
    out = []
    for p, log in zip(procs, logs):
        log.seek(0)
        out.append((p.returncode, log.read()))
        log.close()
    return out


def _ok(runs: List[Tuple[int, str]]) -> None:
    for node, (code, text) in enumerate(runs):
        assert code == 0, f"node {node} exited {code}:\n{text[-4000:]}"


def _rows(out) -> List[Dict]:
    return [json.loads(line) for line in open(os.path.join(str(out), "metrics.json"), encoding="utf-8")]


def _table(log_file, name: str) -> str:
    """The metrics table logged for test set ``name``."""
    lines = open(log_file, encoding="utf-8").read().splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith(f"Evaluation results on {name}:"))
    return "\n".join(lines[at + 2:at + 5])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The synthetic set, the config, and the one-process references: a training run (its final evaluation
    included) and an index of the test database built with its weights."""
    base = tmp_path_factory.mktemp("multinode")
    data = str(base / "data")
    generate(data, SyntheticSpec(num_patents=16, image_size=32, seed=0, min_views=3, max_views=4), workers=1)
    cfg = base / "tiny.yml"
    cfg.write_text(TINY.format(root=data))
    train = base / "train_single"
    r = run_tool("tools/train_net.py", "--config-file", str(cfg), "OUTPUT_DIR", str(train), *OPTS)
    assert r.returncode == 0, r.output[-3000:]
    database = os.path.join(data, "test_data", "codalab_test_set", "lists", "test_database.txt")
    index_args = ["--config-file", str(cfg), "MODEL.WEIGHTS", str(train / "model_final.pth"), "--images", database,
                  "--shard-size", "2"]
    r = run_tool("tools/build_index.py", *index_args, "--output", str(base / "index_single"))
    assert r.returncode == 0, r.output[-3000:]
    return {"base": base, "data": data, "cfg": str(cfg), "train": train, "index": str(base / "index_single"),
            "index_args": index_args}


@pytest.mark.parametrize("kind", KINDS)
def test_training_on_two_nodes_matches_one_process(single, kind):
    """The second iteration's losses, the final weights and the final evaluation (the labeled set's metrics,
    the unlabeled set's result.npy) equal one process's; every rank logs, rank 0 writes the checkpoint."""
    out = single["base"] / f"train_{kind}"
    _ok(two_nodes(kind, "train_net.py", ["--config-file", single["cfg"], "OUTPUT_DIR", str(out), *OPTS],
                  single["base"]))
    assert {"log.txt", "log.txt.rank1", "model_final.pth", "last_checkpoint"} <= set(os.listdir(out))
    one, two = _rows(single["train"]), _rows(out)
    assert two[0]["iteration"] == one[0]["iteration"] == 1
    for key in ("loss_cls", "loss_triplet", "total_loss"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-4), key
    a = torch.load(single["train"] / "model_final.pth", weights_only=True)
    b = torch.load(out / "model_final.pth", weights_only=True)
    assert len(b["rng_states"]) == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    metrics = [k for k in one[1] if k.startswith("DeepPatent/")]
    assert metrics and {k: two[1][k] for k in metrics} == pytest.approx({k: one[1][k] for k in metrics}, abs=1e-6)
    np.testing.assert_array_equal(np.load(out / "result.npy"), np.load(single["train"] / "result.npy"))


def test_test_tool_on_two_nodes_matches_one_process(single):
    """tools/test.py on the one-process model: the labeled set's metrics table and the unlabeled set's
    result.npy equal that process's own final evaluation (same weights). With the original flags only: under
    torchrun the same evaluation runs at the end of the training test (the tools share the launch)."""
    kind = "flags"
    out = single["base"] / f"eval_{kind}"
    _ok(two_nodes(kind, "test.py", ["--config-file", single["cfg"], "OUTPUT_DIR", str(out), *OPTS,
                                    "MODEL.WEIGHTS", str(single["train"] / "model_final.pth")], single["base"]))
    assert _table(out / "log.txt", "DeepPatent") == _table(single["train"] / "log.txt", "DeepPatent")
    np.testing.assert_array_equal(np.load(out / "result.npy"), np.load(single["train"] / "result.npy"))


@pytest.mark.parametrize("kind", KINDS)
def test_index_built_on_two_nodes_equals_the_one_process_index(single, kind):
    out = str(single["base"] / f"index_{kind}")
    _ok(two_nodes(kind, "build_index.py", [*single["index_args"], "--output", out], single["base"]))
    one, two = (json.load(open(os.path.join(d, "manifest.json"), encoding="utf-8")) for d in (single["index"], out))
    assert two["count"] == one["count"] and len(one["shards"]) >= 3  # shards split over both nodes
    assert [s["count"] for s in two["shards"]] == [s["count"] for s in one["shards"]]
    for s1, s2 in zip(one["shards"], two["shards"]):
        assert json.load(open(os.path.join(out, s2["items"]))) == json.load(open(os.path.join(single["index"],
                                                                                              s1["items"])))
        np.testing.assert_allclose(np.load(os.path.join(out, s2["features"])),
                                   np.load(os.path.join(single["index"], s1["features"])), rtol=1e-4, atol=1e-6)
    a, b = Index.open(single["index"], load_extractor=False), Index.open(out, load_extractor=False)
    stored = np.concatenate([np.load(os.path.join(out, s["features"])) for s in two["shards"]])
    noise = torch.randn(4, a.dim, generator=torch.Generator().manual_seed(0))
    queries = torch.cat([torch.from_numpy(stored).float(), noise])  # stored drawings and 4 other directions
    np.testing.assert_array_equal(b.search_features(queries, k=5)[1], a.search_features(queries, k=5)[1])


def _local_disks(base) -> Tuple[str, str]:
    """Two working folders: a relative output folder names a different folder on each "machine"."""
    cwds = (str(base / "machine_a"), str(base / "machine_b"))
    for c in cwds:
        os.makedirs(c, exist_ok=True)
    return cwds


def _refused(runs: List[Tuple[int, str]], what: str, cwds: Tuple[str, str], folder: str) -> None:
    for node, (code, text) in enumerate(runs):
        assert code != 0, f"node {node} ran on a folder that is not shared:\n{text[-3000:]}"
        line = next((x for x in text.splitlines() if x.startswith("Error: ")), "")
        assert line.startswith(f"Error: {what} {folder} is not one folder shared by all 2 processes"), text[-3000:]
        for c in cwds:
            assert os.path.join(c, folder) in line
        assert "shared" in line and "file system" in line


def test_output_dir_on_node_local_disks_is_refused_before_training(single):
    cwds = _local_disks(single["base"] / "train_local")
    runs = two_nodes("flags", "train_net.py", ["--config-file", single["cfg"], "OUTPUT_DIR", "run", *OPTS],
                     single["base"], cwds)
    _refused(runs, "OUTPUT_DIR", cwds, "run")
    for c in cwds:
        assert os.listdir(os.path.join(c, "run")) == []  # no config, log or checkpoint: refused before any work


def test_index_folder_on_node_local_disks_is_refused_before_extracting(single):
    cwds = _local_disks(single["base"] / "index_local")
    runs = two_nodes("flags", "build_index.py", [*single["index_args"], "--output", "index"], single["base"], cwds)
    _refused(runs, "--output", cwds, "index")
    for c in cwds:
        assert os.listdir(os.path.join(c, "index")) == []


def test_refusal_line_groups_the_processes_by_what_they_see():
    """Four processes on two machines with local disks, one of which cannot write: each group named once."""
    views = [(0, "a", "/x", [0, 1], ""), (1, "a", "/x", [0, 1], ""), (2, "b", "/x", [2], ""),
             (3, "b", "/x", [], "cannot write there (Permission denied)")]
    line = _message("out", "OUTPUT_DIR", "Why. ", views, 4)
    assert line == ("OUTPUT_DIR out is not one folder shared by all 4 processes: rank 0-1 (a:/x) does not see the "
                    "files of rank 2-3; rank 2 (b:/x) does not see the files of rank 0-1, 3; rank 3 (b:/x) cannot "
                    "write there (Permission denied). Why. Put it on a file system every machine mounts at the same "
                    "path (NFS, Lustre, ...) and run again")


def test_machines_reading_different_training_sets_are_refused(single):
    """Machine b has another copy of the data set (one training line fewer): refused before the first
    iteration, the line names both image counts, rather than training on a mix or stopping mid-epoch."""
    cwds = _local_disks(single["base"] / "data_local")
    os.symlink(single["data"], os.path.join(cwds[0], "data"))
    shutil.copytree(single["data"], os.path.join(cwds[1], "data"))
    trn = os.path.join(cwds[1], "data", "train_data", "train_patent_trn.txt")
    lines = open(trn, encoding="utf-8").read().splitlines()
    with open(trn, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:-1]) + "\n")
    out = single["base"] / "train_two_sets"
    runs = two_nodes("flags", "train_net.py", ["--config-file", single["cfg"], "OUTPUT_DIR", str(out), *OPTS,
                                               "DATASETS.ROOT", "data"], single["base"], cwds)
    for node, (code, text) in enumerate(runs):
        assert code != 0, text[-3000:]
        line = next((x for x in text.splitlines() if x.startswith("Error: ")), "")
        assert line.startswith("Error: The training set (DeepPatent under DATASETS.ROOT) differs between the "
                               "processes"), text[-3000:]
        assert f"has {len(lines)} images" in line and f"has {len(lines) - 1} images" in line
    assert not os.path.exists(out / "model_final.pth")
