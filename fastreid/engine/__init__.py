"""Training and evaluation loop, its hooks, and process launching.

``DefaultTrainer`` and ``hooks`` are imported on first use, so that inference (``DefaultPredictor``, the
search index, the page) never loads the trainer and what it pulls in.
"""
import importlib
from typing import Any

from .defaults import default_argument_parser, default_setup, seed_all, setup_cfg
from .launch import launch
from .predictor import DefaultPredictor
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = ["hooks", "default_argument_parser", "default_setup", "seed_all", "setup_cfg", "launch", "DefaultPredictor",
           "AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase", "DefaultTrainer"]

_LAZY = {"DefaultTrainer": ".trainer", "hooks": ".hooks"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    return module if name == "hooks" else getattr(module, name)
