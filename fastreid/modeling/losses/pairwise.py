"""Pairwise circle and cosface losses on the cosine similarities within a batch."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .distances import identity_masks, upcast

# Added to the logits of excluded pairs: exp() of it is 0 in float32, yet stays finite (no NaN gradient).
_EXCLUDED = -1e9


def _similarities(embedding: torch.Tensor, targets: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    emb = F.normalize(upcast(embedding), dim=1)
    sim = emb @ emb.t()
    is_pos, is_neg = identity_masks(targets)
    is_pos = is_pos & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    return sim, is_pos, is_neg


def _pair_loss(logit_p: torch.Tensor, logit_n: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor
               ) -> torch.Tensor:
    logit_p = logit_p + _EXCLUDED * (~is_pos).float()
    logit_n = logit_n + _EXCLUDED * (~is_neg).float()
    return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()


def pairwise_circleloss(embedding: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float
                        ) -> torch.Tensor:
    """Circle loss: mean over anchors of softplus(lse_p(-g a_p (s_p - (1-m))) + lse_n(g a_n (s_n - m))).

    s are cosine similarities to the other samples, a_p = max(1 + m - s_p, 0), a_n = max(s_n + m, 0)
    (constants), g = ``gamma``, m = ``margin``; the anchor itself is not a positive.
    """
    sim, is_pos, is_neg = _similarities(embedding, targets)
    alpha_p = (1 + margin - sim.detach()).clamp(min=0)
    alpha_n = (sim.detach() + margin).clamp(min=0)
    logit_p = -gamma * alpha_p * (sim - (1 - margin))
    logit_n = gamma * alpha_n * (sim - margin)
    return _pair_loss(logit_p, logit_n, is_pos, is_neg)


def pairwise_cosface(embedding: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float) -> torch.Tensor:
    """Pairwise CosFace: mean over anchors of softplus(lse_p(-g s_p) + lse_n(g (s_n + m)))."""
    sim, is_pos, is_neg = _similarities(embedding, targets)
    return _pair_loss(-gamma * sim, gamma * (sim + margin), is_pos, is_neg)
