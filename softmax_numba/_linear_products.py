"""The matrix products of :func:`softmax_numba.linear_cross_entropy`, each in the
library of the caller's arrays: NumPy's BLAS (SciPy's ``gemm`` for sums in place)
for NumPy arrays, torch's ``mm``/``addmm_`` for torch tensors.

Every operand is a NumPy array on the host (a torch CPU tensor is viewed as one,
without a copy, by :mod:`softmax_numba._interop`); the torch products view them back
as tensors (``torch.from_numpy``, again without a copy) and write into the
preallocated output, so that neither library copies ``h`` or ``W`` nor allocates a
result of a product's size.
"""

from __future__ import annotations

import numpy as np


class NumpyProducts:
    """Products by NumPy's ``matmul`` into ``out=``; sums in place by BLAS ``gemm``
    with ``beta = 1`` (SciPy's wrapper), or through a scratch buffer without SciPy."""

    name = "numpy"

    def __init__(self) -> None:
        try:
            from scipy.linalg import blas
        except ImportError:
            blas = None
        self._blas = blas

    def product(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """``out = a @ b``."""
        np.matmul(a, b, out=out)

    def accumulate(self, out: np.ndarray, a: np.ndarray, b: np.ndarray, scratch) -> None:
        """``out += a @ b`` (``out`` C-contiguous).  By ``gemm`` in place: in
        column-major terms ``out.T += b.T @ a.T``, every operand viewed without a
        copy.  Without SciPy, through ``scratch`` in slabs of ``out``'s rows."""
        if self._blas is not None:
            gemm = self._blas.sgemm if out.dtype == np.float32 else self._blas.dgemm
            c = out.T
            (left, trans_a), (right, trans_b) = _fortran(b.T), _fortran(a.T)
            result = gemm(1.0, left, right, beta=1.0, c=c, trans_a=trans_a, trans_b=trans_b,
                          overwrite_c=1)  # fmt: skip
            if not np.shares_memory(result, c):  # the wrapper copied: keep the sum anyway
                c[...] = result
            return
        slab = max(1, scratch.size // out.shape[1])
        for lo in range(0, out.shape[0], slab):
            hi = min(out.shape[0], lo + slab)
            part = scratch[: (hi - lo) * out.shape[1]].reshape(hi - lo, out.shape[1])
            np.matmul(a[lo:hi], b, out=part)
            out[lo:hi] += part

    @property
    def needs_scratch(self) -> bool:
        """Whether :meth:`accumulate` needs a scratch buffer (no SciPy)."""
        return self._blas is None

    @staticmethod
    def convert(out: np.ndarray, a: np.ndarray) -> None:
        """``out[...] = a`` in ``out``'s dtype (round to nearest even when narrowing)."""
        np.copyto(out, a, casting="unsafe")


class TorchProducts:
    """Products by torch's ``mm(out=)`` and ``addmm_`` on tensor views of the
    arrays: torch's CPU BLAS (oneDNN/MKL), faster than OpenBLAS on most machines."""

    name = "torch"
    needs_scratch = False

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def _view(self, a: np.ndarray):
        if a.dtype.kind == "V":  # bfloat16 (ml_dtypes): the bits as int16
            return self._torch.from_numpy(a.view(np.int16)).view(self._torch.bfloat16)
        return self._torch.from_numpy(a)

    def product(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """``out = a @ b``."""
        self._torch.mm(self._view(a), self._view(b), out=self._view(out))

    def accumulate(self, out: np.ndarray, a: np.ndarray, b: np.ndarray, scratch=None) -> None:
        """``out += a @ b`` in place (``addmm_``)."""
        self._view(out).addmm_(self._view(a), self._view(b))

    def convert(self, out: np.ndarray, a: np.ndarray) -> None:
        """``out[...] = a`` in ``out``'s dtype (round to nearest even when narrowing)."""
        self._view(out).copy_(self._view(a))


def _fortran(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``a`` as BLAS takes it without a copy: itself if Fortran-contiguous, else its
    (Fortran-contiguous) transpose with the flag that transposes it back."""
    return (a, 0) if a.flags.f_contiguous or not a.T.flags.f_contiguous else (a.T, 1)


def products_for(library: str):
    """The products of ``library`` (``"numpy"`` or ``"torch"``)."""
    return TorchProducts() if library == "torch" else NumpyProducts()
