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
from typing import Any, Callable, List, NoReturn, Optional, Sequence, Set, Tuple, Type

# Environment variable that adds the traceback to the error line of bad input.
DEBUG_ENV = "FASTREID_DEBUG"
# Exception classes that describe bad input or a bad environment (their messages name the file or key).
INPUT_ERRORS: tuple = (OSError, ValueError, KeyError, ImportError)
# An error of a DataLoader worker, or of a process started by launch(), comes back with that process's
# traceback inside its message, after one of these lines.
_CHILD_TRACEBACKS = ("Original Traceback (most recent call last):", "terminated with the following error:")
_LAST_LINE = re.compile(r"^([\w.]+): (.*)$")
_PREFIXES = re.compile(r"^(Error|Config error): ")

__all__ = ["DEBUG_ENV", "INPUT_ERRORS", "debug_enabled", "message_of", "is_input_error", "error_lines",
           "print_error", "one_line_usage_errors", "run_tool"]


def debug_enabled() -> bool:
    """True when ``FASTREID_DEBUG`` is set to anything but empty or 0."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _child_error(text: str) -> Optional[Tuple[str, str]]:
    """(type name, message) of the error another process raised, when ``text`` carries its traceback."""
    if not any(marker in text for marker in _CHILD_TRACEBACKS):
        return None
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    match = _LAST_LINE.match(last)
    return (match.group(1).rpartition(".")[2], match.group(2)) if match else ("", last)


def message_of(error: BaseException) -> str:
    """The message of ``error`` as a user should read it: a KeyError without quotes, an error raised in a
    DataLoader worker or another process without that process's traceback, never empty."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    child = _child_error(text)
    if child is not None:
        text = child[1]
    return text.strip() or type(error).__name__


def _names(classes: Sequence[type]) -> Set[str]:
    found: Set[str] = set()
    todo = list(classes)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in found:
            found.add(cls.__name__)
            todo += cls.__subclasses__()
    return found


def is_input_error(error: BaseException, classes: Sequence[type]) -> bool:
    """Whether ``error`` is one of ``classes`` (bad input), also when another process raised it (``launch``
    reports a child's error as its traceback text: the type is matched by name)."""
    if isinstance(error, tuple(classes)):
        return True
    child = _child_error(str(error))
    return child is not None and child[0] in _names(classes)


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
    except Exception as e:
        if is_input_error(e, expected):
            if debug_enabled():
                traceback.print_exc()
            print_error(message_of(e))
            return 1
        traceback.print_exc()
        print_error(f"unexpected {type(e).__name__}: {message_of(e)} (a bug in fastreid: please report it with "
                    f"the traceback above)")
        return 1
