"""softmax_numba: fast, numerically careful softmax-family kernels.

Every function works along ``axis=-1`` by default, takes ``backend=`` (``"auto"``,
``"numpy"``, ``"cpu"``, ``"parallel"``, ``"cuda"``) and, where it writes an array,
``out=``.  See the README for the table of operations.
"""

from softmax_numba._elementwise import arctan, gaussian, sigmoid, softplus
from softmax_numba._linear import linear_cross_entropy
from softmax_numba._losses import cross_entropy
from softmax_numba._maxout import maxout
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

__version__ = "0.1.0"

__all__ = [
    "arctan",
    "cross_entropy",
    "entmax15",
    "entmax15_backward",
    "entmax_bisect",
    "gaussian",
    "linear_cross_entropy",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "maxout",
    "sigmoid",
    "softmax",
    "softmax_backward",
    "softplus",
    "sparsemax",
    "sparsemax_backward",
]
