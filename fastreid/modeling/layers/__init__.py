"""Building blocks shared by backbones and heads."""
from .classifiers import (ArcSoftmax, CircleSoftmax, CosSoftmax, Linear, arcface_logits, build_classifier,
                          circle_logits, cosface_logits)
from .ibn import IBN, ibn_split
from .non_local import NonLocal, non_local_aggregate
from .norm import FrozenBatchNorm2d, get_norm
from .pooling import (AdaptiveAvgMaxPool, FastGlobalAvgPool, GeneralizedMeanPooling, GeneralizedMeanPoolingP,
                      GlobalAvgPool, GlobalMaxPool, build_pooling, generalized_mean)
from .se import SELayer
from .weight_init import weights_init_classifier, weights_init_kaiming

__all__ = [
    "ArcSoftmax", "CircleSoftmax", "CosSoftmax", "Linear", "arcface_logits", "build_classifier", "circle_logits",
    "cosface_logits", "IBN", "ibn_split", "NonLocal", "non_local_aggregate", "FrozenBatchNorm2d", "get_norm",
    "AdaptiveAvgMaxPool", "FastGlobalAvgPool", "GeneralizedMeanPooling", "GeneralizedMeanPoolingP", "GlobalAvgPool",
    "GlobalMaxPool", "build_pooling", "generalized_mean", "SELayer", "weights_init_classifier", "weights_init_kaiming",
]
