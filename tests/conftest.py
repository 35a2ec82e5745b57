import pytest
import torch

import cofi


@pytest.fixture
def gmm():
    """The coherence benchmark's exact prior (float64)."""
    return cofi.priors.GaussianMixturePrior.chain_benchmark(window=16, components=3, channels=2)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
