"""A Triton softmax for ``make bench-gpu``: the fused kernel of Triton's tutorial
(one program per row, the row in registers as one block of the next power of two),
the peer that the issue names.  Loaded only where Triton and a GPU are.

Reference: Triton tutorial 02, "Fused Softmax"
(https://triton-lang.org/main/getting-started/tutorials/02-fused-softmax.html).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: Longest row the kernel takes: the whole row is one block in registers.
MAX_LENGTH = 65536


@triton.jit
def _softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
    x = x.to(tl.float32)
    z = x - tl.max(x, axis=0)
    e = tl.exp(z)
    y = e / tl.sum(e, axis=0)
    tl.store(out_ptr + row * out_stride + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def softmax(x, out):
    """``out = softmax(x)`` along the last axis of 2-D torch CUDA tensors."""
    rows, n = x.shape
    if n > MAX_LENGTH:
        raise ValueError(f"the tutorial kernel holds a row of at most {MAX_LENGTH} in registers")
    block = triton.next_power_of_2(n)
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    _softmax_kernel[(rows,)](out, x, x.stride(0), out.stride(0), n, BLOCK=block, num_warps=warps)
    return out
