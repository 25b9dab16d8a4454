"""Meta-architectures; importing this package registers them in META_ARCH_REGISTRY."""
from .baseline import Baseline
from .build import META_ARCH_REGISTRY, build_model
from .distiller import Distiller

__all__ = ["Baseline", "Distiller", "META_ARCH_REGISTRY", "build_model"]
