#!/usr/bin/env python
"""Serve the search page over an index folder: drop a drawing, see the closest patents.

    python tools/serve.py --index logs/demo/index          # then open http://127.0.0.1:8000/

The index and its model are loaded once at start; an IVF structure is memory-mapped, not read into
memory (docs/search.md, "Indexes at scale"). Binds to 127.0.0.1 unless --host says otherwise
(then the page is reachable from other machines, without authentication: a warning is printed).
Needs the 'serve' extra: pip install -e '.[serve]'.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.utils.errors import message_of, one_line_usage_errors, print_error, run_tool  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = one_line_usage_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--index", required=True, help="index folder written by tools/build_index.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--absolute-paths", action="store_true",
                        help="answer with drawings' absolute server paths (default: relative to the index folder)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest accepted upload in MB; larger ones get HTTP 413 (default 20)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="largest accepted upload width x height (decompression bomb guard; "
                             "default 50,000,000)")
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0:
        parser.error(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.max_pixels is not None and args.max_pixels <= 0:
        parser.error(f"--max-pixels must be positive, got {args.max_pixels}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logger = setup_logger(name="fastreid")
    if not is_loopback(args.host):
        logger.warning("Binding to %s: the search page and its API are reachable from other machines, "
                       "without authentication. Use --host 127.0.0.1 to keep it local.", args.host)
    if not os.path.isdir(args.index):
        print_error(f"--index {args.index}: no such folder (build one with tools/build_index.py)")
        return 2
    try:
        import uvicorn

        from fastreid.retrieval.server import DEFAULT_MAX_PIXELS, create_app
    except ImportError as e:
        print_error(str(e) if "serve" in str(e) else f"{e}; install the 'serve' extra: pip install -e '.[serve]'")
        return 2
    from fastreid.retrieval import Index

    try:
        index = Index.open(args.index)
        if index.options.index != "flat":
            index.structure()  # mapped read-only now, so a bad file stops the start, not the first query
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print_error(f"--index {args.index}: {message_of(e)}")
        return 2
    app = create_app(index, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, absolute_paths=args.absolute_paths)
    host = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("Search page for %d drawings of %s at http://%s:%d/", len(index), args.index, host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
