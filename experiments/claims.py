"""A verdict on each claim of the source article, from the saved tables alone.

``write(out)`` reads ``accuracy.csv``, ``speed.csv``, ``overflow.csv``,
``claims.csv`` and the Blanchard-Higham-Higham summary under ``out`` and writes
``CLAIMS.md``: per claim the verdict (holds / does not hold / holds with a
qualification), the numbers that decide it and the figure that shows it.  A claim
whose table is missing (a partial run) says so instead of guessing.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOLDS, FAILS, QUALIFIED, UNTESTED = (
    "holds",
    "does not hold",
    "holds with a qualification",
    "not measured",
)


@dataclass
class Verdict:
    number: int
    claim: str
    verdict: str
    evidence: str
    figure: str = ""


class Tables:
    """The study's tables under one folder, read on demand."""

    def __init__(self, out: pathlib.Path):
        self.out = pathlib.Path(out)

    def get(self, name: str) -> pd.DataFrame | None:
        path = self.out / name
        return pd.read_csv(path) if path.exists() else None

    def measured(self, claim: int) -> dict[str, float]:
        c = self.get("claims.csv")
        if c is None:
            return {}
        c = c[c.claim == claim]
        return dict(zip(c.quantity, c.value, strict=True))


def _fmt(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else str(v)


def _speed(t: Tables, entry: str, engine: str, preset: str | None = None):
    s = t.get("speed.csv")
    if s is None:
        return None
    s = s[(s.entry == entry) & (s.engine == engine) & (s.dtype == "float32")]
    if preset is not None:
        s = s[s.preset == preset]
    return s.sort_values("bytes") if len(s) else None


def claim_1(t: Tables) -> Verdict:
    text = "Softmax output is a probability distribution (entries in [0, 1], sum 1)."
    a = t.get("accuracy.csv")
    if a is None:
        return Verdict(1, text, UNTESTED, "accuracy.csv missing")
    soft = a[(a.op == "softmax") & a.algorithm.isin(["shifted", "online"])]
    worst = soft.groupby(["algorithm", "dtype"]).sum_error_u.max()
    free = a[(a.op == "softmax") & (a.algorithm == "division_free")]
    free_worst = free.groupby("scale").sum_error_u.max()
    naive = a[(a.op == "softmax") & (a.algorithm == "naive")]
    per = ", ".join(f"{alg} {d} {_fmt(v)} u" for (alg, d), v in worst.items())
    return Verdict(
        1,
        text,
        QUALIFIED,
        f"Entries lie in [0, 1], but rows sum to 1 only to within rounding. Shifted and "
        f"online: max |sum - 1| = {per} (rows up to {int(soft.n.max())}). Division-free "
        f"exp(x - lse): the error grows with the logits' size, up to "
        f"{_fmt(free_worst.iloc[-1])} u at scale {_fmt(free_worst.index[-1])} (against "
        f"{_fmt(free_worst.iloc[0])} u at scale {_fmt(free_worst.index[0])}). The naive "
        f"formula loses the property outright: {int(naive.mismatched_rows.sum())} rows of its "
        f"sweep came out NaN or inf (overflow/underflow).",
        "sum_error_vs_n.png",
    )


def claim_2(t: Tables) -> Verdict:
    text = (
        "Softmax normalizes inputs so that the output is well-defined and "
        "independent of input scale."
    )
    m = t.measured(2)
    if not m:
        return Verdict(2, text, UNTESTED, "claims.csv missing")
    shift = m.get("max|p(x+10000) - p_exact(x+10000)| / u", np.nan)
    moved = m.get("max|p(x+10000) - p(x)| / u (float64)", np.nan)
    temp = m.get("max|p(2x) - p(x)|", np.nan)
    return Verdict(
        2,
        text,
        QUALIFIED,
        f"Shift invariance holds: softmax(x + c) equals the exact softmax of the rounded "
        f"x + c within {_fmt(shift)} u for c = 1e4 (it differs from softmax(x) by "
        f"{_fmt(moved)} u only because x + c is rounded). Scale invariance does not hold: "
        f"multiplying the logits by 2 moves probabilities by up to {_fmt(temp)} "
        f"(temperature changes the distribution; see claims.csv for the entropies).",
        "error_vs_scale.png",
    )


def claim_3(t: Tables) -> Verdict:
    text = "Softmax is monotonic: a larger input gives a larger output probability."
    m = t.measured(3)
    if not m:
        return Verdict(3, text, UNTESTED, "claims.csv missing")
    viol = sum(v for k, v in m.items() if k.startswith("order violations"))
    tied = m.get("fraction of ordered pairs tied at scale 30", np.nan)
    return Verdict(
        3,
        text,
        QUALIFIED,
        f"No pair with x_i > x_j gave p_i < p_j ({int(viol)} violations in ~1.5e6 pairs, "
        f"float32). In floating point the order is only weak: at logit scale 30, "
        f"{_fmt(100 * tied)}% of ordered pairs get equal probabilities (both underflow to "
        f"0 or round alike).",
    )


def claim_4(t: Tables) -> Verdict:
    text = "Softmax amplifies differences between inputs: p_i / p_j = exp(x_i - x_j)."
    m = t.measured(4)
    if not m:
        return Verdict(4, text, UNTESTED, "claims.csv missing")
    dev = m.get("max relative deviation of p_i/p_max from exp(x_i - x_max) / u", np.nan)
    return Verdict(
        4,
        text,
        HOLDS,
        f"The computed ratios match exp(x_i - x_j) to {_fmt(dev)} u (float64): a gap of d "
        f"in logits is a factor e^d in probability, so doubling a gap squares the ratio.",
    )


def claim_5(t: Tables) -> Verdict:
    text = "Softmax is differentiable everywhere, with Jacobian diag(p) - p p^T."
    m = t.measured(5)
    if not m:
        return Verdict(5, text, UNTESTED, "claims.csv missing")
    fd = m.get("max |finite difference - (diag(p) - p p^T)|", np.nan)
    vjp = m.get("max |softmax_backward - explicit Jacobian product| / u", np.nan)
    return Verdict(
        5,
        text,
        HOLDS,
        f"Central differences agree with diag(p) - p p^T to {_fmt(fd)} (the O(h^2) "
        f"truncation level for h = 1e-6), and softmax_backward equals the explicit "
        f"Jacobian product to {_fmt(vjp)} u.",
    )


def claim_6(t: Tables) -> Verdict:
    text = (
        "Softmax is designed to handle the numerical instability of exponentiating "
        "large or small inputs."
    )
    o = t.get("overflow.csv")
    if o is None:
        return Verdict(6, text, UNTESTED, "overflow.csv missing")
    parts = []
    for (dtype, arith), d in o[o.algorithm == "naive"].groupby(["dtype", "arithmetic"]):
        bad = d[d.nonfinite_fraction > 0]
        hi = bad[bad.offset > 0].offset.min()
        lo = bad[bad.offset < 0].offset.max()
        parts.append(
            f"{dtype} ({arith}): overflow from offset {_fmt(hi)}, underflow from {_fmt(lo)}"
        )
    stable = o[o.algorithm != "naive"]
    stable_bad = stable[stable.nonfinite_fraction > 0]
    return Verdict(
        6,
        text,
        QUALIFIED,
        "Only the shifted forms do. The naive formula exp(x_i)/sum exp(x_j) fails: "
        + "; ".join(parts)
        + f". The shifted, online and division-free algorithms gave "
        f"{len(stable_bad)} non-finite cells out of {len(stable)} over offsets "
        f"{_fmt(o.offset.min())} to {_fmt(o.offset.max())}.",
        "overflow_map.png",
    )


def claim_7(t: Tables) -> Verdict:
    text = (
        "Softmax pairs with cross-entropy: the fused gradient p - y is exact and the "
        "fused loss is more accurate and faster than -log(softmax(x))[y]."
    )
    m = t.measured(7)
    if not m:
        return Verdict(7, text, UNTESTED, "claims.csv missing")
    fused = m.get("fused loss: max error / u at scale 100", np.nan)
    sep = m.get("separate loss: max error / u at scale 30", np.nan)
    grad = m.get("fused gradient p - onehot: max error / u", np.nan)
    speed = m.get("time of separate / time of fused (loss only)", np.nan)
    faster = speed > 1
    return Verdict(
        7,
        text,
        QUALIFIED,
        f"Accuracy holds: the fused loss stays within {_fmt(fused)} u at logit scale 100, "
        f"while -log(softmax(x))[y] has errors up to {_fmt(sep)} u at scale 30 and turns "
        f"infinite where p_y underflows (see claims.csv). The fused gradient p - onehot is "
        f"within {_fmt(grad)} u of exact (not bit-exact: p carries rounding). Speed: the "
        f"separate computation takes {_fmt(speed)} times the fused one "
        + (
            "(the fused loss is faster)."
            if faster
            else "(the fused loss is not faster with the current CPU kernels)."
        ),
    )


def claim_8(t: Tables) -> Verdict:
    text = "Sigmoid suits binary classification; two-class softmax is a sigmoid."
    m = t.measured(8)
    if not m:
        return Verdict(8, text, UNTESTED, "claims.csv missing")
    d = m.get("max |softmax([a,b])_0 - sigmoid(a-b)| / u", np.nan)
    return Verdict(
        8, text, HOLDS, f"softmax([a, b])_0 and sigmoid(a - b) agree to {_fmt(d)} u over 1e5 pairs."
    )


def claim_9(t: Tables) -> Verdict:
    text = "The logistic function extends to many classes by one-vs-all but may suffer from vanishing gradients."  # noqa: E501
    m = t.measured(9)
    if not m:
        return Verdict(9, text, UNTESTED, "claims.csv missing")
    sig = m.get("fraction of MNIST logits where dsigmoid/dx < 1e-3", np.nan)
    soft = m.get("fraction of MNIST logits where dsoftmax (diagonal)/dx < 1e-3", np.nan)
    return Verdict(
        9,
        text,
        QUALIFIED,
        f"The sigmoid's derivative is at most 1/4 and is below 1e-3 for {_fmt(100 * sig)}% "
        f"of the real MNIST logits. But softmax saturates too: its Jacobian diagonal "
        f"p(1 - p) is below 1e-3 for {_fmt(100 * soft)}% of them. With the matching "
        f"cross-entropy loss both gradients are prediction - target, which does not "
        f"vanish on a wrong prediction.",
    )


def claim_10(t: Tables) -> Verdict:
    text = "ArcTan is smooth and continuous but less common."
    m = t.measured(10)
    if not m:
        return Verdict(10, text, UNTESTED, "claims.csv missing")
    fd = m.get("max |finite difference - 1/(pi(1+x^2))| of arctan map", np.nan)
    flat = m.get("fraction of MNIST logits where darctan/dx < 1e-3", np.nan)
    return Verdict(
        10,
        text,
        QUALIFIED,
        f"Smoothness holds: the derivative matches 1/(pi(1 + x^2)) to {_fmt(fd)}, and it "
        f"decays only like 1/x^2 (below 1e-3 for {_fmt(100 * flat)}% of MNIST logits). "
        f"'Less common' is a statement about practice that no computation here can test.",
    )


def _cost_verdict(speed_ratio: float) -> str:
    """ "X is computationally expensive", from X's GB/s over its comparison's: within
    20% is no real difference, below half is expensive, in between a qualified yes."""
    if speed_ratio > 0.8:
        return FAILS
    return HOLDS if speed_ratio < 0.5 else QUALIFIED


def _ratio(t: Tables, a: str, b: str):
    """Median over the shapes both were measured on of GB/s(a) / GB/s(b), parallel
    engine, float32: one cell alone moves with the noise of a shared machine."""
    sa, sb = _speed(t, a, "parallel"), _speed(t, b, "parallel")
    if sa is None or sb is None:
        return None
    both = sa.merge(sb, on=["preset", "rows"], suffixes=("_a", "_b"))
    if both.empty:
        return None
    return float((both.gbps_a / both.gbps_b).median()), len(both)


def claim_11(t: Tables) -> Verdict:
    text = "The Gaussian function is computationally expensive."
    r1, r2 = _ratio(t, "gaussian", "sigmoid"), _ratio(t, "gaussian", "softmax[shifted]")
    if r1 is None or r2 is None:
        return Verdict(11, text, UNTESTED, "speed rows for gaussian/sigmoid/softmax missing")
    verdict = _cost_verdict(min(r1[0], r2[0]))
    return Verdict(
        11,
        text,
        verdict,
        f"On the parallel CPU engine (float32, median over the shapes measured) the "
        f"Gaussian runs at "
        f"{_fmt(r1[0])} times the GB/s of the sigmoid and {_fmt(r2[0])} times that of "
        f"softmax: one exp per entry, like the others.",
        "speed_gbps.png",
    )


def claim_12(t: Tables) -> Verdict:
    text = "Softplus avoids vanishing gradients but its outputs are not normalized."
    m = t.measured(12)
    if not m:
        return Verdict(12, text, UNTESTED, "claims.csv missing")
    flat = m.get("fraction of MNIST logits where dsoftplus/dx < 1e-3", np.nan)
    total = m.get("median row sum of softplus(MNIST logits)", np.nan)
    return Verdict(
        12,
        text,
        QUALIFIED,
        f"Not normalized: holds (median row sum {_fmt(total)} on MNIST logits, not 1). "
        f"Vanishing gradients: only for positive inputs; the derivative is sigmoid(x), "
        f"below 1e-3 for {_fmt(100 * flat)}% of MNIST logits (the very negative ones).",
    )


def claim_13(t: Tables) -> Verdict:
    text = "Sparsemax encourages sparsity in output probabilities."
    a = t.get("accuracy.csv")
    if a is None:
        return Verdict(13, text, UNTESTED, "accuracy.csv missing")
    sel = a[(a.preset == "imagenet") & (a.distribution == "normal") & (a.dtype == "float64")]
    piv = sel.pivot_table(index="scale", columns="entry", values="support")
    want = [c for c in ("sparsemax[pivot]", "entmax15", "softmax[shifted]") if c in piv]
    if len(want) < 2:
        return Verdict(13, text, UNTESTED, "support columns missing")
    rows = "; ".join(
        f"scale {_fmt(s)}: " + ", ".join(f"{c} {_fmt(piv.loc[s, c])}" for c in want)
        for s in piv.index
    )
    return Verdict(
        13,
        text,
        HOLDS,
        f"Mean nonzeros per row of 1000 (normal logits): {rows}. Softmax never gives an "
        f"exact zero until exp underflows; sparsemax's support shrinks as the scale grows, "
        f"with entmax-1.5 in between.",
        "sparsity.png",
    )


def claim_14(t: Tables) -> Verdict:
    text = "Maxout is computationally expensive."
    r = _ratio(t, "maxout[pool=4]", "softmax[shifted]")
    if r is None:
        return Verdict(14, text, UNTESTED, "speed rows for maxout/softmax missing")
    return Verdict(
        14,
        text,
        _cost_verdict(r[0]),
        f"Maxout (pool 4) moves {_fmt(r[0])} times the GB/s of softmax on the parallel CPU "
        f"engine (float32, median over the shapes measured): a max per group, no exp at all.",
        "speed_gbps.png",
    )


def claim_15(t: Tables) -> Verdict:
    text = "Softmax converts raw scores into probabilities efficiently."
    s = _speed(t, "softmax[shifted]", "parallel")
    if s is None:
        return Verdict(15, text, UNTESTED, "speed.csv missing")
    big = s[s.bytes >= 32 * 2**20]  # every preset at 64 MB and more
    ratio = float(big.ratio_to_parallel_copy.median())
    peers = []
    for peer in ("numpy", "scipy", "torch", "jax"):
        p = _speed(t, "softmax[shifted]", peer)
        if p is not None:
            pb = p[p.bytes >= 32 * 2**20]
            peers.append(f"{peer} {_fmt(float(pb.gbps.median()))} GB/s")
    verdict = HOLDS if ratio >= 0.7 else QUALIFIED
    return Verdict(
        15,
        text,
        verdict,
        f"On arrays of 64 MB and more (median over row lengths) the parallel engine reaches "
        f"{_fmt(ratio)} of a parallel copy "
        f"of the same array ({_fmt(float(big.gbps.median()))} GB/s; peers: "
        f"{', '.join(peers) or 'none measured'}). "
        + (
            ""
            if ratio >= 0.7
            else "These are allocating calls, as the peers' are: at these sizes the operating "
            "system zeroes each new page of the result when it is first written, which takes "
            "about as long as the copy itself; written into an existing array (`out=`) the "
            "same kernels reach the ratios in ROOFLINE.md."
        ),
        "speed_gbps.png",
    )


CLAIMS = [
    claim_1,
    claim_2,
    claim_3,
    claim_4,
    claim_5,
    claim_6,
    claim_7,
    claim_8,
    claim_9,
    claim_10,
    claim_11,
    claim_12,
    claim_13,
    claim_14,
    claim_15,
]


def verdicts(out) -> list[Verdict]:
    t = Tables(out)
    return [claim(t) for claim in CLAIMS]


def write(out) -> pathlib.Path:
    """Write ``CLAIMS.md`` under ``out`` from the tables there."""
    out = pathlib.Path(out)
    lines = [
        "# The article's claims, tested",
        "",
        "Generated by `python -m experiments claims` from the tables in this folder; "
        "do not edit by hand.",
        "",
    ]
    for v in verdicts(out):
        lines += [f"## {v.number}. {v.claim}", "", f"**Verdict: {v.verdict}.** {v.evidence}", ""]
        if v.figure and (out / v.figure).exists():
            lines += [f"![{v.figure}]({v.figure})", ""]
    path = out / "CLAIMS.md"
    path.write_text("\n".join(lines))
    return path
