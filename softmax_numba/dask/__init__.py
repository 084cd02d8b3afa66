r"""The softmax family on Dask arrays, exact along a chunked axis.

``pip install "softmax_numba[dask]"`` brings Dask.  Every function takes a
``dask.array.Array`` (or anything ``dask.array.asarray`` accepts) and returns a lazy
Dask array; nothing is computed until you call ``.compute()``, ``da.store`` or a
reduction of your own.

The axis may be split into any number of chunks, and no chunk is ever rechunked to
hold a whole row.  Three steps, each a Dask task per chunk:

1. every chunk's partial state along the axis, ``m = x_k = max_i x_i`` and
   ``s = sum_{i != k} exp(x_i - m)``, with the Numba kernels of
   :mod:`softmax_numba.cpu.states`;
2. the states of the chunks of a row merged exactly, as a Dask tree reduction, with
   ``m = max(m_1, m_2)``, ``s = s_1 + (1 + s_2) exp(m_2 - m_1)`` for ``m_1 >= m_2``
   (Milakov & Gimelshein, "Online normalizer calculation for softmax",
   arXiv:1805.02867, 2018, eq. (4), for ``s = d - 1``);
3. every chunk normalized on its own: ``softmax = exp(x_i - m) / (1 + s)``,
   ``log_softmax = (x_i - m) - log1p(s)``, ``logsumexp = m + log1p(s)``, and the
   loss ``(m - x_t) + log1p(s)``: each a sum of terms of one sign, accurate relative
   to the result whatever the offset of the logits, as in memory (Blanchard,
   Higham & Higham 2021).

The input is read twice (steps 1 and 3) and the output written once, as by the
in-memory online algorithm.  float32 is computed in float32, float64 in float64,
float16/bfloat16 in float32, integers and bools become float64
(:func:`softmax_numba._api.dtypes_for`).  Non-finite input follows the in-memory
functions: a NaN poisons its row, a row with ``+inf`` (or all ``-inf``) is NaN
under ``softmax``, ``logsumexp`` gives ``+inf`` (``-inf``) for it.

Not supported (``NotImplementedError``): ``axis=None`` on arrays of more than one
dimension, ``b=`` and ``return_sign=`` of ``logsumexp``, ``backend="numpy"`` and
``"cuda"``.

``linear_cross_entropy`` takes hidden states and a weight matrix instead of logits:
its tokens and its vocabulary may each be chunked, and the logits of a piece exist
only inside its task.

``logcumsumexp`` is a scan, not a reduction: each chunk's final state, the chunks'
states folded in order into each chunk's carry-in (one small task per block of rows),
and each chunk scanned again from its carry.

The modules: :mod:`softmax_numba.dask._graph` (the checks, shared with the
in-memory functions, and the three steps), ``_softmax``, ``_losses``, ``_linear``
and ``_cumulative`` (the public functions).
"""

from softmax_numba.dask._cumulative import logcumsumexp
from softmax_numba.dask._graph import BACKENDS as BACKENDS
from softmax_numba.dask._linear import linear_cross_entropy
from softmax_numba.dask._losses import cross_entropy
from softmax_numba.dask._softmax import log_softmax, logsumexp, online_states, softmax

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logcumsumexp",
    "logsumexp",
    "online_states",
    "softmax",
]
