"""Shared fixtures: precision helpers, hypothesis profile, small engine thresholds."""

from __future__ import annotations

import os
import shutil

# The CUDA tests run on the simulator unless a GPU is here; it must be chosen before
# numba is first imported.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("ci")

#: Unit roundoff of each floating dtype.
UNIT_ROUNDOFF = {
    np.dtype(np.float16): 2.0**-11,
    np.dtype(np.float32): 2.0**-24,
    np.dtype(np.float64): 2.0**-53,
}


def unit_roundoff(dtype) -> float:
    dtype = np.dtype(dtype)
    return 2.0**-8 if dtype.name == "bfloat16" else UNIT_ROUNDOFF[dtype]


def pytest_collection_modifyitems(config, items):
    """The tests marked ``long`` first, the others in their order: pytest-xdist hands
    out tests in collection order, and a test of minutes that starts last (the warm-up
    from an empty cache is in the last file) leaves the other workers idle while it
    runs (``make test`` took 17.6 minutes so on 2 cores, of 15 minutes of work per
    core)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def eager_parallel(monkeypatch):
    """Make ``backend="auto"`` and the long-row split kick in on tiny arrays."""
    from softmax_numba import config

    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS_BY_OP", {})
    monkeypatch.setattr(config, "SPLIT_ROW_MIN_LENGTH", 2048)
