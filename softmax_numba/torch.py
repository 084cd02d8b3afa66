"""PyTorch autograd functions over the kernels (the ``[torch]`` extra).

Each function takes tensors, CPU or CUDA, in torch's conventions (``dim=``,
``keepdim=``, the class dimension 1 of ``cross_entropy``) and returns tensors of
the input's dtype and device.  The forward pass is the plain API
(:mod:`softmax_numba`, tensors viewed without a copy, see
``softmax_numba._interop``); the backward pass is our vector-Jacobian product
kernels (``softmax_backward``, ``log_softmax_backward``, ``sparsemax_backward``,
``entmax15_backward``) or, for cross-entropy, the gradient computed with the loss
in the same kernel.  The backward passes are not themselves differentiable
(``once_differentiable``: no double backward).

Examples
--------
>>> import torch
>>> from softmax_numba import torch as snt
>>> x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
>>> snt.softmax(x, dim=-1).sum().backward()
>>> x.grad.abs().max().item() < 1e-15
True
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

import softmax_numba as sn
from softmax_numba._linear import _linear_cross_entropy

__all__ = [
    "cross_entropy",
    "entmax15",
    "entmax_bisect",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
    "sparsemax",
]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor without its autograd history, as the plain API takes it."""
    return tensor.detach()


class _RowMap(torch.autograd.Function):
    """``y = forward(x)`` along ``dim``, ``dx = backward(y, dy)`` (both ours)."""

    @staticmethod
    def forward(ctx, x, dim, forward, backward, options):
        y = forward(_plain(x), axis=dim, **options)
        ctx.save_for_backward(y)
        ctx.dim, ctx.backward = dim, backward
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return ctx.backward(_plain(y), _plain(dy), axis=ctx.dim), None, None, None, None


def softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":func:`softmax_numba.softmax` along ``dim``, differentiable.

    Backward: :func:`softmax_numba.softmax_backward`,
    :math:`dx = y \odot (dy - \langle y, dy\rangle)`.
    """
    return _RowMap.apply(input, dim, sn.softmax, sn.softmax_backward, {})


def log_softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":func:`softmax_numba.log_softmax` along ``dim``, differentiable.

    Backward: :func:`softmax_numba.log_softmax_backward`,
    :math:`dx = dy - e^{y} \sum_j dy_j`.
    """
    return _RowMap.apply(input, dim, sn.log_softmax, sn.log_softmax_backward, {})


def sparsemax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":func:`softmax_numba.sparsemax` along ``dim``, differentiable.

    Backward: :func:`softmax_numba.sparsemax_backward`, :math:`dx = s \odot (dy -
    \langle s, dy\rangle / |s|)` with ``s`` the support.
    """
    return _RowMap.apply(input, dim, sn.sparsemax, sn.sparsemax_backward, {})


def entmax15(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r""":func:`softmax_numba.entmax15` along ``dim``, differentiable.

    Backward: :func:`softmax_numba.entmax15_backward`, :math:`dx = g \odot (dy -
    \langle g, dy\rangle / \sum g)`, :math:`g = \sqrt{y}`.
    """
    return _RowMap.apply(input, dim, sn.entmax15, sn.entmax15_backward, {})


def _entmax_bisect_backward(y, dy, *, axis, alpha):
    # The alpha-entmax Jacobian (Peters, Niculae & Martins, 2019, Prop. 1), applied
    # to dy: g = y^(2 - alpha) on the support, dx = g (dy - <g, dy> / sum g).
    g = torch.where(y > 0, y.clamp_min(0) ** (2.0 - alpha), torch.zeros_like(y))
    dx = g * dy
    return dx - g * (dx.sum(axis, keepdim=True) / g.sum(axis, keepdim=True))


def entmax_bisect(
    input: torch.Tensor, alpha: float = 1.5, dim: int = -1, n_iter: int = 50
) -> torch.Tensor:
    r""":func:`softmax_numba.entmax_bisect` along ``dim``, differentiable in ``input``
    (not in ``alpha``).

    Backward, in torch operations (there is no kernel for it):
    :math:`dx = g \odot (dy - \langle g, dy\rangle / \sum g)`, :math:`g = y^{2 -
    \alpha}` on the support (Peters, Niculae & Martins, "Sparse sequence-to-sequence
    models", ACL 2019).
    """

    def backward(y, dy, *, axis):
        return _entmax_bisect_backward(y, dy, axis=axis, alpha=alpha)

    options = {"alpha": alpha, "n_iter": n_iter}
    return _RowMap.apply(input, dim, sn.entmax_bisect, backward, options)


class _LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, keepdim):
        x = _plain(x)
        ctx.save_for_backward(x)
        ctx.dim, ctx.keepdim = dim, keepdim
        return sn.logsumexp(x, axis=dim, keepdims=keepdim)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        dims = (ctx.dim,) if isinstance(ctx.dim, int) else ctx.dim
        if not ctx.keepdim:
            for d in sorted(d % x.ndim for d in dims):
                dy = dy.unsqueeze(d)
        return dy * sn.softmax(_plain(x), axis=ctx.dim), None, None


def logsumexp(
    input: torch.Tensor, dim: int | tuple[int, ...], keepdim: bool = False
) -> torch.Tensor:
    r""":func:`softmax_numba.logsumexp` over ``dim`` (an int or a tuple, as
    ``torch.logsumexp``), differentiable: :math:`dx = dy \cdot \operatorname{softmax}(x)`
    (our softmax kernel)."""
    return _LogSumExp.apply(input, dim, keepdim)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, dim, options):
        loss, grad = sn.cross_entropy(
            _plain(logits), _plain(target), axis=dim, return_grad=True, **options
        )
        ctx.save_for_backward(grad)
        ctx.dim, ctx.per_row = dim, options["reduction"] == "none"
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, dloss):
        (grad,) = ctx.saved_tensors
        if ctx.per_row:
            dloss = dloss.unsqueeze(ctx.dim)
        return _plain(grad) * dloss, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r""":func:`softmax_numba.cross_entropy` in the conventions of
    ``torch.nn.functional.cross_entropy``: classes along dimension 1 (0 for a 1-D
    input), ``ignore_index=-100``; differentiable in ``input`` (not in a
    probability ``target``).

    The forward pass computes the loss and its gradient in one kernel; the backward
    pass scales the saved gradient by the upstream one.
    """
    dim = 1 if input.ndim >= 2 else 0
    options = {
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "ignore_index": None if target.is_floating_point() else ignore_index,
    }
    return _CrossEntropy.apply(input, target, dim, options)


class _LinearCrossEntropy(torch.autograd.Function):
    """The loss; with a ``"mean"`` or ``"sum"`` reduction the gradients are computed
    with it (as Liger-Kernel does) and scaled in the backward pass; with ``"none"`` the
    backward pass sweeps again, weighting each row by its upstream gradient."""

    @staticmethod
    def forward(ctx, h, W, bias, target, options):
        arrays = [_plain(h), _plain(W), None if bias is None else _plain(bias), _plain(target)]
        eager = options["reduction"] != "none" and ctx.needs_input_grad[:3] != (False,) * 3
        loss = sn.linear_cross_entropy(*arrays[:2], arrays[3], bias=arrays[2],
                                       return_grad=eager, **options)  # fmt: skip
        if eager:
            loss, grads = loss
            ctx.save_for_backward(*(g for g in grads if g is not None))
        else:
            ctx.save_for_backward(*(a for a in arrays if a is not None))
        ctx.eager, ctx.has_bias, ctx.options = eager, bias is not None, options
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, dloss):
        saved = list(ctx.saved_tensors)
        if ctx.eager:
            grads = [g * dloss for g in saved]
        else:
            h, W, *rest = saved
            bias = rest[0] if ctx.has_bias else None
            target = rest[-1]
            _, grads = _linear_cross_entropy(
                h.numpy(), W.numpy(), target.numpy(), bias=None if bias is None else bias.numpy(),
                return_grad=True, return_lse=False, return_entropy=False,
                upstream=_plain(dloss).to(h.dtype).numpy(), **ctx.options,
            )  # fmt: skip
            grads = [torch.from_numpy(g) for g in grads if g is not None]
        dh, dW = grads[0], grads[1]
        dbias = grads[2] if ctx.has_bias else None
        return dh, dW, dbias, None, None


def linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    class_weights: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""``cross_entropy(F.linear(input, weight, bias), target)`` through
    :func:`softmax_numba.linear_cross_entropy`, differentiable in ``input``,
    ``weight`` and ``bias``; CPU tensors of float32 or float64.

    ``input`` is ``(..., d)``, ``weight`` ``(V, d)`` (as ``torch.nn.Linear``'s),
    ``target`` the class indices ``(...)``; ``ignore_index=-100`` as in torch.  The
    ``N x V`` logits never exist whole, in the forward pass nor in the backward one.
    """
    options = {
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "ignore_index": ignore_index,
        "z_loss": z_loss,
        "softcap": softcap,
        "class_weights": None if class_weights is None else _plain(class_weights).numpy(),
        "chunk_size": chunk_size,
        "backend": "auto",
    }
    return _LinearCrossEntropy.apply(input, weight, bias, target, options)
