"""The same array type out as in: PyTorch tensors, CuPy arrays, JAX arrays.

The kernels see two kinds of arrays, NumPy arrays on the host and Numba device
arrays on a GPU.  :func:`same_kind_out` wraps each public function so that

- a torch CPU tensor is viewed as a NumPy array (``Tensor.numpy``; bfloat16 as
  its 16 bits, reinterpreted as ``ml_dtypes.bfloat16``) and the results are
  viewed back (``torch.from_numpy``): no copy either way;
- a torch CUDA tensor or a CuPy array is viewed as a Numba device array through
  ``__cuda_array_interface__`` and the results are viewed back (``torch.as_tensor``,
  ``cupy.asarray``): no copy either way (a bfloat16 CUDA tensor through its 16 bits,
  as a Numba device array of ``ml_dtypes.bfloat16``; CuPy has no bfloat16); a
  result computed on the host (the mean of a loss) is copied to the input's device;
- a JAX array is copied to a NumPy array (``np.asarray``) and the results are
  NumPy arrays: JAX arrays are immutable and the kernels write their results;
- ``out=`` (and ``grad_out=``) may be an array of the input's kind; it is written
  in place and returned as it was passed.

The arguments are of one kind: a torch tensor beside a NumPy array (or a CuPy
array) is a ``TypeError``, as is a tensor that requires grad while grad mode is on
(the plain API records no graph: use :mod:`softmax_numba.torch`); under
``torch.no_grad()`` such a tensor is taken detached.  NumPy arrays, Numba device
arrays, lists and scalars go through unchanged, at the cost of one dictionary
look-up per argument.
"""

from __future__ import annotations

import functools
import inspect
import sys

import numpy as np

#: The packages whose arrays are converted, by the first part of a type's module.
_FOREIGN = {"torch": "torch", "cupy": "cupy", "jax": "jax", "jaxlib": "jax"}
#: An argument type's kind (``None``: passed as it is), memoized.
_KIND_OF_TYPE: dict[type, str | None] = {}
#: The types seen so far that pass unchanged (``kind_of`` is ``None``): the check of
#: a call whose arguments are all such is one set operation.
_PLAIN_TYPES: set[type] = set()
#: The types that are arrays of the host kind, when another kind is in the call.
_HOST_ARRAYS = (np.ndarray,)


def kind_of(value) -> str | None:
    """``"torch"``, ``"cupy"`` or ``"jax"`` for such an array, ``None`` otherwise."""
    cls = type(value)
    try:
        return _KIND_OF_TYPE[cls]
    except KeyError:
        pass
    kind = _FOREIGN.get(cls.__module__.partition(".")[0])
    if kind == "torch" and not isinstance(value, sys.modules["torch"].Tensor):
        kind = None  # a dtype, a device, a size...
    elif kind == "jax" and not hasattr(value, "__array__"):
        kind = None
    elif kind == "cupy" and not hasattr(value, "__cuda_array_interface__"):
        kind = None
    _KIND_OF_TYPE[cls] = kind
    if kind is None:
        _PLAIN_TYPES.add(cls)
    return kind


def _describe(value) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_array(value) -> bool:
    return isinstance(value, _HOST_ARRAYS) or hasattr(value, "__cuda_array_interface__")


def _check_one_kind(func: str, kind: str | None, first_name: str, first, arguments) -> None:
    """Raise ``TypeError`` unless every array argument is of ``kind``."""
    for name, value in arguments:
        other = kind_of(value)
        if other == kind or (other is None and not _is_array(value)):
            continue
        if kind is None and other is None:
            continue
        raise TypeError(
            f"{func}(): {name} is a {_describe(value)} but {first_name} is a "
            f"{_describe(first)}; pass arrays of one kind (convert {name} first)"
        )


# ----------------------------------------------------------------------------- torch
def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(
            "bfloat16 tensors need ml_dtypes (pip install 'softmax_numba[bf16]')"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def _torch_in(func: str, tensor, name: str):
    torch = sys.modules["torch"]
    if tensor.requires_grad:
        if torch.is_grad_enabled():
            raise TypeError(
                f"{func}(): {name} requires grad, and the plain API records no autograd "
                f"graph; use softmax_numba.torch for gradients, or pass {name}.detach() "
                "(or call it under torch.no_grad())"
            )
        tensor = tensor.detach()  # under torch.no_grad(): no graph is wanted
    if tensor.device.type == "cuda":
        from softmax_numba.gpu import _runtime

        if tensor.dtype == torch.bfloat16:  # its bits, viewed as ml_dtypes.bfloat16
            return _runtime.cuda().as_cuda_array(tensor.view(torch.int16)).view(_bfloat16())
        return _runtime.cuda().as_cuda_array(tensor)
    if tensor.device.type != "cpu":
        raise TypeError(f"{func}(): {name} is on {tensor.device}; pass a CPU or CUDA tensor")
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_bfloat16())
    return tensor.numpy()


def _torch_out(result, like):
    """``result`` as a tensor on ``like``'s device (``like=None``: a CPU tensor)."""
    torch = sys.modules["torch"]
    if hasattr(result, "__cuda_array_interface__"):
        if result.dtype.kind == "V" and result.dtype.name == "bfloat16":
            bits = torch.as_tensor(result.view(np.int16), device=like.device)
            return bits.view(torch.bfloat16)
        return torch.as_tensor(result, device=like.device)
    array = result if type(result) is np.ndarray else np.asarray(result)
    if array.dtype.kind == "V" and array.dtype.name == "bfloat16":  # .name is slow
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor if like is None or like.is_cpu else tensor.to(like.device)


# ----------------------------------------------------------------------------- cupy
def _cupy_in(func: str, array, name: str):
    from softmax_numba.gpu import _runtime

    return _runtime.cuda().as_cuda_array(array)


def _cupy_out(result, like):
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(result)


# ----------------------------------------------------------------------------- jax
def _jax_in(func: str, array, name: str):
    return np.asarray(array)


def _jax_out(result, like):
    return result


_CONVERT = {
    "torch": (_torch_in, _torch_out),
    "cupy": (_cupy_in, _cupy_out),
    "jax": (_jax_in, _jax_out),
}


def same_kind_out(function):
    """Wrap a public function so that it takes and returns torch tensors, CuPy arrays
    and (by copy, returning NumPy arrays) JAX arrays, as described in this module."""
    func = function.__name__
    positional = list(inspect.signature(function).parameters)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        plain = _PLAIN_TYPES.issuperset
        if not plain(map(type, args)) or (kwargs and not plain(map(type, kwargs.values()))):
            result = _lean_torch_call(function, args, kwargs)
            if result is _NOT_LEAN:
                result = _convert_and_call(function, func, positional, args, kwargs)
            return result
        return function(*args, **kwargs)

    return wrapper


#: What :func:`_lean_torch_call` returns for a call it leaves to the general path.
_NOT_LEAN = object()
#: Argument types that a lean torch call passes as they are.
_SCALARS = frozenset({int, float, bool, str, tuple, type(None)})


def _lean_torch_call(function, args, kwargs):
    """The call with each torch CPU tensor viewed as a NumPy array and the results
    viewed back, when every array argument is such a tensor of a NumPy dtype (not
    bfloat16, not requiring grad unless grad mode is off) and the others are scalars,
    strings, tuples or ``None``: the lean path of a torch call, a few attribute reads
    instead of :func:`_convert_and_call`'s checks.  ``_NOT_LEAN`` otherwise."""
    torch = sys.modules.get("torch")
    if torch is None:
        return _NOT_LEAN
    back = {}

    def view(value):
        if type(value) in _SCALARS:
            return value
        if type(value) is not torch.Tensor or not value.is_cpu or value.dtype == torch.bfloat16:
            raise LookupError
        if value.requires_grad:
            if torch.is_grad_enabled():
                raise LookupError  # the general path says why it is refused
            value = value.detach()
        array = value.numpy()
        back[id(array)] = (array, value)
        return array

    try:
        args = [view(a) for a in args]
        kwargs = {k: view(v) for k, v in kwargs.items()}
    except LookupError:
        return _NOT_LEAN
    return _outward(function(*args, **kwargs), back, _torch_out, None)


def _outward(value, back, convert_out, first):
    """A result in the kind of the arguments: ``out=`` (an array found in ``back``)
    as it was passed, other arrays through ``convert_out(value, first)``; tuples
    element by element; ``None`` and Python scalars as they are."""
    if value is None or type(value) in (bool, int, float):
        return value
    if isinstance(value, tuple):  # linear_cross_entropy's (dh, dW, dbias)
        return tuple(_outward(v, back, convert_out, first) for v in value)
    passed = back.get(id(value))
    if passed is not None and passed[0] is value:
        return passed[1]  # ``out=``: written in place, returned as passed
    return convert_out(value, first)


def _convert_and_call(function, func, positional, args, kwargs):
    first = args[0] if args else None
    kind = kind_of(first)
    named = list(zip(positional[1:], args[1:], strict=False))
    _check_one_kind(func, kind, positional[0], first, [*named, *kwargs.items()])
    if kind is None:
        return function(*args, **kwargs)
    convert_in, convert_out = _CONVERT[kind]
    back = {}

    def inward(value, name):
        if kind_of(value) != kind:
            return value
        converted = convert_in(func, value, name)
        back[id(converted)] = (converted, value)
        return converted

    args = [inward(first, positional[0]), *(inward(a, n) for n, a in named)]
    kwargs = {k: inward(v, k) for k, v in kwargs.items()}
    return _outward(function(*args, **kwargs), back, convert_out, first)
