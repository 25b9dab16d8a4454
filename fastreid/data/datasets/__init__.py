"""Datasets; importing this package registers them in ``DATASET_REGISTRY`` (also importable from here,
as fast-reid code does)."""
from fastreid.utils.registry import DATASET_REGISTRY

from .bases import ImageDataset, ListFormatError, datasets_root, read_list
from .custom import ImageFolderRetrieval, ListFileDataset, query_count
from .deeppatent import DeepPatent, DeepPatentTest, Patent, PatentTest

__all__ = ["DATASET_REGISTRY", "ImageDataset", "ListFormatError", "datasets_root", "read_list",
           "ImageFolderRetrieval", "ListFileDataset", "query_count", "DeepPatent", "DeepPatentTest", "Patent",
           "PatentTest"]
