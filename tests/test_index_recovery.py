"""tools/build_index.py checks every drawing before the first shard and can always finish a build; tools/search.py
says what is true and what to do. Real tools (their ``__main__``) on PNG files written here and tiny ResNet18
checkpoints; each test asserts the exit code, the last line and what is left on disk."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import retrieval_helpers as rh
from tool_runs import run_tool_here

MODEL = ["--config-file", rh.CONFIG, *rh.OPTS]
FINISH = "The finished shards are kept in"


def _png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(path)


def _corrupt_pixels(src, dst):
    """A PNG whose header and end are intact but whose pixel data is damaged: it passes the check before the
    first shard and fails only when decoded."""
    data = bytearray(open(src, "rb").read())
    start = data.index(b"IDAT") + 8
    data[start:start + 20] = bytes(20)
    open(dst, "wb").write(bytes(data))


def _list(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("index_recovery")
    (base / "img").mkdir()
    names = []
    for i in range(12):
        _png(base / "img" / f"d{i:02d}.png", i)
        names.append(f"img/d{i:02d}.png P{i // 3}")
    _corrupt_pixels(base / "img" / "d09.png", base / "img" / "damaged.png")
    data = (base / "img" / "d00.png").read_bytes()
    (base / "img" / "cut.png").write_bytes(data[:len(data) // 2])
    (base / "img" / "text.png").write_text("not a drawing")
    return {"base": base, "names": names, "m1": rh.make_checkpoint(str(base / "m1.pth"), 1),
            "m2": rh.make_checkpoint(str(base / "m2.pth"), 2)}


def _build(capsys, weights, listing, out, *extra):
    return run_tool_here(capsys, "tools/build_index.py", *MODEL, "MODEL.WEIGHTS", weights, "TEST.IMS_PER_BATCH", "4",
                         "--images", listing, "--output", str(out), "--shard-size", "4", *extra)


def _shard_stamps(out):
    folder = out / "shards"
    return {n: (folder / n).stat().st_mtime_ns for n in sorted(os.listdir(folder))}


def test_every_drawing_is_checked_before_the_first_shard(files, capsys):
    b, names = files["base"], files["names"]
    lines = names[:4] + ["img/missing.png P9"] + names[4:7] + ["img/cut.png P9"] + names[7:9] + ["img/text.png P9"]
    listing = _list(b / "bad_list.txt", lines)
    r = _build(capsys, files["m1"], listing, b / "checked")
    assert r.returncode == 1
    assert r.last == (f"Error: 3 of 12 listed drawing(s) cannot be read, the first: {b / 'img' / 'missing.png'} "
                      f"(listed at {listing}:5): no such file (details above)")
    assert f"{listing}:9): truncated PNG file" in r.output and f"{listing}:12): not an image file" in r.output
    assert "--skip-unreadable" in r.output and not (b / "checked").exists()
    skipped = _build(capsys, files["m1"], listing, b / "checked", "--skip-unreadable")
    assert skipped.returncode == 0, skipped.output[-2000:]
    assert "Skipping 3 of 12 listed drawing(s)" in skipped.output and f"{listing}:9)" in skipped.output
    assert json.load(open(b / "checked" / "manifest.json"))["count"] == 9


def test_a_build_stopped_by_a_bad_drawing_is_finished_after_the_list_is_fixed(files, capsys):
    b, names = files["base"], files["names"]
    damaged = names[:9] + ["img/damaged.png P9"] + names[10:]
    out = b / "stopped"
    r = _build(capsys, files["m1"], _list(b / "damaged.txt", damaged), out)
    assert r.returncode == 1
    assert r.last.startswith(f"Error: Cannot read image {b / 'img' / 'damaged.png'} (listed at {b / 'damaged.txt'}:10)")
    assert f"{FINISH} {out}: fix the file or remove its line, then run the same command again" in r.last
    stamps = _shard_stamps(out)
    assert sorted(stamps) == ["00000.items.json", "00000.npy", "00001.items.json", "00001.npy"]
    assert not (out / "manifest.json").exists()
    fixed = _build(capsys, files["m1"], _list(b / "damaged.txt", names[:9] + names[10:]), out)
    assert fixed.returncode == 0, fixed.output[-2000:]
    assert "kept 2 finished shard(s) whose drawings are unchanged" in fixed.output
    assert {n: t for n, t in _shard_stamps(out).items() if n in stamps} == stamps  # not extracted again
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["count"] == 11 and not (out / "build_state.json").exists()


def test_another_model_is_refused_naming_it_and_restart_discards_the_unfinished_build(files, capsys):
    b, names = files["base"], files["names"]
    out = b / "restart"
    damaged = _list(b / "damaged2.txt", names[:9] + ["img/damaged.png P9"] + names[10:])
    assert _build(capsys, files["m1"], damaged, out).returncode == 1
    stamps = _shard_stamps(out)
    fixed = _list(b / "fixed2.txt", names[:9] + names[10:])
    r = _build(capsys, files["m2"], fixed, out)
    assert r.returncode == 1
    assert r.last == (f"Error: {out} holds an unfinished build (2 finished shard(s), build_state.json) with another "
                      f"model (checkpoint, config or preprocessing): its shards cannot be reused. Run the same command "
                      f"with --restart to discard them and start again, or choose another --output folder")
    assert _shard_stamps(out) == stamps
    again = _build(capsys, files["m2"], fixed, out, "--restart")
    assert again.returncode == 0, again.output[-2000:]
    assert "--restart: discarded the unfinished build" in again.output
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["count"] == 11 and manifest["extractor"]["weights"] == files["m2"]


def test_a_duplicate_names_the_repeated_line(files, capsys):
    b, names = files["base"], files["names"]
    listing = _list(b / "dup.txt", names[:6] + [names[2]])
    r = _build(capsys, files["m1"], listing, b / "dup")
    assert r.returncode == 1
    assert r.last == (f"Error: {b / 'img' / 'd02.png'} is listed again at {listing}:7 (first at {listing}:3); remove "
                      f"that line, or pass --skip-duplicates to skip such drawings")
    assert not (b / "dup" / "manifest.json").exists()


@pytest.fixture(scope="module")
def index(files, tmp_path_factory):
    """A finished index built with its own copy of the checkpoint (tests overwrite or delete that file)."""
    b = files["base"]
    weights = str(b / "own.pth")
    shutil.copy(files["m1"], weights)
    out = b / "index"
    r = rh.run_tool("build_index.py", *MODEL, "MODEL.WEIGHTS", weights, "--images",
                    _list(b / "all.txt", files["names"]), "--output", str(out))
    assert r.returncode == 0
    return str(out), weights


def _search(capsys, index_dir, images, *extra):
    return run_tool_here(capsys, "tools/search.py", "--index", index_dir, "--images", images, *extra)


def test_search_says_when_the_index_checkpoint_was_overwritten_or_deleted(files, index, capsys):
    index_dir, weights = index
    queries = str(files["base"] / "all.txt")
    shutil.copy(files["m2"], weights)
    r = _search(capsys, index_dir, queries)
    assert r.returncode == 1
    assert r.last.startswith(f"Error: The model file of the index {index_dir}, {weights}, changed since the index "
                             f"was built")
    assert "Put back the file the index was built with" in r.last and "omit" not in r.last
    os.remove(weights)
    r = _search(capsys, index_dir, queries)
    assert r.returncode == 1
    assert r.last.startswith(f"Error: The model file of the index {index_dir} was not found: {weights}")
    shutil.copy(files["m1"], weights)
    ok = _search(capsys, index_dir, queries, "--output", str(files["base"] / "hits.jsonl"))
    assert ok.returncode == 0 and len(open(files["base"] / "hits.jsonl").readlines()) == 12


def test_search_names_the_preprocessing_key_that_differs(files, index, capsys):
    index_dir, weights = index
    r = _search(capsys, index_dir, str(files["base"] / "all.txt"), *MODEL, "MODEL.WEIGHTS", weights,
                "INPUT.SIZE_TEST", "[40, 32]")
    assert r.returncode == 1
    assert "preprocessing: INPUT.SIZE_TEST (index [32, 32], query model [40, 32])" in r.last
    assert "GRAYSCALE" not in r.last and "checkpoint" not in r.last


def test_search_with_a_text_file_that_is_no_list_names_its_line(files, index, capsys):
    junk = files["base"] / "notes.txt"
    junk.write_text("hello world\nmeeting notes\n")
    r = _search(capsys, index[0], str(junk), "--output", str(files["base"] / "junk.jsonl"))
    assert r.returncode == 1
    assert r.last == (f"Error: none of the listed drawings can be read, the first: {files['base'] / 'hello'} "
                      f"(listed at {junk}:1): no such file: is {junk} a list of drawings ('<image path> "
                      f"[<patent id>]' per line)? (details above)")
    assert not (files["base"] / "junk.jsonl").exists()
