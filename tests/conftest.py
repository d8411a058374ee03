"""Shared fixtures: a seeded RNG and torch, which every differential test needs."""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
