"""Wall-clock timing with warm-up, and the copy roofline measured in the same run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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


def interleaved(
    candidates: dict[str, Callable],
    rounds: int,
    *,
    min_sample_s: float = settings.SPEED_MIN_SAMPLE_S,
) -> dict[str, np.ndarray]:
    """Seconds per call of each candidate in each of ``rounds`` rounds, the candidates
    timed in turn: a slow spell of a shared machine hits them alike, and a ratio taken
    within a round cancels it.

    Each candidate is called first (compilation, page faults), then timed on three
    more calls, the fastest of which sets ``inner`` so that a block of ``inner`` calls
    lasts at least ``min_sample_s`` (the fastest: a call slowed by another process
    would give that candidate short blocks, each bearing a whole delay, and bias its
    ratio).  Each round times a block of each candidate (one implementation at a time,
    so a thread pool left spinning by one does not slow the next call of the other).
    The order is reversed every other round (A B, B A, A B, ...) so that neither
    candidate always runs first.
    """
    inner = {}
    for name, fn in candidates.items():
        fn()
        once = np.inf
        for _ in range(3):
            start = time.perf_counter()
            fn()
            once = min(once, time.perf_counter() - start)
        inner[name] = max(1, int(min_sample_s / max(once, 1e-9)))
    samples = {name: np.empty(rounds) for name in candidates}
    order = list(candidates.items())
    for k in range(rounds):
        for name, fn in order if k % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name][k] = (time.perf_counter() - start) / inner[name]
    return samples


def median_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a distribution-free ``confidence`` interval of it.

    The interval is ``[v_(k), v_(n+1-k)]`` of the sorted values (1-based), with the
    largest ``k`` such that ``P(B < k) <= (1 - confidence) / 2`` for ``B ~ Binomial(n,
    1/2)``: the population median lies below ``v_(k)`` only if fewer than ``k`` of the
    ``n`` independent values do.  Too few values for any such ``k`` (fewer than 6 at
    95%) give ``(-inf, inf)``: nothing can be told apart.  NaNs are dropped.
    """
    v = np.sort(np.asarray(values, dtype=float))
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return np.nan, -np.inf, np.inf
    tail = (1.0 - confidence) / 2.0
    k, below = 0, 0.0  # below = P(B < k + 1) = P(B <= k)
    while True:
        below += math.comb(n, k) / 2.0**n
        if below > tail:
            break
        k += 1
    # Now P(B < k) <= tail < P(B < k + 1): the interval is [v_(k), v_(n+1-k)].
    median = float(np.median(v))
    if k == 0:
        return median, -np.inf, np.inf
    return median, float(v[k - 1]), float(v[n - k])


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
