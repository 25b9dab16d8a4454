"""fast-reid's import path of the loss helpers: ``concat_all_gather`` and the distance functions."""
from .distances import cosine_dist, euclidean_dist
from .distributed import concat_all_gather

__all__ = ["concat_all_gather", "cosine_dist", "euclidean_dist"]
