"""``configurable``: a constructor or builder that takes either a config or explicit arguments.

fast-reid (after detectron2) decorates ``__init__`` methods and builder functions with it, and projects
written for fast-reid subclass such classes by overriding ``from_config``. Called with a ``CfgNode``
first, the decorated callable gets the keyword arguments that ``from_config(cfg, ...)`` returns; called
without one, it receives its arguments as given.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Optional

from yacs.config import CfgNode as _YacsCfgNode

__all__ = ["configurable"]


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    return bool(args and isinstance(args[0], _YacsCfgNode)) or isinstance(kwargs.get("cfg"), _YacsCfgNode)


def _args_from_config(from_config: Callable, *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """``from_config``'s dictionary, plus the caller's keywords that ``from_config`` does not take."""
    params = inspect.signature(from_config).parameters
    if next(iter(params), None) != "cfg":
        raise TypeError(f"{getattr(from_config, '__qualname__', from_config)} must take 'cfg' as its first argument")
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(from_config(*args, **kwargs))
    own = {k: v for k, v in kwargs.items() if k in params}
    extra = {k: v for k, v in kwargs.items() if k not in params}
    out = dict(from_config(*args, **own))
    out.update(extra)
    return out


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None) -> Callable:
    """Decorate ``__init__`` (the class's ``from_config`` classmethod is used) or, with
    ``from_config=fn``, a function."""
    if init_func is not None:
        if init_func.__name__ != "__init__":
            raise TypeError("@configurable without arguments decorates __init__; use "
                            "@configurable(from_config=...) for a function")

        @functools.wraps(init_func)
        def wrapped_init(self: Any, *args: Any, **kwargs: Any) -> None:
            if not _called_with_cfg(*args, **kwargs):
                init_func(self, *args, **kwargs)
                return
            maker = getattr(type(self), "from_config", None)
            if maker is None:
                raise AttributeError(f"{type(self).__name__} is built from a config but has no from_config classmethod")
            init_func(self, **_args_from_config(maker, *args, **kwargs))

        return wrapped_init
    if from_config is None:
        raise TypeError("configurable needs a decorated __init__ or from_config=")

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                return func(**_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config  # type: ignore[attr-defined]
        return wrapped

    return decorate
