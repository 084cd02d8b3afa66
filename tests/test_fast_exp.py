"""The kernels' vectorizable exp: accuracy in ulp against a correctly rounded reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from softmax_numba.cpu._math import (
    _target_features,
    atan_array,
    exp_array,
    exp_nonpositive_array,
    exp_shifted_array,
    log1p_array,
    log1p_unit_interval_array,
)


def _ulps(dtype, x):
    out = np.empty_like(x)
    exp_array(x, out)
    exact = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = exact.astype(dtype)
        spacing = np.spacing(np.abs(rounded)).astype(np.longdouble)
        ulps = np.abs(out.astype(np.longdouble) - exact) / spacing
    return out, exact, rounded, ulps


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"), [(np.float32, -110.0, 90.0), (np.float64, -750.0, 712.0)]
)
def test_at_most_one_and_a_half_ulp_on_a_dense_grid(dtype, lo, hi, rng):
    x = np.concatenate([np.linspace(lo, hi, 2_000_001), rng.uniform(-5, 5, 200_000)]).astype(dtype)
    out, _exact, rounded, ulps = _ulps(dtype, x)
    finite = np.isfinite(rounded)
    assert np.max(ulps[finite]) <= 1.5
    # Overflow and underflow exactly where the correctly rounded result does.
    np.testing.assert_array_equal(np.isinf(out), ~finite)
    np.testing.assert_array_equal(out == 0, rounded == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
    out = np.empty_like(x)
    exp_array(x, out)
    np.testing.assert_array_equal(out, [np.nan, np.inf, 0.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- log1p, atan

FLOAT32_FUNCTIONS = {
    "log1p": (log1p_array, np.log1p, 1.0),
    "log1p_unit_interval": (log1p_unit_interval_array, np.log1p, 1.0),
    "atan": (atan_array, np.arctan, 2.15),
}
#: Where a function is defined on less than every float32.
DOMAINS = {"log1p_unit_interval": (0.0, 1.0)}


#: The full-range sweeps (70 million inputs each) are ``slow``; ``make test-fast`` keeps
#: log1p on [0, 1], a few million of them.
@pytest.mark.parametrize(
    "name",
    [n if n in DOMAINS else pytest.param(n, marks=pytest.mark.slow) for n in FLOAT32_FUNCTIONS],
)
def test_float32_log1p_and_atan_within_their_ulp_bound(name):
    """Every 61st float32 bit pattern (70 million inputs, every binade), against the
    float64 function of the same input rounded to float32."""
    kernel, reference, bound = FLOAT32_FUNCTIONS[name]
    x = np.arange(0, 2**32, 61, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[~np.isnan(x)]
    if name in DOMAINS:
        lo, hi = DOMAINS[name]
        x = np.concatenate([x[(x >= lo) & (x <= hi)], [lo, hi, np.nan]]).astype(np.float32)
    out = np.empty_like(x)
    kernel(x, out)
    with np.errstate(all="ignore"):
        exact = reference(x.astype(np.float64))
        rounded = exact.astype(np.float32)
        ulps = np.abs(out - exact) / np.spacing(np.abs(rounded)).astype(np.float64)
    finite = np.isfinite(rounded)
    assert np.max(ulps[finite]) <= bound
    # NaN, infinities and the pole of log1p at -1 exactly as the reference.
    np.testing.assert_array_equal(out[~finite], rounded[~finite])


def test_float32_log1p_and_atan_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, -2.0, 1e-30], np.float32)
    out = np.empty_like(x)
    log1p_array(x, out)
    np.testing.assert_array_equal(
        out, np.array([np.nan, np.inf, np.nan, 0.0, -np.inf, np.nan, 1e-30], np.float32)
    )
    atan_array(x, out)
    np.testing.assert_array_equal(
        out,
        np.array([np.nan, np.pi / 2, -np.pi / 2, 0.0, -np.pi / 4, -1.1071488, 1e-30], np.float32),
    )


# ----------------------------------------------------------------------------- without AVX-512

_WITHOUT_VECTOR_LDEXP = """
import json
import numpy as np
from softmax_numba.cpu import _math

x = np.concatenate([np.linspace(-110, 90, 400_001), [np.nan, np.inf, -np.inf, 0.0, -0.0]])
result = {"vector_ldexp": _math.VECTOR_LDEXP}
for name, dtype in (("float32", np.float32), ("float64", np.float64)):
    xs = x.astype(dtype)
    out = np.empty_like(xs)
    _math.exp_array(xs, out)
    result[name] = out.astype(np.float64).tolist()
print(json.dumps(result))
"""


@pytest.mark.slow  # compiles every exp kernel afresh in a subprocess
def test_the_path_without_a_vector_ldexp_is_as_accurate(tmp_path):
    """On a CPU without AVX-512 (here: Numba told to compile for Haswell) ``exp``
    scales by adding to the exponent bits, with selects for subnormals, overflow and
    NaN: the same values as the reference there too."""
    env = dict(
        os.environ,
        NUMBA_CPU_NAME="haswell",
        NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+sse4.2,+popcnt,+f16c,+bmi,+bmi2,+cx16",
        NUMBA_CACHE_DIR=str(tmp_path),
    )
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_VECTOR_LDEXP], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["vector_ldexp"] is False
    x = np.concatenate([np.linspace(-110, 90, 400_001), [np.nan, np.inf, -np.inf, 0.0, -0.0]])
    for name, dtype in (("float32", np.float32), ("float64", np.float64)):
        xs = x.astype(dtype)
        out = np.asarray(result[name]).astype(dtype)
        exact = np.exp(xs.astype(np.longdouble))
        with np.errstate(over="ignore", invalid="ignore"):
            rounded = exact.astype(dtype)
            ulps = np.abs(out.astype(np.longdouble) - exact) / np.spacing(np.abs(rounded))
        finite = np.isfinite(rounded)
        assert np.max(ulps[finite]) <= 1.5
        np.testing.assert_array_equal(out[~finite], rounded[~finite])
        np.testing.assert_array_equal(out == 0, rounded == 0)


def test_float64_log1p_unit_interval_within_one_ulp(rng):
    """Softplus's float64 ``log1p`` on [0, 1] (fdlibm's form on an exact split): at most
    1 ulp against long double, on uniform, log-uniform and split-straddling inputs."""
    x = np.concatenate(
        [
            rng.uniform(0, 1, 400_000),
            10 ** rng.uniform(-300, 0, 200_000),
            rng.uniform(0.499, 0.501, 200_000),
            [0.0, 1.0, 0.5, np.nextafter(0.5, 0.0), 5e-324],
        ]
    )
    out = np.empty_like(x)
    log1p_unit_interval_array(x, out)
    exact = np.log1p(x.astype(np.longdouble))
    ulps = np.abs(out.astype(np.longdouble) - exact) / np.spacing(exact.astype(np.float64))
    assert np.max(ulps[x > 0]) <= 1.0
    assert out[-5] == 0.0
    nan = np.empty(1)
    log1p_unit_interval_array(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_float64_atan_within_one_ulp(rng):
    """The float64 ``atan`` (fdlibm's reduction): at most 1 ulp against long double,
    on every interval of the reduction and its edges, and at the special values."""
    edges = np.array([0.4375, 0.6875, 1.1875, 2.4375])
    x = np.concatenate(
        [
            rng.uniform(-5, 5, 400_000),
            rng.choice([-1.0, 1.0], 200_000) * 10 ** rng.uniform(-300, 300, 200_000),
            (edges[:, None] * (1 + rng.uniform(-1e-6, 1e-6, (4, 10_000)))).ravel(),
        ]
    )
    out = np.empty_like(x)
    atan_array(x, out)
    exact = np.arctan(x.astype(np.longdouble))
    ulps = np.abs(out.astype(np.longdouble) - exact) / np.spacing(np.abs(exact.astype(np.float64)))
    assert np.max(ulps[x != 0]) <= 1.0
    special = np.array([np.nan, np.inf, -np.inf, 0.0, 1e308, 5e-324])
    out = np.empty_like(special)
    atan_array(special, out)
    np.testing.assert_array_equal(out, np.arctan(special))


# ----------------------------------------------------------------------------- range edges

_LN2 = float(np.log(2.0))
#: Where the scaling of exp(r) by 2^k changes: the first x whose exp overflows (float32)
#: or the last whose exp is finite (float64), the switch of k to its largest value
#: ((k_max - 1/2) ln2), the switch to the subnormal branch, the smallest normal, the
#: smallest subnormal and half of it (below which exp rounds to 0), and the clamps.
_EDGES = {
    np.float32: [
        88.72283935546875,
        127.5 * _LN2,
        -125.5 * _LN2,
        -126 * _LN2,
        -149.5 * _LN2,
        -149 * _LN2,
        -150 * _LN2,
        -104.0,
        89.0,
    ],
    np.float64: [
        709.782712893384,
        1023.5 * _LN2,
        -1021.5 * _LN2,
        -1022 * _LN2,
        -1074.5 * _LN2,
        -1074 * _LN2,
        -1075 * _LN2,
        -746.0,
        710.0,
    ],
}


def _edge_inputs(dtype, neighbours=2000):
    """Every float of ``dtype`` within ``neighbours`` bit patterns of each edge, and the
    special values."""
    ints = np.int32 if dtype == np.float32 else np.int64
    centres = np.asarray(_EDGES[dtype], dtype).view(ints)
    steps = np.arange(-neighbours, neighbours + 1, dtype=ints)
    info = np.finfo(dtype)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, info.max, -info.max, info.smallest_subnormal]
    return np.concatenate([(centres[:, None] + steps).ravel().view(dtype), special]).astype(dtype)


def _assert_exp_at_the_edges(x, out):
    """``out = exp(x)`` within 1.5 ulp of the correctly rounded value where that is a
    finite nonzero float (subnormals included), and exactly it where it is inf or 0;
    NaN only for a NaN ``x``."""
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.exp(x.astype(np.longdouble))
        rounded = exact.astype(x.dtype)
    special = ~np.isfinite(rounded) | (rounded == 0)
    wrong = special & (out != rounded) & ~(np.isnan(out) & np.isnan(rounded))
    wrong |= np.isnan(out) & ~np.isnan(x)
    assert not wrong.any(), (
        f"exp({x[wrong][:4].tolist()}) gave {out[wrong][:4].tolist()},"
        f" not {rounded[wrong][:4].tolist()}"
    )
    spacing = np.spacing(rounded[~special]).astype(np.longdouble)
    ulps = np.abs(out[~special].astype(np.longdouble) - exact[~special]) / spacing
    assert np.max(ulps) <= 1.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_overflow_and_underflow_at_the_range_edges(dtype):
    """The host's own path (``vscalef`` on AVX-512, the exponent bits elsewhere) at
    every float near each edge of the range; the path it does not take is checked by
    the next test."""
    x = _edge_inputs(dtype)
    out = np.empty_like(x)
    exp_array(x, out)
    _assert_exp_at_the_edges(x, out)


_EDGES_IN_A_SUBPROCESS = """
import json, sys
import numpy as np
from numba import from_dtype, types
from softmax_numba.cpu import _math

folder, force_ldexp, execute = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
if force_ldexp:  # read by scale_by_power_of_two's overload at exp_array's first compile
    _math.VECTOR_LDEXP = True
result = {"features": _math._target_features(), "vector_ldexp": _math.VECTOR_LDEXP}
for name in ("float32", "float64"):
    x = np.load(f"{folder}/x_{name}.npy")
    signature = (types.Array(from_dtype(x.dtype), 1, "C"),) * 2
    _math.exp_array.compile(signature)
    asm = _math.exp_array.inspect_asm(signature)
    result[name] = {
        "vscalef": "vscalef" in asm,
        "zmm": "zmm" in asm,
        "llvm.ldexp": "llvm.ldexp" in _math.exp_array.inspect_llvm(signature),
    }
    if execute:
        out = np.empty_like(x)
        _math.exp_array(x, out)
        np.save(f"{folder}/out_{name}.npy", out)
print(json.dumps(result))
"""

#: Features that imply AVX-512 (LLVM would turn ``avx512f`` back on for them).
_AVX512_FAMILY = ("avx512", "avx10", "evex512", "amx")
_SKYLAKE_AVX512 = (
    "+avx512f,+avx512cd,+avx512bw,+avx512dq,+avx512vl,+avx2,+avx,+fma,+f16c,+bmi,+bmi2"
)


@pytest.mark.slow  # three subprocesses, each compiling exp_array afresh
@pytest.mark.parametrize("path", ["exponent bits", "llvm.ldexp by libm", "avx512 vscalef"])
def test_both_scaling_paths_at_the_range_edges_whatever_the_host(path, tmp_path):
    """Both ways ``exp`` scales ``exp(r)`` by ``2^k`` are checked on any host, each in a
    subprocess that Numba compiles for another CPU (``NUMBA_CPU_NAME`` and
    ``NUMBA_CPU_FEATURES``; ``NUMBA_CACHE_DIR`` a temporary folder, so that no machine
    code for another CPU reaches the shared cache).  ``_target_features()`` must follow
    those variables (``VECTOR_LDEXP`` below), and the assembly must show the path taken.

    - ``exponent bits``: the host's features with AVX-512 turned off, the path of AVX2
      CPUs: ``k`` added to the exponent bits with selects, executed and compared at
      every float near each edge (it runs on AVX-512 hosts too).  No ``vscalef``, no
      ``zmm`` register, no ``llvm.ldexp``.
    - ``llvm.ldexp by libm``: the same features, ``VECTOR_LDEXP`` forced on, so the
      kernel holds the AVX-512 path's IR, ``llvm.ldexp``, which LLVM lowers to libm's
      ``ldexp`` per lane here; executed and compared.  This checks the IR-level
      semantics of the AVX-512 path (one rounding, inf, 0, NaN) on a host without it.
    - ``avx512 vscalef``: compiled for Skylake-AVX512: the assembly must hold
      ``vscalef``.  Executed and compared only where the host has AVX-512F (elsewhere
      it would be an illegal instruction); on such a host the previous test runs it too.
    """
    host = _target_features()
    if path == "avx512 vscalef":
        env = {"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": _SKYLAKE_AVX512}
        execute = "+avx512f" in host.split(",")
    else:
        off = [("-" + f[1:]) if f[1:].startswith(_AVX512_FAMILY) else f for f in host.split(",")]
        env = {"NUMBA_CPU_FEATURES": ",".join(off)}
        execute = True
    force_ldexp = path == "llvm.ldexp by libm"
    flags = [str(int(force_ldexp)), str(int(execute))]
    for dtype in (np.float32, np.float64):
        np.save(tmp_path / f"x_{np.dtype(dtype).name}.npy", _edge_inputs(dtype))
    run = subprocess.run(
        [sys.executable, "-c", _EDGES_IN_A_SUBPROCESS, str(tmp_path), *flags],
        env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), **env),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["features"] == env["NUMBA_CPU_FEATURES"]
    assert result["vector_ldexp"] is (path != "exponent bits")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        compiled = result[name]
        assert compiled["vscalef"] is (path == "avx512 vscalef"), compiled
        assert compiled["llvm.ldexp"] is (path != "exponent bits"), compiled
        if path != "avx512 vscalef":
            assert not compiled["zmm"], compiled
        if execute:
            x = np.load(tmp_path / f"x_{name}.npy")
            _assert_exp_at_the_edges(x, np.load(tmp_path / f"out_{name}.npy"))


# ----------------------------------------------------------------------------- exp_shifted

#: The smallest normal number, and the largest exact result exp_shifted may flush to 0.
_TINY = {np.float32: 2.0**-126, np.float64: 2.0**-1022}
_FLUSHED_BELOW = {np.float32: 2.0**-126.5, np.float64: 2.0**-1022.5}


def _shifted_inputs(dtype):
    """x <= 0: every 61st negative float32 bit pattern down to -110 (float64: 4 million
    samples down to -750, uniform and log-uniform), every float near the flush
    boundary (k = -127 or -1023 from k = -126 or -1022) and near the smallest normal
    result, and the special values."""
    if dtype == np.float32:
        x = np.arange(0x80000000, 0xFF800001, 61, dtype=np.uint64).astype(np.uint32)
        x = x.view(np.float32)
        x = x[x >= -110]
    else:
        rng = np.random.default_rng(5)
        x = -np.concatenate([rng.uniform(0, 750, 3_000_000), 10 ** rng.uniform(-300, 2.9, 10**6)])
    ints = np.int32 if dtype == np.float32 else np.int64
    bias = 126 if dtype == np.float32 else 1022
    edges = np.array([-(bias + 0.5) * _LN2, -bias * _LN2], dtype).view(ints)
    near = (edges[:, None] + np.arange(-3000, 3001, dtype=ints)).ravel().view(dtype)
    special = [0.0, -0.0, -np.inf, np.nan, -np.finfo(dtype).max, -np.finfo(dtype).tiny]
    return np.concatenate([x, near, special]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_shifted_is_exp_down_to_the_smallest_normal_and_flushes_below(dtype):
    """The shifted kernels' ``exp`` (clamped below, 2^k from one shift, no select):
    the same bits as :func:`exp_nonpositive` wherever the exact result is a normal
    number (so within its ulp bound), 0 wherever it is below ``2^-126.5`` (float32;
    ``2^-1022.5`` for float64), between them 0 or the subnormal within 1.5 of its
    ulps; NaN only for NaN, 0 for ``-inf``, 1 for 0."""
    x = _shifted_inputs(dtype)
    fast, careful = np.empty_like(x), np.empty_like(x)
    exp_shifted_array(x, fast)
    exp_nonpositive_array(x, careful)
    exact = np.exp(x.astype(np.longdouble))
    normal = exact >= _TINY[dtype]
    np.testing.assert_array_equal(fast[normal], careful[normal])
    ulps = np.abs(fast[normal] - exact[normal]) / np.spacing(exact[normal].astype(dtype))
    assert np.max(ulps) <= 1.5
    flushed = ~np.isnan(x) & (exact < _FLUSHED_BELOW[dtype])
    assert not fast[flushed].any()
    band = ~normal & ~flushed & ~np.isnan(x)
    assert band.any()
    subnormal_ulp = np.finfo(dtype).smallest_subnormal
    assert np.all((fast[band] == 0) | (np.abs(fast[band] - exact[band]) <= 1.5 * subnormal_ulp))
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(x))
    np.testing.assert_array_equal(fast[-6:-2], [1.0, 1.0, 0.0, np.nan])


_SHIFTED_ON_EVERY_TARGET = r"""
import json, re, sys
import numpy as np
from numba import types
from softmax_numba.cpu import _math

folder = sys.argv[1]
result = {"features": _math._target_features()}
for name in ("float32", "float64"):
    x = np.load(f"{folder}/x_{name}.npy")
    out = np.empty_like(x)
    _math.exp_shifted_array(x, out)
    np.save(f"{folder}/out_{name}.npy", out)
    signature = (types.Array(types.float32 if name == "float32" else types.float64, 1, "C"),) * 2
    asm = _math.exp_shifted_array.inspect_asm(signature)
    result[name] = sorted(set(re.findall(r"\b(v\w*blend\w*|vp?cmp\w*|vscalef\w*)\b", asm)))
print(json.dumps(result))
"""


@pytest.mark.slow  # a subprocess compiling exp_shifted_array afresh for another CPU
@pytest.mark.parametrize("target", ["without avx512", "skylake-avx512"])
def test_exp_shifted_gives_the_same_bits_on_every_target_with_no_select(target, tmp_path):
    """``exp_shifted`` has no target-dependent step (no ``vscalef``): compiled for the
    host with AVX-512 turned off (the path of AVX2 CPUs) or for Skylake-AVX512, it
    gives the same bits as in this process, and its machine code has no compare and
    no blend (no per-lane special case).  Executed only where the host can run it."""
    host = _target_features()
    if target == "skylake-avx512":
        env = {"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": _SKYLAKE_AVX512}
        if "+avx512f" not in host.split(","):
            pytest.skip("this host cannot run AVX-512 code")
    else:
        off = [("-" + f[1:]) if f[1:].startswith(_AVX512_FAMILY) else f for f in host.split(",")]
        env = {"NUMBA_CPU_FEATURES": ",".join(off)}
    expected = {}
    for dtype in (np.float32, np.float64):
        x = _shifted_inputs(dtype)
        np.save(tmp_path / f"x_{np.dtype(dtype).name}.npy", x)
        expected[np.dtype(dtype).name] = np.empty_like(x)
        exp_shifted_array(x, expected[np.dtype(dtype).name])
    run = subprocess.run(
        [sys.executable, "-c", _SHIFTED_ON_EVERY_TARGET, str(tmp_path)],
        env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), **env),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["features"] == env["NUMBA_CPU_FEATURES"]
    for name, out in expected.items():
        assert result[name] == [], result[name]
        np.testing.assert_array_equal(np.load(tmp_path / f"out_{name}.npy"), out)
