"""Loss functions on tensors (pure) and their DDP helpers."""
from .cross_entropy import cross_entropy_loss, log_accuracy
from .distances import cosine_dist, euclidean_dist, identity_masks
from .distributed import ddp_gradient_scale, gather_for_mining
from .pairwise import pairwise_circleloss, pairwise_cosface
from .triplet import hard_example_mining, triplet_loss, weighted_example_mining

__all__ = ["cross_entropy_loss", "log_accuracy", "cosine_dist", "euclidean_dist", "identity_masks",
           "ddp_gradient_scale", "gather_for_mining", "pairwise_circleloss", "pairwise_cosface", "hard_example_mining",
           "triplet_loss", "weighted_example_mining"]
