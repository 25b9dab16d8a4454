"""fast-reid's public API as its projects import it, and what each name is here: one list.

Every entry is a path that code written for fast-reid imports (``projects/*/`` of JDAI-CV/fast-reid and
the DIRA challenge fork). It either resolves to our object with fast-reid's call signature and protocol
(``note`` says where it lives or how it differs), or, for ``REFUSED`` entries, importing it raises an
ImportError that names it and the alternative. ``docs/fastreid_compat.md`` shows this list
(``python tools/gen_config_docs.py``), and a test imports every entry.
"""
from __future__ import annotations

import importlib
from typing import Any, List, NamedTuple, Optional


class ApiName(NamedTuple):
    """One fast-reid import: ``module`` and ``name`` (None: the module itself)."""

    module: str
    name: Optional[str]
    note: str
    refused: bool = False

    @property
    def path(self) -> str:
        return self.module if self.name is None else f"{self.module}.{self.name}"


_E = "fastreid.engine"
_EV = "fastreid.evaluation"
_D = "fastreid.data"
_M = "fastreid.modeling"
_U = "fastreid.utils"

FASTREID_API: List[ApiName] = [
    ApiName("fastreid.config", "get_cfg", "every default of this project (fast-reid's keys: the key table above)"),
    ApiName("fastreid.config", "CfgNode", "yacs node that reports unknown keys with file:line; `CN(dict)` and "
            "adding keys to an unfrozen config (a project's `add_*_config`) work"),
    ApiName("fastreid.config", "configurable", "`@configurable` on `__init__` (class `from_config`) or "
            "`@configurable(from_config=fn)` on a function"),
    ApiName(f"{_E}.defaults", "DefaultTrainer", "the trainer (`fastreid.engine.trainer`); class methods keep "
            "fast-reid's signatures (table below)"),
    ApiName(f"{_E}.defaults", "DefaultPredictor", "model of `cfg` + `MODEL.WEIGHTS` as a function of image batches"),
    ApiName(f"{_E}.defaults", "TrainerBase", "the hook-calling loop (`fastreid.engine.train_loop`)"),
    ApiName(f"{_E}.defaults", "default_argument_parser", "fast-reid's options, plus `--check`"),
    ApiName(f"{_E}.defaults", "default_setup", "output folder, logging, `config.yaml`, seed"),
    ApiName(_E, "DefaultTrainer", "as above"),
    ApiName(_E, "default_argument_parser", "as above"),
    ApiName(_E, "default_setup", "as above"),
    ApiName(_E, "launch", "`launch(main, num_gpus, num_machines, machine_rank, dist_url, args)`; gloo on CPU"),
    ApiName(_E, "hooks", "hooks with `before_train/before_step/after_step/after_epoch/after_train`"),
    ApiName(f"{_E}.hooks", "PeriodicCheckpointer", "constructor `(checkpointer, model, period_epochs, eval_hook)`, "
            "not fast-reid's `(checkpointer, period, max_epoch)`"),
    ApiName(f"{_E}.hooks", "EvalHook", "constructor `(period_epochs, eval_function, model)`"),
    ApiName(f"{_E}.hooks", "flatten_results_dict", "`{set: {metric: x}}` -> `{\"set/metric\": x}`"),
    ApiName(f"{_E}.train_loop", "TrainerBase", "as above"),
    ApiName(f"{_E}.train_loop", "SimpleTrainer", "`SimpleTrainer(model, data_loader, optimizer)`"),
    ApiName(f"{_E}.train_loop", "AMPTrainer", "`SimpleTrainer` with mixed precision on"),
    ApiName(_EV, "DatasetEvaluator", "`reset()`, `process(inputs, outputs)`, `evaluate()`; `inputs` is the batch "
            "dict of the test loader (`images`, `targets`, `camids`, `img_paths`, or what a project's dataset "
            "returns)"),
    ApiName(f"{_EV}.evaluator", "DatasetEvaluator", "as above"),
    ApiName(_EV, "inference_on_dataset", "`(model, data_loader, evaluator, flip_test=False)`"),
    ApiName(_EV, "ReidEvaluator", "`(cfg, num_query, output_dir=None)`; exact metrics without a dense matrix"),
    ApiName(_EV, "print_csv_format", "logs a results dict as a table"),
    ApiName(f"{_EV}.clas_evaluator", "ClasEvaluator", "`(cfg, output_dir=None)`: top-1 accuracy of class logits "
            "(`Acc@1`, `metric`)"),
    ApiName(f"{_EV}.rank", "evaluate_rank", "`(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, "
            "use_metric_cuhk03=False, use_cython=True)`; CUHK03's protocol raises, `use_cython` has no effect"),
    ApiName(f"{_EV}.rank", "eval_market1501", "use `fastreid.evaluation.rank.evaluate_rank` (same protocol)", True),
    ApiName(f"{_EV}.query_expansion", "aqe", "`(query_feat, gallery_feat, qe_times=1, qe_k=10, alpha=3.0)`"),
    ApiName(f"{_D}.build", "_root", "`$FASTREID_DATASETS` or `datasets`, read at import; our datasets read "
            "`DATASETS.ROOT` first"),
    ApiName(f"{_D}.build", "build_reid_train_loader", "`(cfg, *, train_set=None, transforms=None, sampler=None)`; "
            "ours also takes `start_iter` (exact resume); a project's `train_set` is drawn by the configured sampler"),
    ApiName(f"{_D}.build", "build_reid_test_loader", "`(cfg, dataset_name=None, *, test_set=None, num_query=0, "
            "transforms=None)` -> `(loader, num_query)`"),
    ApiName(_D, "build_reid_train_loader", "as above"),
    ApiName(_D, "build_reid_test_loader", "as above"),
    ApiName(f"{_D}.data_utils", "read_image", "`read_image(path, format=None)`: with a format string (\"RGB\", "
            "\"L\", \"BGR\") as fast-reid; without, grayscale repeated to 3 channels (`INPUT.GRAYSCALE`)"),
    ApiName(f"{_D}.transforms", "build_transforms", "`(cfg, is_train=True)` from `INPUT.*`; tensors in 0..255"),
    ApiName(f"{_D}.common", "CommDataset", "`(img_items, transform=None, relabel=True)`; string camera ids are "
            "numbered; `.img_items`, `.num_classes`, `.num_cameras`"),
    ApiName(f"{_D}.datasets", "DATASET_REGISTRY", "datasets are built as `DATASET_REGISTRY.get(name)(root=..., "
            "cfg=cfg)` (`cfg` only where the class accepts it)"),
    ApiName(f"{_D}.datasets.bases", "ImageDataset", "one base class for ours and fast-reid's: "
            "`(train, query, gallery, transform=None, mode='train', combineall=False, verbose=True, **kwargs)` with "
            "lazy (callable) splits, `check_before_run`, `parse_data`, `get_num_pids`, `get_num_cams`, `show_train`, "
            "`show_test`, `combine_all`, `_junk_pids`"),
    ApiName("fastreid.layers", None, "`fastreid.modeling.layers` (norms, pooling, IBN, non-local, SE, classifiers)"),
    ApiName("fastreid.layers", "get_norm", "`get_norm(norm, out_channels, bias_freeze=False)`: BN, syncBN, FrozenBN, "
            "GhostBN (one virtual batch, as a config builds it: batch norm); GN is refused by the preflight"),
    ApiName("fastreid.layers.weight_init", "weights_init_kaiming", "He init for conv / linear, identity for BN"),
    ApiName("fastreid.layers.weight_init", "weights_init_classifier", "normal(0, 0.001) for linear layers"),
    ApiName("fastreid.layers", "any_softmax", "`Linear`, `CosSoftmax`, `ArcSoftmax`, `CircleSoftmax` "
            "`(num_classes, scale, margin)`"),
    ApiName("fastreid.layers", "pooling", "`GlobalAvgPool`, `FastGlobalAvgPool`, `GeneralizedMeanPoolingP`, ..."),
    ApiName("fastreid.layers", "IBN", "`IBN(planes, norm)`"),
    ApiName("fastreid.layers", "SELayer", "`SELayer(channels, reduction=16)`"),
    ApiName(f"{_M}", "build_model", "the meta-architecture of `MODEL.META_ARCHITECTURE` on `MODEL.DEVICE`"),
    ApiName(f"{_M}.backbones", "BACKBONE_REGISTRY", "backbone registry; `build_resnet_backbone` is ours"),
    ApiName(f"{_M}.heads", "EmbeddingHead", "`EmbeddingHead(cfg)`; `pool_layer`, `bottleneck`, `weight`, "
            "`cls_layer`, `neck_feat` as in fast-reid; training returns `cls_outputs`, `pred_class_logits`, "
            "`features`"),
    ApiName(f"{_M}.heads", "ClasHead", "`EmbeddingHead` returning scaled class logits at test time"),
    ApiName(f"{_M}.heads.build", "REID_HEADS_REGISTRY", "our `HEAD_REGISTRY`"),
    ApiName(f"{_M}.meta_arch", "Baseline", "`@configurable`: `Baseline(cfg)` or from parts; `from_config(cfg)` "
            "returns `backbone`, `heads`, `pixel_mean`, `pixel_std`, `loss_kwargs`; override `losses(outputs, "
            "gt_labels)` for a project's own losses"),
    ApiName(f"{_M}.meta_arch.baseline", "Baseline", "as above"),
    ApiName(f"{_M}.meta_arch", "build_model", "as above"),
    ApiName(f"{_M}.meta_arch.build", "META_ARCH_REGISTRY", "meta-architecture registry"),
    ApiName(f"{_M}.meta_arch", "Distiller", "knowledge distillation from `KD.MODEL_CONFIG` / `KD.MODEL_WEIGHTS` "
            "teachers (and `KD.EMA`): Baseline losses plus `loss_jsdiv`; teachers in `model_ts`, not saved"),
    ApiName(f"{_M}.losses", "cross_entropy_loss", "`(pred_class_outputs, gt_classes, eps, alpha=0.2)`"),
    ApiName(f"{_M}.losses", "triplet_loss", "`(embedding, targets, margin, norm_feat, hard_mining)`"),
    ApiName(f"{_M}.losses", "pairwise_circleloss", "`(embedding, targets, margin, gamma)`"),
    ApiName(f"{_M}.losses", "pairwise_cosface", "`(embedding, targets, margin, gamma)`"),
    ApiName(f"{_M}.losses.utils", "concat_all_gather", "every rank's tensor concatenated, without gradient"),
    ApiName(f"{_M}.losses", "log_accuracy", "returns the top-1 accuracy (fast-reid writes it to the event storage)"),
    ApiName(f"{_U}", "comm", "`get_world_size`, `get_rank`, `get_local_rank`, `get_local_size`, "
            "`is_main_process`, `synchronize`, `all_gather`, `gather`, `shared_random_seed`"),
    ApiName(f"{_U}.checkpoint", "Checkpointer", "`Checkpointer(model, save_dir='', **checkpointables)`; `.load(path)` "
            "reads fast-reid and challenge checkpoints"),
    ApiName(f"{_U}.checkpoint", "get_missing_parameters_message", "log text for missing keys (`List[str]` -> str)"),
    ApiName(f"{_U}.checkpoint", "get_unexpected_parameters_message", "log text for unexpected keys"),
    ApiName(f"{_U}.checkpoint", "PeriodicCheckpointer", "the periodic checkpoint is the training hook "
            "`fastreid.engine.hooks.PeriodicCheckpointer`", True),
    ApiName(f"{_U}.checkpoint", "PathManager", "local-file `PathManager` (`open`, `exists`, `mkdirs`, ...)"),
    ApiName(f"{_U}.file_io", "PathManager", "as above"),
    ApiName(f"{_U}.compute_dist", "build_dist", "`(feat_1, feat_2, metric='euclidean')`; `jaccard` is "
            "`TEST.RERANK` here"),
    ApiName(f"{_U}.logger", "setup_logger", "console and `log.txt` logging"),
    ApiName(f"{_U}.events", "get_event_storage", "the training event storage (`put_scalar`, `iter`)"),
    ApiName(f"{_U}.events", "CommonMetricPrinter", "console writer"),
    ApiName(f"{_U}.env", "seed_all_rng", "seeds python, numpy and torch"),
]


def resolve(entry: ApiName) -> Any:
    """Import ``entry`` as code written for fast-reid does (``from module import name``)."""
    module = importlib.import_module(entry.module)
    if entry.name is None:
        return module
    try:
        return getattr(module, entry.name)
    except AttributeError:
        return importlib.import_module(f"{entry.module}.{entry.name}")


def refuse(module: str, name: str) -> ImportError:
    """The error a refused entry raises on import: its name and the alternative (from the list)."""
    for entry in FASTREID_API:
        if entry.refused and entry.module == module and entry.name == name:
            return ImportError(f"{module}.{name} (fast-reid) is not available here: {entry.note}. "
                               f"See docs/fastreid_compat.md")
    return ImportError(f"cannot import name {name!r} from {module!r}")


def render_markdown() -> str:
    """The imports table of ``docs/fastreid_compat.md``."""
    rows = ["| fast-reid import | here |", "|---|---|"]
    for e in FASTREID_API:
        here = f"not available: {e.note}" if e.refused else e.note
        rows.append(f"| `{e.path}` | {here} |")
    return "\n".join(rows) + "\n"


__all__ = ["ApiName", "FASTREID_API", "resolve", "refuse", "render_markdown"]
