"""Every tunable of the package, in one place.

Two kinds, and each value below says which it is:

- **Read per call** by the Python wrappers (engine choice, split sizes, streaming
  threshold, CUDA launch shape): a patch takes effect at the next call.  Tests
  patch these (a tiny ``PARALLEL_MIN_ELEMENTS``, so that the parallel engine runs
  on small arrays; odd CUDA block sizes).
- **Baked in at compile time** (:data:`COMPILE_TIME`): Numba freezes a global into
  the machine code of every kernel that reads it.  The CPU kernels' disk-cache
  key includes these values (:func:`softmax_numba.cpu._compile.jit`), so editing
  one here recompiles rather than loading stale code; patching one at run time
  has no effect on kernels already compiled in the process.  The CUDA kernels are
  built once per process and dtype, on their first launch.
"""

from __future__ import annotations

import os

#: Compile time.  LLVM fast-math flags for every CPU kernel.  Deliberately *not* ``fastmath=True``:
#: that adds ``nnan`` and ``ninf``, which let LLVM assume there is no NaN or inf and
#: so break ``-inf`` masks and NaN propagation.  These flags only allow
#: reassociation (vectorized sums), contraction (FMA), reciprocal multiplication,
#: approximate library functions and ignoring the sign of zero.
FASTMATH: frozenset[str] = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Compile time.  The elementary functions inside the CPU kernels: ``"fast"``, the package's
#: branch-free vectorizable ``exp`` (and float32 ``log1p`` and ``atan``, for softplus
#: and arctan), their errors measured over every float32 by the study, or ``"libm"``,
#: the C library's through ``math`` (a scalar call per entry).  Read once at import;
#: set ``SOFTMAX_NUMBA_EXP=libm`` in the environment to compare.
EXP: str = os.environ.get("SOFTMAX_NUMBA_EXP", "fast")
if EXP not in ("fast", "libm"):
    raise ValueError(f"SOFTMAX_NUMBA_EXP must be 'fast' or 'libm', got {EXP!r}")

#: Compile time.  Cache compiled kernels on disk, so that a second process does not recompile.
CACHE: bool = True

#: Per call.  ``backend="auto"`` uses the parallel engine from this many elements on,
#: for a function that :data:`PARALLEL_MIN_ELEMENTS_BY_OP` does not name.
PARALLEL_MIN_ELEMENTS: int = 1 << 16

#: Per call.  The same, per public function, where the serial and the parallel engine
#: were timed against each other (``python -m experiments.measure.crossover``,
#: ``results/CROSSOVER.md``): the size from which waking the threads pays.  A function
#: missing here uses :data:`PARALLEL_MIN_ELEMENTS`; ``tests/test_crossover.py`` checks
#: these values against the committed table (measured on a 2-core Xeon, AVX-512).
PARALLEL_MIN_ELEMENTS_BY_OP: dict[str, int] = {
    "softmax": 65536,
    "log_softmax": 32768,
    "logsumexp": 32768,
    "softmax_backward": 65536,
    "log_softmax_backward": 32768,
    "cross_entropy": 32768,
    "sigmoid": 32768,
    "softplus": 8192,
    "arctan": 16384,
    "gaussian": 32768,
    "sparsemax": 8192,
    "entmax15": 8192,
    "entmax_bisect": 4096,
    "maxout": 131072,
}

#: Per call.  The parallel engine splits a row across threads (with the exact online-softmax
#: merge of the partial ``(max, sum)`` states) when there are fewer rows than
#: threads and a row has at least this many elements.
SPLIT_ROW_MIN_LENGTH: int = 1 << 15

#: Per call.  CPU kernels write outputs of at least this many bytes with streaming
#: (non-temporal) stores, which skip reading the destination lines into cache; a
#: smaller output is left in cache, where the caller will likely read it next.
#: About the size of a server's last-level cache (glibc's ``memcpy`` switches at a
#: similar size).
STREAM_MIN_BYTES: int = 32 << 20

#: Per call.  A split row is cut into at most this many pieces per thread (so that
#: uneven threads even out) ...
SPLIT_PIECES_PER_THREAD: int = 4
#: ... and no piece is shorter than this many elements.
SPLIT_MIN_PIECE: int = 1024

#: Per call.  The ragged-row ops (``segment_softmax`` and its relatives) cut a segment
#: longer than this many entries into equal chunks of at most this many, whose states
#: are merged exactly, on both CPU engines alike (their results do not depend on the
#: number of threads); the parallel engine shares out the chunks and runs of short
#: segments among its threads.  At least ``SUM_BLOCK``: the bound of a sum of more than
#: ``SUM_BLOCK`` terms (``softmax_numba.bounds.summation_bound``) covers the chunks'
#: online states merged in turn.
SEGMENT_PIECE_LENGTH: int = 1 << 15

#: Per call.  CUDA launch shape: threads per block (one block per row, grid-stride
#: over rows) and the most blocks in a grid.  Tests patch tiny, odd block sizes.
CUDA_THREADS_PER_BLOCK: int = 256
#: Per call.  The most blocks in a CUDA grid (see ``CUDA_THREADS_PER_BLOCK``).
CUDA_MAX_BLOCKS: int = 65535

#: Per call.  CUDA rows of at most this many entries go to the warp-per-row kernels
#: (softmax, log_softmax, logsumexp), ``CUDA_WARP_ROWS_PER_BLOCK`` warps (rows) per
#: block; longer rows take a block each.  0 turns the warp kernels off.
CUDA_WARP_ROW_MAX_LENGTH: int = 1024
#: Per call.  Warps (rows) per block of the CUDA warp-per-row kernels.
CUDA_WARP_ROWS_PER_BLOCK: int = 8

#: Per call.  CUDA rows of at most this many bytes go to the block-per-row kernels
#: that keep the row in dynamic shared memory (read from global memory once); 0 turns
#: them off.  A block gets 48 KiB of shared memory without opting in to more.
CUDA_ROW_IN_SHARED_MAX_BYTES: int = 32 * 1024

#: Per call.  When a call has fewer CUDA rows than the device holds blocks at once,
#: rows are cut into pieces of at least this many entries, a block each (the pieces'
#: states merged exactly); 0 turns splitting off.
CUDA_SPLIT_MIN_LENGTH: int = 16384

#: Per call.  Blocks the device holds at once (the largest grid, and the target of
#: row splitting); ``None`` reads it off the device: multiprocessors times the blocks
#: of ``CUDA_THREADS_PER_BLOCK`` threads each holds.
CUDA_RESIDENT_BLOCKS: int | None = None

#: Per call.  The bytes of logits that :func:`softmax_numba.cross_entropy` with its
#: Liger options holds at once: one block of rows times one chunk of the classes.
CHUNKED_LOSS_BYTES: int = 128 << 20

#: Per call.  The most bytes that :func:`softmax_numba.linear_cross_entropy` holds
#: beyond its inputs, its gradients and a few values per row, whatever the number of
#: tokens and the vocabulary: one tile of logits (a block of tokens times a chunk of
#: the vocabulary) and, for bfloat16 and float16 inputs, the tile's operands widened
#: to float32 and the chunk's ``dW`` summed in float32.
LINEAR_CE_WORKSPACE_BYTES: int = 64 << 20

#: Per call.  The fewest tokens in a block of ``linear_cross_entropy`` for which the
#: whole vocabulary is one chunk of the workspace (float32 and float64 inputs): the
#: logits are then computed once, three matrix products in all; below it, tiles of
#: the vocabulary cost a fourth product (the logits again for the gradient) but
#: keep every product's inner dimension long.
LINEAR_CE_ONE_CHUNK_MIN_ROWS: int = 256

#: ``cross_entropy(..., temperature=T)`` without the gradient divides the logits by
#: ``T`` a block of rows of about this many bytes at a time, into one buffer that
#: stays in the cache (256 KiB: the L2 of a core holds it and the kernel's row).
TEMPERED_BLOCK_BYTES: int = 256 << 10

#: Per call.  The fewest rows in a block of ``cross_entropy`` with its Liger options
#: for which all the classes are one chunk of ``CHUNKED_LOSS_BYTES``.
CHUNKED_LOSS_MIN_ROWS: int = 64

#: Compile time (CUDA, on the first launch in a process).  The largest block the
#: shared-memory reductions are sized for; ``CUDA_THREADS_PER_BLOCK`` may not exceed it.
CUDA_MAX_THREADS_PER_BLOCK: int = 1024

#: Compile time.  Runs of consecutive rows in the pipelined 2-D CPU kernels (the
#: threads share them out; each run starts its pipeline with one max pass of its own).
ROW_CHUNKS: int = 64

#: Compile time.  Elements per block of the CPU online softmax: a block's max and
#: exp-sum run over data still in L1 and vectorize; the blocks' states are merged
#: exactly.
ONLINE_BLOCK: int = 256

#: Compile time.  Elements per block of every sum the CPU kernels take along a row
#: (the ``s`` of softmax and its relatives, the backward ops' dot products, the
#: losses' and the normalized maps' sums): a block is summed in the compute dtype by
#: the vectorized loop, and the blocks' sums are accumulated with a compensated
#: (two-sum) addition, so that the rounding error of a sum of ``n`` terms is that of
#: one block plus ``2 u``, whatever ``n`` (:func:`softmax_numba.bounds.summation_bound`:
#: ``B / 8 + log2(B) + 6`` u).  Each block costs a horizontal add of the vector
#: accumulators and a loop exit, some 10 ns, and the blocked loop a few instructions
#: per vector: against one loop per row, softmax +1.8 to +2.4%, log_softmax +0.8 to
#: +1.9% and logsumexp within +-3% (float32, serial, (64, 32000), (8, 32000) and
#: (64, 1000), best of many interleaved calls; at 512, +2.3 to +3.6% more).  At least
#: ``ONLINE_BLOCK``.
SUM_BLOCK: int = 2048

#: Compile time (CUDA).  Bisection steps before the exact refinement of sparsemax
#: and 1.5-entmax, and the most refinement rounds (each removes at least one
#: support entry, so a row of ``n`` needs at most ``n``; 64 is a safety stop).
BRACKET_STEPS: int = 24
#: Compile time (CUDA).  The most refinement rounds (see ``BRACKET_STEPS``).
MAX_REFINEMENTS: int = 64

#: The names of the compile-time values above: part of the CPU kernels' cache key.
COMPILE_TIME: tuple[str, ...] = (
    "FASTMATH",
    "EXP",
    "CACHE",
    "ROW_CHUNKS",
    "ONLINE_BLOCK",
    "SUM_BLOCK",
    "CUDA_MAX_THREADS_PER_BLOCK",
    "BRACKET_STEPS",
    "MAX_REFINEMENTS",
)
