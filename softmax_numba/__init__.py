"""softmax_numba: fast, numerically careful softmax-family kernels.

Every function works along ``axis=-1`` by default, takes ``backend=`` (``"auto"``,
``"numpy"``, ``"cpu"``, ``"parallel"``, ``"cuda"``) and, where it writes an array,
``out=``.  See the README for the table of operations.

The conventions, the same for NumPy arrays, torch tensors, CuPy arrays and
:mod:`softmax_numba.dask`:

- The arrays are positional-only, ``axis`` is positional or keyword (as in scipy:
  ``softmax(x, 0)``), every other option is keyword-only.
- A reduction to 0-d (``logsumexp(x, axis=None)``, ``cross_entropy`` and
  ``linear_cross_entropy`` with ``reduction="mean"`` or ``"sum"``) returns a NumPy
  scalar of the result dtype, as NumPy's and scipy's reductions do; a torch tensor
  in gives a 0-d tensor out; a Dask result computes to a NumPy scalar; an array
  passed as ``out=`` is returned as passed.
- Integers and bools are promoted to float64 (``linear_cross_entropy``: to the
  floating dtype of its other arrays, float64 if none is floating); float16 and
  bfloat16 compute in float32 where accepted.
- ``backend="numpy"`` runs the formulas of :mod:`softmax_numba.reference` in the
  input's dtype, for every function (``linear_cross_entropy`` then holds the
  logits whole).
- ``out=`` and ``grad_out=`` must be writeable arrays of the result's shape and
  dtype; anything else is a one-line error before any kernel runs.
"""

from softmax_numba._cumulative import logcumsumexp
from softmax_numba._elementwise import arctan, gaussian, sigmoid, softplus
from softmax_numba._linear import linear_cross_entropy
from softmax_numba._losses import cross_entropy
from softmax_numba._maxout import maxout
from softmax_numba._sampling import filter_logits, sample, top_logprobs
from softmax_numba._segment import (
    segment_log_softmax,
    segment_log_softmax_backward,
    segment_logsumexp,
    segment_softmax,
    segment_softmax_backward,
)
from softmax_numba._softmax import (
    log_softmax,
    log_softmax_backward,
    logsumexp,
    softmax,
    softmax_backward,
)
from softmax_numba._sparse import (
    entmax15,
    entmax15_backward,
    entmax_bisect,
    sparsemax,
    sparsemax_backward,
)
from softmax_numba._stablemax import (
    log_stablemax,
    stablemax,
    stablemax_backward,
    stablemax_cross_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "arctan",
    "cross_entropy",
    "entmax15",
    "entmax15_backward",
    "entmax_bisect",
    "filter_logits",
    "gaussian",
    "linear_cross_entropy",
    "log_softmax",
    "log_softmax_backward",
    "log_stablemax",
    "logcumsumexp",
    "logsumexp",
    "maxout",
    "sample",
    "segment_log_softmax",
    "segment_log_softmax_backward",
    "segment_logsumexp",
    "segment_softmax",
    "segment_softmax_backward",
    "sigmoid",
    "softmax",
    "softmax_backward",
    "softplus",
    "sparsemax",
    "sparsemax_backward",
    "stablemax",
    "stablemax_backward",
    "stablemax_cross_entropy",
    "top_logprobs",
]
