"""A yacs ``CfgNode`` with ``_BASE_`` inheritance and errors that say what is wrong.

Unknown keys name the full key, the file (and line) or command-line argument they
came from, and the closest valid keys; wrong types name the key, the expected
and the given type.
"""
from __future__ import annotations

import ast
import difflib
import functools
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml
from yacs.config import CfgNode as _YacsCfgNode

from . import fastreid_compat

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or command-line override is invalid."""


@functools.lru_cache(maxsize=32)
def _composed(text: str) -> Optional[yaml.Node]:
    """The YAML node tree of a file's text (cached: one parse per file, not one per key)."""
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def _yaml_key_line(path: str, full_key: str) -> Optional[int]:
    """1-based line of ``full_key`` (dotted) in the YAML file ``path``, if found."""
    try:
        with open(path, encoding="utf-8") as f:
            node = _composed(f.read())
    except OSError:
        return None
    for part in full_key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return None
    return line


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"Invalid YAML in {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping, got {type(data).__name__}")
    return data


def _merge_dicts(base: Dict[str, Any], new: Dict[str, Any], base_src: Dict[str, str],
                 new_src: Dict[str, str], prefix: str = "") -> None:
    """Merge ``new`` into ``base`` in place: dicts key by key, other values replace."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge_dicts(base[k], v, base_src, new_src, prefix + k + ".")
        else:
            base[k] = v
            for sk in [s for s in base_src if s == prefix + k or s.startswith(prefix + k + ".")]:
                del base_src[sk]
    base_src.update({k: s for k, s in new_src.items() if k.startswith(prefix)})


def _leaf_sources(d: Dict[str, Any], source: str, prefix: str = "") -> Dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaf_sources(v, source, prefix + k + "."))
        out[prefix + k] = source
    return out


def load_yaml_with_base(path: str, _seen: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Load a YAML config, resolving ``_BASE_`` (relative to the including file) recursively.

    Returns:
        The merged mapping and, for every (dotted) key, the file it came from.
    """
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"Circular _BASE_ chain: {' -> '.join(_seen + (path,))}")
    data = _read_yaml(path)
    base_ref = data.pop(BASE_KEY, None)
    sources = _leaf_sources(data, path)
    if base_ref is None:
        return data, sources
    if not isinstance(base_ref, str):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file path, got {base_ref!r}")
    base_path = os.path.expanduser(base_ref)
    if not os.path.isabs(base_path):
        base_path = os.path.join(os.path.dirname(path), base_path)
    if not os.path.isfile(base_path):
        raise ConfigError(f"{path}: {BASE_KEY} file not found: {base_ref} (resolved to {base_path})")
    merged, merged_src = load_yaml_with_base(base_path, _seen + (path,))
    _merge_dicts(merged, data, merged_src, sources)
    return merged, merged_src


def _type_name(v: Any) -> str:
    return type(v).__name__


class CfgNode(_YacsCfgNode):
    """Config node; see the module docstring for what it adds to yacs."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (with its ``_BASE_`` chain) into this config.

        fast-reid keys that have no effect here are accepted and reported once (``fastreid_compat``).
        """
        data, sources = load_yaml_with_base(cfg_filename)
        ignored: List[Tuple[str, Any, str]] = []
        self._merge_mapping(data, sources, ignored=ignored)
        fastreid_compat.report_ignored(ignored)
        fastreid_compat.record_unapplied(self, ignored)

    def merge_from_list(self, cfg_list: List[str]) -> None:
        """Merge ``KEY VALUE`` pairs given on the command line (values parsed by :func:`_parse_literal`)."""
        cfg_list = list(cfg_list)
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs; got an odd number of items: {cfg_list}")
        ignored: List[Tuple[str, Any, str]] = []
        for i in range(0, len(cfg_list), 2):
            key, raw = cfg_list[i], cfg_list[i + 1]
            where = f"command line (argument {key!r})"
            if key in fastreid_compat.IGNORED:
                value = _coerce(fastreid_compat.FASTREID_DEFAULTS[key], _parse_literal(raw), key, where)
                ignored.append((key, value, where))
                continue
            node, leaf = self._locate(key, where)
            node._set_checked(leaf, _parse_literal(raw), key, where)
        fastreid_compat.report_ignored(ignored)
        fastreid_compat.record_unapplied(self, ignored)

    def _merge_mapping(self, data: Dict[str, Any], sources: Dict[str, str], prefix: str = "",
                       ignored: Optional[List[Tuple[str, Any, str]]] = None) -> None:
        """Merge ``data`` below ``prefix``; fast-reid keys without effect here go to ``ignored``."""
        ignored = [] if ignored is None else ignored
        for k, v in data.items():
            full = prefix + k
            src = sources.get(full, "<dict>")
            line = _yaml_key_line(src, full) if os.path.isfile(src) else None
            where = f"{src}:{line}" if line else src
            if k not in self:
                self._accept_ignored(full, v, sources, where, ignored, prefix)
            elif isinstance(self[k], _YacsCfgNode):
                if not isinstance(v, dict):
                    raise ConfigError(
                        f"Config key {full} (from {where}) is a group of keys and needs a mapping, got {_type_name(v)}")
                self[k]._merge_mapping(v, sources, full + ".", ignored)
            else:
                self._set_checked(k, v, full, where)

    def _accept_ignored(self, full: str, value: Any, sources: Dict[str, str], where: str,
                        ignored: List[Tuple[str, Any, str]], prefix: str) -> None:
        """Record a fast-reid key (or group of them) that has no effect here; anything else is an error."""
        if isinstance(value, dict) and fastreid_compat.is_ignored_group(full):
            for sub, sub_value in value.items():
                src = sources.get(f"{full}.{sub}", "<dict>")
                line = _yaml_key_line(src, f"{full}.{sub}") if os.path.isfile(src) else None
                self._accept_ignored(f"{full}.{sub}", sub_value, sources, f"{src}:{line}" if line else src,
                                     ignored, prefix)
        elif full in fastreid_compat.IGNORED:
            ignored.append((full, _coerce(fastreid_compat.FASTREID_DEFAULTS[full], value, full, where), where))
        else:
            raise ConfigError(self._unknown_key_message(full, where, prefix))

    def _locate(self, full_key: str, where: str) -> Tuple["CfgNode", str]:
        node = self
        parts = full_key.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], _YacsCfgNode):
                raise ConfigError(self._unknown_key_message(full_key, where))
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(self._unknown_key_message(full_key, where))
        if isinstance(node[parts[-1]], _YacsCfgNode):
            raise ConfigError(f"Config key {full_key} (from {where}) is a group of keys; set one of its sub-keys")
        return node, parts[-1]

    def _unknown_key_message(self, full_key: str, where: str, prefix: str = "") -> str:
        valid = self.all_keys(prefix)
        # Keys are upper case: a lower-case spelling of a real key is the likeliest slip.
        close = [k for k in valid if k.lower() == full_key.lower()]
        close = close or difflib.get_close_matches(full_key, valid, n=3, cutoff=0.5)
        if not close:
            last = full_key.split(".")[-1]
            close = [k for k in valid if k.split(".")[-1] == last][:3]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"Unknown config key {full_key} (from {where}).{hint}"

    def all_keys(self, prefix: str = "") -> List[str]:
        """All dotted leaf keys under this node."""
        return [k for k, _ in iter_dotted(self, prefix)]

    def _set_checked(self, leaf: str, value: Any, full_key: str, where: str) -> None:
        if self.is_frozen():
            raise AttributeError(f"Cannot set {full_key}: the config is frozen")
        self[leaf] = _coerce(self[leaf], value, full_key, where)


def _parse_literal(raw: Any) -> Any:
    """A command-line value by yacs' rule: the Python literal when it parses, else the string as typed.

    So ``""`` is the empty string and ``on``/``no``/``null`` stay strings (YAML would make them
    booleans or None). A YAML flow list or mapping that is no Python literal (``[backbone]``) is
    read as YAML, as fast-reid users type lists that way.
    """
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if raw.strip().startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            pass
    return raw


def _coerce(default: Any, value: Any, full_key: str, where: str) -> Any:
    """Check ``value`` against the type of ``default`` and convert compatible forms."""
    if default is None:
        return value
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(default)(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"Config key {full_key} (from {where}) expects {_type_name(default)}, "
            f"got {_type_name(value)}: {value!r}")
    return value


def iter_dotted(cfg: _YacsCfgNode, prefix: str = "") -> Iterable[Tuple[str, Any]]:
    """Yield (dotted key, value) for every leaf of ``cfg``."""
    for k, v in cfg.items():
        if isinstance(v, _YacsCfgNode):
            yield from iter_dotted(v, prefix + k + ".")
        else:
            yield prefix + k, v


def get_cfg() -> CfgNode:
    """A fresh copy of all defaults."""
    from .defaults import _C

    return _C.clone()
