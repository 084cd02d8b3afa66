"""The small dedicated experiments behind the article's claims (one table row each).

The sweeps answer most claims; these measure what they do not: invariances,
monotonicity, ratios, gradients, the two-class case, saturation, the fused loss.
Every value is a number with its unit in ``quantity``; :mod:`experiments.report.claims`
turns them into verdicts.

A timing ratio (claims 7, 11, 14, 15) is measured in interleaved rounds
(:func:`experiments.harness.timing.interleaved`): one row per round, ``QUANTITY, round
k``, whose ratio compares the two implementations within that round, and a row
``QUANTITY`` with the median over the rounds and its 95% interval in ``detail``.  The
verdicts are judged on the rounds' rows.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.special

import softmax_numba as sn
from experiments.harness import inputs, settings, timing
from experiments.measure.bhh import load_logits
from experiments.measure.sweep import entry

COLUMNS = ["claim", "quantity", "value", "detail"]
U32, U64 = 2.0**-24, 2.0**-53
#: Rows of 1000 float32 logits: about 4 MiB (claims 11, 14) and 64 MiB (claim 15).
COST_ROWS, EFFICIENCY_ROWS = 1048, 16777
#: The engine of the timed claims: the serial one, whose ratios are the work per entry.
#: On a shared machine the parallel engine's calls wait for a core whenever another
#: process holds one (17 times slower on 2 cores with one other busy process), which
#: shifted every round of a ratio alike: maxout over softmax read 1.26 on the quiet
#: machine and 0.64 under one other process, each with a tight interval.
TIMED_ENGINE = "cpu"


def round_rows(claim: int, quantity: str, ratios, detail: str) -> list[dict]:
    """A ratio measured in interleaved rounds: a row ``quantity, round k`` per round
    and a row ``quantity`` with their median, the 95% interval of it in ``detail``."""
    median, low, high = timing.median_interval(ratios)
    rows = [
        {"claim": claim, "quantity": f"{quantity}, round {k}", "value": float(r), "detail": detail}
        for k, r in enumerate(ratios, 1)
    ]
    summary = (
        f"median of {len(ratios)} interleaved rounds, 95% interval of the median "
        f"[{low:.3g}, {high:.3g}]; {detail}"
    )
    return [*rows, {"claim": claim, "quantity": quantity, "value": median, "detail": summary}]


def _rounds(candidates: dict) -> tuple[dict[str, np.ndarray], str]:
    """Seconds per call of each candidate per interleaved round, and the machine's
    1-minute load average before and after: the interval over the rounds covers the
    noise within them, not another process that shifts every round alike."""
    before = os.getloadavg()[0]
    seconds = timing.interleaved(
        candidates, settings.CLAIM_ROUNDS, min_sample_s=settings.CLAIM_MIN_SAMPLE_S
    )
    return seconds, f"load average {before:.2f} before, {os.getloadavg()[0]:.2f} after"


def _rows(seed=0, shape=(256, 1000), scale=1.0, dtype=np.float64):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def invariances() -> list[dict]:
    """Claim 2: softmax(x + c) = softmax(x); softmax(T x) != softmax(x)."""
    x = _rows()
    p = sn.softmax(x)
    out = []
    for c in (1.0, 100.0, 1e4):
        xc = x + c  # rounded; compare against the exact softmax of the rounded input
        ref = scipy.special.softmax(xc.astype(np.longdouble) - np.longdouble(c), axis=-1)
        shift_err = np.max(np.abs(sn.softmax(xc) - p)) / U64
        out.append(
            {
                "claim": 2,
                "quantity": f"max|p(x+{c:g}) - p(x)| / u (float64)",
                "value": shift_err,
                "detail": "rounding of x + c only",
            }
        )
        out.append(
            {
                "claim": 2,
                "quantity": f"max|p(x+{c:g}) - p_exact(x+{c:g})| / u",
                "value": float(np.max(np.abs(sn.softmax(xc) - ref)) / U64),
                "detail": "",
            }
        )
    entropy = lambda q: -np.sum(scipy.special.xlogy(q, q), axis=-1).mean()  # noqa: E731
    for t in (0.5, 2.0, 10.0):
        q = sn.softmax(t * x)
        out.append(
            {
                "claim": 2,
                "quantity": f"max|p({t:g}x) - p(x)|",
                "value": float(np.max(np.abs(q - p))),
                "detail": f"mean entropy {entropy(p):.3f} -> {entropy(q):.3f} nats",
            }
        )
    return out


def monotonicity() -> list[dict]:
    """Claim 3: x_i > x_j implies p_i >= p_j; how often floating point makes it a tie."""
    out = []
    rng = np.random.default_rng(3)
    for scale in (1.0, 30.0, 300.0):
        x = _rows(1, (512, 1000), scale, np.float32)
        p = sn.softmax(x)
        i, j = rng.integers(0, 1000, (2, 512, 2000))
        r = np.arange(512)[:, None]
        xi, xj, pi, pj = x[r, i], x[r, j], p[r, i], p[r, j]
        larger = xi > xj
        out.append(
            {
                "claim": 3,
                "quantity": f"order violations at scale {scale:g}",
                "value": int(np.sum(larger & (pi < pj))),
                "detail": f"of {int(larger.sum())} ordered pairs (float32)",
            }
        )
        out.append(
            {
                "claim": 3,
                "quantity": f"fraction of ordered pairs tied at scale {scale:g}",
                "value": float(np.mean((pi == pj)[larger])),
                "detail": "p_i == p_j although x_i > x_j (underflow, rounding)",
            }
        )
    return out


def ratios() -> list[dict]:
    """Claim 4: p_i / p_j = exp(x_i - x_j)."""
    x = _rows(2, (256, 1000), 5.0)
    p = sn.softmax(x)
    k = np.argmax(x, axis=1)
    r = np.arange(len(x))[:, None]
    expected = np.exp(x - x[r, k[:, None]])
    got = p / p[r, k[:, None]]
    ok = expected > 1e-300
    rel = np.abs(got[ok] - expected[ok]) / expected[ok]
    return [
        {
            "claim": 4,
            "quantity": "max relative deviation of p_i/p_max from exp(x_i - x_max) / u",
            "value": float(rel.max() / U64),
            "detail": "float64, scale 5, n = 1000",
        },
        {
            "claim": 4,
            "quantity": "ratio of the top two probabilities when their gap doubles",
            "value": float(np.exp(2.0) / np.exp(1.0)),
            "detail": "gap 1 -> 2: ratio e -> e^2",
        },
    ]


def gradients() -> list[dict]:
    """Claim 5: the Jacobian diag(p) - p p^T matches central differences."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 50)) * 3
    p = sn.softmax(x)
    worst = 0.0
    for row, prow in zip(x, p, strict=True):
        jac = np.diag(prow) - np.outer(prow, prow)
        h = 1e-6
        fd = np.empty_like(jac)
        for k in range(row.size):
            e = np.zeros_like(row)
            e[k] = h
            fd[:, k] = (sn.softmax(row + e) - sn.softmax(row - e)) / (2 * h)
        worst = max(worst, float(np.max(np.abs(fd - jac))))
    dy = rng.standard_normal(x.shape)
    vjp = sn.softmax_backward(p, dy)
    explicit = np.stack([(np.diag(q) - np.outer(q, q)) @ d for q, d in zip(p, dy, strict=True)])
    return [
        {
            "claim": 5,
            "quantity": "max |finite difference - (diag(p) - p p^T)|",
            "value": worst,
            "detail": "float64, h = 1e-6, 8 rows of 50",
        },
        {
            "claim": 5,
            "quantity": "max |softmax_backward - explicit Jacobian product| / u",
            "value": float(np.max(np.abs(vjp - explicit)) / U64),
            "detail": "float64",
        },
    ]


def cross_entropy_fused() -> list[dict]:
    """Claim 7: fused loss and gradient against -log(softmax(x))[y] computed apart."""
    out = []
    rng = np.random.default_rng(7)
    for scale in (1.0, 30.0, 100.0):
        x = _rows(7, (4096, 1000), scale, np.float32)
        y = rng.integers(0, 1000, 4096)
        r = np.arange(4096)
        exact = -scipy.special.log_softmax(x.astype(np.float64), axis=-1)[r, y]
        fused = sn.cross_entropy(x, y, reduction="none")
        with np.errstate(divide="ignore"):
            separate = -np.log(sn.softmax(x)[r, y])
        scale_of = np.maximum(np.abs(exact), np.max(np.abs(x), axis=1))
        for name, got in (("fused", fused), ("separate", separate)):
            finite = np.isfinite(got)
            err = np.abs(got[finite] - exact[finite]) / scale_of[finite] / U32
            out.append(
                {
                    "claim": 7,
                    "quantity": f"{name} loss: max error / u at scale {scale:g}",
                    "value": float(err.max()) if err.size else np.nan,
                    "detail": f"{int((~finite).sum())} of 4096 losses infinite",
                }
            )
    x = _rows(8, (4096, 1000), 3.0, np.float32)
    y = rng.integers(0, 1000, 4096)
    _, grad = sn.cross_entropy(x, y, reduction="sum", return_grad=True)
    exact = scipy.special.softmax(x.astype(np.float64), axis=-1)
    exact[np.arange(4096), y] -= 1
    out.append(
        {
            "claim": 7,
            "quantity": "fused gradient p - onehot: max error / u",
            "value": float(np.max(np.abs(grad - exact)) / U32),
            "detail": "float32",
        }
    )
    r = np.arange(4096)

    def separate():
        return -np.log(sn.softmax(x, backend=TIMED_ENGINE)[r, y])

    def fused():
        return sn.cross_entropy(x, y, reduction="none", backend=TIMED_ENGINE)

    seconds, load = _rounds({"fused": fused, "separate": separate})
    out += round_rows(
        7,
        "time of separate / time of fused (loss only)",
        seconds["separate"] / seconds["fused"],
        f"4096 x 1000 float32, {TIMED_ENGINE} engine; {load}",
    )
    return out


def costs() -> list[dict]:
    """Claims 11 and 14: GB/s of the Gaussian and of maxout against the sigmoid's and
    softmax's, serial engine, float32, timed in the same rounds."""
    x = inputs.logits("normal", COST_ROWS, 1000, 1.0, "float32")
    names = ("gaussian", "sigmoid", "softmax[shifted]", "maxout[pool=4]")
    entries = {name: entry(name) for name in names}
    calls = {}
    for name, e in entries.items():
        args = e.arguments(x, np.random.default_rng(1))
        calls[name] = lambda e=e, args=args: e.run(args, backend=TIMED_ENGINE)
    seconds, load = _rounds(calls)
    gbps = {name: e.bytes_factor * x.nbytes / seconds[name] for name, e in entries.items()}
    detail = f"{COST_ROWS} x 1000 float32, {TIMED_ENGINE} engine; {load}"
    out = []
    for claim, a, b in (
        (11, "gaussian", "sigmoid"),
        (11, "gaussian", "softmax[shifted]"),
        (14, "maxout[pool=4]", "softmax[shifted]"),
    ):
        out += round_rows(claim, f"GB/s of {a} / GB/s of {b}", gbps[a] / gbps[b], detail)
    return out


def efficiency() -> list[dict]:
    """Claim 15: GB/s of softmax (serial engine, a new array per call, as the peers
    return) over that of a single-thread copy (``np.copyto``) of the same array into
    an existing one, timed in the same rounds."""
    x = inputs.logits("normal", EFFICIENCY_ROWS, 1000, 1.0, "float32")
    e = entry("softmax[shifted]")
    args = e.arguments(x, np.random.default_rng(1))
    dst = np.empty_like(x)
    seconds, load = _rounds(
        {
            "softmax": lambda: e.run(args, backend=TIMED_ENGINE),
            "copy": lambda: np.copyto(dst, x),
        }
    )
    ratio = (e.bytes_factor / seconds["softmax"]) / (2.0 / seconds["copy"])
    detail = (
        f"{EFFICIENCY_ROWS} x 1000 float32 ({x.nbytes / 2**20:.0f} MiB), {TIMED_ENGINE} "
        f"engine; {load}"
    )
    return round_rows(15, "GB/s of softmax / GB/s of a copy (np.copyto)", ratio, detail)


def two_classes() -> list[dict]:
    """Claim 8: softmax([a, b])_0 = sigmoid(a - b)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((100000, 2)) * 10
    p = sn.softmax(x)[:, 0]
    s = sn.sigmoid(x[:, 0] - x[:, 1], axis=0)
    return [
        {
            "claim": 8,
            "quantity": "max |softmax([a,b])_0 - sigmoid(a-b)| / u",
            "value": float(np.max(np.abs(p - s)) / U64),
            "detail": "1e5 pairs, float64",
        }
    ]


def saturation() -> list[dict]:
    """Claims 9, 10, 12: derivatives of the squashing maps on real (MNIST) logits."""
    x = load_logits().ravel()
    sig = scipy.special.expit(x)
    d_sigmoid = sig * (1 - sig)
    d_arctan = 1 / (np.pi * (1 + x * x))
    d_softplus = sig  # d/dx log(1 + e^x)
    p = scipy.special.softmax(load_logits(), axis=-1).ravel()
    d_softmax = p * (1 - p)
    out = []
    for name, d in (
        ("sigmoid", d_sigmoid),
        ("softmax (diagonal)", d_softmax),
        ("arctan", d_arctan),
        ("softplus", d_softplus),
    ):
        out.append(
            {
                "claim": {"sigmoid": 9, "softmax (diagonal)": 9, "arctan": 10, "softplus": 12}[
                    name
                ],
                "quantity": f"fraction of MNIST logits where d{name}/dx < 1e-3",
                "value": float(np.mean(d < 1e-3)),
                "detail": "25000 logits",
            }
        )
    grid = np.linspace(-20, 20, 400001)
    fd = np.gradient(0.5 + np.arctan(grid) / np.pi, grid)
    out.append(
        {
            "claim": 10,
            "quantity": "max |finite difference - 1/(pi(1+x^2))| of arctan map",
            "value": float(np.max(np.abs(fd - 1 / (np.pi * (1 + grid**2))))),
            "detail": "step 1e-4 on [-20, 20]",
        }
    )
    sums = sn.softplus(load_logits()).sum(axis=-1)
    out.append(
        {
            "claim": 12,
            "quantity": "median row sum of softplus(MNIST logits)",
            "value": float(np.median(sums)),
            "detail": "a distribution would sum to 1",
        }
    )
    return out


def all_measurements() -> list[dict]:
    rows = []
    for measure in (
        invariances,
        monotonicity,
        ratios,
        gradients,
        cross_entropy_fused,
        two_classes,
        saturation,
        costs,
        efficiency,
    ):
        rows += measure()
    return rows
