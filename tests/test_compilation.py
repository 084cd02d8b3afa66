"""Kernels compile lazily (never at import) and are cached on disk across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import numpy as np
    import softmax_numba as sn
    from softmax_numba.cpu import softmax as kernels
    dispatcher = kernels.SOFTMAX["shifted"].cpu
    assert dispatcher.signatures == [], "compiled at import"
    sn.softmax(np.ones((2, 3), np.float32), backend="cpu")
    print(sum(dispatcher.stats.cache_misses.values()), sum(dispatcher.stats.cache_hits.values()))
    """
)


def _run_probe():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    misses, hits = map(int, done.stdout.split())
    return misses, hits


@pytest.mark.slow  # two fresh interpreters
def test_no_compilation_at_import_and_a_second_process_loads_from_the_cache():
    _run_probe()  # compiles if no earlier run left a cache entry
    misses, hits = _run_probe()
    assert (misses, hits) == (0, 1)
