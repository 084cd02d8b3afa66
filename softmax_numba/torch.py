"""PyTorch autograd functions over the kernels (the ``[torch]`` extra).

Each function takes tensors, CPU or CUDA, in torch's conventions (``dim=``,
``keepdim=``, the class dimension 1 of ``cross_entropy``, ``weight=``,
``ignore_index=-100``) and returns tensors of the input's dtype and device.  The
forward pass is the plain API (:mod:`softmax_numba`, tensors viewed without a copy,
see ``softmax_numba._interop``).

The backward pass has two forms:

- the first derivative (``loss.backward()``, ``torch.autograd.grad``) runs our
  vector-Jacobian product kernels (``softmax_backward``, ``log_softmax_backward``,
  ``sparsemax_backward``, ``entmax15_backward``) or, for cross-entropy, scales the
  gradient computed with the loss in the same kernel;
- with ``create_graph=True`` (gradient penalties, Hessian-vector products,
  meta-learning) the same vector-Jacobian product is written in torch operations on
  the saved output (``softmax``: :math:`y \\odot (dy - \\langle y, dy\\rangle)`), so
  that it is itself differentiable, to any order; the losses differentiate a
  torch-operation form of the loss around our ``log_softmax`` and ``logsumexp``.
  ``torch.autograd.gradgradcheck`` passes in float64 for every function.

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

try:
    import torch
except ImportError:  # pragma: no cover - the test extra installs torch
    raise ImportError(
        "softmax_numba.torch needs PyTorch: from a checkout, pip install -e '.[torch]' "
        "(or pip install torch)"
    ) from None

import softmax_numba as sn
from softmax_numba._interop import _torch_in, _torch_out
from softmax_numba._linear import _linear_cross_entropy

__all__ = [
    "cross_entropy",
    "entmax15",
    "entmax_bisect",
    "linear_cross_entropy",
    "log_softmax",
    "log_stablemax",
    "logcumsumexp",
    "logsumexp",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_softmax",
    "softmax",
    "sparsemax",
    "stablemax",
    "stablemax_cross_entropy",
]

Dim = int | tuple[int, ...]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor without its autograd history, as the plain API takes it."""
    return tensor.detach()


def _building_graph() -> bool:
    """Whether this backward pass records a graph (``create_graph=True``): autograd
    runs a backward pass with grad mode on exactly then."""
    return torch.is_grad_enabled()


# ----------------------------------------------------------------------------- row maps
# Vector-Jacobian products in torch operations, differentiable in ``y`` and ``dy``:
# the double-backward form of each map (the first derivative runs our kernels).
def _softmax_vjp(y: torch.Tensor, dy: torch.Tensor, dim: Dim) -> torch.Tensor:
    return y * (dy - (y * dy).sum(dim, keepdim=True))


def _log_softmax_vjp(y: torch.Tensor, dy: torch.Tensor, dim: Dim) -> torch.Tensor:
    return dy - y.exp() * dy.sum(dim, keepdim=True)


def _entmax_vjp(y: torch.Tensor, dy: torch.Tensor, dim: Dim, alpha: float) -> torch.Tensor:
    """The alpha-entmax Jacobian applied to ``dy`` (Peters, Niculae & Martins 2019,
    Prop. 1): ``g = y^(2 - alpha)`` on the support, ``dx = g (dy - <g, dy> / sum g)``;
    sparsemax is ``alpha = 2`` (``g`` the support's indicator).  ``y`` is replaced by
    1 off the support before the power, so that the power's derivative at 0 (infinite
    for ``alpha > 1``) never meets the zero that ``where`` sends it: no NaN."""
    support = y > 0
    g = torch.where(support, torch.where(support, y, 1.0) ** (2.0 - alpha), 0.0)
    gdy = g * dy
    return gdy - g * (gdy.sum(dim, keepdim=True) / g.sum(dim, keepdim=True))


def _sparsemax_vjp(y, dy, dim):
    return _entmax_vjp(y, dy, dim, alpha=2.0)


def _entmax15_vjp(y, dy, dim):
    return _entmax_vjp(y, dy, dim, alpha=1.5)


class _RowMap(torch.autograd.Function):
    """``y = forward(x)`` along ``dim``; ``dx = kernel_vjp(y, dy)`` (ours), or
    ``graph_vjp(y, dy, dim)`` in torch operations when the backward pass builds a
    graph."""

    @staticmethod
    def forward(ctx, x, dim, forward, kernel_vjp, graph_vjp, options):
        y = forward(_plain(x), axis=dim, **options)
        ctx.save_for_backward(y)
        ctx.dim, ctx.kernel_vjp, ctx.graph_vjp = dim, kernel_vjp, graph_vjp
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        if _building_graph():
            dx = ctx.graph_vjp(y, dy, ctx.dim)
        else:
            dx = ctx.kernel_vjp(_plain(y), _plain(dy), axis=ctx.dim)
        return dx, None, None, None, None, None


class _OptionsMap(torch.autograd.Function):
    """:class:`_RowMap` for softmax and log-softmax with a temperature ``T`` and a
    sink ``c`` (a number or a tensor, learnable): with ``y = x / T``, ``dx = vjp(dy)
    / T`` and ``dc = -sum_j vjp(dy)_j`` (shifting every ``y_j`` and ``c`` alike
    changes nothing), summed to ``c``'s shape."""

    @staticmethod
    def forward(ctx, x, sink, dim, forward, kernel_vjp, graph_vjp, temperature):
        plain_sink = _plain(sink) if isinstance(sink, torch.Tensor) else sink
        y = forward(_plain(x), axis=dim, temperature=temperature, sink=plain_sink)
        ctx.save_for_backward(y)
        ctx.dim, ctx.kernel_vjp, ctx.graph_vjp = dim, kernel_vjp, graph_vjp
        ctx.temperature = 1.0 if temperature is None else temperature
        ctx.sink_shape = sink.shape if isinstance(sink, torch.Tensor) else None
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        if _building_graph():
            dz = ctx.graph_vjp(y, dy, ctx.dim)
        else:
            dz = ctx.kernel_vjp(_plain(y), _plain(dy), axis=ctx.dim)
        dx = dz / ctx.temperature if ctx.temperature != 1.0 else dz
        dsink = None
        if ctx.needs_input_grad[1]:
            dsink = (-dz.sum(ctx.dim)).sum_to_size(ctx.sink_shape)
        return dx, dsink, None, None, None, None, None


def softmax(
    input: torch.Tensor,
    dim: Dim = -1,
    *,
    temperature: float | None = None,
    sink: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Softmax along ``dim``, :math:`y_i = e^{x_i - m} / \sum_j e^{x_j - m}`,
    differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Logits, CPU or CUDA, float16, bfloat16 (CPU), float32 or float64.
    dim : int or tuple of int, default -1
        The axis (or axes, taken together) the probabilities sum to 1 along.
    temperature : float > 0, optional
        Softmax of ``input / temperature`` (:func:`softmax_numba.softmax`); the
        gradient carries the ``1 / temperature``.
    sink : float or torch.Tensor, optional
        An attention sink ``c``: :math:`y_i = e^{x_i} / (e^{c} + \sum_j e^{x_j})`;
        a tensor (a number, or one per row: ``input``'s shape without ``dim``)
        may require grad, and gets :math:`dc = -\sum_j dx_j` (times ``T``).

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.softmax` of ``input``, of its dtype and device.

    Notes
    -----
    Backward: :func:`softmax_numba.softmax_backward`,
    :math:`dx = y \odot (dy - \langle y, dy\rangle)`; with ``create_graph=True`` the
    same formula in torch operations.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    >>> y = snt.softmax(x, dim=-1)
    >>> [round(v, 4) for v in y[0].tolist()]
    [0.09, 0.2447, 0.6652]
    >>> y[0, 2].backward()
    >>> [round(v, 4) for v in x.grad[0].tolist()]
    [-0.0599, -0.1628, 0.2227]
    """
    if temperature is not None or sink is not None:
        return _OptionsMap.apply(
            input, sink, dim, sn.softmax, sn.softmax_backward, _softmax_vjp, temperature
        )
    return _RowMap.apply(input, dim, sn.softmax, sn.softmax_backward, _softmax_vjp, {})


def log_softmax(
    input: torch.Tensor,
    dim: Dim = -1,
    *,
    temperature: float | None = None,
    sink: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Log-softmax along ``dim``, :math:`y_i = (x_i - m) - \log(1 + s)` with
    :math:`m = \max x` and :math:`s = \sum_{j \ne k} e^{x_j - m}`, differentiable to any
    order.

    Parameters
    ----------
    input : torch.Tensor
        Logits, CPU or CUDA, float16, bfloat16 (CPU), float32 or float64.
    dim : int or tuple of int, default -1
        The axis (or axes, taken together) to normalize along.
    temperature, sink : optional
        As in :func:`softmax`.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.log_softmax` of ``input``, of its dtype and device.

    Notes
    -----
    Backward: :func:`softmax_numba.log_softmax_backward`,
    :math:`dx = dy - e^{y} \sum_j dy_j`; with ``create_graph=True`` the same formula
    in torch operations.

    Examples
    --------
    A gradient penalty, which differentiates the gradient:

    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> out = snt.log_softmax(x, dim=-1)[:, 0].sum()
    >>> (gx,) = torch.autograd.grad(out, x, create_graph=True)
    >>> (out + (gx**2).sum()).backward()
    >>> x_ref = x.detach().clone().requires_grad_()
    >>> out_ref = torch.log_softmax(x_ref, -1)[:, 0].sum()
    >>> (g_ref,) = torch.autograd.grad(out_ref, x_ref, create_graph=True)
    >>> (out_ref + (g_ref**2).sum()).backward()
    >>> torch.allclose(x.grad, x_ref.grad, rtol=1e-12, atol=1e-15)
    True
    """
    if temperature is not None or sink is not None:
        return _OptionsMap.apply(
            input, sink, dim, sn.log_softmax, sn.log_softmax_backward, _log_softmax_vjp,
            temperature,
        )  # fmt: skip
    return _RowMap.apply(input, dim, sn.log_softmax, sn.log_softmax_backward, _log_softmax_vjp, {})


def sparsemax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Sparsemax along ``dim``, the Euclidean projection of ``input`` onto the
    probability simplex (Martins & Astudillo 2016), differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Scores, CPU or CUDA (float32 or float64 on CUDA).
    dim : int, default -1
        The axis to project along.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.sparsemax` of ``input``: probabilities, many exactly 0.

    Notes
    -----
    Backward: :func:`softmax_numba.sparsemax_backward`, :math:`dx = s \odot (dy -
    \langle s, dy\rangle / |s|)` with ``s`` the support's indicator; the Jacobian is
    constant on each support, so the second derivative is 0 (away from the points
    where the support changes).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> p = snt.sparsemax(torch.tensor([0.1, 1.2, 1.0, -3.0], dtype=torch.float64))
    >>> [round(v, 4) for v in p.tolist()]
    [0.0, 0.6, 0.4, 0.0]
    """
    return _RowMap.apply(input, dim, sn.sparsemax, sn.sparsemax_backward, _sparsemax_vjp, {})


def entmax15(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""1.5-entmax along ``dim`` (Peters, Niculae & Martins 2019), exact (no
    bisection), differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Scores, CPU or CUDA (float32 or float64 on CUDA).
    dim : int, default -1
        The axis to normalize along.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.entmax15` of ``input``: sparse probabilities.

    Notes
    -----
    Backward: :func:`softmax_numba.entmax15_backward`, :math:`dx = g \odot (dy -
    \langle g, dy\rangle / \sum g)` with :math:`g = \sqrt{y}` on the support.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> p = snt.entmax15(torch.tensor([0.1, 1.2, 1.0, -3.0], dtype=torch.float64))
    >>> [round(v, 4) for v in p.tolist()]
    [0.0369, 0.5508, 0.4123, 0.0]
    """
    return _RowMap.apply(input, dim, sn.entmax15, sn.entmax15_backward, _entmax15_vjp, {})


def entmax_bisect(
    input: torch.Tensor, alpha: float = 1.5, dim: int = -1, n_iter: int = 50
) -> torch.Tensor:
    r"""alpha-entmax along ``dim`` by bisection (Peters, Niculae & Martins 2019),
    differentiable to any order in ``input`` (not in ``alpha``).

    Parameters
    ----------
    input : torch.Tensor
        Scores, CPU or CUDA (float32 or float64 on CUDA).
    alpha : float > 1, default 1.5
        The entmax parameter: 2 is sparsemax; towards 1 it tends to softmax.
    dim : int, default -1
        The axis to normalize along.
    n_iter : int, default 50
        Bisection steps on the threshold.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.entmax_bisect` of ``input``.

    Notes
    -----
    Backward, in torch operations (there is no kernel for it):
    :math:`dx = g \odot (dy - \langle g, dy\rangle / \sum g)`, :math:`g = y^{2 -
    \alpha}` on the support (Peters, Niculae & Martins, "Sparse sequence-to-sequence
    models", ACL 2019, Prop. 1).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([0.1, 1.2, 1.0, -3.0], dtype=torch.float64)
    >>> torch.allclose(snt.entmax_bisect(x, alpha=1.5, n_iter=80), snt.entmax15(x))
    True
    """

    def vjp(y, dy, dim):
        return _entmax_vjp(y, dy, dim, alpha)

    def kernel_vjp(y, dy, *, axis):
        return vjp(y, dy, axis)

    options = {"alpha": alpha, "n_iter": n_iter}
    return _RowMap.apply(input, dim, sn.entmax_bisect, kernel_vjp, vjp, options)


class _LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, keepdim):
        ctx.save_for_backward(x)
        ctx.dim, ctx.keepdim = dim, keepdim
        return sn.logsumexp(_plain(x), axis=dim, keepdims=keepdim)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        dims = (ctx.dim,) if isinstance(ctx.dim, int) else ctx.dim
        if not ctx.keepdim:
            for d in sorted(d % x.ndim for d in dims):
                dy = dy.unsqueeze(d)
        if _building_graph():  # our softmax, itself differentiable
            return dy * softmax(x, ctx.dim), None, None
        return dy * sn.softmax(_plain(x), axis=ctx.dim), None, None


def logsumexp(input: torch.Tensor, dim: Dim, keepdim: bool = False) -> torch.Tensor:
    r"""Log-sum-exp over ``dim``, :math:`m + \log(1 + s)` (Blanchard, Higham & Higham
    2021), as ``torch.logsumexp``, differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Values, CPU or CUDA, float16, bfloat16 (CPU), float32 or float64.
    dim : int or tuple of int
        The axis or axes to reduce.
    keepdim : bool, default False
        Keep the reduced axes with length 1.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.logsumexp` of ``input``.

    Notes
    -----
    Backward: :math:`dx = dy \cdot \operatorname{softmax}(x)` (our softmax kernel;
    with ``create_graph=True`` our differentiable :func:`softmax`).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> snt.logsumexp(torch.tensor([[1000.0, 1000.0]], dtype=torch.float64), dim=1)
    tensor([1000.6931], dtype=torch.float64)
    """
    return _LogSumExp.apply(input, dim, keepdim)


# ----------------------------------------------------------------------------- logcumsumexp
def _logcumsumexp_vjp(x, dy, dim: int, reverse: bool, scan) -> torch.Tensor:
    """``dx_i = sum_{k >= i} dy_k exp(x_i - y_k)`` (``k <= i`` for ``reverse``), by
    ``scan`` (a logcumsumexp) in the log domain: ``x`` shifted by its row maximum
    ``c`` (a constant: the shift cancels), ``z = x - c``, ``w = logcumsumexp(z)``,
    and ``dx = exp(z + A+) - exp(z + A-)`` with ``A+- = logcumsumexp(log(dy+-) -
    w)`` scanned the other way over the positive and the negative parts of ``dy``.
    Every exponent and log is of the size of the row's spread, not of its offset
    (``x_i - y_k`` from ``x`` and ``y`` themselves would lose ``u |y_k|``)."""
    with torch.no_grad():
        c = x.amax(dim, keepdim=True)
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    z = x - c
    w = scan(z, dim, reverse=reverse)
    minus_inf = torch.full_like(w, -torch.inf)

    def part(g):
        log_g = torch.where(g > 0, torch.log(torch.where(g > 0, g, 1)), minus_inf)
        a = scan(torch.where(w == -torch.inf, minus_inf, log_g - w), dim, reverse=not reverse)
        return torch.exp(z + a)

    return part(dy) - part(-dy)


class _LogCumSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, reverse):
        ctx.save_for_backward(x)
        ctx.dim, ctx.reverse = dim, reverse
        return sn.logcumsumexp(_plain(x), dim, reverse=reverse)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        if _building_graph():  # our differentiable logcumsumexp, itself
            return _logcumsumexp_vjp(x, dy, ctx.dim, ctx.reverse, logcumsumexp), None, None

        def scan(z, dim, reverse):
            return sn.logcumsumexp(z, dim, reverse=reverse)

        return _logcumsumexp_vjp(_plain(x), _plain(dy), ctx.dim, ctx.reverse, scan), None, None


def logcumsumexp(input: torch.Tensor, dim: int, *, reverse: bool = False) -> torch.Tensor:
    r"""Cumulative log-sum-exp along ``dim``, :math:`y_k = \log \sum_{i \le k} e^{x_i}`,
    as ``torch.logcumsumexp``, differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Values, CPU or CUDA, float16, bfloat16 (CPU), float32 or float64.
    dim : int
        The axis to accumulate along.
    reverse : bool, default False
        Accumulate from the end, :math:`y_k = \log \sum_{i \ge k} e^{x_i}` (as
        ``jax.lax.cumlogsumexp(..., reverse=True)``).

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.logcumsumexp` of ``input``, of its dtype and device.

    Notes
    -----
    Backward: :math:`dx_i = \sum_{k \ge i} dy_k e^{x_i - y_k}`, the upstream
    gradient weighted by each prefix's softmax, computed in the log domain with our
    logcumsumexp, scanned the other way over the positive and the negative parts of
    ``dy`` (as ``torch.logcumsumexp``'s backward does), on ``x`` shifted by its row
    maximum: no exponent is of the size of the offset of ``x``.  With
    ``create_graph=True`` the same formula through this differentiable function.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    >>> y = snt.logcumsumexp(x, 0)
    >>> [round(v, 6) for v in y.tolist()]
    [0.0, 0.693147, 1.098612]
    >>> y[2].backward()  # the last prefix's softmax: 1/3 each
    >>> [round(v, 6) for v in x.grad.tolist()]
    [0.333333, 0.333333, 0.333333]
    """
    return _LogCumSumExp.apply(input, dim, reverse)


# ----------------------------------------------------------------------------- segments
def _segment_ids(offsets: torch.Tensor, device) -> torch.Tensor:
    """The segment of every entry, on ``device``."""
    offsets = offsets.to(device)
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)


def _segment_sum(values: torch.Tensor, offsets: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The sum over each segment, ``(S,) + values.shape[1:]`` (``index_add``,
    differentiable)."""
    zeros = values.new_zeros((offsets.numel() - 1, *values.shape[1:]))
    return zeros.index_add(0, ids, values)


def _segment_softmax_vjp(y, dy, offsets):
    ids = _segment_ids(offsets, y.device)
    return y * (dy - _segment_sum(y * dy, offsets, ids)[ids])


def _segment_log_softmax_vjp(y, dy, offsets):
    ids = _segment_ids(offsets, y.device)
    return dy - y.exp() * _segment_sum(dy, offsets, ids)[ids]


class _SegmentMap(torch.autograd.Function):
    """``y = forward(values, offsets)``; ``dx = kernel_vjp(y, dy, offsets)`` (ours), or
    ``graph_vjp(y, dy, offsets)`` in torch operations when the backward pass builds a
    graph."""

    @staticmethod
    def forward(ctx, x, offsets, forward, kernel_vjp, graph_vjp):
        y = forward(_plain(x), offsets)
        ctx.save_for_backward(y, offsets)
        ctx.kernel_vjp, ctx.graph_vjp = kernel_vjp, graph_vjp
        return y

    @staticmethod
    def backward(ctx, dy):
        y, offsets = ctx.saved_tensors
        if _building_graph():
            dx = ctx.graph_vjp(y, dy, offsets)
        else:
            dx = ctx.kernel_vjp(_plain(y), _plain(dy), offsets)
        return dx, None, None, None, None


def _offsets_tensor(offsets) -> torch.Tensor:
    return offsets if isinstance(offsets, torch.Tensor) else torch.as_tensor(offsets)


def segment_softmax(input: torch.Tensor, offsets) -> torch.Tensor:
    r"""Softmax over each ragged segment (:func:`softmax_numba.segment_softmax`),
    differentiable to any order; the graph-attention softmax of
    ``torch_geometric.utils.softmax(src, ptr=offsets)``.

    Parameters
    ----------
    input : torch.Tensor
        Logits of shape ``(nnz, ...)``, CPU or CUDA; each trailing position (a head)
        is normalized apart.
    offsets : torch.Tensor or array_like of int
        CSR row pointers, length ``S + 1``: segment ``j`` is
        ``input[offsets[j]:offsets[j + 1]]``.

    Returns
    -------
    torch.Tensor
        ``input``'s shape, dtype and device.

    Notes
    -----
    Backward: :math:`dx_i = y_i (dy_i - \sum_{k \in S_j} y_k dy_k)`
    (:func:`softmax_numba.segment_softmax_backward`; with ``create_graph=True`` the
    same in torch operations).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([1.0, 2.0, 3.0, 0.0], dtype=torch.float64, requires_grad=True)
    >>> y = snt.segment_softmax(x, torch.tensor([0, 3, 4]))
    >>> y.detach()
    tensor([0.0900, 0.2447, 0.6652, 1.0000], dtype=torch.float64)
    >>> y[0].backward()
    >>> x.grad
    tensor([ 0.0819, -0.0220, -0.0599,  0.0000], dtype=torch.float64)
    """
    return _SegmentMap.apply(
        input, _offsets_tensor(offsets), sn.segment_softmax, sn.segment_softmax_backward,
        _segment_softmax_vjp,
    )  # fmt: skip


def segment_log_softmax(input: torch.Tensor, offsets) -> torch.Tensor:
    r"""Log-softmax over each ragged segment (:func:`softmax_numba.segment_log_softmax`),
    differentiable to any order.

    Parameters
    ----------
    input, offsets
        As in :func:`segment_softmax`.

    Returns
    -------
    torch.Tensor
        ``input``'s shape, dtype and device.

    Notes
    -----
    Backward: :math:`dx_i = dy_i - e^{y_i} \sum_{k \in S_j} dy_k`
    (:func:`softmax_numba.segment_log_softmax_backward`).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([1e4, 1e4 + 1.0, 5.0], dtype=torch.float64)
    >>> snt.segment_log_softmax(x, torch.tensor([0, 2, 3]))
    tensor([-1.3133, -0.3133,  0.0000], dtype=torch.float64)
    """
    return _SegmentMap.apply(
        input, _offsets_tensor(offsets), sn.segment_log_softmax,
        sn.segment_log_softmax_backward, _segment_log_softmax_vjp,
    )  # fmt: skip


class _SegmentLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offsets):
        ctx.save_for_backward(x, offsets)
        return sn.segment_logsumexp(_plain(x), offsets)

    @staticmethod
    def backward(ctx, dy):
        x, offsets = ctx.saved_tensors
        ids = _segment_ids(offsets, x.device)
        if _building_graph():  # our segment softmax, itself differentiable
            return dy[ids] * segment_softmax(x, offsets), None
        return dy[ids] * sn.segment_softmax(_plain(x), offsets), None


def segment_logsumexp(input: torch.Tensor, offsets) -> torch.Tensor:
    r"""Log-sum-exp of each ragged segment (:func:`softmax_numba.segment_logsumexp`),
    differentiable to any order.

    Parameters
    ----------
    input, offsets
        As in :func:`segment_softmax`.

    Returns
    -------
    torch.Tensor
        Shape ``(S,) + input.shape[1:]``; ``-inf`` for an empty segment.

    Notes
    -----
    Backward: :math:`dx_i = dy_j \operatorname{softmax}(x)_i` for the entries
    :math:`i` of segment :math:`j` (our segment softmax).

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([1000.0, 1000.0, 3.0], dtype=torch.float64)
    >>> snt.segment_logsumexp(x, torch.tensor([0, 2, 2, 3]))
    tensor([1000.6931,      -inf,    3.0000], dtype=torch.float64)
    """
    return _SegmentLogSumExp.apply(input, _offsets_tensor(offsets))


# ----------------------------------------------------------------------------- losses
def _loss_in_torch_ops(logits, target, options) -> torch.Tensor:
    """The cross-entropy of ``logits`` (classes last) in torch operations around our
    differentiable :func:`log_softmax` and :func:`logsumexp`, as
    :func:`softmax_numba.reference.cross_entropy_options` writes it: the form that a
    backward pass building a graph differentiates (its value is the kernel's loss, to
    rounding)."""
    n = logits.shape[-1]
    eps = options["label_smoothing"]
    softcap, z_loss = options.get("softcap"), options.get("z_loss", 0.0)
    y = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    logp = log_softmax(y, -1)
    if target.is_floating_point():
        q = (1 - eps) * target + eps / n
        if options.get("class_weights") is not None:  # PyTorch's w_j q_j; "mean" still / N
            q = q * options["class_weights"]
        valid = torch.ones(q.shape[:-1], dtype=torch.bool, device=q.device)
        total = valid.sum()
    else:
        ignore = options["ignore_index"]
        valid = torch.ones_like(target, dtype=torch.bool) if ignore is None else target != ignore
        safe = torch.where(valid, target, 0)
        weights = options.get("class_weights")
        w = torch.ones(n, dtype=y.dtype, device=y.device) if weights is None else weights
        q = (eps / n) * w.expand(*safe.shape, n).clone()
        q.scatter_add_(-1, safe.unsqueeze(-1), ((1 - eps) * w[safe]).unsqueeze(-1))
        q = q * valid.unsqueeze(-1)
        total = (w[safe] * valid).sum()
    per_row = -torch.where(q == 0, 0.0, q * logp).sum(-1)
    per_row_z = torch.where(valid, z_loss * logsumexp(y, -1) ** 2, 0.0) if z_loss else 0.0
    reduction = options["reduction"]
    if reduction == "mean":  # the z-loss is divided by the rows that count, not the weights
        return per_row.sum() / total + (per_row_z.sum() / valid.sum() if z_loss else 0.0)
    per_row = per_row + per_row_z
    return per_row.sum() if reduction == "sum" else per_row


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, class_weights, dim, options):
        plain_options = dict(options)
        if class_weights is not None:
            plain_options["class_weights"] = _plain(class_weights)
        loss, grad = sn.cross_entropy(
            _plain(logits), _plain(target), axis=dim, return_grad=True, **plain_options
        )
        ctx.save_for_backward(grad, logits, target, class_weights)
        ctx.dim, ctx.options = dim, options
        return loss

    @staticmethod
    def backward(ctx, dloss):
        grad, logits, target, class_weights = ctx.saved_tensors
        if _building_graph():
            options = {**ctx.options, "class_weights": class_weights}
            moved = logits.movedim(ctx.dim, -1)
            target = target.movedim(ctx.dim, -1) if target.is_floating_point() else target
            loss = _loss_in_torch_ops(moved, target, options)
            (dlogits,) = torch.autograd.grad(loss, logits, dloss, create_graph=True)
            return dlogits, None, None, None, None
        if ctx.options["reduction"] == "none":
            dloss = dloss.unsqueeze(ctx.dim)
        return _plain(grad) * dloss, None, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of softmax in the conventions of
    ``torch.nn.functional.cross_entropy``, fused with its gradient, differentiable to
    any order in ``input`` (not in a probability ``target``, nor in ``weight``).

    Parameters
    ----------
    input : torch.Tensor
        Logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: classes along dimension 1
        (0 for a 1-D input).
    target : torch.Tensor
        Class indices (``input``'s shape without the class dimension) or
        probabilities (``input``'s shape).
    weight : torch.Tensor, shape (C,), optional
        Non-negative class weights, as torch's ``weight=`` (CPU): ``"mean"`` divides
        by the sum of the targets' weights (by the number of rows for probabilities).
    ignore_index : int, default -100
        Class-index targets equal to it give zero loss and gradient.
    reduction : {"mean", "sum", "none"}
        As torch's.
    label_smoothing : float in [0, 1]
        ``q = (1 - eps) q + eps / C``.
    z_loss : float >= 0
        Adds ``z_loss * lse**2`` per row (PaLM; CPU).
    softcap : float > 0, optional
        Replaces each logit by ``softcap * tanh(x / softcap)`` first (Gemma 2; CPU).

    Returns
    -------
    torch.Tensor
        The loss: a 0-d tensor, or one per row for ``reduction="none"``.

    Notes
    -----
    The forward pass computes the loss and its gradient in one kernel
    (:func:`softmax_numba.cross_entropy`); the backward pass scales the saved
    gradient by the upstream one.  With ``create_graph=True`` the backward pass
    differentiates the loss written in torch operations around our
    :func:`log_softmax` and :func:`logsumexp`, so the gradient is itself
    differentiable.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from softmax_numba import torch as snt
    >>> x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    >>> t = torch.tensor([1, 0, 9, -100])
    >>> torch.allclose(snt.cross_entropy(x, t, label_smoothing=0.1),
    ...                F.cross_entropy(x, t, label_smoothing=0.1))
    True
    """
    dim = 1 if input.ndim >= 2 else 0
    options = {
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "ignore_index": None if target.is_floating_point() else ignore_index,
    }
    if z_loss:
        options["z_loss"] = z_loss
    if softcap is not None:
        options["softcap"] = softcap
    return _CrossEntropy.apply(input, target, weight, dim, options)


class _LinearCrossEntropy(torch.autograd.Function):
    """The loss; with a ``"mean"`` or ``"sum"`` reduction the gradients are computed
    with it (as Liger-Kernel does) and scaled in the backward pass; with ``"none"`` the
    backward pass sweeps again, weighting each row by its upstream gradient.  A
    backward pass that builds a graph differentiates the materialized form instead."""

    @staticmethod
    def forward(ctx, h, W, bias, target, class_weights, options):
        plain_weights = None if class_weights is None else _plain(class_weights)
        arrays = [_plain(h), _plain(W), None if bias is None else _plain(bias), _plain(target)]
        eager = options["reduction"] != "none" and ctx.needs_input_grad[:3] != (False,) * 3
        loss = sn.linear_cross_entropy(*arrays[:2], arrays[3], bias=arrays[2],
                                       class_weights=plain_weights, return_grad=eager,
                                       **options)  # fmt: skip
        ctx.graph_inputs = (h, W, bias, target, class_weights)
        if eager:
            loss, grads = loss
            ctx.save_for_backward(*(g for g in grads if g is not None))
        else:
            ctx.save_for_backward(*(a for a in arrays if a is not None))
        ctx.eager, ctx.has_bias, ctx.options = eager, bias is not None, options
        ctx.class_weights = None if plain_weights is None else plain_weights.numpy()
        return loss

    @staticmethod
    def backward(ctx, dloss):
        if _building_graph():
            return _LinearCrossEntropy._graph_backward(ctx, dloss)
        saved = list(ctx.saved_tensors)
        if ctx.eager:
            # loss.backward() passes 1: no product, no second rounding in low precision
            grads = saved if bool((dloss == 1).all()) else [g * dloss for g in saved]
        else:
            h, W, *rest = saved
            bias = rest[0] if ctx.has_bias else None
            target = rest[-1]
            host = [None if t is None else _torch_in("linear_cross_entropy", t, "input")
                    for t in (h, W, target, bias)]  # fmt: skip
            _, grads = _linear_cross_entropy(
                *host[:3], bias=host[3], class_weights=ctx.class_weights, return_grad=True,
                return_lse=False, return_entropy=False, library="torch",
                upstream=_plain(dloss).double().numpy(), **ctx.options,
            )  # fmt: skip
            grads = [_torch_out(g, None) for g in grads if g is not None]
        dh, dW = grads[0], grads[1]
        dbias = grads[2] if ctx.has_bias else None
        return dh, dW, dbias, None, None, None

    @staticmethod
    def _graph_backward(ctx, dloss):
        """The gradients as differentiable tensors, from the materialized logits
        ``F.linear(h, W, bias)`` and the torch-operation loss (the ``N x V`` logits
        exist whole here: a second derivative needs them)."""
        h, W, bias, target, class_weights = ctx.graph_inputs
        options = {**ctx.options, "class_weights": class_weights}
        wanted = [t for t in (h, W, bias) if t is not None and t.requires_grad]
        logits = torch.nn.functional.linear(h, W, bias)
        loss = _loss_in_torch_ops(logits, target, options)
        grads = iter(torch.autograd.grad(loss, wanted, dloss, create_graph=True))
        dh, dW, dbias = (
            next(grads) if t is not None and t.requires_grad else None for t in (h, W, bias)
        )
        return dh, dW, dbias, None, None, None


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
    grad_threshold: float = 0.0,
) -> torch.Tensor:
    r"""``cross_entropy(F.linear(input, weight, bias), target)`` through
    :func:`softmax_numba.linear_cross_entropy`, differentiable in ``input``,
    ``weight`` and ``bias``; CPU tensors of float32 or float64, or bfloat16 and
    float16 (computed in float32 a block at a time, the gradients in the input's
    dtype).  The matrix products are torch's (``mm``, ``addmm_``) on the tensors
    themselves, without a copy.

    The ``N x V`` logits never exist whole, in the forward pass nor in the backward
    one.  The class weights are ``class_weights=`` here, not torch's ``weight=``,
    because ``weight`` is the linear layer's matrix (as in ``F.linear``).

    Parameters
    ----------
    input : torch.Tensor
        Hidden states ``(..., d)``.
    weight : torch.Tensor
        The classifier's matrix ``(V, d)``, as ``torch.nn.Linear.weight``.
    target : torch.Tensor
        Class indices, ``input``'s shape without its last dimension.
    bias : torch.Tensor, shape (V,), optional
        The classifier's bias.
    ignore_index : int, default -100
        Targets equal to it give zero loss and gradient.
    reduction : {"mean", "sum", "none"}
        As torch's.
    label_smoothing, z_loss, softcap
        As in :func:`cross_entropy`.
    class_weights : torch.Tensor, shape (V,), optional
        Non-negative class weights (torch's ``weight=`` of ``F.cross_entropy``).
    chunk_size : int, optional
        Vocabulary entries per chunk (default: planned within
        ``config.LINEAR_CE_WORKSPACE_BYTES``).
    grad_threshold : float in [0, 1), default 0
        Gradient filtering (see :func:`softmax_numba.linear_cross_entropy`); 0 is exact.

    Returns
    -------
    torch.Tensor
        The loss: a 0-d tensor, or one per row for ``reduction="none"``.

    Notes
    -----
    With ``"mean"`` or ``"sum"`` the gradients are computed with the loss and scaled
    by the upstream gradient in the backward pass: for bfloat16 and float16 a
    second rounding, unless the upstream gradient is 1 (``loss.backward()``).

    A backward pass with ``create_graph=True`` (a second derivative) differentiates
    the materialized form ``F.linear`` + the loss in torch operations: correct, but it
    holds the ``N x V`` logits, which the first derivative never does.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from softmax_numba import torch as snt
    >>> h = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    >>> W = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    >>> t = torch.randint(0, 50, (6,))
    >>> loss = snt.linear_cross_entropy(h, W, t)
    >>> torch.allclose(loss, F.cross_entropy(F.linear(h, W), t))
    True
    >>> loss.backward()
    >>> h.grad.shape, W.grad.shape
    (torch.Size([6, 8]), torch.Size([50, 8]))
    """
    options = {
        "reduction": reduction,
        "label_smoothing": label_smoothing,
        "ignore_index": ignore_index,
        "z_loss": z_loss,
        "softcap": softcap,
        "chunk_size": chunk_size,
        "grad_threshold": grad_threshold,
        "backend": "auto",
    }
    return _LinearCrossEntropy.apply(input, weight, bias, target, class_weights, options)


# ----------------------------------------------------------------------------- stablemax
# StableMax (Prieto, Barsbey, Mediano & Birdal, ICLR 2025).  Its vector-Jacobian
# products need the input ``x`` as well as the output ``y`` (``s'(x) / s(x) = 1 / (1 +
# |x|)``), so the autograd function saves both.
def _stablemax_vjp(x: torch.Tensor, y: torch.Tensor, dy: torch.Tensor, dim: Dim) -> torch.Tensor:
    return y * (dy - (y * dy).sum(dim, keepdim=True)) / (1 + x.abs())


def _log_stablemax_vjp(x, y, dy, dim):
    return (dy - y.exp() * dy.sum(dim, keepdim=True)) / (1 + x.abs())


def _stablemax_kernel_vjp(x, y, dy, dim):
    return sn.stablemax_backward(y, dy, x, axis=dim)


def _log_stablemax_kernel_vjp(x, y, dy, dim):
    # log-softmax's product (our kernel), divided by 1 + |x|
    return sn.log_softmax_backward(y, dy, axis=dim) / (1 + x.abs())


class _StableMaxMap(torch.autograd.Function):
    """``y = forward(x)`` along ``dim``; ``dx = kernel_vjp(x, y, dy)`` (ours), or
    ``graph_vjp(x, y, dy, dim)`` in torch operations when the backward pass builds a
    graph."""

    @staticmethod
    def forward(ctx, x, dim, forward, kernel_vjp, graph_vjp):
        y = forward(_plain(x), axis=dim)
        ctx.save_for_backward(x, y)
        ctx.dim, ctx.kernel_vjp, ctx.graph_vjp = dim, kernel_vjp, graph_vjp
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved_tensors
        if _building_graph():
            dx = ctx.graph_vjp(x, y, dy, ctx.dim)
        else:
            dx = ctx.kernel_vjp(_plain(x), _plain(y), _plain(dy), ctx.dim)
        return dx, None, None, None, None


def stablemax(input: torch.Tensor, dim: Dim = -1) -> torch.Tensor:
    r"""StableMax along ``dim``, :math:`y_i = s(x_i) / \sum_j s(x_j)` with :math:`s(x)
    = x + 1` (:math:`x \ge 0`), :math:`1 / (1 - x)` (:math:`x < 0`), differentiable
    to any order.

    Parameters
    ----------
    input : torch.Tensor
        Logits, CPU: float16, bfloat16, float32 or float64 (there is no CUDA kernel).
    dim : int or tuple of int, default -1
        The axis (or axes, taken together) the probabilities sum to 1 along.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.stablemax` of ``input``, of its dtype.

    Notes
    -----
    Backward: :func:`softmax_numba.stablemax_backward`, :math:`dx = y \odot (dy -
    \langle y, dy\rangle) / (1 + |x|)`; with ``create_graph=True`` the same formula
    in torch operations.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    >>> y = snt.stablemax(x)
    >>> [round(v, 4) for v in y[0].tolist()]
    [0.1429, 0.2857, 0.5714]
    >>> y[0, 2].backward()
    >>> [round(v, 4) for v in x.grad[0].tolist()]
    [-0.0408, -0.1633, 0.1224]
    """
    return _StableMaxMap.apply(input, dim, sn.stablemax, _stablemax_kernel_vjp, _stablemax_vjp)


def log_stablemax(input: torch.Tensor, dim: Dim = -1) -> torch.Tensor:
    r"""Log of StableMax along ``dim`` (:func:`softmax_numba.log_stablemax`),
    differentiable to any order.

    Parameters
    ----------
    input : torch.Tensor
        Logits, CPU: float16, bfloat16, float32 or float64.
    dim : int or tuple of int, default -1
        The axis (or axes, taken together) to normalize along.

    Returns
    -------
    torch.Tensor
        :func:`softmax_numba.log_stablemax` of ``input``, of its dtype.

    Notes
    -----
    Backward: :math:`dx = (dy - e^{y} \sum_j dy_j) / (1 + |x|)`, our
    :func:`softmax_numba.log_softmax_backward` divided by ``1 + |x|``; with
    ``create_graph=True`` the same formula in torch operations.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    >>> snt.log_stablemax(x)[0, 2].backward()
    >>> [round(v, 4) for v in x.grad[0].tolist()]
    [-0.0714, -0.2857, 0.2143]
    """
    return _StableMaxMap.apply(
        input, dim, sn.log_stablemax, _log_stablemax_kernel_vjp, _log_stablemax_vjp
    )


def _stablemax_loss_in_torch_ops(logits, target, options) -> torch.Tensor:
    """The StableMax cross-entropy of ``logits`` (classes last) in torch operations
    around our differentiable :func:`log_stablemax`: the form that a backward pass
    building a graph differentiates."""
    logp = log_stablemax(logits, -1)
    ignore = options["ignore_index"]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore is None else target != ignore
    safe = torch.where(valid, target, 0)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    per_row = torch.where(valid, -picked, 0.0)
    if options["reduction"] == "mean":
        return per_row.sum() / valid.sum()
    return per_row.sum() if options["reduction"] == "sum" else per_row


class _StableMaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, dim, options):
        loss, grad = sn.stablemax_cross_entropy(
            _plain(logits), _plain(target), axis=dim, return_grad=True, **options
        )
        ctx.save_for_backward(grad, logits, target)
        ctx.dim, ctx.options = dim, options
        return loss

    @staticmethod
    def backward(ctx, dloss):
        grad, logits, target = ctx.saved_tensors
        if _building_graph():
            loss = _stablemax_loss_in_torch_ops(logits.movedim(ctx.dim, -1), target, ctx.options)
            (dlogits,) = torch.autograd.grad(loss, logits, dloss, create_graph=True)
            return dlogits, None, None, None
        if ctx.options["reduction"] == "none":
            dloss = dloss.unsqueeze(ctx.dim)
        return _plain(grad) * dloss, None, None, None


def stablemax_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cross-entropy of StableMax, :math:`-\log \operatorname{stablemax}(x)_t`, in
    the conventions of ``torch.nn.functional.cross_entropy`` (class indices), fused
    with its gradient, differentiable to any order in ``input``.

    Parameters
    ----------
    input : torch.Tensor
        Logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: classes along dimension 1
        (0 for a 1-D input); CPU.
    target : torch.Tensor
        Class indices, ``input``'s shape without the class dimension.
    ignore_index : int, default -100
        Targets equal to it give zero loss and gradient.
    reduction : {"mean", "sum", "none"}
        As torch's.

    Returns
    -------
    torch.Tensor
        The loss: a 0-d tensor, or one per row for ``reduction="none"``.

    Notes
    -----
    The forward pass computes the loss and its gradient :math:`(p - \mathrm{onehot}(t))
    / (1 + |x|)` in one kernel (:func:`softmax_numba.stablemax_cross_entropy`); the
    backward pass scales the saved gradient by the upstream one.  With
    ``create_graph=True`` it differentiates the loss written in torch operations
    around our :func:`log_stablemax`.

    Examples
    --------
    >>> import torch
    >>> from softmax_numba import torch as snt
    >>> x = torch.tensor([[2.0, 1.0, -1.0], [0.5, 2.5, 0.3]], dtype=torch.float64,
    ...                  requires_grad=True)
    >>> loss = snt.stablemax_cross_entropy(x, torch.tensor([0, -100]))
    >>> round(loss.item(), 6)  # -log(3 / 5.5), the second row ignored
    0.606136
    >>> loss.backward()
    >>> [round(v, 4) for v in x.grad[0].tolist()]
    [-0.1515, 0.1818, 0.0455]
    """
    dim = 1 if input.ndim >= 2 else 0
    options = {"reduction": reduction, "ignore_index": ignore_index}
    return _StableMaxCrossEntropy.apply(input, target, dim, options)
