"""Training and evaluation loop, its hooks, and process launching."""
from . import hooks
from .defaults import default_argument_parser, default_setup, seed_all, setup_cfg
from .launch import launch
from .predictor import DefaultPredictor
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from .trainer import DefaultTrainer

__all__ = ["hooks", "default_argument_parser", "default_setup", "seed_all", "setup_cfg", "launch", "DefaultPredictor",
           "AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase", "DefaultTrainer"]
