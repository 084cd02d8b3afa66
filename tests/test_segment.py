"""Softmax, log-softmax and log-sum-exp over ragged segments, and their backward ops
(``softmax_numba._segment``, ``registry.SEGMENTED``).

Each segment is a row of the softmax family: every engine's result on every segment
is within that op's bound on that segment (``softmax_numba.bounds``, the same
functions as the registered row ops), against the oracle of
``softmax_numba.reference`` in higher precision from the same rounded input, over
offsets of the logits up to 1e6.  The parallel engine cuts a huge segment into
chunks over its threads and gives the serial engine's bits; special values follow the
row ops' rules on every engine; bad offsets are one-line errors before any kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import bounds, config, error_metrics, reference, registry
from softmax_numba.cpu import segment as kernels

#: name -> (public function, oracle, bound, scale, backward of): the row op's bound
#: and the scale its error is measured against.
OPS = {
    "segment_softmax": (
        sn.segment_softmax, reference.segment_softmax, bounds.SOFTMAX, bounds.relative, None
    ),
    "segment_log_softmax": (
        sn.segment_log_softmax, reference.segment_log_softmax, bounds.LOG_DOMAIN,
        bounds.relative, None,
    ),
    "segment_logsumexp": (
        sn.segment_logsumexp, reference.segment_logsumexp, bounds.logsumexp_bound,
        bounds.relative, None,
    ),
    "segment_softmax_backward": (
        sn.segment_softmax_backward, reference.segment_softmax_backward, bounds.sum_bound(3),
        bounds.softmax_vjp_scale, sn.segment_softmax,
    ),
    "segment_log_softmax_backward": (
        sn.segment_log_softmax_backward, reference.segment_log_softmax_backward,
        bounds.sum_bound(4), bounds.log_softmax_vjp_scale, sn.segment_log_softmax,
    ),
}  # fmt: skip
FORWARD = [name for name in OPS if OPS[name][4] is None]
BACKENDS = ("numpy", "cpu", "parallel")


def test_every_segmented_op_is_here_and_exported():
    assert set(OPS) == set(registry.SEGMENTED)
    assert set(registry.SEGMENTED) <= set(sn.__all__)


# --------------------------------------------------------------------------- helpers


def ragged(rng, lengths, trailing=(), dtype=np.float64, scale=3.0, offset=0.0):
    """Logits ``offset + scale z`` of segments of ``lengths``, and their offsets."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = offset + scale * rng.standard_normal((int(offsets[-1]), *trailing))
    return values.astype(dtype), offsets


def arguments(name, values, offsets, rng):
    """The op's positional arguments: ``(values, offsets)``, or ``(y, dy, offsets)`` with
    ``y`` the forward op's output (numpy engine) for the backward ops."""
    forward = OPS[name][4]
    if forward is None:
        return (values, offsets)
    y = forward(values, offsets, backend="numpy")
    return (y, rng.standard_normal(values.shape).astype(values.dtype), offsets)


def rows_of(a, offsets, j, f):
    """Segment ``j`` of trailing position ``f`` of ``a`` (``(nnz, ...)``) as one row."""
    a = np.asarray(a)
    return a.reshape(a.shape[0], -1)[offsets[j] : offsets[j + 1], f][None, :]


def segment_errors(name, args, got):
    """Per segment and trailing position, ``(error, bound)`` in units of u: the
    componentwise error of ``got`` against the oracle (``registry.oracle_args``)
    relative to the op's scale, and the op's bound on that segment as a row."""
    _, oracle, bound, scale, _ = OPS[name]
    *arrays, offsets = args
    ref = oracle(*registry.oracle_args(arrays), offsets)
    dtype = np.asarray(got).dtype
    u = error_metrics.unit_roundoff(dtype)
    features = int(np.prod(np.shape(arrays[0])[1:], dtype=np.int64))
    reduce = name == "segment_logsumexp"
    found = []
    for j in range(offsets.size - 1):
        if offsets[j] == offsets[j + 1] and not reduce:
            continue
        for f in range(features):
            row_args = tuple(rows_of(a, offsets, j, f) for a in arrays)
            if reduce:
                g = np.asarray(got).reshape(offsets.size - 1, features)[j, f].reshape(1, 1)
                r = np.asarray(ref).reshape(offsets.size - 1, features)[j, f].reshape(1, 1)
            else:
                g, r = rows_of(got, offsets, j, f), rows_of(ref, offsets, j, f)
            err = error_metrics.componentwise_error(g, r, scale(row_args, (r,), 0)) / u
            allowed = error_metrics.allowed_u(bound, row_args, r, dtype)
            found.append((float(err[0]), float(np.ravel(allowed)[0])))
    return found


def check_within_bounds(name, args, backend):
    got = OPS[name][0](*args, backend=backend)
    assert got.dtype == np.asarray(args[0]).dtype
    errors = segment_errors(name, args, got)
    bad = [(e, a) for e, a in errors if not e <= a]
    assert not bad, (name, backend, bad[:3])
    return got, errors


@pytest.fixture
def small_pieces(monkeypatch):
    """Segments longer than ``config.SUM_BLOCK`` (the smallest piece allowed) are cut
    into chunks, so that small arrays take the chunked path."""
    monkeypatch.setattr(config, "SEGMENT_PIECE_LENGTH", config.SUM_BLOCK)


#: Empty segments, single entries, segments up to a few hundred, and two longer than
#: the (patched) piece: cut into chunks.
LENGTHS = [0, 1, 5, 0, 37, 2, 300, 0, 1, 5000, 64, 3, 4100, 9, 0]


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_every_segment_within_the_row_ops_bound(name, backend, dtype, offset, rng, small_pieces):
    """Against the oracle, per segment: a 1-D ``values`` and one of 2 heads, logits
    offset up to 1e6 (the log-domain ops' errors stay relative to each result)."""
    for trailing in ((), (2,)):
        values, offsets = ragged(rng, LENGTHS, trailing, dtype, offset=offset)
        check_within_bounds(name, arguments(name, values, offsets, rng), backend)


@pytest.mark.parametrize("name", OPS)
def test_the_serial_and_parallel_engines_give_the_same_bits(name, rng, small_pieces):
    values, offsets = ragged(rng, LENGTHS, (3,), np.float32)
    args = arguments(name, values, offsets, rng)
    func = OPS[name][0]
    np.testing.assert_array_equal(func(*args, backend="parallel"), func(*args, backend="cpu"))


def test_one_huge_segment_among_tiny_ones_is_shared_out(rng):
    """One segment of 200 000 entries among 1 000 of 0 to 4, at the default piece: the
    plan cuts the huge one into chunks (some thread gets each) and gathers the tiny
    ones into pieces; every op on the parallel engine is within the bound and gives
    the serial engine's bits."""
    lengths = rng.integers(0, 5, 1000)
    lengths[567] = 200_000
    values, offsets = ragged(rng, lengths, (), np.float32, offset=50.0)
    piece, group = sn._segment._pieces("parallel", 1, values.size, lengths.size)
    first, _, _, chunks = kernels.segment_plan(offsets, piece, group)
    assert np.all(chunks[first == 567] == -(-200_000 // config.SEGMENT_PIECE_LENGTH))
    assert chunks.size >= 4 * 2 and np.max(np.diff(offsets)[first[chunks == 1]]) < piece
    for name in OPS:
        args = arguments(name, values, offsets, rng)
        got, _ = check_within_bounds(name, args, "parallel")
        np.testing.assert_array_equal(got, OPS[name][0](*args, backend="cpu"))


def test_the_plan_covers_every_segment_once(rng):
    lengths = rng.integers(0, 50, 400)
    lengths[[7, 200]] = [9000, 2049]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    first, stop, chunk, chunks = kernels.segment_plan(offsets, 2048, 300)
    covered = np.concatenate(
        [np.arange(a, b) for a, b, c in zip(first, stop, chunk, strict=True) if c == 0]
    )
    np.testing.assert_array_equal(covered, np.arange(lengths.size))
    for j, k in ((7, 5), (200, 2)):
        at = np.flatnonzero(first == j)
        np.testing.assert_array_equal(chunk[at], np.arange(k))
        assert np.all(chunks[at] == k) and np.all(stop[at] == j + 1)
    runs = chunks == 1
    cost = [lengths[a:b].sum() + (b - a) for a, b in zip(first[runs], stop[runs], strict=True)]
    assert max(cost) < 300 + 50


# --------------------------------------------------------------------------- special values


def special_case():
    """Segments: a NaN, a ``+inf``, only ``-inf``, ``-inf`` beside numbers, empty, one
    entry, one ``-inf`` entry, ordinary."""
    inf, nan = np.inf, np.nan
    segments = [
        [1.0, nan, 2.0], [3.0, inf, -1.0], [-inf, -inf], [-inf, 0.5, -inf, 2.0], [], [7.0],
        [-inf], [0.1, 0.2, 0.3],
    ]  # fmt: skip
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in segments])])
    return np.array([v for s in segments for v in s]), offsets


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_follow_the_row_ops_on_every_engine(dtype):
    """Each segment's non-finite results are those of the row op on it (scipy's rules),
    an empty segment's log-sum-exp is ``-inf``, and the finite results are within the
    bound, on every engine."""
    values, offsets = special_case()
    values = values.astype(dtype)
    rows = np.split(values, offsets[1:-1])
    for backend in BACKENDS:
        p = sn.segment_softmax(values, offsets, backend=backend)
        logp = sn.segment_log_softmax(values, offsets, backend=backend)
        lse = sn.segment_logsumexp(values, offsets, backend=backend)
        for j, row in enumerate(rows):
            lo, hi = offsets[j], offsets[j + 1]
            for got, want in (
                (p[lo:hi], reference.softmax(row)),
                (logp[lo:hi], reference.log_softmax(row)),
                (lse[j : j + 1], np.atleast_1d(reference.logsumexp(row))),
            ):
                finite = np.isfinite(want)
                np.testing.assert_array_equal(got[~finite], want[~finite])
        assert np.isnan(lse[0]) and lse[1] == np.inf and lse[2] == lse[4] == lse[6] == -np.inf
        assert np.isnan(p[:8]).all() and np.isnan(p[13])  # NaN, +inf, all -inf
        for name in FORWARD:
            check_within_bounds(name, (values, offsets), backend)


# --------------------------------------------------------------------------- bad input


BAD_OFFSETS = [
    (np.array([0, 2, 1, 5]), ValueError, r"non-decreasing, but offsets\[1\] = 2 > offsets\[2\]"),
    (np.array([1, 2, 5]), ValueError, r"offsets\[0\] must be 0, got 1"),
    (np.array([0, 2, 6]), ValueError, r"offsets\[-1\] must be the number of entries.* = 5, got 6"),
    (np.array([0, 2, 4]), ValueError, r"offsets\[-1\] must be .* got 4"),
    (np.array([0, -1, 5]), ValueError, "non-decreasing"),
    (np.array([0.0, 2.0, 5.0]), TypeError, "offsets must be integers .* got dtype float64"),
    (np.array([True, False]), TypeError, "got dtype bool"),
    (np.array([[0, 5]]), ValueError, r"1-D array of S \+ 1 row pointers, got shape \(1, 2\)"),
    (np.array([], np.int64), ValueError, r"got shape \(0,\)"),
    (np.array([0, 2**63 + 1, 5], np.uint64), ValueError, "non-decreasing"),
]  # fmt: skip


@pytest.mark.parametrize(("offsets", "error", "match"), BAD_OFFSETS)
@pytest.mark.parametrize("name", OPS)
def test_bad_offsets_are_a_one_line_error_before_any_kernel(
    name, offsets, error, match, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran")

    monkeypatch.setattr(sn._segment, "run", refuse)
    values = np.arange(5.0)
    args = (values, offsets) if OPS[name][4] is None else (values, values, offsets)
    with pytest.raises(error, match=match) as caught:
        OPS[name][0](*args)
    assert "\n" not in str(caught.value) and name in str(caught.value)


def test_other_bad_input_is_refused():
    values, offsets = np.arange(5.0), np.array([0, 2, 5])
    with pytest.raises(ValueError, match="at least one dimension"):
        sn.segment_softmax(np.float64(1.0), np.array([0, 1]))
    with pytest.raises(TypeError, match="accepts float16"):
        sn.segment_softmax(values.astype(complex), offsets)
    with pytest.raises(ValueError, match=r"dy has shape \(4,\), y has shape \(5,\)"):
        sn.segment_softmax_backward(values, values[:4], offsets)
    with pytest.raises(ValueError, match=r"out must have shape \(2,\)"):
        sn.segment_logsumexp(values, offsets, out=np.empty(5))
    with pytest.raises(ValueError, match="writeable"):
        out = np.empty(5)
        out.flags.writeable = False
        sn.segment_softmax(values, offsets, out=out)
    with pytest.raises(ValueError, match="backend='gpu' is not one of"):
        sn.segment_softmax(values, offsets, backend="gpu")


# --------------------------------------------------------------------------- conventions


def test_dtypes_offsets_and_out(rng):
    """float16 and bfloat16 computed in float32 and returned in their dtype, integers
    promoted to float64; offsets of any integer dtype or a list; ``out=`` written in
    place (the input itself included) and returned, with trailing axes too."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values, offsets = ragged(rng, [3, 0, 4], (), np.float32)
    want = sn.segment_softmax(values, offsets)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        got = sn.segment_softmax(values.astype(dtype), offsets)
        assert got.dtype == dtype
        np.testing.assert_allclose(
            got.astype(np.float32), want, rtol=error_metrics.unit_roundoff(dtype) * 8
        )
    assert sn.segment_logsumexp(np.arange(7), offsets).dtype == np.float64
    for other in (offsets.astype(np.int32), offsets.astype(np.uint8), offsets.tolist()):
        np.testing.assert_array_equal(sn.segment_softmax(values, other), want)
    out = np.empty_like(values)
    assert sn.segment_softmax(values, offsets, out=out) is out
    np.testing.assert_array_equal(out, want)
    inplace = values.copy()
    assert sn.segment_log_softmax(inplace, offsets, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, sn.segment_log_softmax(values, offsets))
    heads, _ = ragged(rng, [3, 0, 4], (2, 3), np.float64)
    out = np.empty((3, 2, 3))
    assert sn.segment_logsumexp(heads, offsets, out=out) is out
    for f in range(2):
        for g in range(3):
            np.testing.assert_array_equal(
                out[:, f, g], sn.segment_logsumexp(heads[:, f, g], offsets)
            )


def test_torch_tensors_in_and_out(rng):
    torch = pytest.importorskip("torch")
    values, offsets = ragged(rng, [3, 0, 4, 1], (2,), np.float32)
    want = sn.segment_softmax(values, offsets)
    got = sn.segment_softmax(torch.from_numpy(values), torch.from_numpy(offsets))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)
    out = torch.empty(4, 2)
    assert sn.segment_logsumexp(torch.from_numpy(values), torch.from_numpy(offsets), out=out) is out
    np.testing.assert_array_equal(out.numpy(), sn.segment_logsumexp(values, offsets))
    y = torch.from_numpy(want)
    dx = sn.segment_softmax_backward(y, y, torch.from_numpy(offsets))
    np.testing.assert_array_equal(dx.numpy(), sn.segment_softmax_backward(want, want, offsets))
    with pytest.raises(TypeError, match="pass arrays of one kind"):
        sn.segment_softmax(torch.from_numpy(values), offsets)


# --------------------------------------------------------------------------- torch


def _graph_case(torch, name, trailing=(2,)):
    """Logits of 2 heads in segments of 3, 0 (not for log-sum-exp, whose ``-inf`` there
    has no finite difference), 4 and 1 entries."""
    generator = torch.Generator().manual_seed(3)
    offsets = torch.tensor([0, 3, 7, 8] if name == "segment_logsumexp" else [0, 3, 3, 7, 8])
    x = torch.randn((8, *trailing), dtype=torch.float64, generator=generator) * 2
    return x.requires_grad_(), offsets


@pytest.mark.parametrize("name", ["segment_softmax", "segment_log_softmax", "segment_logsumexp"])
def test_torch_wrappers_pass_gradcheck_and_equal_the_plain_api(name):
    torch = pytest.importorskip("torch")
    snt = pytest.importorskip("softmax_numba.torch")
    x, offsets = _graph_case(torch, name)
    ours = getattr(snt, name)
    assert torch.autograd.gradcheck(lambda v: ours(v, offsets), (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda v: ours(v, offsets), (x,), eps=1e-6, atol=1e-6)
    got = ours(x, offsets)
    want = getattr(sn, name)(x.detach().numpy(), offsets.numpy())
    np.testing.assert_array_equal(got.detach().numpy(), want)


@pytest.mark.parametrize("trailing", [(), (4,)])
def test_torch_geometric_softmax_agrees_within_the_bound(trailing, rng):
    """``torch_geometric.utils.softmax(src, ptr=offsets)`` (the peer, installed by the
    ``peers`` extra): ours and theirs both within softmax's bound of the oracle on every
    segment, in float64."""
    torch = pytest.importorskip("torch")
    pyg = pytest.importorskip("torch_geometric.utils")
    values, offsets = ragged(rng, [5, 1, 0, 40, 7, 2, 90], trailing, np.float64)
    theirs = pyg.softmax(torch.from_numpy(values), ptr=torch.from_numpy(offsets)).numpy()
    ours = sn.segment_softmax(values, offsets)
    for got in (ours, theirs):
        errors = segment_errors("segment_softmax", (values, offsets), got)
        assert all(e <= a for e, a in errors), max(errors)
