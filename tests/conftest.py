"""Shared fixtures: a seeded RNG and torch, which every differential test needs."""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gpu(monkeypatch):
    """The GPU target of this run (tests/gpu_target.py): a device torch sees, or host execution;
    skips the test where there is neither."""
    import gpu_target

    return gpu_target.target(monkeypatch)
