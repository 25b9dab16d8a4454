"""Search your own drawings: a persistent feature index, queries against it, and ONNX export.

``Index.build`` / ``Index.open`` / ``index.search`` / ``index.add`` are the API behind
``tools/build_index.py``, ``tools/search.py`` and the search page (docs/search.md).
"""
from fastreid.evaluation.pipeline import RetrievalOptions
from fastreid.evaluation.search import INDEX_TYPES
from .extractor import (Extractor, FingerprintMismatch, OnnxExtractor, TorchExtractor, build_extractor,
                        model_fingerprint)
from .build import BuildOptions, extract
from .index import Index, SearchHit
from .items import DuplicateError, Items, collect_images, dataset_items, patent_id

__all__ = ["INDEX_TYPES", "BuildOptions", "RetrievalOptions", "DuplicateError", "Extractor", "FingerprintMismatch",
           "Index", "Items", "OnnxExtractor", "SearchHit", "TorchExtractor", "build_extractor", "collect_images",
           "dataset_items", "extract", "model_fingerprint", "patent_id"]
