"""fast-reid's import path of the classifier layers (:mod:`fastreid.modeling.layers.classifiers`):
``Linear``, ``CosSoftmax``, ``ArcSoftmax``, ``CircleSoftmax``, each ``(num_classes, scale, margin)``."""
from fastreid.modeling.layers.classifiers import ArcSoftmax, CircleSoftmax, CosSoftmax, Linear

__all__ = ["Linear", "CosSoftmax", "ArcSoftmax", "CircleSoftmax"]
