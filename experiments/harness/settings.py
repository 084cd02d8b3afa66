"""The harness's own settings: how much each measurement samples.

The library's tunables are in ``softmax_numba.config``; these are the study's.  A
change here changes what the study measures (its cells' sizes, its timing's
repeats), so the provenance check treats a run with other values as other code:
this file is hashed with the rest of ``experiments/``.
"""

from __future__ import annotations

#: Accuracy cells: about this many elements per cell, in at most this many rows.
ACCURACY_ELEMENTS = 1 << 16
ACCURACY_QUICK_ELEMENTS = 1 << 12
ACCURACY_MAX_ROWS = 512

#: Speed cells (``timing.time_call``): samples per cell, fewer for inputs of at
#: least ``LARGE_INPUT_BYTES`` (each sample of those takes long enough alone).
SPEED_REPEATS = 7
SPEED_REPEATS_LARGE = 3
LARGE_INPUT_BYTES = 16 << 20
#: The shortest timed sample: a call is repeated within a sample until it lasts this.
SPEED_MIN_SAMPLE_S = 2e-3

#: The roofline benchmark: interleaved rounds per cell, and its shortest sample.
ROOFLINE_ROUNDS = 9
ROOFLINE_QUICK_ROUNDS = 3
ROOFLINE_MIN_SAMPLE_S = 5e-3

#: The claims' timing ratios (``timing.interleaved``): rounds, and the shortest block
#: of calls of one implementation in a round.  21 rounds give a 95% interval of the
#: median from the 6th to the 16th smallest ratio.
CLAIM_ROUNDS = 21
CLAIM_MIN_SAMPLE_S = 5e-2
