"""fast-reid's configuration keys and what each one does here: one table, used at merge time and for the docs.

Every key of fast-reid's ``get_cfg()`` (JDAI-CV/fast-reid, identical in the DIRA challenge fork) is either
implemented under the same name in ``defaults.py`` or listed in :data:`IGNORED` with the reason it has no
effect. A config file written for fast-reid therefore loads: implemented keys act, ignored keys are
accepted and reported once per run (louder when their value would change what the original does), and
keys that neither project knows stay errors with suggestions.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

DOC = "docs/fastreid_compat.md"

# fast-reid's default of every key it defines (facts from fastreid/config/defaults.py), in its order.
FASTREID_DEFAULTS: Dict[str, Any] = {
    "MODEL.DEVICE": "cuda",
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.FREEZE_LAYERS": [],
    "MODEL.QUEUE_SIZE": 8192,
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.DEPTH": "50x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.FEAT_DIM": 2048,
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False,
    "MODEL.BACKBONE.SIE_COE": 3.0,
    "MODEL.BACKBONE.STRIDE_SIZE": (16, 16),
    "MODEL.BACKBONE.DROP_PATH_RATIO": 0.1,
    "MODEL.BACKBONE.DROP_RATIO": 0.0,
    "MODEL.BACKBONE.ATT_DROP_RATE": 0.0,
    "MODEL.BACKBONE.PRETRAIN": False,
    "MODEL.BACKBONE.PRETRAIN_PATH": "",
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.NUM_CLASSES": 0,
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.HEADS.WITH_BNNECK": False,
    "MODEL.HEADS.NECK_FEAT": "before",
    "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
    "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.HEADS.MARGIN": 0.0,
    "MODEL.HEADS.SCALE": 1,
    "MODEL.LOSSES.NAME": ("CrossEntropyLoss",),
    "MODEL.LOSSES.CE.EPSILON": 0.0,
    "MODEL.LOSSES.CE.ALPHA": 0.2,
    "MODEL.LOSSES.CE.SCALE": 1.0,
    "MODEL.LOSSES.FL.ALPHA": 0.25,
    "MODEL.LOSSES.FL.GAMMA": 2,
    "MODEL.LOSSES.FL.SCALE": 1.0,
    "MODEL.LOSSES.TRI.MARGIN": 0.3,
    "MODEL.LOSSES.TRI.NORM_FEAT": False,
    "MODEL.LOSSES.TRI.HARD_MINING": False,
    "MODEL.LOSSES.TRI.SCALE": 1.0,
    "MODEL.LOSSES.CIRCLE.MARGIN": 0.25,
    "MODEL.LOSSES.CIRCLE.GAMMA": 128,
    "MODEL.LOSSES.CIRCLE.SCALE": 1.0,
    "MODEL.LOSSES.COSFACE.MARGIN": 0.25,
    "MODEL.LOSSES.COSFACE.GAMMA": 128,
    "MODEL.LOSSES.COSFACE.SCALE": 1.0,
    "MODEL.WEIGHTS": "",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "KD.MODEL_CONFIG": [],
    "KD.MODEL_WEIGHTS": [],
    "KD.EMA.ENABLED": False,
    "KD.EMA.MOMENTUM": 0.999,
    "INPUT.SIZE_TRAIN": [256, 128],
    "INPUT.SIZE_TEST": [256, 128],
    "INPUT.CROP.ENABLED": False,
    "INPUT.CROP.SIZE": [224, 224],
    "INPUT.CROP.SCALE": [0.16, 1],
    "INPUT.CROP.RATIO": [3.0 / 4.0, 4.0 / 3.0],
    "INPUT.FLIP.ENABLED": False,
    "INPUT.FLIP.PROB": 0.5,
    "INPUT.PADDING.ENABLED": False,
    "INPUT.PADDING.MODE": "constant",
    "INPUT.PADDING.SIZE": 10,
    "INPUT.CJ.ENABLED": False,
    "INPUT.CJ.PROB": 0.5,
    "INPUT.CJ.BRIGHTNESS": 0.15,
    "INPUT.CJ.CONTRAST": 0.15,
    "INPUT.CJ.SATURATION": 0.1,
    "INPUT.CJ.HUE": 0.1,
    "INPUT.AFFINE.ENABLED": False,
    "INPUT.AUTOAUG.ENABLED": False,
    "INPUT.AUTOAUG.PROB": 0.0,
    "INPUT.AUGMIX.ENABLED": False,
    "INPUT.AUGMIX.PROB": 0.0,
    "INPUT.REA.ENABLED": False,
    "INPUT.REA.PROB": 0.5,
    "INPUT.REA.VALUE": [123.675, 116.28, 103.53],
    "INPUT.RPT.ENABLED": False,
    "INPUT.RPT.PROB": 0.5,
    "DATASETS.NAMES": ("Market1501",),
    "DATASETS.TESTS": ("Market1501",),
    "DATASETS.COMBINEALL": False,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
    "DATALOADER.NUM_INSTANCE": 4,
    "DATALOADER.NUM_WORKERS": 8,
    "DATALOADER.SET_WEIGHT": [],
    "SOLVER.AMP.ENABLED": False,
    "SOLVER.OPT": "Adam",
    "SOLVER.MAX_EPOCH": 120,
    "SOLVER.BASE_LR": 3e-4,
    "SOLVER.HEADS_LR_FACTOR": 1.0,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY": 0.0005,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0005,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY_BIAS": 0.0005,
    "SOLVER.SCHED": "MultiStepLR",
    "SOLVER.DELAY_EPOCHS": 0,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.STEPS": [30, 55],
    "SOLVER.ETA_MIN_LR": 1e-7,
    "SOLVER.WARMUP_FACTOR": 0.1,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.FREEZE_ITERS": 0,
    "SOLVER.CHECKPOINT_PERIOD": 20,
    "SOLVER.IMS_PER_BATCH": 64,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 5.0,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "TEST.EVAL_PERIOD": 20,
    "TEST.IMS_PER_BATCH": 64,
    "TEST.METRIC": "cosine",
    "TEST.ROC.ENABLED": False,
    "TEST.FLIP.ENABLED": False,
    "TEST.AQE.ENABLED": False,
    "TEST.AQE.ALPHA": 3.0,
    "TEST.AQE.QE_TIME": 1,
    "TEST.AQE.QE_K": 5,
    "TEST.RERANK.ENABLED": False,
    "TEST.RERANK.K1": 20,
    "TEST.RERANK.K2": 6,
    "TEST.RERANK.LAMBDA": 0.3,
    "TEST.PRECISE_BN.ENABLED": False,
    "TEST.PRECISE_BN.DATASET": "Market1501",
    "TEST.PRECISE_BN.NUM_ITER": 300,
    "OUTPUT_DIR": "logs/",
    "CUDNN_BENCHMARK": False,
}

_VIT = "Vision Transformer backbone option; only the ResNet family is implemented here"
_FOCAL = "focal loss option; fast-reid itself never reads it, and MODEL.LOSSES.NAME has no focal loss here"
_AUGMIX = "AugMix augmentation in training; not applied here"
_RPT = "random patch augmentation in training; not applied here"

# fast-reid keys that are accepted but have no effect here, with what they do in fast-reid.
IGNORED: Dict[str, str] = {
    "MODEL.QUEUE_SIZE": "memory-queue size of fast-reid's MoCo meta-architecture, which is not implemented here",
    "MODEL.BACKBONE.SIE_COE": _VIT,
    "MODEL.BACKBONE.STRIDE_SIZE": _VIT,
    "MODEL.BACKBONE.DROP_PATH_RATIO": _VIT,
    "MODEL.BACKBONE.DROP_RATIO": _VIT,
    "MODEL.BACKBONE.ATT_DROP_RATE": _VIT,
    "MODEL.LOSSES.FL.ALPHA": _FOCAL,
    "MODEL.LOSSES.FL.GAMMA": _FOCAL,
    "MODEL.LOSSES.FL.SCALE": _FOCAL,
    "INPUT.AFFINE.ENABLED": "random affine augmentation in training; not applied here",
    "INPUT.AUGMIX.ENABLED": _AUGMIX,
    "INPUT.AUGMIX.PROB": _AUGMIX,
    "INPUT.RPT.ENABLED": _RPT,
    "INPUT.RPT.PROB": _RPT,
    "DATALOADER.SET_WEIGHT": "per-dataset weights of fast-reid's SetReWeightSampler, which is not implemented here",
    "SOLVER.WEIGHT_DECAY_BIAS": ("weight decay of bias parameters; here biases take SOLVER.WEIGHT_DECAY "
                                 "(SOLVER.WEIGHT_DECAY_NORM in normalisation layers)"),
    "TEST.ROC.ENABLED": "ROC curve written by fast-reid's evaluator; not computed here",
}

# Keys reported (or accepted) already in this process: one warning per key per run.
_reported: set = set()


def fastreid_key_status(key: str, our_keys: Optional[set] = None) -> str:
    """``"implemented"`` (same key here), ``"ignored"`` (accepted, no effect) or ``"unknown"``."""
    if key in IGNORED:
        return "ignored"
    if key in FASTREID_DEFAULTS and (our_keys is None or key in our_keys):
        return "implemented"
    return "unknown"


def is_ignored_group(key: str) -> bool:
    """Whether ``key`` names a group (e.g. ``INPUT.AUGMIX``) whose every fast-reid key is ignored here."""
    prefix = key + "."
    members = [k for k in FASTREID_DEFAULTS if k.startswith(prefix)]
    return bool(members) and all(k in IGNORED for k in members)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def report_ignored(found: List[Tuple[str, Any, str]]) -> None:
    """Warn once per run about fast-reid keys that were accepted without effect.

    Args:
        found: ``(key, value, where)`` for each ignored key met while merging a file or overrides.
    """
    new = [(k, v, w) for k, v, w in found if k not in _reported]
    if not new:
        return
    _reported.update(k for k, _, _ in new)
    plain = [f"{k} ({w})" for k, v, w in new]
    logger.warning("fast-reid config keys accepted without effect here (see %s): %s", DOC, ", ".join(plain))
    for key, value, where in new:
        if not _same(value, FASTREID_DEFAULTS[key]):
            logger.warning("%s = %r (%s) differs from fast-reid's default %r but has NO effect here (%s): "
                           "this run does not do what the config asks", key, value, where,
                           FASTREID_DEFAULTS[key], IGNORED[key])


# Where a config keeps the fast-reid values it was given that have no effect here (in the node's __dict__,
# which yacs' clone copies, not among its keys).
_UNAPPLIED = "_fastreid_unapplied"


def record_unapplied(cfg: Any, found: List[Tuple[str, Any, str]]) -> None:
    """Remember on ``cfg`` the ignored keys whose value differs from fast-reid's default, for the preflight."""
    store = cfg.__dict__.setdefault(_UNAPPLIED, {})
    for key, value, where in found:
        if _same(value, FASTREID_DEFAULTS[key]):
            store.pop(key, None)
        else:
            store[key] = (value, where)


def unapplied_values(cfg: Any) -> List[str]:
    """One error line per fast-reid key of ``cfg`` set to a value this project does not implement."""
    return [f"{key} = {value!r} ({where}) is a fast-reid setting that is not implemented here ({IGNORED[key]}); "
            f"remove it or set fast-reid's default {FASTREID_DEFAULTS[key]!r}"
            for key, (value, where) in sorted(cfg.__dict__.get(_UNAPPLIED, {}).items())]


def forget_reported() -> None:
    """Start a new run in this process: ignored keys are reported again."""
    _reported.clear()


def render_markdown(our_defaults: Dict[str, Any]) -> str:
    """The key table of ``docs/fastreid_compat.md``: fast-reid key, its default, our key or "ignored".

    Args:
        our_defaults: dotted key -> default of this project's config (``iter_dotted(get_cfg())``).
    """
    rows = ["| fast-reid key | fast-reid default | here | default here | note |", "|---|---|---|---|---|"]
    for key, fr_default in FASTREID_DEFAULTS.items():
        status = fastreid_key_status(key, set(our_defaults))
        if status == "implemented":
            ours = our_defaults[key]
            differs = "" if _same(ours, fr_default) else "default differs"
            rows.append(f"| `{key}` | `{fr_default!r}` | `{key}` | `{ours!r}` | {differs} |")
        elif status == "ignored":
            rows.append(f"| `{key}` | `{fr_default!r}` | accepted, ignored | | {IGNORED[key]} |")
        else:
            raise ValueError(f"fast-reid key {key} is neither implemented in defaults.py nor listed in IGNORED")
    return "\n".join(rows) + "\n"


__all__ = ["FASTREID_DEFAULTS", "IGNORED", "fastreid_key_status", "is_ignored_group", "report_ignored",
           "record_unapplied", "unapplied_values", "forget_reported", "render_markdown"]
