"""A verdict on each claim of the source article, computed from the saved tables alone.

``write(out)`` reads ``accuracy.csv``, ``speed.csv``, ``overflow.csv`` and
``claims.csv`` under ``out`` and writes ``CLAIMS.md``: per claim its criterion (the
measurement and the thresholds that decide it), the verdict that follows (holds /
does not hold / holds with a qualification, or no difference measured where a timing
cannot tell them apart), the numbers behind it and the figure that shows it.

Every claim is declared with :func:`claim`, beside the function that judges it: the
declaration states the criterion in words, the function applies the same thresholds
(module constants, so the words and the code cannot drift apart) to the tables and
returns the verdict with its evidence.  A table that refutes a claim therefore changes
its verdict; ``tests/test_claims.py`` refutes each claim in turn.  A claim whose table,
rows or columns are missing (a partial run) is "not measured" instead of a guess.

A timing criterion (claims 7, 11, 14, 15) is judged on a ratio measured in interleaved
rounds (one row of ``claims.csv`` per round): the 95% interval of its median
(:func:`experiments.harness.timing.median_interval`) must lie wholly on one side of a
threshold for the verdict on that side; an interval that straddles a threshold gives
"no difference measured", so that a verdict does not flip on timing noise.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.harness.timing import median_interval

HOLDS, FAILS, QUALIFIED, UNTESTED, UNRESOLVED = (
    "holds",
    "does not hold",
    "holds with a qualification",
    "not measured",
    "no difference measured",
)


class NotMeasured(Exception):
    """The table, rows or columns a criterion needs are missing; the message says which."""


@dataclass(frozen=True)
class Criterion:
    """How one claim is decided.

    Attributes
    ----------
    measurement : str
        Which table, which rows and which quantity, in words.
    rule : str
        The thresholds and the verdict that follows from each outcome, in words.
    judge : callable
        ``judge(tables) -> (verdict, evidence)``: applies the rule to the tables;
        raises :class:`NotMeasured` when what it needs is missing.
    """

    measurement: str
    rule: str
    judge: Callable[[Tables], tuple[str, str]]


@dataclass(frozen=True)
class Claim:
    """One claim of the article and the criterion that decides it."""

    number: int
    text: str
    criterion: Criterion
    figure: str = ""


@dataclass
class Verdict:
    """A claim's verdict on one set of tables."""

    number: int
    claim: str
    verdict: str
    evidence: str
    figure: str = ""
    criterion: str = ""


class Tables:
    """The study's tables under one folder, read on demand (each at most once)."""

    def __init__(self, out: pathlib.Path):
        self.out = pathlib.Path(out)
        self._cache: dict[str, pd.DataFrame | None] = {}

    def get(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` (a copy), or None when the file is missing."""
        if name not in self._cache:
            path = self.out / name
            self._cache[name] = pd.read_csv(path) if path.exists() else None
        table = self._cache[name]
        return None if table is None else table.copy()

    def table(self, name: str, columns: list[str]) -> pd.DataFrame:
        """The table ``name``; raises NotMeasured if it or one of ``columns`` is missing."""
        table = self.get(name)
        if table is None:
            raise NotMeasured(f"{name} missing")
        lacking = [c for c in columns if c not in table.columns]
        if lacking:
            raise NotMeasured(f"{name} has no column {', '.join(lacking)}")
        return table

    def measured(self, claim: int) -> dict[str, float]:
        """``quantity -> value`` of the claim's rows in ``claims.csv`` (empty if none)."""
        c = self.get("claims.csv")
        if c is None or not {"claim", "quantity", "value"} <= set(c.columns):
            return {}
        c = c[c.claim == claim]
        return dict(zip(c.quantity, c.value.astype(float), strict=True))

    def quantity(self, claim: int, name: str) -> float:
        """One value of ``claims.csv``; raises NotMeasured if the row is missing."""
        m = self.measured(claim)
        if name not in m:
            raise NotMeasured(f"claims.csv has no row '{name}' for claim {claim}")
        return m[name]

    def quantities(self, claim: int, pattern: str) -> dict[str, float]:
        """The claim's rows of ``claims.csv`` whose quantity matches the regular
        expression ``pattern`` (``re.fullmatch``); raises NotMeasured if none does."""
        rows = {k: v for k, v in self.measured(claim).items() if re.fullmatch(pattern, k)}
        if not rows:
            raise NotMeasured(f"claims.csv has no row matching '{pattern}' for claim {claim}")
        return rows

    def rounds(self, claim: int, quantity: str) -> pd.Series:
        """A ratio measured in interleaved rounds: the values of the claim's rows
        ``quantity, round k`` indexed by ``k``; raises NotMeasured if there is none."""
        rows = self.quantities(claim, re.escape(quantity) + r", round \d+")
        by_round = {int(k.rsplit(" ", 1)[-1]): v for k, v in rows.items()}
        return pd.Series(by_round, name=quantity).sort_index()


CLAIMS: list[Claim] = []


def claim(number: int, text: str, measurement: str, rule: str, figure: str = ""):
    """Declare a claim: its text and criterion; the decorated function is its judge."""

    def register(judge: Callable[[Tables], tuple[str, str]]):
        CLAIMS.append(Claim(number, text, Criterion(measurement, rule, judge), figure))
        return judge

    return register


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return str(v)
    return str(int(v)) if v == int(v) and abs(v) < 1e6 else f"{v:.3g}"


def _pct(v: float) -> str:
    return f"{_fmt(100 * v)}%"


def _error(v: float) -> float:
    """An error quantity, with NaN (no finite result to measure) read as infinite."""
    return np.inf if np.isnan(v) else float(v)


def _unshifted(a: pd.DataFrame) -> pd.DataFrame:
    """Rows without a common offset added to the logits (all rows if no ``offset``)."""
    return a[a.offset == 0] if "offset" in a.columns else a


@dataclass(frozen=True)
class Timed:
    """A ratio over interleaved rounds: its median and the 95% interval of the median."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values) -> Timed:
        values = np.asarray(values, dtype=float)
        return cls(*median_interval(values), rounds=int(np.sum(~np.isnan(values))))

    def __str__(self) -> str:
        return (
            f"{_fmt(self.median)} (95% interval of the median over {self.rounds} "
            f"interleaved rounds: {_fmt(self.low)} to {_fmt(self.high)})"
        )

    def verdict(self, edges: tuple[float, ...], verdicts: tuple[str, ...]) -> str:
        """``verdicts[i]`` if the whole interval lies between ``edges[i - 1]`` and
        ``edges[i]`` (increasing edges; a value on an edge counts above it), else
        :data:`UNRESOLVED`: the interval straddles an edge."""
        low, high = (np.searchsorted(edges, v, side="right") for v in (self.low, self.high))
        return verdicts[low] if low == high else UNRESOLVED


TIMED_RULE = (
    "A timing decides only if the 95% interval of the median ratio over the interleaved "
    "rounds (order statistics) lies wholly on one side of each threshold; an interval that "
    "straddles a threshold gives no difference measured. Timed on the serial engine: on a "
    "shared machine the parallel engine's calls wait for a core whenever another process "
    "holds one, which shifts every round alike."
)


# ---------------------------------------------------------------------------
# 1. Probability distribution

#: Softmax algorithms that subtract the maximum (the stable forms).
STABLE = ("shifted", "online")


def _sum_bound(n):
    """|sum(p) - 1| allowed by rounding, in u: (n + 2) u, from n rounded terms, each
    with a relative error of at most (n + 2) u, adding up to 1."""
    return n + 2


@claim(
    1,
    "Softmax output is a probability distribution (entries in [0, 1], sum 1).",
    measurement="accuracy.csv, op softmax, every dtype, shape, scale and distribution: "
    "`mismatched_rows` (rows with NaN or inf where the exact softmax is finite) and "
    "`sum_error_u` (max |sum(p) - 1| of a row, in u).",
    rule="A sweep cell keeps the property if `mismatched_rows` is 0 and `sum_error_u` <= "
    "n + 2 (rounding of n terms; the entries' range [0, 1] is not in the table, the property "
    "tests check it). Does not hold if a cell of the stable forms (shifted, online) breaks "
    "it; holds with a qualification if only other algorithms (naive, division-free) break "
    "it; holds if no cell of any algorithm does.",
    figure="sum_error_vs_n.png",
)
def _claim_1(t: Tables) -> tuple[str, str]:
    a = t.table(
        "accuracy.csv", ["op", "algorithm", "dtype", "n", "scale", "sum_error_u", "mismatched_rows"]
    )
    soft = a[a.op == "softmax"]
    stable = soft[soft.algorithm.isin(STABLE)]
    if stable.empty:
        raise NotMeasured("accuracy.csv has no shifted/online softmax rows")
    broken = (soft.mismatched_rows > 0) | (soft.sum_error_u > _sum_bound(soft.n))
    per_alg = broken.groupby(soft.algorithm).sum()
    stable_broken = int(per_alg.reindex(list(STABLE), fill_value=0).sum())
    others = {alg: int(k) for alg, k in per_alg.items() if alg not in STABLE and k}
    worst = stable.groupby(["algorithm", "dtype"]).sum_error_u.max()
    text = (
        "Stable forms: max |sum - 1| = "
        + ", ".join(f"{alg} {d} {_fmt(v)} u" for (alg, d), v in worst.items())
        + f" (rows up to n = {int(stable.n.max())}); {stable_broken} of {len(stable)} sweep "
        f"cells break the property."
    )
    if others:
        text += " Other algorithms break it in " + ", ".join(
            f"{alg} {k} of {int((soft.algorithm == alg).sum())} cells" for alg, k in others.items()
        )
        text += " (naive: overflow/underflow to inf or NaN"
        free = soft[soft.algorithm == "division_free"]
        if len(free):
            by_scale = free.groupby("scale").sum_error_u.max()
            text += (
                f"; division-free exp(x - lse): the sum error grows with the logits' size, "
                f"{_fmt(by_scale.iloc[0])} u at scale {_fmt(by_scale.index[0])} to "
                f"{_fmt(by_scale.iloc[-1])} u at scale {_fmt(by_scale.index[-1])}"
            )
        text += ")."
    if stable_broken:
        return FAILS, text
    return (QUALIFIED if others else HOLDS), text


# ---------------------------------------------------------------------------
# 2. Normalization, shift and scale

SHIFT_TOL_U = 10.0
SCALE_CHANGE = 1e-3


@claim(
    2,
    "Softmax normalizes inputs so that the output is well-defined and independent of input scale.",
    measurement="claims.csv, claim 2 (float64, 256 rows of 1000 normal logits): "
    "max |softmax(x + c) - exact softmax of the rounded x + c| in u for c = 1, 100, 1e4 "
    "(shift invariance), and max |softmax(T x) - softmax(x)| for T = 0.5, 2, 10 (scale).",
    rule=f"Does not hold if the shift error exceeds {SHIFT_TOL_U:g} u for some c. Holds "
    f"with a qualification (shift invariant, not scale invariant) if the shift error is "
    f"within {SHIFT_TOL_U:g} u but some T moves a probability by more than {SCALE_CHANGE:g}; "
    f"holds if no T does.",
    figure="error_vs_scale.png",
)
def _claim_2(t: Tables) -> tuple[str, str]:
    shift = t.quantities(2, r"max\|p\(x\+(.+)\) - p_exact\(x\+.+\)\| / u")
    scale = t.quantities(2, r"max\|p\((.+)x\) - p\(x\)\|")
    worst_shift = max(_error(v) for v in shift.values())
    worst_scale = max(_error(v) for v in scale.values())
    moved = t.measured(2).get("max|p(x+10000) - p(x)| / u (float64)", np.nan)
    text = (
        f"Shift: softmax(x + c) is within {_fmt(worst_shift)} u of the exact softmax of the "
        f"rounded x + c over {len(shift)} offsets"
        + (
            f" (it differs from softmax(x) by {_fmt(moved)} u at c = 1e4 only because "
            f"x + c is rounded)"
            if np.isfinite(moved)
            else ""
        )
        + f". Scale: multiplying the logits by T moves probabilities by up to "
        f"{_fmt(worst_scale)} (temperature changes the distribution; see claims.csv for the "
        f"entropies)."
    )
    if worst_shift > SHIFT_TOL_U:
        return FAILS, text
    return (QUALIFIED if worst_scale > SCALE_CHANGE else HOLDS), text


# ---------------------------------------------------------------------------
# 3. Monotonicity


@claim(
    3,
    "Softmax is monotonic: a larger input gives a larger output probability.",
    measurement="claims.csv, claim 3 (float32, 2000 random pairs in each of 512 rows of "
    "1000 logits, scales 1, 30, 300): pairs with x_i > x_j but p_i < p_j (violations), and "
    "the fraction of pairs with x_i > x_j but p_i == p_j (ties).",
    rule="Does not hold if there is a violation. Holds with a qualification (the order is "
    "only weak in floating point) if there is none but some pairs tie; holds if no pair "
    "ties.",
)
def _claim_3(t: Tables) -> tuple[str, str]:
    viol = t.quantities(3, r"order violations at scale .+")
    tied = t.quantities(3, r"fraction of ordered pairs tied at scale (.+)")
    n_viol = int(sum(viol.values()))
    worst_key = max(tied, key=tied.get)
    text = (
        f"{n_viol} pairs with x_i > x_j gave p_i < p_j over {len(viol)} scales. Ties: "
        + ", ".join(
            f"{_pct(v)} {k.removeprefix('fraction of ordered pairs tied ')}"
            for k, v in tied.items()
        )
        + (
            f" (most at {worst_key.rsplit(' ', 1)[-1]}: both underflow to 0 or round alike)."
            if tied[worst_key] > 0
            else "."
        )
    )
    if n_viol:
        return FAILS, text
    return (QUALIFIED if max(tied.values()) > 0 else HOLDS), text


# ---------------------------------------------------------------------------
# 4. Ratios

RATIO_TOL_U = 100.0


@claim(
    4,
    "Softmax amplifies differences between inputs: p_i / p_j = exp(x_i - x_j).",
    measurement="claims.csv, claim 4 (float64, 256 rows of 1000 logits of scale 5): max "
    "relative deviation of the computed p_i / p_max from exp(x_i - x_max), in u.",
    rule=f"Holds if the deviation is at most {RATIO_TOL_U:g} u (rounding of the "
    f"subtraction, the exp of arguments up to ~40 in size, and the division); does not "
    f"hold otherwise.",
)
def _claim_4(t: Tables) -> tuple[str, str]:
    dev = _error(t.quantity(4, "max relative deviation of p_i/p_max from exp(x_i - x_max) / u"))
    text = (
        f"The computed ratios match exp(x_i - x_j) to {_fmt(dev)} u: a gap of d in logits is "
        f"a factor e^d in probability, so doubling a gap squares the ratio."
    )
    return (HOLDS if dev <= RATIO_TOL_U else FAILS), text


# ---------------------------------------------------------------------------
# 5. Differentiability

FD_TOL = 1e-6
VJP_TOL_U = 50.0


@claim(
    5,
    "Softmax is differentiable everywhere, with Jacobian diag(p) - p p^T.",
    measurement="claims.csv, claim 5 (float64, 8 rows of 50 logits of scale 3): max "
    "|central difference (h = 1e-6) - (diag(p) - p p^T)|, and max |softmax_backward - "
    "explicit Jacobian product| in u.",
    rule=f"Does not hold if the central differences are off by more than {FD_TOL:g} "
    f"(truncation h^2 plus rounding u/h is ~1e-10; a wrong Jacobian is off by O(p)). Holds "
    f"with a qualification (right Jacobian, wrong backward kernel) if they agree but "
    f"softmax_backward is off by more than {VJP_TOL_U:g} u (n = 50 terms); holds if both "
    f"agree.",
)
def _claim_5(t: Tables) -> tuple[str, str]:
    fd = _error(t.quantity(5, "max |finite difference - (diag(p) - p p^T)|"))
    vjp = _error(t.quantity(5, "max |softmax_backward - explicit Jacobian product| / u"))
    text = (
        f"Central differences agree with diag(p) - p p^T to {_fmt(fd)}, and softmax_backward "
        f"equals the explicit Jacobian product to {_fmt(vjp)} u."
    )
    if fd > FD_TOL:
        return FAILS, text
    return (HOLDS if vjp <= VJP_TOL_U else QUALIFIED), text


# ---------------------------------------------------------------------------
# 6. Numerical stability


@claim(
    6,
    "Softmax is designed to handle the numerical instability of exponentiating "
    "large or small inputs.",
    measurement="overflow.csv: `nonfinite_fraction` (share of outputs that are NaN or inf) "
    "of each algorithm, dtype and arithmetic over common offsets added to the logits.",
    rule="Does not hold if a stable form (shifted, online, division-free) gives a non-finite "
    "output at some offset. Holds with a qualification (only the shifted forms handle it) "
    "if they never do but the naive exp(x_i) / sum exp(x_j) does; holds if no algorithm "
    "does.",
    figure="overflow_map.png",
)
def _claim_6(t: Tables) -> tuple[str, str]:
    o = t.table(
        "overflow.csv", ["algorithm", "dtype", "arithmetic", "offset", "nonfinite_fraction"]
    )
    stable = o[o.algorithm != "naive"]
    naive = o[o.algorithm == "naive"]
    if stable.empty:
        raise NotMeasured("overflow.csv has no shifted/online/division-free rows")
    stable_bad = stable[stable.nonfinite_fraction > 0]
    parts = []
    for (dtype, arith), d in naive.groupby(["dtype", "arithmetic"]):
        bad = d[d.nonfinite_fraction > 0]
        hi, lo = bad[bad.offset > 0].offset.min(), bad[bad.offset < 0].offset.max()
        parts.append(
            f"{dtype} ({arith}): overflow from offset {_fmt(hi)}, underflow from {_fmt(lo)}"
        )
    naive_bad = int((naive.nonfinite_fraction > 0).sum())
    text = (
        f"The shifted, online and division-free algorithms gave {len(stable_bad)} non-finite "
        f"cells out of {len(stable)} over offsets {_fmt(o.offset.min())} to "
        f"{_fmt(o.offset.max())}. The naive formula gave {naive_bad} of {len(naive)}"
        + (": " + "; ".join(parts) if naive_bad else "")
        + "."
    )
    if len(stable_bad):
        return FAILS, text
    return (QUALIFIED if naive_bad else HOLDS), text


# ---------------------------------------------------------------------------
# 7. Cross-entropy

LOSS_TOL_U = 10.0
GRAD_TOL_U = 10.0
FASTER = 1.1


@claim(
    7,
    "Softmax pairs with cross-entropy: the fused gradient p - y is exact and the "
    "fused loss is more accurate and faster than -log(softmax(x))[y].",
    measurement="claims.csv, claim 7 (float32, 4096 rows of 1000 logits, scales 1, 30, "
    "100): max error of the fused loss and of -log(softmax(x))[y] in u (an all-infinite "
    "result counts as infinite error), max error of the fused gradient p - onehot in u, and "
    "the time of the separate loss over the fused one (serial engine), timed in interleaved "
    "rounds (one ratio per round).",
    rule=f"Does not hold if the fused loss exceeds {LOSS_TOL_U:g} u at some scale or the "
    f"fused gradient exceeds {GRAD_TOL_U:g} u. If both are within, holds with a "
    f"qualification when the separate loss is also within {LOSS_TOL_U:g} u at every scale "
    f"(no accuracy gained). Otherwise the time ratio decides: holds if the separate loss "
    f"takes at least {FASTER:g} times the time of the fused one over the whole interval, "
    f"holds with a qualification (more accurate, not faster) if less over the whole "
    f"interval, no difference measured if the interval straddles {FASTER:g}. " + TIMED_RULE,
)
def _claim_7(t: Tables) -> tuple[str, str]:
    fused = {k: _error(v) for k, v in t.quantities(7, r"fused loss: max error / u at .+").items()}
    sep = {k: _error(v) for k, v in t.quantities(7, r"separate loss: max error / u at .+").items()}
    grad = _error(t.quantity(7, "fused gradient p - onehot: max error / u"))
    speed = Timed.of(t.rounds(7, "time of separate / time of fused (loss only)"))
    worst_sep = max(sep, key=sep.get)
    accurate = max(fused.values()) <= LOSS_TOL_U and grad <= GRAD_TOL_U
    gain = sep[worst_sep] > LOSS_TOL_U
    timed = speed.verdict((FASTER,), (QUALIFIED, HOLDS))
    note = {
        HOLDS: ".",
        QUALIFIED: " (the fused loss is not faster with the current CPU kernels).",
        UNRESOLVED: f" (the interval straddles {FASTER:g}: no difference measured).",
    }
    text = (
        f"The fused loss stays within {_fmt(max(fused.values()))} u at every scale; "
        f"-log(softmax(x))[y] reaches {_fmt(sep[worst_sep])} u "
        f"({worst_sep.rsplit(' / u ', 1)[-1]}; it turns infinite where p_y underflows, see "
        f"claims.csv). The fused gradient p - onehot is within {_fmt(grad)} u of exact. The "
        f"separate loss takes {speed} times the fused one" + note[timed]
    )
    if not accurate:
        return FAILS, text
    return (timed if gain else QUALIFIED), text


# ---------------------------------------------------------------------------
# 8. Two classes

TWO_CLASS_TOL_U = 4.0


@claim(
    8,
    "Sigmoid suits binary classification; two-class softmax is a sigmoid.",
    measurement="claims.csv, claim 8 (float64, 1e5 pairs of logits of scale 10): max "
    "|softmax([a, b])_0 - sigmoid(a - b)| in u.",
    rule=f"Holds if at most {TWO_CLASS_TOL_U:g} u (a few roundings); does not hold otherwise.",
)
def _claim_8(t: Tables) -> tuple[str, str]:
    d = _error(t.quantity(8, "max |softmax([a,b])_0 - sigmoid(a-b)| / u"))
    text = f"softmax([a, b])_0 and sigmoid(a - b) agree to {_fmt(d)} u."
    return (HOLDS if d <= TWO_CLASS_TOL_U else FAILS), text


# ---------------------------------------------------------------------------
# 9, 10, 12. Saturation on real logits

FLAT = 0.01
SIG_FLAT = "fraction of MNIST logits where dsigmoid/dx < 1e-3"


@claim(
    9,
    "The logistic function extends to many classes by one-vs-all but may suffer from "
    "vanishing gradients.",
    measurement="claims.csv, claim 9 (25000 real MNIST logits): the fraction where the "
    "sigmoid's derivative is below 1e-3, and the fraction where softmax's Jacobian diagonal "
    "p(1 - p) is.",
    rule=f"Does not hold if the sigmoid's fraction is at most {_pct(FLAT)} (no vanishing "
    f"gradients to speak of). Holds with a qualification (softmax saturates as much) if it "
    f"is above but softmax's fraction is at least as large; holds if softmax's is smaller.",
)
def _claim_9(t: Tables) -> tuple[str, str]:
    sig = t.quantity(9, SIG_FLAT)
    soft = t.quantity(9, "fraction of MNIST logits where dsoftmax (diagonal)/dx < 1e-3")
    text = (
        f"The sigmoid's derivative (at most 1/4) is below 1e-3 for {_pct(sig)} of the MNIST "
        f"logits; softmax's Jacobian diagonal p(1 - p) for {_pct(soft)}. With the matching "
        f"cross-entropy loss both gradients are prediction - target, which does not vanish "
        f"on a wrong prediction."
    )
    if sig <= FLAT:
        return FAILS, text
    return (QUALIFIED if soft >= sig else HOLDS), text


@claim(
    10,
    "ArcTan is smooth and continuous but less common.",
    measurement="claims.csv, claim 10: max |finite difference (step 1e-4 on [-20, 20]) - "
    "1/(pi(1 + x^2))| of 1/2 + arctan(x)/pi, and the fraction of MNIST logits where that "
    "derivative is below 1e-3.",
    rule=f"Does not hold if the finite differences are off by more than {FD_TOL:g} "
    f"(truncation ~1e-9). Otherwise holds with a qualification: smoothness is measured, "
    f"'less common' is a statement about practice that no computation here can test.",
)
def _claim_10(t: Tables) -> tuple[str, str]:
    fd = _error(t.quantity(10, "max |finite difference - 1/(pi(1+x^2))| of arctan map"))
    flat = t.measured(10).get("fraction of MNIST logits where darctan/dx < 1e-3", np.nan)
    text = f"The derivative matches 1/(pi(1 + x^2)) to {_fmt(fd)}" + (
        f"; it decays only like 1/x^2 (below 1e-3 for {_pct(flat)} of MNIST logits)."
        if np.isfinite(flat)
        else "."
    )
    return (QUALIFIED if fd <= FD_TOL else FAILS), text


NORMALIZED = 0.01


@claim(
    12,
    "Softplus avoids vanishing gradients but its outputs are not normalized.",
    measurement="claims.csv, claims 12 and 9 (25000 real MNIST logits): the median row sum "
    "of softplus, and the fraction of logits where its derivative sigmoid(x) is below 1e-3 "
    "(against the sigmoid's own fraction).",
    rule=f"Does not hold if the median row sum is within {NORMALIZED:g} of 1 (normalized "
    f"after all) or softplus's fraction is not below the sigmoid's. Holds if the fraction "
    f"is at most {_pct(FLAT)}; holds with a qualification (fewer vanishing gradients than "
    f"the sigmoid, but not none) if it is above {_pct(FLAT)} and below the sigmoid's.",
)
def _claim_12(t: Tables) -> tuple[str, str]:
    flat = t.quantity(12, "fraction of MNIST logits where dsoftplus/dx < 1e-3")
    total = t.quantity(12, "median row sum of softplus(MNIST logits)")
    text = (
        f"Median row sum {_fmt(total)} on MNIST logits (a distribution sums to 1). The "
        f"derivative sigmoid(x) is below 1e-3 for {_pct(flat)} of MNIST logits (the very "
        f"negative ones)"
    )
    if abs(total - 1) <= NORMALIZED:
        return FAILS, text + "."
    if flat <= FLAT:
        return HOLDS, text + "."
    sig = t.quantity(9, SIG_FLAT)
    text += f", against {_pct(sig)} for the sigmoid's derivative."
    return (QUALIFIED if flat < sig else FAILS), text


# ---------------------------------------------------------------------------
# 11, 14, 15. Speed

CHEAP, EXPENSIVE = 0.8, 0.5
BIG = 32 * 2**20
EFFICIENT, INEFFICIENT = 0.7, 0.25


def _ratio(t: Tables, claim: int, a: str, b: str) -> pd.Series:
    """GB/s(a) / GB/s(b) per interleaved round, from ``claims.csv``."""
    return t.rounds(claim, f"GB/s of {a} / GB/s of {b}")


def _cost_verdict(speed_ratio: Timed) -> str:
    """'X is computationally expensive', from X's GB/s over its comparison's."""
    return speed_ratio.verdict((EXPENSIVE, CHEAP), (HOLDS, QUALIFIED, FAILS))


COST_RULE = (
    f"Holds if X runs below {EXPENSIVE:g} times the comparison's GB/s over the whole "
    f"interval; holds with a qualification if the whole interval is between {EXPENSIVE:g} "
    f"and {CHEAP:g}; does not hold if it is at or above {CHEAP:g} (within 20%: no real "
    f"difference); no difference measured if it straddles {EXPENSIVE:g} or {CHEAP:g}. " + TIMED_RULE
)


@claim(
    11,
    "The Gaussian function is computationally expensive.",
    measurement="claims.csv, claim 11 (serial engine, float32, 1048 rows of 1000 logits, "
    "about 4 MiB): GB/s(gaussian) / GB/s(sigmoid) and GB/s(gaussian) / GB/s(softmax), all "
    "three timed in the same interleaved rounds; per round the smaller of the two ratios.",
    rule=COST_RULE.replace("X", "the Gaussian"),
    figure="speed_gbps.png",
)
def _claim_11(t: Tables) -> tuple[str, str]:
    r1, r2 = _ratio(t, 11, "gaussian", "sigmoid"), _ratio(t, 11, "gaussian", "softmax[shifted]")
    both = pd.concat([r1, r2], axis=1, join="inner")
    if both.empty:
        raise NotMeasured("claims.csv has no round with both of claim 11's ratios")
    ratio = Timed.of(both.min(axis=1))
    text = (
        f"The Gaussian runs at {_fmt(r1.median())} times the GB/s of the sigmoid and "
        f"{_fmt(r2.median())} times that of softmax (medians over the rounds); the smaller "
        f"ratio per round: {ratio}."
    )
    verdict = _cost_verdict(ratio)
    return verdict, text + (" One exp per entry, like the others." if verdict == FAILS else "")


@claim(
    13,
    "Sparsemax encourages sparsity in output probabilities.",
    measurement="accuracy.csv, preset imagenet (rows of 1000), normal logits, float64, no "
    "offset: `support` (mean nonzeros per row) of sparsemax and of softmax[shifted] at each "
    "logit scale.",
    rule="Holds if sparsemax's support is at most softmax's at every scale and below it at "
    "some; does not hold otherwise.",
    figure="sparsity.png",
)
def _claim_13(t: Tables) -> tuple[str, str]:
    a = t.table("accuracy.csv", ["entry", "preset", "distribution", "dtype", "scale", "support"])
    sel = _unshifted(a)
    sel = sel[(sel.preset == "imagenet") & (sel.distribution == "normal")]
    sel = sel[sel.dtype == "float64"]
    piv = sel.pivot_table(index="scale", columns="entry", values="support")
    sparse = next((c for c in ("sparsemax[pivot]", "sparsemax[sort]") if c in piv), None)
    if sparse is None or "softmax[shifted]" not in piv:
        raise NotMeasured("accuracy.csv has no imagenet float64 support of sparsemax/softmax")
    want = [c for c in (sparse, "entmax15", "softmax[shifted]") if c in piv]
    both = piv[[sparse, "softmax[shifted]"]].dropna()
    if both.empty:
        raise NotMeasured("no scale with the support of both sparsemax and softmax")
    rows = "; ".join(
        f"scale {_fmt(s)}: " + ", ".join(f"{c} {_fmt(piv.loc[s, c])}" for c in want)
        for s in piv.index
    )
    text = (
        f"Mean nonzeros per row of 1000: {rows}. Softmax gives no exact zero until exp underflows."
    )
    sparser = both[sparse] <= both["softmax[shifted]"]
    strictly = both[sparse] < both["softmax[shifted]"]
    return (HOLDS if sparser.all() and strictly.any() else FAILS), text


@claim(
    14,
    "Maxout is computationally expensive.",
    measurement="claims.csv, claim 14 (serial engine, float32, 1048 rows of 1000 logits, "
    "about 4 MiB): GB/s(maxout, pool 4) / GB/s(softmax), both timed in the same "
    "interleaved rounds.",
    rule=COST_RULE.replace("X", "maxout"),
    figure="speed_gbps.png",
)
def _claim_14(t: Tables) -> tuple[str, str]:
    r = Timed.of(_ratio(t, 14, "maxout[pool=4]", "softmax[shifted]"))
    text = f"Maxout (pool 4) moves {r} times the GB/s of softmax: a max per group, no exp at all."
    return _cost_verdict(r), text


@claim(
    15,
    "Softmax converts raw scores into probabilities efficiently.",
    measurement="claims.csv, claim 15 (softmax[shifted], serial engine, float32, 16777 rows "
    "of 1000 logits, 64 MiB, a new array per call as the peers return): GB/s over that of a "
    "single-thread copy of the same array into an existing one (`np.copyto`), both timed in "
    "the same interleaved rounds.",
    rule=f"Holds if at least {EFFICIENT:g} over the whole interval; holds with a "
    f"qualification if the whole interval is between {INEFFICIENT:g} and {EFFICIENT:g}; does "
    f"not hold if it is below {INEFFICIENT:g} (slower than four copies); no difference "
    f"measured if it straddles {INEFFICIENT:g} or {EFFICIENT:g}. " + TIMED_RULE,
    figure="speed_gbps.png",
)
def _claim_15(t: Tables) -> tuple[str, str]:
    ratio = Timed.of(t.rounds(15, "GB/s of softmax / GB/s of a copy (np.copyto)"))
    text = f"The serial engine reaches {ratio} of the GB/s of np.copyto on the same array."
    others = _others_at_scale(t)
    if others:
        text += f" For comparison, speed.csv (arrays of 32 MiB and more): {others}."
    verdict = ratio.verdict((INEFFICIENT, EFFICIENT), (FAILS, QUALIFIED, HOLDS))
    if verdict == HOLDS:
        return HOLDS, text
    text += (
        " These are allocating calls, as the peers' are: at these sizes the operating "
        "system zeroes each new page of the result when it is first written, which takes "
        "about as long as the copy itself; written into an existing array (`out=`) the "
        "same kernels reach the ratios in ROOFLINE.md."
    )
    return verdict, text


def _others_at_scale(t: Tables) -> str:
    """Median GB/s of softmax on arrays of 32 MiB and more of each engine in speed.csv
    (ours and the peers that were installed), or '' without that table."""
    s = t.get("speed.csv")
    need = {"entry", "engine", "dtype", "bytes", "gbps"}
    if s is None or not need <= set(s.columns):
        return ""
    s = s[(s.entry == "softmax[shifted]") & (s.dtype == "float32") & (s.bytes >= BIG)]
    gbps = s.groupby("engine").gbps.median()
    return ", ".join(f"{engine} {_fmt(float(v))} GB/s" for engine, v in gbps.items())


# ---------------------------------------------------------------------------
# 16. Softmax collapse (Prieto, Barsbey, Mediano & Birdal, ICLR 2025)

#: A map has collapsed at a scale where at least this fraction of the rows have an
#: exactly zero gradient at their target.
COLLAPSED = 0.5
#: How much later (in logit scale) StableMax must collapse than softmax.
DELAY = 10.0
#: The maps of collapse.csv, softmax first.
MAPS16 = ("softmax", "stablemax")


def _collapse_scale(g: pd.DataFrame, level: float) -> float:
    """The smallest scale at which the fraction of collapsed rows reaches ``level``
    (inf if none of the grid's does)."""
    hit = g[g.target_grad_zero >= level]
    return float(hit.scale.min()) if len(hit) else np.inf


@claim(
    16,
    "With softmax cross-entropy, as the logits grow (naive loss minimization scales "
    "them), float32 softmax collapse happens: the probability of the correct class "
    "rounds to exactly 1 and its loss gradient is exactly 0, so learning from the "
    "sample stops; StableMax, growing linearly rather than exponentially, delays it "
    "(Prieto, Barsbey, Mediano & Birdal 2025).",
    measurement="collapse.csv (experiments/measure/collapse.py): logits scale * z for "
    "a fixed direction z, the target each row's largest entry, scales 1 to 1e12, float32 "
    "and float64, through the fused cross_entropy and stablemax_cross_entropy; per "
    "dataset (mnist: 2500 real MNIST logit vectors; margin_113: 113 classes, the target "
    "positive and every other class negative), dtype, map and scale, `target_grad_zero`, "
    "the fraction of rows whose gradient at the target is exactly 0. A map's collapse "
    f"scale is the smallest scale at which that fraction reaches {COLLAPSED:g} (infinite "
    "if it never does in the grid).",
    rule=f"In float32, on every dataset: does not hold if softmax never collapses in the "
    f"grid, or if StableMax collapses at a scale no larger than softmax's; holds if "
    f"StableMax's collapse scale is at least {DELAY:g} times softmax's (a StableMax that "
    f"never collapses counts as the grid's largest scale, and must clear {DELAY:g} times "
    f"softmax's too, else the grid is too short: not measured); holds with a "
    f"qualification if it is later on every dataset but by less than {DELAY:g} times "
    f"on some.",
    figure="collapse.png",
)
def _claim_16(t: Tables) -> tuple[str, str]:
    c = t.table("collapse.csv", ["dataset", "dtype", "map", "scale", "target_grad_zero"])
    single = c[c.dtype == "float32"]
    if not {"softmax", "stablemax"} <= set(single["map"]):
        raise NotMeasured("collapse.csv has no float32 rows of both softmax and stablemax")
    ratios, parts = {}, []
    for dataset, d in single.groupby("dataset"):
        soft_rows, stable_rows = d[d["map"] == "softmax"], d[d["map"] == "stablemax"]
        soft = _collapse_scale(soft_rows, COLLAPSED)
        stable = _collapse_scale(stable_rows, COLLAPSED)
        top = float(d.scale.max())
        # never in the grid: at least the grid's end, where that clears the threshold
        ratios[dataset] = stable / soft if np.isfinite(stable) else top / soft
        if np.isfinite(stable):
            later = f"StableMax at {_fmt(stable)}, {_fmt(stable / soft)} times later"
        else:
            later = (
                f"StableMax not up to scale {_fmt(top)} (at most "
                f"{_pct(stable_rows.target_grad_zero.max())} of its rows)"
            )
        parts.append(
            f"{dataset}: softmax from scale {_fmt(_collapse_scale(soft_rows, 1e-9))} "
            f"(half of the rows at {_fmt(soft)}), {later}"
        )
        if not np.isfinite(stable) and np.isfinite(soft) and top / soft < DELAY:
            ratios[dataset] = np.nan
    for dataset, d in c[c.dtype == "float64"].groupby("dataset"):
        soft, stable = (_collapse_scale(d[d["map"] == m], COLLAPSED) for m in MAPS16)
        never = "not in the grid"
        parts.append(
            f"float64 {dataset}: half of the rows at {_fmt(soft)} with softmax, "
            f"{_fmt(stable) if np.isfinite(stable) else never} with StableMax"
        )
    text = "Float32 " + "; ".join(parts) + "."
    if any(r == 0 for r in ratios.values()):  # softmax never collapsed: top / inf
        return FAILS, text + " Softmax did not collapse within the grid on some dataset."
    if any(np.isnan(r) for r in ratios.values()):
        raise NotMeasured(f"the grid ends too early to measure StableMax's delay. {text}")
    if min(ratios.values()) <= 1:
        return FAILS, text
    return (HOLDS if min(ratios.values()) >= DELAY else QUALIFIED), text


CLAIMS.sort(key=lambda c: c.number)


def judge(c: Claim, t: Tables) -> Verdict:
    """Apply one claim's criterion to the tables."""
    try:
        verdict, evidence = c.criterion.judge(t)
    except NotMeasured as missing:
        verdict, evidence = UNTESTED, f"{missing}."
    criterion = f"{c.criterion.measurement} {c.criterion.rule}"
    return Verdict(c.number, c.text, verdict, evidence, c.figure, criterion)


def verdicts(out) -> list[Verdict]:
    """Every claim's verdict on the tables under ``out``."""
    t = Tables(out)
    return [judge(c, t) for c in CLAIMS]


def write(out) -> pathlib.Path:
    """Write ``CLAIMS.md`` under ``out`` from the tables there."""
    out = pathlib.Path(out)
    lines = [
        "# The article's claims, tested",
        "",
        "Generated by `python -m experiments claims` from the tables in this folder; "
        "do not edit by hand. Each verdict follows from the criterion printed above it "
        "(declared beside its code in `experiments/report/claims.py`).",
        "",
    ]
    for v in verdicts(out):
        lines += [
            f"## {v.number}. {v.claim}",
            "",
            f"*Criterion:* {v.criterion}",
            "",
            f"**Verdict: {v.verdict}.** {v.evidence}",
            "",
        ]
        if v.figure and (out / v.figure).exists():
            lines += [f"![{v.figure}]({v.figure})", ""]
    path = out / "CLAIMS.md"
    path.write_text("\n".join(lines))
    return path
