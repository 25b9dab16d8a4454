"""How every command-line tool fails: detail lines, then one last line ``Error: ...``.

Bad input (a missing file, a config key, an unreadable image, a checkpoint that does not fit) ends a tool
with its message only, the ``Error:`` line last, naming the file, line or key; ``FASTREID_DEBUG=1`` adds
the traceback. Any other exception is a bug of ours: its traceback is printed, then an ``Error:`` line
saying so. See docs/guarantees.md ("One-line errors").
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
import types
from typing import Any, Callable, List, NoReturn, Optional, Sequence, Type

# Environment variable that adds the traceback to the error line of bad input.
DEBUG_ENV = "FASTREID_DEBUG"
# Exception classes that describe bad input or a bad environment (their messages name the file or key).
INPUT_ERRORS: tuple = (OSError, ValueError, KeyError, ImportError)
# A DataLoader worker's error comes back with the worker's traceback inside its message.
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"
_PREFIXES = re.compile(r"^(Error|Config error): ")

__all__ = ["DEBUG_ENV", "INPUT_ERRORS", "debug_enabled", "message_of", "error_lines", "print_error",
           "one_line_usage_errors", "run_tool"]


def debug_enabled() -> bool:
    """True when ``FASTREID_DEBUG`` is set to anything but empty or 0."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def message_of(error: BaseException) -> str:
    """The message of ``error`` as a user should read it: a KeyError without quotes, an error raised in a
    DataLoader worker without the worker's traceback, never empty."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    if _WORKER_TRACEBACK in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last, count=1)
    return text.strip() or type(error).__name__


def error_lines(message: str) -> List[str]:
    """The lines a failure prints: a one-line message becomes ``Error: <message>``; a longer one prints its
    detail lines (all but the first) and then its first line as the ``Error:`` line."""
    lines = message.strip("\n").splitlines() or [""]
    head = _PREFIXES.sub("", lines[0].strip())
    details = lines[1:]
    if details:
        head = head.rstrip(":") + " (details above)"
    return details + [f"Error: {head}"]


def print_error(message: str) -> None:
    """Print :func:`error_lines` of ``message`` to stderr (standard output flushed first, so the order holds)."""
    sys.stdout.flush()
    print("\n".join(error_lines(message)), file=sys.stderr, flush=True)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    print(f"Error: {parser.prog}: {message}", file=sys.stderr)
    raise SystemExit(2)


def one_line_usage_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` whose usage errors end in ``Error: <tool>: <problem>`` (exit code 2, as argparse's)."""
    parser.error = types.MethodType(_usage_error, parser)  # type: ignore[method-assign]
    return parser


def run_tool(main: Callable[..., Optional[int]], *args: Any, input_errors: Sequence[Type[BaseException]] = (),
             **kwargs: Any) -> int:
    """Call ``main(*args, **kwargs)`` and return its exit code; a failure prints its ``Error:`` line and
    returns 1.

    Args:
        main: the tool's body; returns an exit code (None is 0) or raises.
        input_errors: exception classes that describe bad input, besides :data:`INPUT_ERRORS` and
            ``CheckpointError``.
    """
    from fastreid.utils.checkpoint import CheckpointError

    expected = tuple(INPUT_ERRORS) + (CheckpointError,) + tuple(input_errors)
    try:
        return int(main(*args, **kwargs) or 0)
    except SystemExit as e:
        if isinstance(e.code, str):
            print_error(e.code)
            return 1
        return int(e.code or 0)
    except expected as e:
        if debug_enabled():
            traceback.print_exc()
        print_error(message_of(e))
        return 1
    except Exception as e:
        traceback.print_exc()
        print_error(f"unexpected {type(e).__name__}: {message_of(e)} (a bug in fastreid: please report it with "
                    f"the traceback above)")
        return 1
