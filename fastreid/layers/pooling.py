"""fast-reid's import path of the pooling layers (:mod:`fastreid.modeling.layers.pooling`)."""
from fastreid.modeling.layers.pooling import (AdaptiveAvgMaxPool, FastGlobalAvgPool, GeneralizedMeanPooling,
                                              GeneralizedMeanPoolingP, GlobalAvgPool, GlobalMaxPool)

__all__ = ["AdaptiveAvgMaxPool", "FastGlobalAvgPool", "GeneralizedMeanPooling", "GeneralizedMeanPoolingP",
           "GlobalAvgPool", "GlobalMaxPool"]
