"""The search page: a FastAPI app over an opened :class:`~fastreid.retrieval.Index`.

A thin layer: uploads are decoded with PIL under size and pixel caps, then handed as PIL images to
``index.search`` (the index's own preprocessing and model, so a query through the page is the query of
``tools/search.py``). The model runs under one lock, so concurrent requests never share its state.
Thumbnails are made only for items of the index, looked up by their integer id (never by a path taken
from the request), resized server-side and kept in an in-memory LRU cache. Nothing is written to disk
by the app, least of all into the index folder.

Needs the ``serve`` extra: ``pip install -e '.[serve]'`` (fastapi, uvicorn, python-multipart).
"""
from __future__ import annotations

import functools
import io
import os
import threading
import time
import warnings
from typing import Any, Dict, List, Optional

from PIL import Image

from fastreid.data.data_utils import ImageReadError, read_image

from .patents import group_by_patent, patent_search_depth

SERVE_EXTRA_HINT = ("the search page needs the 'serve' extra (fastapi, uvicorn, python-multipart): "
                    "pip install -e '.[serve]'")

try:
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"{e}; {SERVE_EXTRA_HINT}") from e

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_K = 100
DEFAULT_THUMB_SIZE = 256
DEFAULT_THUMB_CACHE = 1024

# Image.open's bomb check warns through the global warnings filters; one decode at a time turns
# that warning into an error without racing another thread's filter state.
_DECODE_LOCK = threading.Lock()


class UploadError(ValueError):
    """An uploaded file is not an acceptable image; the message is shown on the page."""


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode uploaded bytes into a loaded PIL image, refusing what must not reach the model.

    The dimensions are checked from the header before any pixel is decoded, so a small file that
    expands to a huge bitmap (decompression bomb) costs nothing; PIL's own bomb error and warning are
    refused as well.

    Args:
        data: the uploaded file's bytes.
        max_pixels: largest width x height accepted.

    Returns:
        The decoded image, as stored (the index converts it with its own preprocessing).

    Raises:
        UploadError: empty, not an image, corrupt or truncated, or more than ``max_pixels`` pixels.
    """
    if not data:
        raise UploadError("the uploaded file is empty")
    try:
        with _DECODE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            raise UploadError(f"the image is {width} x {height} = {width * height:,} pixels, above the "
                              f"limit of {max_pixels:,} pixels (refused as a possible decompression bomb)")
        img.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(f"refused as a decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise UploadError("the uploaded file is not an image that can be read (PNG, JPEG, TIFF, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UploadError(f"the image is corrupt or truncated: {e}") from None
    return img


def make_thumbnail(path: str, size: int) -> bytes:
    """Grey PNG bytes of the drawing at ``path`` (read as the models read drawings), fitted into
    ``size`` x ``size`` with its aspect ratio kept."""
    img = read_image(path)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.convert("L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{field or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(index: Any, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_k: int = DEFAULT_MAX_K,
               thumb_size: int = DEFAULT_THUMB_SIZE, thumb_cache: int = DEFAULT_THUMB_CACHE,
               absolute_paths: bool = False) -> FastAPI:
    """The web app of the search page over an opened index.

    Args:
        index: a :class:`fastreid.retrieval.Index` (its model loaded once, here shared by all requests).
        max_upload_bytes: largest request body accepted; larger uploads get 413, whether announced by
            ``Content-Length`` or only seen while streaming.
        max_pixels: largest upload width x height (decompression bomb guard); larger gets 400.
        max_k: largest ``k`` a search may ask for.
        thumb_size: longest side of a thumbnail in pixels.
        thumb_cache: how many thumbnails the in-memory LRU cache keeps.
        absolute_paths: answer with each drawing's absolute file path on the server instead of its path
            relative to the index folder (which discloses nothing about the server's layout).

    Returns:
        The FastAPI application (serve it with uvicorn, see ``tools/serve.py``).
    """
    if max_upload_bytes <= 0 or max_pixels <= 0 or max_k <= 0 or thumb_size <= 0:
        raise ValueError("max_upload_bytes, max_pixels, max_k and thumb_size must be positive")
    app = FastAPI(title="fastreid patent drawing search", max_body_size=max_upload_bytes,
                  docs_url=None, redoc_url=None)
    model_lock = threading.Lock()
    num_items = len(index)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=400)

    def item_or_404(item: int) -> int:
        if not 0 <= item < num_items:
            raise HTTPException(404, f"unknown item {item}: the index has items 0..{num_items - 1}")
        return item

    def drawing(item: int) -> Dict[str, Any]:
        path = index.file(item) if absolute_paths else index.relative_path(item)
        return {"item": item, "patent": index.patents[item] or None, "path": path, "thumb_url": f"/thumb/{item}"}

    @functools.lru_cache(maxsize=thumb_cache)
    def thumbnail(item: int) -> bytes:
        return make_thumbnail(index.file(item), thumb_size)

    def run_query(data: bytes, k: int, qe: Optional[bool], by_patent: bool) -> Dict[str, Any]:
        start = time.perf_counter()
        img = decode_upload(data, max_pixels)
        depth = patent_search_depth(index.patents, k) if by_patent else k
        with model_lock:
            hits = index.search([img], k=depth, qe=qe)[0]
        query_ms = (time.perf_counter() - start) * 1000.0
        answer: Dict[str, Any] = {"query_ms": round(query_ms, 2), "k": k, "qe": index.search_options(qe).expands}
        if by_patent:
            answer["patents"] = [{"rank": g.rank, "patent": g.patent or None, "score": float(g.score),
                                  "drawings": [dict(drawing(h.item), rank=h.rank, score=float(h.score))
                                               for h in g.drawings]} for g in group_by_patent(hits, k)]
        else:
            answer["results"] = [dict(drawing(h.item), rank=h.rank, score=float(h.score)) for h in hits]
        return answer

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    @app.get("/healthz")
    def healthz() -> Dict[str, Any]:
        o = index.options
        recorded = {"k": o.qe_k, "alpha": o.qe_alpha, "mode": o.qe_mode} if o.expands else None
        return {"status": "ok", "items": num_items, "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels, "max_k": max_k, "qe": recorded}

    @app.post("/api/search")
    async def search(file: UploadFile = File(...), k: int = Form(10), qe: Optional[bool] = Form(None),
                     by_patent: bool = Form(False)) -> Dict[str, Any]:
        if not 1 <= k <= max_k:
            raise HTTPException(400, f"k must be between 1 and {max_k}, got {k}")
        if qe and not index.options.expands:
            raise HTTPException(400, "qe: this index records no query expansion (build it with --qe K ALPHA)")
        data = await file.read()
        try:
            return await run_in_threadpool(run_query, data, min(k, num_items), qe, by_patent)
        except UploadError as e:
            name = os.path.basename(file.filename or "upload")
            raise HTTPException(400, f"{name}: {e}") from None

    @app.get("/api/patent/{patent_id}")
    def patent(patent_id: str) -> Dict[str, Any]:
        try:
            with model_lock:  # the index builds its patent table on first use
                items: List[int] = list(index.items_of_patent(patent_id))
        except KeyError:
            raise HTTPException(404, f"unknown patent {patent_id!r}: no drawing of it is in the index") from None
        return {"patent": patent_id, "drawings": [drawing(i) for i in items]}

    @app.get("/thumb/{item}")
    async def thumb(item: int) -> Response:
        item_or_404(item)
        try:
            png = await run_in_threadpool(thumbnail, item)
        except ImageReadError as e:
            raise HTTPException(404, f"item {item}: {e}") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
