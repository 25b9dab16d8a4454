"""ResNet-18/34/50/101 with optional IBN-a, squeeze-excitation and non-local blocks.

State-dict keys follow the re-id reference code, whose released checkpoints must load: stem ``conv1``/``bn1``,
stages ``layer1..4`` of blocks with ``conv1..3``, ``bn1..3``, ``downsample.{0,1}``, ``se.fc.*``; IBN blocks
split ``bn1`` into ``bn1.IN``/``bn1.BN``; non-local blocks live in ``NL_2.*`` and ``NL_3.*``.
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional

import torch
from torch import nn

from fastreid.utils.checkpoint import register_depths
from fastreid.utils.registry import BACKBONE_REGISTRY

from ..layers import IBN, NonLocal, SELayer, get_norm

logger = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, norm: str, with_ibn: bool, with_se: bool, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = IBN(planes, norm) if with_ibn else get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection (ResNet-50/101)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, norm: str, with_ibn: bool, with_se: bool, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = IBN(planes, norm) if with_ibn else get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = get_norm(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes * self.expansion) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


# depth -> (block, blocks per stage, non-local blocks per stage)
RESNET_SPECS = {
    "18x": (BasicBlock, [2, 2, 2, 2], [0, 0, 0, 0]),
    "34x": (BasicBlock, [3, 4, 6, 3], [0, 0, 0, 0]),
    "50x": (Bottleneck, [3, 4, 6, 3], [0, 2, 3, 0]),
    "101x": (Bottleneck, [3, 4, 23, 3], [0, 2, 9, 0]),
}
# A checkpoint of another depth is then named in the mismatch report.
register_depths({name: (per_stage, block is Bottleneck) for name, (block, per_stage, _) in RESNET_SPECS.items()})


def non_local_positions(blocks: int, count: int) -> List[int]:
    """Indices of the blocks followed by a non-local block: the last ``count`` blocks of a stage."""
    return list(range(blocks - count, blocks))


class ResNet(nn.Module):
    """ResNet trunk returning the last feature map (``B x out_channels x H/16 x W/16`` at last stride 1).

    The stem max-pool uses padding 0 with ceil_mode, as the reference (torchvision pads by 1).
    """

    def __init__(self, depth: str = "50x", last_stride: int = 1, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, with_nl: bool = False, nl_width: int = 1) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"Unknown MODEL.BACKBONE.DEPTH {depth!r}; choose one of {', '.join(RESNET_SPECS)}")
        block, layers, nl_layers = RESNET_SPECS[depth]
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, norm, with_ibn, with_se)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, norm, with_ibn, with_se)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, norm, with_ibn, with_se)
        self.layer4 = self._make_layer(block, 512, layers[3], last_stride, norm, False, with_se)
        self.out_channels = 512 * block.expansion
        self._init_weights()
        # Non-local modules are registered only for stages that have some, so the keys are NL_2.* / NL_3.*.
        self.nl_positions: List[List[int]] = [[] for _ in range(4)]
        if with_nl:
            for stage, count in enumerate(nl_layers):
                if count == 0:
                    continue
                channels = 64 * 2 ** stage * block.expansion
                setattr(self, f"NL_{stage + 1}", nn.ModuleList(
                    NonLocal(channels, norm, nl_width) for _ in range(count)))
                self.nl_positions[stage] = non_local_positions(layers[stage], count)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int, norm: str, with_ibn: bool,
                    with_se: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                get_norm(norm, planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, norm, with_ibn, with_se, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm, with_ibn, with_se) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """He-normal convolutions (fan-out); norms start at weight 1, bias 0 (done by get_norm / InstanceNorm)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(4):
            layer = getattr(self, f"layer{stage + 1}")
            positions = self.nl_positions[stage]
            if not positions:
                x = layer(x)
                continue
            non_local = getattr(self, f"NL_{stage + 1}")
            for i, block in enumerate(layer):
                x = block(x)
                if i in positions:
                    x = non_local[positions.index(i)](x)
        return x


def resnet_from_cfg(cfg) -> ResNet:
    """A randomly initialised ResNet from MODEL.BACKBONE.*."""
    bb = cfg.MODEL.BACKBONE
    return ResNet(depth=bb.DEPTH, last_stride=bb.LAST_STRIDE, norm=bb.NORM, with_ibn=bb.WITH_IBN,
                  with_se=bb.WITH_SE, with_nl=bb.WITH_NL, nl_width=bb.NL_WIDTH)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg) -> ResNet:
    """ResNet backbone from MODEL.BACKBONE.*, initialised from ImageNet weights when PRETRAIN is set."""
    model = resnet_from_cfg(cfg)
    if cfg.MODEL.BACKBONE.PRETRAIN:
        from .pretrain import load_imagenet_weights

        load_imagenet_weights(model, cfg)
    return model


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_SPECS", "non_local_positions", "resnet_from_cfg",
           "build_resnet_backbone"]
