"""Builders of the training and test data loaders (the only entry points the engine uses)."""
from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from fastreid.config import CfgNode, ConfigError
from fastreid.config.checks import choice_problem
from fastreid.utils import comm
from fastreid.utils.dist_checks import check_same_input
from fastreid.utils.registry import DATASET_REGISTRY

from .common import CommDataset, SeededDataset
from .datasets import ImageDataset, datasets_root
from .prepare import resolve_root
from .samplers import BalancedIdentitySampler, InferenceSampler, NaiveIdentitySampler, TrainingSampler
from .transforms import build_transforms

logger = logging.getLogger(__name__)

# DATALOADER.SAMPLER_TRAIN values.
TRAIN_SAMPLERS = ("TrainingSampler", "NaiveIdentitySampler", "BalancedIdentitySampler")
# Several machines: what to do when their processes read different copies of a data set.
SAME_DATA_HINT = ("Every machine must read the same data set: DATASETS.ROOT on a shared file system, or "
                  "identical copies.")
# fast-reid's module-level datasets root, read once at import ($FASTREID_DATASETS, else "datasets"); code
# written for fast-reid builds datasets as DATASET_REGISTRY.get(name)(root=_root). Ours read DATASETS.ROOT.
_root = os.getenv("FASTREID_DATASETS", "datasets")


def load_dataset(cfg: CfgNode, name: str, image_size: Optional[Sequence[int]] = None,
                 training: bool = False, **kwargs: Any) -> ImageDataset:
    """Construct the dataset registered as ``name`` under the configured datasets root.

    With ``image_size`` (the loader's), a matching prepared copy of the root is read instead when
    ``DATASETS.PREPARED`` allows it (see :mod:`fastreid.data.prepare`). ``cfg`` and ``kwargs`` (what code
    written for fast-reid passes to its loader builders, e.g. ``rm_lt=True``) reach the constructor where it
    takes them.
    """
    root = datasets_root(cfg)
    if image_size is not None:
        root = resolve_root(cfg, root, image_size, training)
    cls = DATASET_REGISTRY.get(name)
    params = inspect.signature(cls).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in dict(kwargs, cfg=cfg).items() if takes_all or k in params}
    return cls(root=root, **extra)


def _on_cuda(cfg: CfgNode) -> bool:
    return str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()


def auto_num_workers(cfg: CfgNode) -> int:
    """``DATALOADER.NUM_WORKERS`` -1: the cores of this process's share of the machine when training on
    CUDA (at most 16), half of them on CPU, where the model computes on the same cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or comm.get_world_size()
    share = max(1, cores // processes)
    return min(share, 16) if _on_cuda(cfg) else max(1, share // 2)


def resolve_test_batch(cfg: CfgNode) -> int:
    """``TEST.IMS_PER_BATCH``, or for -1: 256 per process on CUDA, 64 on CPU."""
    value = int(cfg.TEST.IMS_PER_BATCH)
    if value == -1:
        return 256 * comm.get_world_size() if _on_cuda(cfg) else 64
    if value <= 0:
        raise ConfigError(f"TEST.IMS_PER_BATCH must be positive or -1 (auto), got {value}")
    return value


def check_nonempty(ds: object, name: str, *splits: str) -> None:
    """A clear error naming the dataset and split when a needed split has no images.

    Works for any registered class (user datasets need not derive from ``ImageDataset``).
    """
    for split in splits:
        if not getattr(ds, split, None):
            raise ValueError(f"Dataset {name} (root {getattr(ds, 'root', '?')}): the {split} split is empty")


def _loader_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Worker options (-1 workers: :func:`auto_num_workers`); persistent workers and prefetch only exist
    when there are workers."""
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    if workers == -1:
        workers = auto_num_workers(cfg)
    elif workers < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS must be >= 0 or -1 (auto), got {workers}")
    kwargs: Dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": bool(cfg.DATALOADER.PIN_MEMORY) and torch.cuda.is_available(),
    }
    if workers > 0:
        kwargs["persistent_workers"] = bool(cfg.DATALOADER.PERSISTENT_WORKERS)
        kwargs["prefetch_factor"] = int(cfg.DATALOADER.PREFETCH_FACTOR)
    return kwargs


def build_train_sampler(cfg: CfgNode, pids: List[object], seed: int, start_iter: int = 0,
                        rank: int = 0, world_size: int = 1, camids: Optional[List[int]] = None) -> TrainingSampler:
    """The sampler named by ``DATALOADER.SAMPLER_TRAIN``, positioned at iteration ``start_iter``.

    ``camids`` (one per item) feed the camera-aware ``BalancedIdentitySampler``."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    batch = int(cfg.SOLVER.IMS_PER_BATCH)
    if name == "TrainingSampler":
        return TrainingSampler(len(pids), batch, seed, rank, world_size, start_iter)
    if name == "NaiveIdentitySampler":
        return NaiveIdentitySampler(pids, batch, int(cfg.DATALOADER.NUM_INSTANCE), seed, rank, world_size, start_iter)
    if name == "BalancedIdentitySampler":
        return BalancedIdentitySampler(pids, batch, int(cfg.DATALOADER.NUM_INSTANCE), seed, rank, world_size,
                                       start_iter, camids=camids)
    raise ConfigError(choice_problem("DATALOADER.SAMPLER_TRAIN", name, TRAIN_SAMPLERS)[0])


def validate(cfg: CfgNode) -> List[str]:
    """Problems with the training loader's values (sampler, instances per identity)."""
    problems = choice_problem("DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, TRAIN_SAMPLERS)
    if int(cfg.DATALOADER.NUM_INSTANCE) < 1:
        problems.append(f"DATALOADER.NUM_INSTANCE must be >= 1, got {cfg.DATALOADER.NUM_INSTANCE!r}")
    return problems


def build_reid_train_loader(cfg: CfgNode, start_iter: int = 0, *, train_set: Optional[Dataset] = None,
                            transforms: Optional[Callable] = None, sampler: Optional[Sampler] = None,
                            **kwargs: Any) -> DataLoader:
    """An infinite loader of training batches for this process.

    Batches are dicts with ``images`` (float ``B x 3 x H x W``, 0..255), ``targets`` (int64 ids
    0..N-1), ``camids`` and ``img_paths``; ``B = SOLVER.IMS_PER_BATCH // world_size``. The stream is
    a pure function of ``SEED`` and the position, so ``start_iter=k`` continues a run exactly at
    iteration ``k``. A negative ``SEED`` draws one seed shared by all processes.

    fast-reid's keywords: ``train_set`` (any map-style dataset, e.g. a project's own, used instead of
    ``DATASETS.NAMES``; its items are drawn by the configured sampler, seeded per sample as ours),
    ``transforms`` (instead of the ``INPUT.*`` pipeline) and ``sampler`` (a sampler of plain indices, used as
    given: no exact resume). Other keywords go to the dataset constructors that take them, as in fast-reid.
    """
    if train_set is None:
        items: List[Tuple[str, object, int]] = []
        origins: Dict[str, str] = {}
        for name in cfg.DATASETS.NAMES:
            ds = load_dataset(cfg, name, cfg.INPUT.SIZE_TRAIN, training=True, **kwargs)
            check_nonempty(ds, name, "train")
            # Integer ids of user datasets get the dataset prefix too, so that datasets never collide.
            items += [(p, pid if isinstance(pid, str) else f"{name}_{pid}", cam) for p, pid, cam in ds.train]
            origins.update(getattr(ds, "origins", {}))
        check_same_input(f"The training set ({', '.join(cfg.DATASETS.NAMES)} under DATASETS.ROOT)",
                         _item_lines(items), len(items), "images", SAME_DATA_HINT)
        dataset: Dataset = CommDataset(items, transforms or build_transforms(cfg, is_train=True), relabel=True,
                                       grayscale=bool(cfg.INPUT.GRAYSCALE), origins=origins)
    else:
        dataset = train_set if isinstance(train_set, CommDataset) else SeededDataset(train_set)
    world, rank = comm.get_world_size(), comm.get_rank()
    local_batch = int(cfg.SOLVER.IMS_PER_BATCH) // world
    if sampler is not None:
        logger.info("Training set: %d images; the caller's %s, %d images per process per batch", len(dataset),
                    type(sampler).__name__, local_batch)
        batch_sampler = BatchSampler(sampler, local_batch, drop_last=True)
        return DataLoader(dataset, batch_sampler=batch_sampler, **_loader_kwargs(cfg))
    seed = int(cfg.SEED) if int(cfg.SEED) >= 0 else int(comm.shared_random_seed())
    pids, camids = _item_labels(dataset, cfg)
    ours = build_train_sampler(cfg, pids, seed, start_iter, rank, world, camids=camids)
    logger.info("Training set: %d images, %d ids; %s, seed %d, %d images per process per batch, from iteration %d",
                len(dataset), getattr(dataset, "num_classes", -1), type(ours).__name__, seed, ours.local_batch_size,
                start_iter)
    batch_sampler = BatchSampler(ours, ours.local_batch_size, drop_last=True)
    return DataLoader(dataset, batch_sampler=batch_sampler, **_loader_kwargs(cfg))


def _item_lines(items: Sequence[Sequence[Any]]) -> Iterator[str]:
    """What must agree between machines, one line per item: file name, id, camera (roots may differ)."""
    return ("\t".join([os.path.basename(str(it[0]))] + [str(x) for x in it[1:]]) for it in items)


def _item_labels(dataset: Dataset, cfg: CfgNode) -> Tuple[List[object], Optional[List[object]]]:
    """Per-item ids and cameras for the sampler: ours, or from a fast-reid-style ``img_items`` list; a
    dataset without either can only be drawn by ``TrainingSampler``."""
    if isinstance(dataset, CommDataset):
        return dataset.pids, dataset.camids
    items = getattr(dataset, "img_items", None)
    if items is not None and all(isinstance(it, (list, tuple)) and len(it) >= 3 for it in items):
        return [it[1] for it in items], [it[2] for it in items]
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ConfigError(f"DATALOADER.SAMPLER_TRAIN is {cfg.DATALOADER.SAMPLER_TRAIN!r}, which groups images by "
                          f"identity, but the training set {type(getattr(dataset, 'dataset', dataset)).__name__} "
                          f"has no img_items of (path, id, camera): use TrainingSampler")
    return [0] * len(dataset), None


def build_reid_test_loader(cfg: CfgNode, dataset_name: Optional[str] = None, *, test_set: Optional[Dataset] = None,
                           num_query: int = 0, transforms: Optional[Callable] = None,
                           **kwargs: Any) -> Tuple[DataLoader, int]:
    """A loader over the query items then the gallery items of ``dataset_name``, in list order.

    Under DDP each process reads a contiguous shard, so gathering its outputs in rank order
    restores dataset order. Returns the loader and the number of queries; ``loader.dataset.labeled``
    is False for sets without ids (pids are then -1). fast-reid's keywords: ``test_set`` (any map-style
    dataset, read in order; ``num_query`` is then returned as given) and ``transforms``.
    """
    if test_set is None:
        if dataset_name is None:
            raise ValueError("build_reid_test_loader needs dataset_name (a DATASETS.TESTS name) or test_set")
        ds = load_dataset(cfg, dataset_name, cfg.INPUT.SIZE_TEST, **kwargs)
        # An empty gallery is a project's choice (its evaluator searches the queries among themselves, as
        # fast-reid's image-retrieval project does); the preflight of our tools still requires one.
        check_nonempty(ds, dataset_name, "query")
        listed = list(ds.query) + list(ds.gallery)
        check_same_input(f"The test set {dataset_name} (under DATASETS.ROOT)",
                         _item_lines(listed), len(listed), "images", SAME_DATA_HINT)
        test_set = CommDataset(listed, transforms or build_transforms(cfg, is_train=False),
                               relabel=False, grayscale=bool(cfg.INPUT.GRAYSCALE), origins=getattr(ds, "origins", {}),
                               labeled=bool(getattr(ds, "labeled", True)))
        num_query = len(ds.query)
    world, rank = comm.get_world_size(), comm.get_rank()
    batch = max(1, resolve_test_batch(cfg) // world)
    batch_sampler = BatchSampler(InferenceSampler(len(test_set), rank, world), batch, drop_last=False)
    return DataLoader(test_set, batch_sampler=batch_sampler, **_loader_kwargs(cfg)), num_query
