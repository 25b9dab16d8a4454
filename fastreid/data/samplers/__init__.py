"""Training samplers (infinite, seeded, positional) and the sharded inference sampler."""
from .identity import BalancedIdentitySampler, NaiveIdentitySampler
from .positional import InferenceSampler, PositionalSampler, TrainingSampler, sample_seed

__all__ = ["BalancedIdentitySampler", "NaiveIdentitySampler", "InferenceSampler", "PositionalSampler",
           "TrainingSampler", "sample_seed"]
