"""Wall-clock timing with warm-up, and the copy roofline measured in the same run."""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import prange

from experiments.harness import settings


def _no_sync() -> None:
    pass


def time_call(
    fn,
    *,
    repeats: int = settings.SPEED_REPEATS,
    min_sample_s: float = settings.SPEED_MIN_SAMPLE_S,
    sync=_no_sync,
) -> dict:
    """Median, min and max seconds per call of ``fn()`` over ``repeats`` samples.

    ``fn`` is called twice first (compilation, caches, page faults), then each
    sample runs it ``inner`` times in a row, with ``inner`` chosen so that a sample
    lasts at least ``min_sample_s`` (timer resolution and call jitter).  ``sync``
    waits for asynchronous work (a GPU's) before each clock reading.
    """
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - start, 1e-9)
    inner = max(1, int(min_sample_s / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / inner)
    samples = np.asarray(samples)
    return {
        "median_s": float(np.median(samples)),
        "min_s": float(samples.min()),
        "max_s": float(samples.max()),
        "repeats": repeats,
        "inner": inner,
    }


@numba.njit(parallel=True, cache=True)
def _parallel_copy(src, dst, chunks):
    """``dst[:] = src`` for 1-D arrays, in ``chunks`` slices spread over the threads."""
    n = src.size
    for c in prange(chunks):
        dst[c * n // chunks : (c + 1) * n // chunks] = src[c * n // chunks : (c + 1) * n // chunks]


def copy_roofline(x: np.ndarray, repeats: int = settings.SPEED_REPEATS) -> dict:
    """GB/s of a plain copy of ``x`` (read + write), single-thread ``np.copyto`` and a
    parallel Numba copy over all threads: the bandwidth a memory-bound op can reach."""
    src = np.ascontiguousarray(x)
    dst = np.empty_like(src)
    nbytes = 2 * src.nbytes
    serial = time_call(lambda: np.copyto(dst, src), repeats=repeats)
    # As raw bytes: every dtype (bfloat16 included) copies the same way.
    raw_src, raw_dst = src.reshape(-1).view(np.uint8), dst.reshape(-1).view(np.uint8)
    chunks = numba.get_num_threads()
    parallel = time_call(lambda: _parallel_copy(raw_src, raw_dst, chunks), repeats=repeats)
    return {
        "copy_gbps": nbytes / serial["median_s"] / 1e9,
        "parallel_copy_gbps": nbytes / parallel["median_s"] / 1e9,
    }
