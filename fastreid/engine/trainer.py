"""``DefaultTrainer``: builds model, data, optimizer, schedule, checkpointer and hooks from a config.

Override the ``build_*`` class methods in a subclass to change one part; the loop stays the same.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastreid.config import CfgNode
from fastreid.solver import build_lr_scheduler, build_optimizer, clip_gradients
from fastreid.utils import comm
from fastreid.utils.checkpoint import (Checkpointer, convert_reference_state_dict, load_checkpoint_file,
                                       load_state_dict_reported, split_checkpoint)
from fastreid.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardWriter
from fastreid.utils.file_io import atomic_open

from . import hooks
from .original_checkpoint import OriginalRunResume
from .preflight import remove_stale_result
from .train_loop import HookBase, SimpleTrainer

logger = logging.getLogger(__name__)

__all__ = ["DefaultTrainer", "iters_per_epoch", "total_iters", "set_num_classes", "configure_runtime"]

# Iterations between console/metrics.json lines, which is also how often loss values are read back
# from the device (and checked for NaN): the step itself never waits for the device.
LOG_PERIOD = 20


def configure_runtime(cfg: CfgNode) -> None:
    """Process-wide backend settings of a training run: cuDNN autotuning from ``CUDNN_BENCHMARK``."""
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)


def iters_per_epoch(num_images: int, ims_per_batch: int) -> int:
    """Iterations of one epoch: ``num_images // ims_per_batch``, at least 1."""
    return max(1, num_images // ims_per_batch)


def total_iters(cfg: CfgNode, epoch_iters: int) -> int:
    """``MAX_EPOCH`` epochs, capped by ``SOLVER.MAX_ITER`` when it is positive."""
    n = cfg.SOLVER.MAX_EPOCH * epoch_iters
    return min(n, cfg.SOLVER.MAX_ITER) if cfg.SOLVER.MAX_ITER > 0 else n


def set_num_classes(cfg: CfgNode, num_classes: int) -> CfgNode:
    """A frozen copy of ``cfg`` with ``MODEL.HEADS.NUM_CLASSES`` filled in when it is 0."""
    if cfg.MODEL.HEADS.NUM_CLASSES > 0:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = int(num_classes)
    cfg.freeze()
    logger.info(f"MODEL.HEADS.NUM_CLASSES set to {num_classes} from the training set")
    return cfg


class _DeviceIter:
    """Moves every batch of a stream to the trainer's device (used by precise BN)."""

    def __init__(self, loader: Iterable, to_device: Any) -> None:
        self._loader = loader
        self._to_device = to_device

    def __iter__(self):
        return (self._to_device(b) for b in self._loader)


class DefaultTrainer(SimpleTrainer):
    """Training from a config with the standard hooks (see ``build_hooks``).

    Example::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()

    ``self.model`` is what runs the training step (possibly wrapped by DDP / torch.compile);
    ``self.module`` is the bare model used for evaluation and checkpoints. Continuing a run of the original
    fast-reid code is the ``original_resume`` strategy's job (:class:`OriginalRunResume`).
    """

    original_resume = OriginalRunResume()

    def __init__(self, cfg: CfgNode) -> None:
        configure_runtime(cfg)
        data_loader = self.build_train_loader(cfg)
        dataset = data_loader.dataset
        cfg = self.auto_scale_hyperparams(cfg, dataset.num_classes)
        module = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, module)
        if isinstance(optimizer, tuple):  # a fast-reid override returns (optimizer, param_wrapper)
            optimizer = optimizer[0]
        self.epoch_iters = iters_per_epoch(len(dataset), cfg.SOLVER.IMS_PER_BATCH)
        device = next(module.parameters()).device
        clip = (lambda params: clip_gradients(cfg, params)) if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None
        super().__init__(self.wrap_model(cfg, module), data_loader, optimizer, device=device,
                         amp_enabled=cfg.SOLVER.AMP.ENABLED, amp_dtype=cfg.SOLVER.AMP.DTYPE,
                         channels_last=cfg.SOLVER.CHANNELS_LAST, clip_fn=clip, metrics_period=LOG_PERIOD)
        self.cfg = cfg
        self.module = module
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, self.epoch_iters)
        checkpointables: Dict[str, Any] = {"optimizer": optimizer, "scheduler": self.scheduler}
        if self.grad_scaler is not None:
            checkpointables["grad_scaler"] = self.grad_scaler
        self.checkpointer = Checkpointer(module, cfg.OUTPUT_DIR, **checkpointables)
        self.start_iter = 0
        self.max_iter = total_iters(cfg, self.epoch_iters)
        # fast-reid's names, read by hooks written for it.
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.warmup_iters = cfg.SOLVER.WARMUP_ITERS
        self.delay_epochs = cfg.SOLVER.DELAY_EPOCHS
        self._best_metric = float("-inf")
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR, restore everything and continue from
        its iteration; otherwise load only the model weights from ``MODEL.WEIGHTS`` (if set).

        A folder written by the original fast-reid code resumes too, at the epoch after its checkpoint's
        (see :mod:`fastreid.engine.original_checkpoint`); what cannot be carried over is logged.
        """
        if not (resume and self.checkpointer.has_checkpoint()):
            self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=False)
            return
        path = self.checkpointer.get_checkpoint_file()
        logger.info("Resuming from %s", path)
        state_dict, extra = split_checkpoint(load_checkpoint_file(path), path)
        load_state_dict_reported(self.module, convert_reference_state_dict(state_dict), path)
        if self.original_resume.applies(extra):
            self.original_resume.resume(self, extra, list(convert_reference_state_dict(state_dict)), path)
            return
        for key, obj in self.checkpointer.checkpointables.items():
            if key in extra:
                obj.load_state_dict(extra.pop(key))
        if "seed" in extra and int(extra["seed"]) != self.cfg.SEED:
            logger.warning(f"SEED is {self.cfg.SEED} but the checkpoint was trained with seed {extra['seed']}: the "
                           f"data order after the resume differs from the uninterrupted run")
        self.start_iter = int(extra.get("iteration", 0))
        self._best_metric = float(extra.get("best_metric", float("-inf")))
        for h in self._hooks:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.best_metric = self._best_metric
        rng = extra.get("rng_states")
        if rng and len(rng) == comm.get_world_size():
            hooks.set_rng_states(rng[comm.get_rank()])
        elif rng:
            logger.warning(f"Checkpoint holds random states of {len(rng)} processes, this run has "
                           f"{comm.get_world_size()}: random streams are not restored")
        logger.info(f"Resuming at iteration {self.start_iter} of {self.max_iter}")
        self.restart_data_at(self.start_iter)

    def restart_data_at(self, start_iter: int) -> None:
        """Replace the training stream by one positioned at ``start_iter`` (when the loader supports it)."""
        if start_iter <= 0:
            return
        if "start_iter" in inspect.signature(self.build_train_loader).parameters:
            self.reset_data_loader(self.build_train_loader(self.cfg, start_iter=start_iter))
        else:
            logger.warning(f"{type(self).__name__}.build_train_loader(cfg) takes no start_iter: the resumed run "
                           f"starts its data stream from the beginning")

    def build_hooks(self) -> List[Optional[HookBase]]:
        """Timer, LR schedule, freezing, precise BN, evaluation, checkpoints and (rank 0) writers, in order."""
        cfg = self.cfg
        ret: List[Optional[HookBase]] = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        if cfg.MODEL.FREEZE_LAYERS and cfg.SOLVER.FREEZE_ITERS > 0:
            ret.append(hooks.LayerFreeze(self.module, cfg.MODEL.FREEZE_LAYERS, cfg.SOLVER.FREEZE_ITERS,
                                         on_change=self._rewrap_ddp))
        if cfg.TEST.PRECISE_BN.ENABLED and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                               for m in self.module.modules()):
            bn_cfg = cfg.clone()
            bn_cfg.defrost()
            bn_cfg.DATASETS.NAMES = (cfg.TEST.PRECISE_BN.DATASET,)
            bn_cfg.freeze()
            ret.append(hooks.PreciseBN(
                self.module, lambda: _DeviceIter(self.build_train_loader(bn_cfg), self._to_device),
                cfg.TEST.PRECISE_BN.NUM_ITER, cfg.TEST.EVAL_PERIOD))
        eval_hook = hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate, self.module)
        ret.append(eval_hook)
        ret.append(hooks.PeriodicCheckpointer(self.checkpointer, self.module, cfg.SOLVER.CHECKPOINT_PERIOD,
                                              eval_hook, self._best_metric))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=LOG_PERIOD))
        return ret

    def _rewrap_ddp(self, frozen: bool) -> None:
        """Under DDP, wrap again when layers are frozen or released during the loop: DDP registers only
        parameters that require gradients, so each wrap covers exactly the trainable ones and
        ``find_unused_parameters`` (a graph traversal every step) is never needed."""
        if isinstance(self.model, DistributedDataParallel) and not self.failed and self.iter < self.max_iter:
            logger.info(f"Re-wrapping DDP for the {'frozen' if frozen else 'released'} layers")
            self.model = self._ddp(self.model.module)

    def _evaluate(self) -> Dict[str, Any]:
        # Without broadcast_buffers every process has its own BN statistics: evaluate (and save) rank 0's.
        if comm.get_world_size() > 1:
            for buf in self.module.buffers():
                torch.distributed.broadcast(buf, 0)
        rng = hooks.get_rng_states()
        try:
            if comm.is_main_process():
                remove_stale_result(self.cfg)
            return self.test(self.cfg, self.module)
        except Exception:
            self._save_before_failure(rng)
            raise

    def _save_before_failure(self, rng: Dict[str, Any]) -> None:
        """Keep the trained model when an evaluation fails: ``model_eval_failed.pth`` (``--resume`` continues
        from it once the evaluation side is fixed)."""
        if not comm.is_main_process():
            return
        done = min(self.iter + 1, self.max_iter)
        best = next((h.best_metric for h in self._hooks if isinstance(h, hooks.PeriodicCheckpointer)),
                    self._best_metric)
        extra: Dict[str, Any] = {"iteration": done, "best_metric": best, "seed": int(self.cfg.SEED)}
        if comm.get_world_size() == 1:
            extra["rng_states"] = [rng]
        path = self.checkpointer.save("model_eval_failed", **extra)
        logger.error(f"Evaluation failed after iteration {done}; the trained model is saved as {path} "
                     f"(fix the evaluation side and continue with --resume)")

    def build_writers(self) -> List[EventWriter]:
        """Console line, ``OUTPUT_DIR/metrics.json`` and tensorboard events in ``OUTPUT_DIR``."""
        out = self.cfg.OUTPUT_DIR
        writers: List[EventWriter] = [CommonMetricPrinter(self.max_iter, self.cfg.SOLVER.IMS_PER_BATCH)]
        if out:
            writers.append(JSONWriter(os.path.join(out, "metrics.json")))
            writers.append(TensorboardWriter(out))
        return writers

    def train(self) -> Dict[str, Any]:  # type: ignore[override]
        """Train from ``start_iter`` to ``max_iter``; returns the last evaluation's results."""
        try:
            super().train(self.start_iter, self.max_iter, self.epoch_iters)
        except Exception as e:
            # The loop logged the traceback; the command line prints only the message (once).
            e.fastreid_logged = True  # type: ignore[attr-defined]
            raise
        for h in self._hooks:
            if isinstance(h, hooks.EvalHook):
                return h.latest
        return {}

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0) -> Any:
        from fastreid.data import build_reid_train_loader

        return build_reid_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        from fastreid.data import build_reid_test_loader

        return build_reid_test_loader(cfg, dataset_name)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        from fastreid.modeling import build_model

        model = build_model(cfg)
        logger.info(f"Model: {type(model).__name__} with "
                    f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> Any:
        return build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_dir: Optional[str] = None) -> Tuple[Any, Any]:
        """``(test loader, evaluator)`` of one ``DATASETS.TESTS`` set, as fast-reid's method returns them.

        Raise ``NotImplementedError`` in an override to skip a set (``test`` then reports it empty).
        """
        from fastreid.evaluation import ReidEvaluator

        loader, num_query = cls.build_test_loader(cfg, dataset_name)
        labeled = bool(getattr(loader.dataset, "labeled", True))
        return loader, ReidEvaluator(cfg, num_query, output_dir or cfg.OUTPUT_DIR, labeled=labeled)

    @staticmethod
    def auto_scale_hyperparams(cfg: CfgNode, num_classes: int) -> CfgNode:
        """``cfg`` with ``MODEL.HEADS.NUM_CLASSES`` set from the training set when it is 0; the updated
        config is rewritten to ``OUTPUT_DIR/config.yaml`` so that loading it rebuilds the same model."""
        scaled = set_num_classes(cfg, num_classes)
        if scaled is not cfg and cfg.OUTPUT_DIR and comm.is_main_process():
            path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
            if os.path.isfile(path):
                with atomic_open(path, "w") as f:
                    f.write(scaled.dump())
        return scaled

    @classmethod
    def wrap_model(cls, cfg: CfgNode, model: nn.Module) -> nn.Module:
        """channels_last, torch.compile, SyncBN + DDP when several processes run, as configured.

        ``SOLVER.COMPILE`` compiles the ``backbone`` in place (state_dict keys unchanged): the heads and
        losses branch on data, and compiling through them broke the backward pass (torch 2.14, CPU).
        DDP never uses ``find_unused_parameters``: ``LayerFreeze`` re-wraps it when layers are frozen
        or released (see ``_rewrap_ddp``).
        """
        if cfg.SOLVER.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        if cfg.SOLVER.COMPILE:
            target = model.backbone if isinstance(getattr(model, "backbone", None), nn.Module) else model
            target.compile()
        if comm.get_world_size() > 1:
            if "syncBN" in (cfg.MODEL.BACKBONE.NORM, cfg.MODEL.HEADS.NORM):
                if next(model.parameters()).is_cuda:
                    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                else:
                    logger.warning("NORM syncBN needs CUDA; keeping per-process BatchNorm on CPU")
            model = cls._ddp(model)
        return model

    @staticmethod
    def _ddp(model: nn.Module) -> DistributedDataParallel:
        on_cuda = next(model.parameters()).is_cuda
        # BN statistics stay per process during training (as in fast-reid); rank 0's are evaluated and saved.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        return DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if on_cuda else None,
                                       find_unused_parameters=False, **no_buffer_sync)

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module) -> Dict[str, Any]:
        """Evaluate ``model`` on every ``DATASETS.TESTS`` set and log a metrics table for each.

        Returns ``{set name: metrics}``, or the metrics alone when there is one set (as fast-reid does).
        Unlabeled sets (the challenge test set) write ``result.npy`` instead of returning metrics.
        """
        from fastreid.evaluation import inference_on_dataset, print_csv_format

        results: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
        was_training = model.training
        for name in cfg.DATASETS.TESTS:
            try:
                loader, evaluator = cls.build_evaluator(cfg, name)
            except NotImplementedError:
                logger.warning(f"{cls.__name__}.build_evaluator does not handle {name}: no evaluation of it")
                results[name] = {}
                continue
            res = inference_on_dataset(model, loader, evaluator, flip_test=cfg.TEST.FLIP.ENABLED) or {}
            results[name] = res
            if comm.is_main_process() and res:
                logger.info(f"Evaluation results on {name}:")
                print_csv_format(res)
        model.train(was_training)
        if len(results) == 1:
            return next(iter(results.values()))
        return results
