"""Configuration: ``get_cfg()`` returns every default; YAML files and ``KEY VALUE`` pairs override."""
from .config import CfgNode, ConfigError, get_cfg, iter_dotted, load_yaml_with_base
from .configurable import configurable

__all__ = ["CfgNode", "ConfigError", "configurable", "get_cfg", "iter_dotted", "load_yaml_with_base"]
