"""How a builder reports a config value it does not accept (used by each builder's ``validate(cfg)``).

Each builder owns its allowed values as public constants and a ``validate(cfg) -> List[str]`` that
returns one line per problem; the preflight (``fastreid.engine.preflight``) only loops over them.
"""
from __future__ import annotations

import difflib
from typing import Any, List, Sequence


def choice_problem(key: str, value: Any, allowed: Sequence[Any]) -> List[str]:
    """``[]`` when ``value`` is one of ``allowed``, else one line naming the key, the value, the closest
    allowed value and all of them."""
    if value in allowed:
        return []
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return [f"{key} is {value!r}{hint}; allowed: {', '.join(repr(a) for a in allowed)}"]


# Items listed one by one in a problem; the rest are counted.
MAX_LISTED = 20


def capped_list(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``items`` one per indented line, the first ``limit`` of them, then how many more."""
    shown = "\n".join(f"      {x}" for x in items[:limit])
    more = f"\n      ... and {len(items) - limit} more" if len(items) > limit else ""
    return shown + more
