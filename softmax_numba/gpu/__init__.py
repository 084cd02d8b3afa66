"""Numba CUDA engine (``backend="cuda"``), an optional extra: ``softmax_numba[cuda]``.

(Named ``gpu`` rather than ``cuda``: numba-cuda's import redirector hijacks every
module whose name contains ``numba.cuda``, which ``softmax_numba.cuda`` would.)

The kernels mirror the CPU ones by name and signature (2-D C-contiguous rows);
:mod:`softmax_numba.gpu._runtime` moves host arrays to the device and back, and
passes device arrays (Numba's, or anything with ``__cuda_array_interface__``)
through without a copy.  Importing :mod:`softmax_numba` never imports this package.
"""
