"""Datasets; importing this package registers them in ``DATASET_REGISTRY``."""
from .bases import ImageDataset, ListFormatError, datasets_root, read_list
from .custom import ImageFolderRetrieval, ListFileDataset, query_count
from .deeppatent import DeepPatent, DeepPatentTest

__all__ = ["ImageDataset", "ListFormatError", "datasets_root", "read_list", "ImageFolderRetrieval",
           "ListFileDataset", "query_count", "DeepPatent", "DeepPatentTest"]
