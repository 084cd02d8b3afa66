"""Numba CPU engine: serial (``backend="cpu"``) and parallel (``backend="parallel"``).

One module per family; each exposes :class:`~softmax_numba.cpu._compile.Engines`
pairs that work on 2-D C-contiguous ``(rows, n)`` arrays.  The public wrappers in
:mod:`softmax_numba` do validation, dtype policy and axis handling.
"""
