"""Training and evaluation loop, its hooks, and process launching."""
from .defaults import default_argument_parser, default_setup, setup_cfg

__all__ = ["default_argument_parser", "default_setup", "setup_cfg"]
