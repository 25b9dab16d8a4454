"""Save and load models with their training state; read the re-id reference code's checkpoints.

For training, loading never crashes on a key mismatch: missing, unexpected and shape-mismatched keys
are logged as a table and the rest is loaded, so a model with another classifier size or an ImageNet
file still starts. For evaluation :func:`load_state_dict_strict` refuses any mismatch outside the
training-only classifier. Saving is atomic and done by rank 0 only.
"""
from __future__ import annotations

import glob
import logging
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from tabulate import tabulate
from torch import nn

from fastreid.utils import comm
from fastreid.utils.file_io import PathManager, atomic_open

logger = logging.getLogger(__name__)

# Key renames between the reference code's older releases and the current names.
RENAMED_PREFIXES = (("heads.bnneck.", "heads.bottleneck.0."), ("heads.classifier.weight", "heads.weight"))
# Entries that older checkpoints carry but that are constants of the config, not weights.
IGNORED_KEYS = ("pixel_mean", "pixel_std")
# Prefixes added by wrappers: DistributedDataParallel / DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Weights used only by the training losses (the identity classifier): features never depend on them.
TRAINING_ONLY_KEYS = ("heads.weight",)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or does not fit the model; the message names the file."""


@dataclass
class LoadReport:
    """What did not load: keys only in the model, only in the file, or with different shapes."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self, loaded: bool = True) -> str:
        """A tabulate table, one row per module; parameters of one module are grouped in braces.

        ``loaded``: the rest of the file was loaded (lenient training load), so the unexpected and
        mismatched keys were ignored or skipped; False when nothing was loaded (strict refusal).
        """
        ignored, skipped = (" (ignored)", " (skipped)") if loaded else ("", "")
        rows = [(name, "missing in checkpoint", "") for name in _group_keys(self.missing)]
        rows += [(name, f"not in model{ignored}", "") for name in _group_keys(self.unexpected)]
        rows += [(key, f"shape mismatch{skipped}", f"checkpoint {list(a)} vs model {list(b)}")
                 for key, a, b in self.mismatched]
        return tabulate(rows, headers=["key", "problem", "detail"], tablefmt="pipe")


def _group_keys(keys: Iterable[str]) -> List[str]:
    """Collapse keys per indexed block (``NL_2.0.{g, theta}``) so a report stays readable."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for key in keys:
        parts = key.split(".")
        cut = next((i + 1 for i, p in enumerate(parts[:-1]) if p.isdigit()), len(parts) - 1)
        groups.setdefault(".".join(parts[:cut]), []).append(".".join(parts[cut:]))
    out = []
    for group, rests in groups.items():
        if len(rests) == 1:
            out.append(f"{group}.{rests[0]}" if group else rests[0])
            continue
        members: List[str] = []
        for rest in rests:
            member = rest.rpartition(".")[0] or rest
            if member not in members:
                members.append(member)
        text = members[0] if len(members) == 1 else "{" + ", ".join(members) + "}"
        out.append(f"{group}.{text}" if group else text)
    return out


def get_missing_parameters_message(keys: List[str]) -> str:
    """The log text for model keys absent from a checkpoint, grouped by block (fast-reid's name)."""
    return "Some model parameters or buffers are not found in the checkpoint:\n" + "\n".join(
        f"  {k}" for k in _group_keys(keys))


def get_unexpected_parameters_message(keys: List[str]) -> str:
    """The log text for checkpoint keys the model does not have, grouped by block (fast-reid's name)."""
    return "The checkpoint contains keys that the model does not use:\n" + "\n".join(
        f"  {k}" for k in _group_keys(keys))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def convert_reference_state_dict(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Current key names for a state_dict from any release of the reference code.

    Strips wrapper prefixes (``module.``), renames ``heads.bnneck.*`` and ``heads.classifier.weight``,
    and drops ``pixel_mean``/``pixel_std``.
    """
    out: "OrderedDict[str, Any]" = OrderedDict()
    for key, value in state_dict.items():
        for prefix in WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        if key in IGNORED_KEYS:
            continue
        for old, new in RENAMED_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def load_state_dict_reported(model: nn.Module, state_dict: Mapping[str, Any], source: str = "") -> LoadReport:
    """Load what fits of ``state_dict`` into ``model`` and log a table of what did not.

    Args:
        model: target module (already unwrapped).
        state_dict: tensors keyed like ``model.state_dict()``.
        source: file name shown in the log.
    Returns:
        The keys that were missing, unexpected or skipped for a shape mismatch.
    """
    own = model.state_dict()
    report = LoadReport()
    loadable = OrderedDict()
    for key, value in state_dict.items():
        if key in own and isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            loadable[key] = value
    result = model.load_state_dict(loadable, strict=False)
    skipped = {key for key, _, _ in report.mismatched}
    report.missing = [k for k in result.missing_keys if k not in skipped]
    report.unexpected = list(result.unexpected_keys)
    where = f" from {source}" if source else ""
    if report.clean:
        logger.info("Loaded all %d keys%s", len(own), where)
    else:
        logger.warning("Loaded%s with %d missing, %d unexpected and %d shape-mismatched keys:\n%s", where,
                       len(report.missing), len(report.unexpected), len(report.mismatched), report.table())
    return report


def diff_state_dict(own: Mapping[str, Any], state_dict: Mapping[str, Any],
                    ignore: Iterable[str] = ()) -> LoadReport:
    """Keys of ``own`` (a model's state_dict) absent from ``state_dict``, the reverse, and shape differences.

    Keys in ``ignore`` are left out of all three lists.
    """
    skip = set(ignore)
    report = LoadReport()
    for key, value in state_dict.items():
        if key in skip:
            continue
        if key not in own:
            report.unexpected.append(key)
        elif isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    report.missing = [k for k in own if k not in state_dict and k not in skip]
    return report


def _blocks_per_stage(keys: Iterable[str]) -> Tuple[Tuple[int, ...], bool]:
    """Residual blocks in each ``backbone.layerN`` and whether they are bottlenecks (have ``conv3``)."""
    counts: Dict[int, int] = {}
    bottleneck = False
    for key in keys:
        m = re.match(r"backbone\.layer(\d+)\.(\d+)\.(\w+)", key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            counts[stage] = max(counts.get(stage, 0), block + 1)
            bottleneck = bottleneck or m.group(3) == "conv3"
    return tuple(counts[k] for k in sorted(counts)), bottleneck


# Backbone layouts by depth name ((blocks per stage), bottleneck blocks), registered by the backbone that
# defines them (``register_depths``), so that a mismatch can name the depth without this module importing
# model code.
_DEPTHS: Dict[str, Tuple[Tuple[int, ...], bool]] = {}


def register_depths(layouts: Mapping[str, Tuple[Iterable[int], bool]]) -> None:
    """Make ``likely_causes`` recognise these depths: name -> (blocks per stage, bottleneck blocks)."""
    _DEPTHS.update((name, (tuple(int(b) for b in blocks), bool(bottleneck)))
                   for name, (blocks, bottleneck) in layouts.items())


def _depth_name(blocks: Tuple[int, ...], bottleneck: bool) -> str:
    for name, layout in _DEPTHS.items():
        if layout == (blocks, bottleneck):
            return name
    return "an unknown depth"


def _neck_dim(state: Mapping[str, Any]) -> Optional[int]:
    for key in ("heads.bottleneck.1.weight", "heads.bottleneck.0.weight"):
        t = state.get(key)
        if isinstance(t, torch.Tensor) and t.dim() == 1:
            return int(t.shape[0])
    return None


def likely_causes(own: Mapping[str, Any], state_dict: Mapping[str, Any]) -> List[str]:
    """Config keys that most likely explain why ``state_dict`` does not fit a model with ``own`` keys."""
    causes = []
    ck_blocks, ck_bottleneck = _blocks_per_stage(state_dict)
    md_blocks, md_bottleneck = _blocks_per_stage(own)
    if ck_blocks and md_blocks and (ck_blocks, ck_bottleneck) != (md_blocks, md_bottleneck):
        causes.append(f"MODEL.BACKBONE.DEPTH: the checkpoint holds a {_depth_name(ck_blocks, ck_bottleneck)} "
                      f"ResNet (blocks per stage {list(ck_blocks)}), the config builds "
                      f"{_depth_name(md_blocks, md_bottleneck)} ({list(md_blocks)})")
    for token, key in ((".IN.", "MODEL.BACKBONE.WITH_IBN"), (".NL_", "MODEL.BACKBONE.WITH_NL"),
                       (".se.", "MODEL.BACKBONE.WITH_SE")):
        in_ck = any(token in "." + k for k in state_dict)
        in_md = any(token in "." + k for k in own)
        if in_ck != in_md:
            causes.append(f"{key}: the checkpoint {'has' if in_ck else 'has no'} such layers, the config "
                          f"{'builds' if in_md else 'builds none'}")
    conv_ck = state_dict.get("heads.bottleneck.0.weight")
    conv_md = own.get("heads.bottleneck.0.weight")
    emb_ck = int(conv_ck.shape[0]) if isinstance(conv_ck, torch.Tensor) and conv_ck.dim() == 4 else 0
    emb_md = int(conv_md.shape[0]) if isinstance(conv_md, torch.Tensor) and conv_md.dim() == 4 else 0
    if emb_ck != emb_md:
        causes.append(f"MODEL.HEADS.EMBEDDING_DIM: {emb_ck} in the checkpoint, {emb_md} in the config")
    elif not causes and _neck_dim(state_dict) != _neck_dim(own):
        causes.append(f"MODEL.BACKBONE.FEAT_DIM: the checkpoint's features have {_neck_dim(state_dict)} "
                      f"channels, the config's {_neck_dim(own)}")
    return causes


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str = "",
                           training_only: Iterable[str] = TRAINING_ONLY_KEYS) -> None:
    """Load ``state_dict`` into ``model`` only if every key fits (training-only keys aside).

    Raises:
        CheckpointError: missing, unexpected or shape-mismatched keys; the message has the table and the
            likely config cause (depth, IBN/non-local/SE, embedding or feature dimension).
    """
    own = model.state_dict()
    report = diff_state_dict(own, state_dict, ignore=training_only)
    if not report.clean:
        causes = likely_causes(own, state_dict)
        hint = ("Likely cause: " + "; ".join(causes)) if causes else \
            "Likely cause: the config describes another architecture than the one that was trained"
        raise CheckpointError(
            f"{source or 'The checkpoint'} does not fit the model built from the config: {len(report.missing)} "
            f"missing, {len(report.unexpected)} unexpected and {len(report.mismatched)} shape-mismatched keys "
            f"(evaluating it would give the results of a partly random model); nothing was loaded.\n"
            f"{report.table(loaded=False)}\n{hint}. "
            f"Use the config the checkpoint was trained with.")
    loadable = {k: v for k, v in state_dict.items()
                if k in own and not (isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape))}
    model.load_state_dict(loadable, strict=False)
    logger.info("Loaded all %d feature keys from %s", len([k for k in own if k not in set(training_only)]),
                source or "the checkpoint")


def load_checkpoint_file(path: str) -> Any:
    """``torch.load`` on CPU; tries the safe weights-only unpickler first.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt or no PyTorch checkpoint (the message names it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            pass
        # Warned only once the full unpickler succeeded: a corrupt file fails there too.
        data = torch.load(path, map_location="cpu", weights_only=False)
        logger.warning("%s holds Python objects beyond tensors and containers (e.g. numpy RNG states); it was "
                       "loaded with the full unpickler, which can run code from the file: only load files you trust",
                       path)
        return data
    except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError, OSError, AttributeError) as e:
        raise CheckpointError(f"Cannot read checkpoint {path} ({os.path.getsize(path)} bytes): it is truncated, "
                              f"corrupt or not a PyTorch checkpoint ({type(e).__name__}: {e})") from e


def split_checkpoint(checkpoint: Any, path: str = "") -> Tuple[Mapping[str, Any], Dict[str, Any]]:
    """(model state_dict, other entries) of a loaded file: ``{"model": ...}``, ``{"state_dict": ...}`` or bare."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    for name in ("model", "state_dict"):
        if isinstance(checkpoint.get(name), Mapping):
            rest = {k: v for k, v in checkpoint.items() if k != name}
            return checkpoint[name], rest
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, {}
    raise KeyError(f"{path}: no 'model' or 'state_dict' entry and not a bare state_dict "
                   f"(keys: {', '.join(list(checkpoint)[:10])})")


class Checkpointer:
    """Saves/loads a model plus any objects with ``state_dict()``/``load_state_dict()`` (optimizer, ...).

    Example::

        ckpt = Checkpointer(model, "logs/run", optimizer=opt, scheduler=sched)
        ckpt.save("model_0001", iteration=1000)
        extra = ckpt.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)  # -> {"iteration": 1000}
    """

    LAST = "last_checkpoint"

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None,
                 **checkpointables: Any) -> None:
        self.model = model
        self.save_dir = save_dir
        self.save_to_disk = comm.is_main_process() if save_to_disk is None else save_to_disk
        self.checkpointables = dict(checkpointables)

    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Write ``save_dir/name.pth`` atomically and point ``last_checkpoint`` at it; returns the path."""
        if not self.save_dir or not self.save_to_disk:
            return None
        data: Dict[str, Any] = {"model": unwrap_model(self.model).state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(extra)
        basename = name if name.endswith(".pth") else f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        with atomic_open(path, "wb") as f:
            torch.save(data, f)
        with atomic_open(os.path.join(self.save_dir, self.LAST), "w") as f:
            f.write(basename)
        logger.info("Saved checkpoint to %s", path)
        return path

    def load(self, path: str, checkpointables: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Load the model (reported, never strict) and the named checkpointables (default: all).

        Returns the file's other entries, e.g. ``{"iteration": ...}``; ``{}`` when ``path`` is empty.
        """
        if not path:
            logger.info("No checkpoint given: the model keeps its initialisation")
            return {}
        logger.info("Loading checkpoint from %s", path)
        state_dict, rest = split_checkpoint(load_checkpoint_file(path), path)
        load_state_dict_reported(unwrap_model(self.model), convert_reference_state_dict(state_dict), path)
        names = list(self.checkpointables) if checkpointables is None else list(checkpointables)
        for key in names:
            if key in rest:
                logger.info("Loading %s from %s", key, path)
                self.checkpointables[key].load_state_dict(rest.pop(key))
        return rest

    def has_checkpoint(self) -> bool:
        """Whether there is a checkpoint to resume from (see :meth:`get_checkpoint_file`)."""
        return bool(self.get_checkpoint_file())

    def get_checkpoint_file(self) -> str:
        """Path of the checkpoint ``last_checkpoint`` names, or "" when there is none.

        When ``last_checkpoint`` names a file that no longer exists, the newest ``*.pth`` in the folder
        is used instead (with a warning).
        """
        if not self.save_dir:
            return ""
        try:
            with open(os.path.join(self.save_dir, self.LAST), encoding="utf-8") as f:
                name = f.read().strip()
        except OSError:
            return ""
        path = os.path.join(self.save_dir, name)
        if name and os.path.isfile(path):
            return path
        existing = sorted(glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth")), key=os.path.getmtime)
        if not existing:
            logger.warning("%s names %s, which does not exist, and %s holds no other checkpoint",
                           os.path.join(self.save_dir, self.LAST), name or "nothing", self.save_dir)
            return ""
        logger.warning("%s names %s, which does not exist; using the newest checkpoint there instead: %s",
                       os.path.join(self.save_dir, self.LAST), name or "nothing", existing[-1])
        return existing[-1]

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume everything from ``last_checkpoint`` when asked and present, else load only the model from ``path``."""
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        return self.load(path, checkpointables=[])


__all__ = ["Checkpointer", "CheckpointError", "PathManager", "LoadReport", "TRAINING_ONLY_KEYS",
           "convert_reference_state_dict", "get_missing_parameters_message", "get_unexpected_parameters_message",
           "diff_state_dict", "likely_causes", "load_state_dict_reported", "load_state_dict_strict",
           "load_checkpoint_file", "register_depths", "split_checkpoint", "unwrap_model"]


def __getattr__(name: str) -> Any:
    # fast-reid has a plain periodic saver here; ours is the training hook, one floor up, named in the error.
    if name == "PeriodicCheckpointer":
        raise ImportError("fastreid.utils.checkpoint has no PeriodicCheckpointer: the periodic checkpoint is the "
                          "training hook fastreid.engine.hooks.PeriodicCheckpointer (docs/fastreid_compat.md)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
