"""Every tool's failure ends in one line ``Error: ...`` naming the file, line or key (fastreid/utils/errors.py).

One bad input per tool, run as a user runs it (the tool's ``__main__``), on real files: the exit code, the
last line printed and what is left on disk. A traceback appears only with FASTREID_DEBUG=1 or for a bug.
"""
import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import retrieval_helpers as rh
from fastreid.data import ImageReadError, read_image
from fastreid.utils.errors import INPUT_ERRORS, is_input_error, message_of, run_tool as run_guarded
from tool_runs import TINY, run_tool, run_tool_here


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A synthetic set, its training config, a checkpoint of the retrieval test model, a copy of the set whose
    first test query is not an image, and a list with one missing drawing."""
    base = tmp_path_factory.mktemp("tool_errors")
    data = rh.make_data(str(base / "data"))
    cfg = base / "tiny.yml"
    cfg.write_text(TINY.format(root=data))
    bad = base / "bad_data"
    shutil.copytree(data, bad)
    query = bad / "test_data" / "codalab_test_set" / "queries" / "000000.png"
    query.write_bytes(b"this is not a png")
    queries, database = rh.split_lists(data)
    drawings = [line.split()[0] for line in open(database).read().splitlines() if line.strip()][:2]
    folder = os.path.dirname(os.path.dirname(database))
    listing = base / "list.txt"
    listing.write_text("".join(f"{os.path.join(folder, d)}\n" for d in drawings) + f"{base / 'gone.png'}\n")
    return {"base": base, "data": data, "cfg": str(cfg), "bad": str(bad), "query": str(query),
            "weights": rh.make_checkpoint(str(base / "m.pth"), 1), "list": str(listing), "queries": queries}


def _case(name, f):
    """(tool, argv, exit code, start of the last line, the last line contains, path that must not exist)."""
    b = f["base"]
    demo = ["--config-file", rh.CONFIG, *rh.OPTS]
    return {
        "train_net": ("tools/train_net.py", ["--config-file", f["cfg"], "OUTPUT_DIR", str(b / "t"),
                                             "MODEL.BACKBONE.DEPHT", "50x"],
                      1, "Error: Unknown config key MODEL.BACKBONE.DEPHT", "MODEL.BACKBONE.DEPTH", b / "t"),
        "test": ("tools/test.py", ["--config-file", f["cfg"], "DATASETS.ROOT", f["bad"], "OUTPUT_DIR", str(b / "e"),
                                   "MODEL.WEIGHTS", "random"],
                 1, f"Error: Cannot read image {f['query']}", "test_queries.txt:1)", b / "e" / "result.npy"),
        "build_index": ("tools/build_index.py", [*demo, "MODEL.WEIGHTS", f["weights"], "--images", f["list"],
                                                 "--output", str(b / "i")],
                        1, "Error: 1 of 3 listed drawing(s) cannot be read", f"{f['list']}:3): no such file", b / "i"),
        "search": ("tools/search.py", ["--index", f["data"], "--images", f["queries"], "--output",
                                       str(b / "r.jsonl")],
                   1, f"Error: {f['data']} is not a search index", "manifest.json not found", b / "r.jsonl"),
        "serve": ("tools/serve.py", ["--index", str(b / "no_index")],
                  2, f"Error: --index {b / 'no_index'}: no such folder", "build_index.py", b / "no_index"),
        "export": ("tools/export.py", [*demo, "MODEL.WEIGHTS", str(b / "no.pth"), "--output", str(b / "m.onnx")],
                   1, f"Error: MODEL.WEIGHTS {b / 'no.pth'}: checkpoint not found", "", b / "m.onnx"),
        "prepare_dataset": ("tools/prepare_dataset.py", ["--root", str(b / "empty"), "--size", "32"],
                            1, "Error: DeepPatent:", f"{b / 'empty'}/train_data/train_patent_trn.txt not found",
                            b / "empty" / "prepared"),
        "make_synthetic_patents": ("tools/make_synthetic_patents.py", ["--output", str(b / "s"), "--min-views", "9"],
                                   2, "Error: make_synthetic_patents.py:", "min_views", b / "s"),
        "pseudo_label": ("tools/pseudo_label.py", [*demo, "DATASETS.ROOT", f["data"], "MODEL.WEIGHTS", f["weights"],
                                                   "UNLABELED.POOL_LIST", f["list"], "OUTPUT_DIR", str(b / "u")],
                         1, f"Error: {f['list']}:3: drawing not found", str(b / "gone.png"), b / "u" / "round1"),
    }[name]


TOOLS = ("train_net", "test", "build_index", "search", "serve", "export", "prepare_dataset", "make_synthetic_patents",
         "pseudo_label")


@pytest.mark.parametrize("name", TOOLS)
def test_each_tool_ends_a_bad_input_in_one_error_line(files, capsys, name):
    tool, argv, code, start, contains, absent = _case(name, files)
    r = run_tool_here(capsys, tool, *argv)
    assert r.returncode == code, r.output[-2000:]
    assert r.last.startswith(start) and contains in r.last, r.output[-2000:]
    assert r.output.count("Error: ") == 1 and "Traceback" not in r.output
    assert not os.path.exists(absent)


def test_unreadable_test_image_is_one_line_in_a_real_process_and_debug_adds_the_traceback(files):
    tool, argv, code, start, contains, _ = _case("test", files)
    r = run_tool(tool, *argv, "DATALOADER.NUM_WORKERS", "1")  # the error comes back from a loader worker
    assert r.returncode == code and r.last.startswith(start) and contains in r.last, r.output[-3000:]
    assert "Traceback" not in r.output and "Original Traceback" not in r.last
    debug = run_tool(tool, *argv, env={"FASTREID_DEBUG": "1"})
    assert debug.returncode == code and debug.last.startswith(start)
    assert debug.output.count("Traceback (most recent call last)") >= 1


def test_a_bug_prints_its_traceback_then_says_so(capsys):
    def broken() -> None:
        raise TypeError("unsupported operand")

    assert run_guarded(broken) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1].startswith("Error: unexpected TypeError: unsupported operand (a bug in fastreid")


class _Drawings(Dataset):
    def __init__(self, path: str) -> None:
        self.path = path

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> torch.Tensor:
        read_image(self.path, origin="queries.txt:7")
        return torch.zeros(1)


def test_an_error_of_a_loader_worker_reads_as_its_own_message(files):
    with pytest.raises(ImageReadError) as caught:
        next(iter(DataLoader(_Drawings(files["query"]), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # torch puts the worker's traceback into the message
    message = message_of(caught.value)
    assert message.startswith(f"Cannot read image {files['query']} (listed at queries.txt:7)")
    assert "\n" not in message


def _fail_in_child(rank: int, kind: str) -> None:
    if kind == "input":
        raise ImageReadError(f"Cannot read image x.png (listed at list.txt:{rank + 1})")
    raise RuntimeError("an assertion of ours")


def test_an_error_of_another_process_reads_as_its_own_message():
    """What launch() re-raises for a process it started (--num-gpus 2): the child's type decides bad input."""
    for kind, expected in (("input", True), ("bug", False)):
        with pytest.raises(Exception) as caught:
            torch.multiprocessing.start_processes(_fail_in_child, args=(kind,), nprocs=1, start_method="spawn")
        assert not isinstance(caught.value, OSError) and "Traceback" in str(caught.value)
        assert is_input_error(caught.value, INPUT_ERRORS) is expected
    assert message_of(caught.value) == "an assertion of ours"
