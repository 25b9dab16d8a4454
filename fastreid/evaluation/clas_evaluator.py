"""``ClasEvaluator`` (fast-reid's name): top-1 accuracy of class logits, for classification projects."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..utils import comm
from .evaluator import DatasetEvaluator


class ClasEvaluator(DatasetEvaluator):
    """Counts ``argmax(outputs) == inputs["targets"]`` over a pass; ``evaluate()`` returns ``Acc@1`` and
    ``metric`` (the same number, what model selection reads) in percent, gathered over DDP ranks."""

    def __init__(self, cfg: Any, output_dir: Optional[str] = None) -> None:
        self.cfg = cfg
        self._output_dir = output_dir
        self._counts: List[List[int]] = []

    def reset(self) -> None:
        self._counts = []

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        labels = torch.as_tensor(inputs["targets"]).cpu()
        correct = int((outputs.float().cpu().argmax(dim=1) == labels).sum())
        self._counts.append([correct, int(labels.numel())])

    def evaluate(self) -> Dict[str, float]:
        counts = self._counts
        if comm.get_world_size() > 1:
            counts = [c for part in comm.gather(counts) for c in part]
            if not comm.is_main_process():
                return {}
        total = sum(n for _, n in counts)
        acc = 100.0 * sum(c for c, _ in counts) / max(total, 1)
        return {"Acc@1": acc, "metric": acc}
