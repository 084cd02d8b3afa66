"""Every tunable of the package, in one place.

Tests patch these values (for example a tiny ``PARALLEL_MIN_ELEMENTS`` so that the
parallel engine is exercised on small arrays).  Values read by compiled code are
read when the Python wrapper calls it, never baked into a kernel, so a patch takes
effect at once.
"""

from __future__ import annotations

import os

#: LLVM fast-math flags for every CPU kernel.  Deliberately *not* ``fastmath=True``:
#: that adds ``nnan`` and ``ninf``, which let LLVM assume there is no NaN or inf and
#: so break ``-inf`` masks and NaN propagation.  These flags only allow
#: reassociation (vectorized sums), contraction (FMA), reciprocal multiplication,
#: approximate library functions and ignoring the sign of zero.
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: The elementary functions inside the CPU kernels: ``"fast"``, the package's
#: branch-free vectorizable ``exp`` (and float32 ``log1p`` and ``atan``, for softplus
#: and arctan), their errors measured over every float32 by the study, or ``"libm"``,
#: the C library's through ``math`` (a scalar call per entry).  Read once at import;
#: set ``SOFTMAX_NUMBA_EXP=libm`` in the environment to compare.
EXP: str = os.environ.get("SOFTMAX_NUMBA_EXP", "fast")
if EXP not in ("fast", "libm"):
    raise ValueError(f"SOFTMAX_NUMBA_EXP must be 'fast' or 'libm', got {EXP!r}")

#: Cache compiled kernels on disk, so that a second process does not recompile.
CACHE: bool = True

#: ``backend="auto"`` uses the parallel engine from this many elements on.
PARALLEL_MIN_ELEMENTS: int = 1 << 16

#: The parallel engine splits a row across threads (with the exact online-softmax
#: merge of the partial ``(max, sum)`` states) when there are fewer rows than
#: threads and a row has at least this many elements.
SPLIT_ROW_MIN_LENGTH: int = 1 << 15

#: CPU kernels write outputs of at least this many bytes with streaming
#: (non-temporal) stores, which skip reading the destination lines into cache; a
#: smaller output is left in cache, where the caller will likely read it next.
#: About the size of a server's last-level cache (glibc's ``memcpy`` switches at a
#: similar size).
STREAM_MIN_BYTES: int = 32 << 20

#: CUDA launch shape: threads per block (one block per row, grid-stride over rows),
#: the largest block the shared-memory reductions are sized for, and the most
#: blocks in a grid.  Tests patch tiny, odd block sizes.
CUDA_THREADS_PER_BLOCK: int = 256
CUDA_MAX_THREADS_PER_BLOCK: int = 1024
CUDA_MAX_BLOCKS: int = 65535
