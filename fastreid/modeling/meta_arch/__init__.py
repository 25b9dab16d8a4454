"""Meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""
from .baseline import Baseline
from .build import META_ARCH_REGISTRY, build_model

__all__ = ["Baseline", "META_ARCH_REGISTRY", "build_model"]


def __getattr__(name: str):
    if name == "Distiller":  # fast-reid's, not implemented: the error names the alternative
        from fastreid.compat.api import refuse

        raise refuse(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
