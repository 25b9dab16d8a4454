"""Batch triplet loss with hardest or softmax-weighted positive/negative mining."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .distances import cosine_dist, euclidean_dist, identity_masks, upcast


def hard_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: distance to the farthest positive and to the nearest negative."""
    dist_ap = dist.masked_fill(~is_pos, float("-inf")).max(dim=1).values
    dist_an = dist.masked_fill(~is_neg, float("inf")).min(dim=1).values
    return dist_ap, dist_an


def _softmax_weighted(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = torch.softmax(values.masked_fill(~mask, float("-inf")), dim=1)
    return weights.nan_to_num(0.0)  # rows without any allowed entry


def weighted_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: positive distances averaged with weights softmax(d), negatives with softmax(-d).

    Far positives and near negatives dominate, but every pair gets a gradient.
    """
    w_ap = _softmax_weighted(dist, is_pos)
    w_an = _softmax_weighted(-dist, is_neg)
    return (dist * w_ap).sum(dim=1), (dist * w_an).sum(dim=1)


def triplet_loss(embedding: torch.Tensor, targets: torch.Tensor, margin: float, norm_feat: bool = False,
                 hard_mining: bool = True) -> torch.Tensor:
    """Mean over anchors of max(d_ap - d_an + margin, 0), or softplus(d_ap - d_an) when ``margin`` is 0.

    Args:
        embedding: ``N x D`` features.
        targets: ``N`` identity labels; anchors without a negative are left out.
        margin: > 0 hinge margin; 0 selects the soft margin log(1 + exp(d_ap - d_an)).
        norm_feat: cosine distance (2 - 2 cos) instead of Euclidean.
        hard_mining: hardest pairs; otherwise softmax-weighted pairs.
    Returns:
        Scalar loss (0 when no anchor has a negative).
    """
    embedding = upcast(embedding)
    dist = cosine_dist(embedding, embedding) if norm_feat else euclidean_dist(embedding, embedding)
    is_pos, is_neg = identity_masks(targets)
    mine = hard_example_mining if hard_mining else weighted_example_mining
    dist_ap, dist_an = mine(dist, is_pos, is_neg)
    valid = is_neg.any(dim=1)
    if not bool(valid.any()):
        return embedding.sum() * 0.0
    diff = (dist_ap - dist_an)[valid]
    if margin > 0:
        return F.relu(diff + margin).mean()
    return F.softplus(diff).mean()
