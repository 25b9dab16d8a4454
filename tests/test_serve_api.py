"""The search page's HTTP API through a real uvicorn server on 127.0.0.1, with real requests.

One tiny index (random-weight demo model at 32 px, 45 synthetic DeepPatent drawings) serves every test;
the answers are compared with ``tools/search.py`` on the same index and images.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import httpx
import pytest
from PIL import Image

from fastreid.retrieval import BuildOptions, Index, TorchExtractor, collect_images
from fastreid.retrieval.patents import group_by_patent, patent_search_depth
from fastreid.retrieval.server import create_app
import retrieval_helpers as rh
from serve_support import ServerThread

MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1_000_000
THUMB = 48


def _snapshot(folder: str) -> Dict[str, Tuple[int, int, str]]:
    """Every file under ``folder``: (size, mtime_ns, sha256)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns,
                                               hashlib.sha256(open(p, "rb").read()).hexdigest())
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_api")
    data = rh.make_data(str(tmp / "data"))
    queries = os.path.join(data, "test_data", "codalab_test_set", "queries")
    database = os.path.join(data, "train_data", "patent_data")  # DeepPatent names: real patent ids
    cfg = rh.model_cfg(rh.make_checkpoint(str(tmp / "model.pth"), seed=0))
    index_dir = str(tmp / "index")
    options = BuildOptions.from_config(cfg)
    # The index records an expansion of each query against the database, which the page applies by default.
    options.retrieval = options.retrieval.replace(qe_k=5, qe_alpha=3.0, qe_mode="query")
    Index.build(index_dir, collect_images(database), TorchExtractor(cfg), options)
    snapshot = _snapshot(index_dir)
    index = Index.open(index_dir)
    app = create_app(index, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, thumb_size=THUMB)
    query_paths = collect_images(queries).paths[:6]
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield {"client": client, "index": index, "index_dir": index_dir, "queries": query_paths,
               "snapshot": snapshot, "tmp": tmp, "url": url}


def _search(client: httpx.Client, path: str, k: int = 10, qe: Optional[bool] = None) -> httpx.Response:
    data = {"k": str(k)} if qe is None else {"k": str(k), "qe": "true" if qe else "false"}
    with open(path, "rb") as f:
        return client.post("/api/search", files={"file": (os.path.basename(path), f.read(), "image/png")}, data=data)


def _ranking(results: List[dict]) -> List[Tuple[int, int, str, str]]:
    return [(r["rank"], r["item"], r["patent"]) for r in results]


def test_search_equals_search_tool(setup):
    out, listed = str(setup["tmp"] / "tool.jsonl"), setup["tmp"] / "queries.txt"
    listed.write_text("".join(p + "\n" for p in setup["queries"][:3]))
    rh.run_tool("search.py", "--index", setup["index_dir"], "--images", str(listed), "--topk", "10", "--output", out)
    with open(out, encoding="utf-8") as f:
        expected = [json.loads(line)["results"] for line in f]
    assert len(expected) == 3
    for path, tool in zip(setup["queries"], expected):
        r = _search(setup["client"], path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["qe"] is True and body["query_ms"] > 0 and len(body["results"]) == 10  # the recorded expansion
        assert _ranking(body["results"]) == _ranking(tool)
        assert [r["score"] for r in body["results"]] == pytest.approx([t["score"] for t in tool], abs=1e-5)
        assert all(r["thumb_url"] == f"/thumb/{r['item']}" for r in body["results"])


def test_paths_are_relative_to_the_index_unless_asked_and_groups_are_patents(setup):
    index, path = setup["index"], setup["queries"][2]
    body = _search(setup["client"], path).json()
    for r in body["results"]:
        assert not os.path.isabs(r["path"]) and r["path"] == index.relative_path(r["item"])
        assert os.path.isfile(os.path.join(setup["index_dir"], r["path"]))
    with ServerThread(create_app(index, absolute_paths=True)) as url, httpx.Client(base_url=url, timeout=60) as c:
        absolute = _search(c, path).json()["results"]
    assert [r["path"] for r in absolute] == [index.file(r["item"]) for r in body["results"]]
    with open(path, "rb") as f:
        grouped = setup["client"].post("/api/search", files={"file": ("q.png", f.read(), "image/png")},
                                       data={"k": "5", "by_patent": "true"}).json()
    hits = index.search([path], k=patent_search_depth(index.patents, 5))[0]
    want = group_by_patent(hits, 5)
    assert [(g["rank"], g["patent"], [d["item"] for d in g["drawings"]]) for g in grouped["patents"]] == \
        [(g.rank, g.patent, [h.item for h in g.drawings]) for g in want]
    assert len({g["patent"] for g in grouped["patents"]}) == 5 and "results" not in grouped


def test_search_tool_by_patent_equals_the_page(setup):
    out, listed = str(setup["tmp"] / "patents.jsonl"), setup["tmp"] / "two.txt"
    listed.write_text("".join(p + "\n" for p in setup["queries"][:2]))
    proc = rh.run_tool("search.py", "--index", setup["index_dir"], "--images", str(listed), "--topk", "4",
                       "--by-patent", "--output", out)
    assert "its drawings (drawing ranks)" in proc.stdout
    lines = [json.loads(line) for line in open(out, encoding="utf-8")]
    for path, line in zip(setup["queries"], lines):
        with open(path, "rb") as f:
            page = setup["client"].post("/api/search", files={"file": ("q.png", f.read(), "image/png")},
                                        data={"k": "4", "by_patent": "true"}).json()["patents"]
        assert [(g["rank"], g["patent"], [d["item"] for d in g["drawings"]]) for g in line["patents"]] == \
            [(g["rank"], g["patent"], [d["item"] for d in g["drawings"]]) for g in page]
        assert [g["score"] for g in line["patents"]] == pytest.approx([g["score"] for g in page], abs=1e-5)


def test_search_with_query_expansion_equals_the_index_api(setup):
    path = setup["queries"][1]
    hits = setup["index"].search([path], k=7, qe=True)[0]
    body = _search(setup["client"], path, k=7, qe=True).json()
    assert body["qe"] is True
    assert _ranking(body["results"]) == [(h.rank, h.item, h.patent) for h in hits]
    assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in hits], abs=1e-5)
    plain = _search(setup["client"], path, k=7, qe=False).json()["results"]
    assert [r["score"] for r in body["results"]] != pytest.approx([r["score"] for r in plain], abs=1e-4)


def _png(size: Tuple[int, int], color: int = 255) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming ``width x height`` pixels, with a tiny payload."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _upload(client: httpx.Client, data: bytes, name: str = "query.png") -> httpx.Response:
    return client.post("/api/search", files={"file": (name, data, "image/png")}, data={"k": "5"})


def test_bad_uploads_get_400_with_a_message(setup):
    client = setup["client"]
    cases = [
        ("not an image", _upload(client, b"this is plain text, not a drawing\n", "notes.txt")),
        ("corrupt or truncated", _upload(client, _png((200, 200))[:80])),
        ("empty", _upload(client, b"")),
        # PIL's own bomb checks on headers: 10^10 pixels raise its error, 10^8 its warning.
        ("refused as a decompression bomb: Image size (10000000000 pixels)",
         _upload(client, _png_header_only(100_000, 100_000))),
        ("refused as a decompression bomb: Image size (100000000 pixels)",
         _upload(client, _png_header_only(10_000, 10_000))),
        # Our cap, read from the header of a genuine (small, highly compressed) file.
        ("above the limit of 1,000,000 pixels", _upload(client, _png((1200, 1000)))),
    ]
    for expected, r in cases:
        assert r.status_code == 400, (expected, r.text)
        assert expected in r.json()["detail"], r.json()
    r = client.post("/api/search", files={"file": ("q.png", _png((40, 40)), "image/png")}, data={"k": "0"})
    assert r.status_code == 400 and "k must be between 1 and" in r.json()["detail"]
    r = client.post("/api/search", data={"k": "5"})
    assert r.status_code == 400 and "file" in r.json()["detail"]


def test_oversized_upload_gets_413(setup):
    client = setup["client"]
    too_big = os.urandom(MAX_UPLOAD + 1)
    assert _upload(client, too_big).status_code == 413  # announced by Content-Length

    def chunks():  # a well-formed multipart upload streamed without Content-Length: the server counts bytes
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(MAX_UPLOAD // 8192 + 2):
            yield b"x" * 8192
        yield b"\r\n--b--\r\n"
    r = client.post("/api/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert _search(client, setup["queries"][0]).status_code == 200  # the server still answers


def test_unknown_item_and_patent_get_404(setup):
    client, index = setup["client"], setup["index"]
    for item in (len(index), -1, 10 ** 9):
        r = client.get(f"/thumb/{item}")
        assert r.status_code == 404 and "unknown item" in r.json()["detail"]
    r = client.get("/api/patent/USD9999999")
    assert r.status_code == 404 and "USD9999999" in r.json()["detail"]
    assert client.get("/thumb/..%2Fmanifest.json").status_code == 404  # no path ever reaches the disk
    assert client.get("/thumb/abc").status_code == 400


def test_patent_drawings_and_thumbnails(setup):
    client, index = setup["client"], setup["index"]
    patent = index.patents[3]
    r = client.get(f"/api/patent/{patent}")
    assert r.status_code == 200
    drawings = r.json()["drawings"]
    assert [d["item"] for d in drawings] == index.items_of_patent(patent)
    assert all(d["patent"] == patent and d["path"] == index.relative_path(d["item"]) for d in drawings)
    first = client.get(drawings[0]["thumb_url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    thumb = Image.open(io.BytesIO(first.content))
    original = Image.open(index.file(drawings[0]["item"]))
    scale = min(1.0, THUMB / max(original.size))
    assert thumb.size == tuple(max(1, round(s * scale)) for s in original.size)
    assert client.get(drawings[0]["thumb_url"]).content == first.content
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["items"] == len(index)
    page = client.get("/")
    assert page.status_code == 200 and "Patent drawing search" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_concurrent_searches_equal_sequential(setup):
    client, queries = setup["client"], setup["queries"]
    sequential = {p: _search(client, p).json()["results"] for p in queries}
    jobs = [queries[i % len(queries)] for i in range(50)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda p: _search(client, p), jobs))
    for path, r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        assert r.json()["results"] == sequential[path]


def test_server_never_writes_into_the_index_folder(setup):
    client = setup["client"]
    _search(client, setup["queries"][0], qe=True)
    client.get("/thumb/0")
    assert _snapshot(setup["index_dir"]) == setup["snapshot"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_tool_serves_the_page(setup):
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(rh.ROOT, "tools", "serve.py"), "--index", setup["index_dir"],
                             "--port", str(port), "--max-upload-mb", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "tools/serve.py did not start"
                time.sleep(0.3)
        assert health["items"] == len(setup["index"]) and health["max_upload_bytes"] == 1024 * 1024
        r = _search(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60), setup["queries"][0])
        assert r.json()["results"] == _search(setup["client"], setup["queries"][0]).json()["results"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Search page for" in out and "reachable from other machines" not in out


def test_serve_tool_warns_off_loopback_and_refuses_missing_index(tmp_path):
    proc = rh.run_tool("serve.py", "--index", str(tmp_path / "nope"), "--host", "0.0.0.0", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "reachable from other machines" in out
    assert "no such folder" in out
