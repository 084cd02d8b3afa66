"""The same array type out as in: torch tensors (CPU here, CUDA where a GPU is),
CuPy and JAX arrays, mixed kinds and the other bad input of ``_interop``."""

from __future__ import annotations

import numpy as np
import pytest

import softmax_numba as sn
from softmax_numba import _interop, registry

torch = pytest.importorskip("torch", reason="torch is not installed (the [torch] extra)")

TORCH_DTYPES = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _numpy_of(tensor):
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_interop._bfloat16())
    return tensor.numpy()


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_every_op_takes_and_gives_torch_tensors_equal_to_the_numpy_result(entry, rng):
    x = rng.standard_normal((4, 16))
    args = entry.arguments(x, rng)
    want = registry.outputs(entry.run(args, backend="cpu"))
    got = registry.outputs(entry.run([torch.from_numpy(a) for a in args], backend="cpu"))
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, torch.Tensor)
        np.testing.assert_array_equal(g.numpy(), w)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_dtype_we_compute_round_trips_without_a_copy(dtype, rng):
    pytest.importorskip("ml_dtypes")
    x = torch.from_numpy(rng.standard_normal((5, 7))).to(dtype)
    viewed = _interop._torch_in("softmax", x, "x")
    assert viewed.__array_interface__["data"][0] == x.data_ptr()
    back = _interop._torch_out(viewed, x)
    assert back.data_ptr() == x.data_ptr() and back.dtype == dtype
    got = sn.log_softmax(x)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype
    np.testing.assert_array_equal(_numpy_of(got), sn.log_softmax(_numpy_of(x)))


def test_out_tensor_is_written_in_place_and_returned(rng):
    x = torch.from_numpy(rng.standard_normal((3, 8)).astype(np.float32))
    out = torch.empty_like(x)
    assert sn.softmax(x, out=out) is out
    np.testing.assert_array_equal(out.numpy(), sn.softmax(x.numpy()))
    grad = torch.empty_like(x)
    loss, got = sn.cross_entropy(x, torch.tensor([0, 7, 3]), return_grad=True, grad_out=grad)
    assert got is grad and isinstance(loss, torch.Tensor) and loss.ndim == 0


def test_non_contiguous_tensors_and_tuple_axes(rng):
    base = torch.from_numpy(rng.standard_normal((6, 4, 5)))
    x = base.transpose(0, 2)  # strides that no C-contiguous array has
    assert not x.is_contiguous()
    np.testing.assert_allclose(sn.softmax(x, axis=1).numpy(), torch.softmax(x, 1).numpy())
    lse = sn.logsumexp(x, axis=(0, 1))
    np.testing.assert_allclose(lse.numpy(), torch.logsumexp(x, (0, 1)).numpy(), rtol=1e-14)


def test_a_zero_dimensional_result_is_a_zero_dimensional_tensor(rng):
    lse = sn.logsumexp(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert isinstance(lse, torch.Tensor) and lse.shape == ()
    assert lse.item() == pytest.approx(3.40760596444438)


def test_mixed_array_kinds_are_type_errors(rng):
    logits = torch.zeros((2, 3))
    with pytest.raises(TypeError, match=r"target is a numpy.ndarray but logits is a torch"):
        sn.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"out is a torch.Tensor but x is a numpy.ndarray"):
        sn.softmax(np.zeros((2, 3)), out=torch.zeros((2, 3), dtype=torch.float64))
    with pytest.raises(TypeError, match=r"dy is a numpy.ndarray"):
        sn.softmax_backward(torch.zeros(3), np.zeros(3))


def test_lists_and_scalars_beside_a_tensor_are_accepted(rng):
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    lse = sn.logsumexp(x, b=[1.0, 2.0])
    np.testing.assert_allclose(lse.numpy(), sn.logsumexp(x.numpy(), b=[1.0, 2.0]))


def test_a_tensor_that_requires_grad_points_to_the_autograd_wrappers():
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"requires grad.*softmax_numba.torch.*x.detach\(\)"):
        sn.softmax(x)
    assert isinstance(sn.softmax(x.detach()), torch.Tensor)


def test_a_tensor_on_another_device_is_a_clear_error():
    with pytest.raises(TypeError, match="meta"):
        sn.softmax(torch.zeros(3, device="meta"))


def test_integer_tensors_are_promoted_as_numpy_integers_are():
    got = sn.softmax(torch.tensor([0, 1, 2]))
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), sn.softmax(np.array([0, 1, 2])))


def test_numpy_input_is_untouched_by_the_wrapper(rng):
    x = rng.standard_normal((2, 5))
    assert type(sn.softmax(x)) is np.ndarray
    assert sn.softmax.__wrapped__.__name__ == "softmax"


def test_jax_arrays_are_copied_and_give_numpy_arrays(rng):
    jnp = pytest.importorskip("jax.numpy")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    got = sn.softmax(jnp.asarray(x))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, sn.softmax(x))


@CUDA
def test_cuda_tensors_stay_on_their_device(rng):
    x = torch.from_numpy(rng.standard_normal((4, 33)).astype(np.float32)).cuda()
    got = sn.softmax(x)
    assert got.is_cuda and got.dtype == x.dtype
    torch.testing.assert_close(got, torch.softmax(x, -1), rtol=1e-6, atol=1e-7)
    out = torch.empty_like(x)
    assert sn.log_softmax(x, out=out) is out
    loss = sn.cross_entropy(x, torch.tensor([0, 1, 2, 3], device="cuda"))
    assert loss.is_cuda


@CUDA
def test_cuda_tensors_with_the_cpu_engine_or_in_bfloat16_are_clear_errors():
    x = torch.zeros((2, 3), device="cuda")
    with pytest.raises(TypeError, match="GPU"):
        sn.softmax(x, backend="cpu")
    with pytest.raises(TypeError, match="bfloat16"):
        sn.softmax(x.to(torch.bfloat16))


def test_cupy_arrays_stay_cupy_arrays(rng):
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA device")
    x = cupy.asarray(rng.standard_normal((4, 9)))
    got = sn.softmax(x)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(got), sn.softmax(cupy.asnumpy(x)), rtol=1e-13)


# A bfloat16 CUDA tensor goes to the CUDA engine as its bits (issue 31) and comes back
# as a bfloat16 tensor: tests/test_cuda_bf16.py checks it where torch sees a GPU.
