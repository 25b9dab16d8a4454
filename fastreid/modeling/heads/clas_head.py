"""``ClasHead`` (fast-reid's name): the embedding head of an image classifier, logits at test time."""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from fastreid.utils.registry import HEAD_REGISTRY

from .embedding_head import EmbeddingHead


@HEAD_REGISTRY.register()
class ClasHead(EmbeddingHead):
    """EmbeddingHead whose eval output is the scaled class logits ``B x num_classes`` (what a classification
    evaluator ranks), not the embedding; training returns the usual ``cls_outputs``, ``pred_class_logits``
    and ``features`` (the neck output)."""

    def forward(self, features: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        if self.weight is None:
            raise ValueError("ClasHead needs MODEL.HEADS.NUM_CLASSES > 0 (the trainer sets it from the training set)")
        neck = self.bottleneck(self.pool_layer(features)).flatten(1)
        if self.cls_layer.uses_cosine:
            logits = F.linear(F.normalize(neck), F.normalize(self.weight))
        else:
            logits = F.linear(neck, self.weight)
        if not self.training:
            return logits * self.cls_layer.s
        return {"cls_outputs": self.cls_layer(logits, targets), "pred_class_logits": logits * self.cls_layer.s,
                "features": neck}
