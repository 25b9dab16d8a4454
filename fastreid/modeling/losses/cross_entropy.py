"""Cross-entropy with (optionally adaptive) label smoothing."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distances import upcast


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 0.0,
                       alpha: float = 0.2) -> torch.Tensor:
    """Mean cross-entropy against smoothed one-hot targets.

    Args:
        logits: ``B x K`` classifier outputs.
        targets: ``B`` class indices.
        eps: smoothing; the target class gets 1 - eps and each other class eps / (K - 1). A negative
            value makes it adaptive: eps_i = alpha * softmax(logits_i)[target_i] (a constant per sample),
            so confident samples are smoothed more.
        alpha: scale of the adaptive smoothing.
    Returns:
        Scalar loss.
    """
    logits = upcast(logits)
    num_classes = logits.size(1)
    log_probs = F.log_softmax(logits, dim=1)
    if eps >= 0:
        smooth = torch.full((logits.size(0), 1), float(eps), dtype=logits.dtype, device=logits.device)
    else:
        smooth = alpha * log_probs.detach().exp().gather(1, targets.view(-1, 1))
    soft = (smooth / max(num_classes - 1, 1)).expand_as(log_probs).clone()
    soft.scatter_(1, targets.view(-1, 1), 1 - smooth)
    return -(soft * log_probs).sum(dim=1).mean()


def log_accuracy(pred_class_logits: torch.Tensor, gt_classes: torch.Tensor, topk: tuple = (1,)) -> torch.Tensor:
    """Top-``topk[0]`` accuracy of a batch's logits, as a 0-dim tensor in [0, 1] (fast-reid's name; its
    version writes the value to the event storage as ``cls_accuracy``, this one returns it)."""
    with torch.no_grad():
        k = min(max(topk), pred_class_logits.size(1))
        top = pred_class_logits.topk(k, dim=1).indices[:, :topk[0]]
        return (top == gt_classes.view(-1, 1)).any(dim=1).float().mean()
