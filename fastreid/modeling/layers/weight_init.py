"""Initialisers applied with ``module.apply(fn)`` (fast-reid's names): He init for convolutions and linear
layers, identity for normalisation layers, a small normal for classifiers."""
from __future__ import annotations

from torch import nn

__all__ = ["weights_init_kaiming", "weights_init_classifier"]


def _zero_bias(m: nn.Module) -> None:
    if isinstance(getattr(m, "bias", None), nn.Parameter):
        nn.init.zeros_(m.bias)


def weights_init_kaiming(m: nn.Module) -> None:
    """Linear: He normal over the outputs; convolutions: He normal over the inputs; batch norm: scale 1,
    shift 0. Other modules are left alone."""
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
        _zero_bias(m)
    elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        _zero_bias(m)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def weights_init_classifier(m: nn.Module) -> None:
    """Linear classifiers: normal with std 0.001 and zero bias."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)
        _zero_bias(m)
