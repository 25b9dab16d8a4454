"""Data: datasets (registered on import), transforms, samplers and the loader builders."""
from . import datasets  # noqa: F401  (registers the datasets)
from .build import build_reid_test_loader, build_reid_train_loader, build_train_sampler, load_dataset
from .common import CommDataset
from .data_utils import ImageReadError, read_image
from .transforms import build_transforms

__all__ = ["build_reid_train_loader", "build_reid_test_loader", "build_train_sampler", "load_dataset",
           "CommDataset", "ImageReadError", "read_image", "build_transforms"]
