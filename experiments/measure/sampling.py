"""``python -m experiments sampling``: a token drawn from logits (issue 28), ours against
torch's and NumPy's ways of drawing it, in one run.

Cells: the shapes of :data:`SHAPES` (a decoder's batch of rows over a 32000- or
128256-token vocabulary), float32, times the four settings of :data:`SETTINGS`
(temperature only; top-k; top-p; top-k + top-p + min-p), each at the temperature
:data:`TEMPERATURE`, as a serving stack divides by the request's temperature before
any filter.  The logits are standard normal times :data:`LOGITS_SCALE` (seed 0), a
language model's spread of logits over its vocabulary; the report gives the
number of entries each setting keeps on them.

In each cell the candidates, each a zero-argument call as its user writes it:

- ``ours``: ``softmax_numba.sample(x, temperature=T, top_k=..., top_p=..., min_p=...,
  seed=SEED)``, ``backend="auto"``; ``ours_cpu``: the same on the serial engine
  (``backend="cpu"``);
- ``torch_sort``: torch's sort-based path as vLLM's sampler writes it
  (``vllm/v1/sample/ops/topk_topp_sampler.py``, ``apply_top_k_top_p_pytorch``, the
  branch that sorts; :func:`vllm_top_k_top_p`): the logits divided by the
  temperature, sorted ascending, the top-k threshold gathered from the sorted row,
  softmax and cumsum of the sorted row for top-p, the masked row scattered back;
  min-p as vLLM's ``MinPLogitsProcessor.apply`` (:func:`vllm_min_p`); then the
  softmax and the exponential race that vLLM draws with (``random_sample``:
  ``probs.div_(q.exponential_()).argmax()``).  With no filter (temperature only) vLLM
  does not sort: the row is the softmax and the race alone;
- ``torch_topk`` (top-k only): ``torch.topk``, the softmax of the k values over the
  temperature, ``torch.multinomial`` and a gather of the index;
- ``torch_multinomial`` (temperature only): ``torch.multinomial(torch.softmax(x / T,
  -1), 1)``;
- ``numpy_choice``: the naive baseline, row by row, the filters applied by sorting
  the row with NumPy (:func:`numpy_filter`) and the draw by ``Generator.choice(n,
  p=...)``.

torch runs at as many intra-op threads as Numba has (``torch.set_num_threads``).

Before any timing, every candidate's first call is checked on the first
:data:`CHECK_ROWS` rows against the reference's kept set
(``softmax_numba.filter_logits(..., backend="numpy")``, the sort-based oracle): each
row's draw must lie in it, and a peer whose own filter can be read off
(``torch_sort``, ``torch_topk``, ``numpy_choice``) must keep the same set up to
:data:`KEPT_SLACK` entries per row (at least :data:`KEPT_FLOOR`): float32 cumulative
sums (torch's) may move the top-p boundary by an entry or two, a wrong filter moves
it by far more.  A peer that fails is not timed, and its row says why.  ``ours``
failing is timed all the same, with the failure in its note (and the report says so).

Timing as in :mod:`experiments.measure.sizes`: one implementation at a time, in
blocks of calls lasting at least ``MIN_BLOCK_S``, the order reversed every other
round, a pause after each block (thread pools spin after a call); a ratio is the
peer's time over ours (``backend="auto"``) in the same round, the median over
rounds with a distribution-free 95% interval: above 1 when we are faster.

Writes ``sampling.csv`` (resumable, as the study's tables) with
``sampling.meta.json``, then ``SAMPLING.md`` (:mod:`experiments.report.sampling`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import pathlib
import sys
from collections.abc import Callable

import numba
import numpy as np

# Nothing here imports softmax_numba at import time (as sizes).
from experiments.harness import metadata, store, timing
from experiments.measure.sizes import (
    MIN_BLOCK_S,
    QUICK_MIN_BLOCK_S,
    Local,
    interleaved,
    library_record,
    rounds_for,
)

#: (rows, n), float32.
SHAPES = ((1, 32000), (1, 128256), (8, 128256), (64, 128256), (256, 32000))
#: The --quick run: one row of Llama 3's vocabulary (so that the goals' verdicts are
#: computed) and a small batch.
QUICK_SHAPES = ((1, 128256), (8, 4096))
DTYPE = "float32"
#: Every setting's temperature.
TEMPERATURE = 0.8
#: The filters of each setting (``sample``'s keyword arguments besides the temperature).
SETTINGS = {
    "temperature": {},
    "top_k": {"top_k": 50},
    "top_p": {"top_p": 0.9},
    "top_k_top_p_min_p": {"top_k": 50, "top_p": 0.9, "min_p": 0.05},
}
LABELS = {
    "temperature": "temperature only",
    "top_k": "top-k 50",
    "top_p": "top-p 0.9",
    "top_k_top_p_min_p": "top-k 50 + top-p 0.9 + min-p 0.05",
}
#: The settings with a filter (those of the goal against the sort-based path).
FILTER_SETTINGS = ("top_k", "top_p", "top_k_top_p_min_p")
#: The logits: standard normal times this, float32, from ``default_rng(LOGITS_SEED)``.
LOGITS_SCALE = 3.0
LOGITS_SEED = 0
#: Our generator's seed (fixed: a call draws no fresh entropy, as torch's global
#: generator does not), and the offset.
SEED = 20261206
OFFSET = 0

IMPLS = ("ours", "ours_cpu", "torch_sort", "torch_topk", "torch_multinomial", "numpy_choice")
OURS = ("ours", "ours_cpu")
PEERS = ("torch_sort", "torch_topk", "torch_multinomial", "numpy_choice")
#: The settings each peer is timed on.
PEER_SETTINGS = {
    "torch_sort": tuple(SETTINGS),
    "torch_topk": ("top_k",),
    "torch_multinomial": ("temperature",),
    "numpy_choice": tuple(SETTINGS),
}
#: The package each peer needs.
PEER_PACKAGE = {
    "torch_sort": "torch",
    "torch_topk": "torch",
    "torch_multinomial": "torch",
    "numpy_choice": "numpy",
}

#: Rows of each cell checked before timing.
CHECK_ROWS = 8
#: A peer's kept set may differ from the reference's by this fraction of the kept
#: entries, at least :data:`KEPT_FLOOR` entries, in any checked row.
KEPT_SLACK = 0.01
KEPT_FLOOR = 2

COLUMNS = (
    "setting",
    "dtype",
    "rows",
    "n",
    "threads",
    "temperature",
    "impl",
    "median_s",
    "low_s",
    "high_s",
    "ns_per_entry",
    "versus",
    "ratio",
    "ratio_low",
    "ratio_high",
    "kept_mean",
    "kept_diff",
    "kept_tolerance",
    "outside",
    "rounds",
    "inner",
    "note",
)
KEY = ("setting", "dtype", "rows", "n", "threads", "impl")


def cells(quick: bool, threads: int) -> list[dict]:
    """Every (setting, shape) of the run, settings outermost."""
    shapes = QUICK_SHAPES if quick else SHAPES
    return [
        {
            "setting": setting,
            "dtype": DTYPE,
            "rows": rows,
            "n": n,
            "threads": threads,
            "temperature": TEMPERATURE,
        }
        for setting in SETTINGS
        for rows, n in shapes
    ]


def logits(rows: int, n: int) -> np.ndarray:
    """Standard normal times :data:`LOGITS_SCALE`, float32."""
    rng = np.random.default_rng(LOGITS_SEED)
    return (rng.standard_normal((rows, n)) * LOGITS_SCALE).astype(DTYPE)


# ----------------------------------------------------------------------------- ours


def _library():
    import softmax_numba

    return softmax_numba


def ours(x: np.ndarray, setting: str, backend: str | None = None) -> Callable:
    """``sample`` on ``x`` with the setting's filters, as a user calls it."""
    sample = getattr(_library(), "sample", None)
    if sample is None:
        raise SystemExit("softmax_numba has no sample(): this benchmark needs issue 28's")
    kw = dict(SETTINGS[setting], temperature=TEMPERATURE, seed=SEED, offset=OFFSET)
    if backend is not None:
        kw["backend"] = backend
    return lambda: sample(x, **kw)


def reference_kept(x: np.ndarray, setting: str) -> tuple[np.ndarray, str]:
    """The kept set of each row (bool, ``x``'s shape) by the library's sort-based
    oracle, and where it came from; :func:`numpy_filter`'s if the library has no
    ``filter_logits``."""
    filter_logits = getattr(_library(), "filter_logits", None)
    if filter_logits is None:
        keep = np.array([numpy_filter(row, SETTINGS[setting])[1] for row in x])
        return keep, "numpy_choice's filter (softmax_numba has no filter_logits)"
    kept = filter_logits(x, temperature=TEMPERATURE, backend="numpy", **SETTINGS[setting])
    return np.isfinite(np.asarray(kept)), "filter_logits(backend='numpy')"


# ----------------------------------------------------------------------------- peers


def vllm_top_k_top_p(logits, k, p):
    """Top-k and top-p by sorting, as vLLM's ``apply_top_k_top_p_pytorch`` writes it
    (vllm/v1/sample/ops/topk_topp_sampler.py, the sorting branch; ``k``, ``p``: one
    value per row, or None), in place on ``logits``, which is returned."""
    import torch

    logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
    if k is not None:
        top_k_mask = logits_sort.size(1) - k.to(torch.long)
        top_k_mask = logits_sort.gather(1, top_k_mask.unsqueeze(dim=1))
        top_k_mask = logits_sort < top_k_mask
        logits_sort.masked_fill_(top_k_mask, -float("inf"))
    if p is not None:
        probs_sort = logits_sort.softmax(dim=-1)
        probs_sum = torch.cumsum(probs_sort, dim=-1, out=probs_sort)
        top_p_mask = probs_sum <= 1 - p.unsqueeze(dim=1)
        top_p_mask[:, -1] = False  # at least one
        logits_sort.masked_fill_(top_p_mask, -float("inf"))
    return logits.scatter_(dim=-1, index=logits_idx, src=logits_sort)


def vllm_min_p(logits, min_p):
    """Min-p as vLLM's ``MinPLogitsProcessor.apply`` (vllm/v1/sample/logits_processor/
    builtin.py; ``min_p`` of shape ``(rows, 1)``), in place on ``logits``."""
    import torch

    probability_values = torch.nn.functional.softmax(logits, dim=-1)
    max_probabilities = torch.amax(probability_values, dim=-1, keepdim=True)
    adjusted_min_p = max_probabilities.mul_(min_p)
    invalid_token_mask = probability_values < adjusted_min_p
    logits[invalid_token_mask] = -float("inf")
    return logits


def _exponential_race(logits):
    """vLLM's ``random_sample`` on the softmax of ``logits``: the argmax of
    ``probs / q`` with ``q`` standard exponential."""
    import torch

    probs = logits.softmax(dim=-1, dtype=torch.float32)
    q = torch.empty_like(probs)
    q.exponential_()
    return probs.div_(q).argmax(dim=-1).view(-1)


def torch_sort(x: np.ndarray, setting: str) -> tuple[Callable, Callable]:
    """The draw by vLLM's torch path, and the entries its filters keep (the logits over
    the temperature, the filtered ones ``-inf``, finite).

    The filters in the issue's order (top-k and top-p, then min-p); vLLM's sampler
    runs min-p first, as a logits processor, with the same operations: the cost is
    the same, the kept set differs when top-p cuts inside the min-p set.
    """
    import torch

    xt = torch.from_numpy(x)
    rows = x.shape[0]
    options = SETTINGS[setting]
    temperature = torch.full((rows,), TEMPERATURE, dtype=torch.float32)
    k = options.get("top_k")
    k = None if k is None else torch.full((rows,), k, dtype=torch.int32)
    p = options.get("top_p")
    p = None if p is None else torch.full((rows,), p, dtype=torch.float32)
    min_p = options.get("min_p")
    min_p = None if min_p is None else torch.full((rows, 1), min_p, dtype=torch.float32)

    def filtered():
        # vLLM divides its own logits in place (logits.div_); x is reused, so a new one.
        logits = xt.div(temperature.unsqueeze(dim=1))
        if k is not None or p is not None:
            logits = vllm_top_k_top_p(logits, k, p)
        if min_p is not None:
            logits = vllm_min_p(logits, min_p)
        return logits

    return lambda: _exponential_race(filtered()), lambda: torch.isfinite(filtered())


def torch_topk(x: np.ndarray, setting: str) -> tuple[Callable, Callable]:
    """``torch.topk`` then ``torch.multinomial`` over the k values (top-k only)."""
    import torch

    xt = torch.from_numpy(x)
    k = SETTINGS[setting]["top_k"]

    def call():
        values, indices = torch.topk(xt, k, dim=-1)
        probs = torch.softmax(values / TEMPERATURE, dim=-1)
        return indices.gather(-1, torch.multinomial(probs, 1)).view(-1)

    def kept():
        keep = torch.zeros(xt.shape, dtype=torch.bool)
        keep.scatter_(-1, torch.topk(xt, k, dim=-1).indices, True)
        return keep

    return call, kept


def torch_multinomial(x: np.ndarray, setting: str) -> tuple[Callable, None]:
    """``torch.multinomial(torch.softmax(x / T, -1), 1)`` (temperature only)."""
    import torch

    xt = torch.from_numpy(x)
    return lambda: torch.multinomial(torch.softmax(xt / TEMPERATURE, -1), 1).view(-1), None


def numpy_filter(row: np.ndarray, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """The weights ``exp((x - max) / T)`` of a row (float64) and the entries that the
    filters ``options`` (a value of :data:`SETTINGS`) keep, their thresholds found on
    the row sorted by NumPy (the issue's order and tie rule: each keeps ``x >= t``)."""
    z = row.astype(np.float64) / TEMPERATURE
    top = z.max()
    w = np.exp(z - top)
    if not options:
        return w, np.ones(z.shape, dtype=bool)
    desc = np.sort(z)[::-1]
    threshold = -np.inf
    k = options.get("top_k")
    if k is not None and k < z.size:
        threshold = desc[k - 1]
    p = options.get("top_p")
    if p is not None and p < 1:
        head = desc[desc >= threshold]
        mass = np.cumsum(np.exp(head - top))
        threshold = max(threshold, head[np.searchsorted(mass, p * mass[-1])])
    min_p = options.get("min_p")
    if min_p:
        threshold = max(threshold, top + math.log(min_p))
    return w, z >= threshold


def numpy_choice(x: np.ndarray, setting: str) -> tuple[Callable, Callable]:
    """Row by row: :func:`numpy_filter`, then ``Generator.choice(n, p=...)``."""
    rng = np.random.default_rng(SEED)
    n = x.shape[1]
    options = SETTINGS[setting]

    def draw(row):
        w, keep = numpy_filter(row, options)
        w = np.where(keep, w, 0.0)
        return rng.choice(n, p=w / w.sum())

    def kept():
        return np.array([numpy_filter(row, options)[1] for row in x[:CHECK_ROWS]])

    return lambda: np.array([draw(row) for row in x]), kept


PEER_MAKERS = {
    "torch_sort": torch_sort,
    "torch_topk": torch_topk,
    "torch_multinomial": torch_multinomial,
    "numpy_choice": numpy_choice,
}


def installed() -> dict[str, bool]:
    """Whether each peer's package is here."""
    return {p: importlib.util.find_spec(PEER_PACKAGE[p]) is not None for p in PEERS}


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch (if installed) at ``threads`` intra-op threads, restored after."""
    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


# ----------------------------------------------------------------------------- checks


def _array(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def outside(tokens, reference: np.ndarray, own: np.ndarray | None = None) -> int:
    """How many of the checked rows drew a token outside the reference's kept set
    (or outside the candidate's own kept set, where it gives one: a token on a
    boundary where the two differ within the slack is no error); ``CHECK_ROWS + 1``
    for a result of the wrong shape or type."""
    tokens = _array(tokens)
    rows = reference.shape[0]
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or tokens.shape[0] < rows:
        return CHECK_ROWS + 1
    drawn = tokens[:rows].astype(np.int64)
    if np.any(drawn < 0) or np.any(drawn >= reference.shape[1]):
        return CHECK_ROWS + 1
    allowed = reference if own is None else reference | own
    return int(np.sum(~allowed[np.arange(rows), drawn]))


def kept_difference(own: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """The largest number of entries on which a row's kept set differs from the
    reference's, and the tolerance (:data:`KEPT_SLACK`, :data:`KEPT_FLOOR`)."""
    diff = int(np.max(np.sum(own != reference, axis=1)))
    tolerance = float(max(KEPT_FLOOR, KEPT_SLACK * np.max(np.sum(reference, axis=1))))
    return diff, tolerance


# ----------------------------------------------------------------------------- a cell


def _candidates(cell: dict, x: np.ndarray, peers: dict[str, bool]):
    """(candidates, checks, notes): what to time, each one's check (draws outside the
    kept set; kept-set difference and its tolerance) and why a peer was left out."""
    setting = cell["setting"]
    reference, source = reference_kept(x[:CHECK_ROWS], setting)
    kept_mean = float(np.mean(np.sum(reference, axis=1)))
    candidates, checks, notes = {}, {}, {}
    drawn = {}
    for name, backend in (("ours", None), ("ours_cpu", "cpu")):
        fn = ours(x, setting, backend)
        drawn[name] = _array(fn())  # the first call: compiled, warm
        bad = outside(drawn[name], reference)
        checks[name] = {"outside": bad, "kept_mean": kept_mean}
        if bad:
            notes[name] = f"{bad} of {CHECK_ROWS} draws outside the kept set of {source}"
        candidates[name] = Local(fn)
    if drawn["ours"].shape != drawn["ours_cpu"].shape or np.any(drawn["ours"] != drawn["ours_cpu"]):
        # Same seed and offset: the same tokens on every engine (issue 28).
        differ = "; ".join(filter(None, [notes.get("ours_cpu"), "draws differ from ours'"]))
        notes["ours_cpu"] = differ
    for peer in PEERS:
        if setting not in PEER_SETTINGS[peer]:
            continue
        if not peers[peer]:
            notes[peer] = f"{PEER_PACKAGE[peer]} is not installed"
            continue
        fn, kept = PEER_MAKERS[peer](x, setting)
        own = None if kept is None else _array(kept())[:CHECK_ROWS]
        check = {"outside": outside(fn(), reference, own), "kept_mean": kept_mean}
        if own is not None:
            check["kept_diff"], check["kept_tolerance"] = kept_difference(own, reference)
        checks[peer] = check
        why = []
        if check["outside"]:
            why.append(f"{check['outside']} of {CHECK_ROWS} draws outside the kept set")
        if check.get("kept_diff", 0) > check.get("kept_tolerance", 0):
            why.append(
                f"its kept set differs from {source}'s by {check['kept_diff']} entries "
                f"(tolerance {check['kept_tolerance']:.3g})"
            )
        if why:
            notes[peer] = "; ".join(why)
            continue
        candidates[peer] = Local(fn)
    return candidates, checks, notes


def measure(cell: dict, peers: dict[str, bool], quick: bool) -> list[dict]:
    """The rows of one cell: one per implementation timed or left out."""
    x = logits(cell["rows"], cell["n"])
    with torch_threads(cell["threads"]):
        candidates, checks, notes = _candidates(cell, x, peers)
        rounds = rounds_for(x.nbytes, quick)
        seconds, inner = interleaved(
            candidates, rounds, QUICK_MIN_BLOCK_S if quick else MIN_BLOCK_S
        )
    rows = []
    for impl, t in seconds.items():
        row = {**cell, "impl": impl, "rounds": rounds, "inner": inner[impl], "note": ""}
        row.update(checks[impl])
        row["note"] = notes.pop(impl, "")
        median, low, high = timing.median_interval(t)
        row.update(median_s=median, low_s=low, high_s=high, ns_per_entry=median / x.size * 1e9)
        if impl in PEERS:
            ratio = timing.median_interval(t / seconds["ours"])
            row.update(versus="ours", ratio=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2])
        rows.append(row)
    rows += [{**cell, **checks.get(p, {}), "impl": p, "note": why} for p, why in notes.items()]
    return rows


# ----------------------------------------------------------------------------- the run


def run(
    out: pathlib.Path,
    quick: bool = False,
    progress: bool = True,
    mode: str = "auto",
    command: str | None = None,
) -> pathlib.Path:
    """Measure ``out/sampling.csv`` (resuming an interrupted run's cells as the study's
    tables do; ``mode`` as in :func:`experiments.harness.store.plan`), then write
    ``SAMPLING.md``; return the table's path."""
    from tqdm import tqdm

    threads = numba.get_num_threads()
    peers = installed()
    settings = {
        "quick": quick,
        "threads": threads,
        "temperature": TEMPERATURE,
        "logits": f"standard normal x {LOGITS_SCALE:g}, float32, default_rng({LOGITS_SEED})",
        "seed": SEED,
        **library_record(None),
    }
    record = metadata.new_run(settings)
    if command:
        record["command"] = command
    table = store.open_run(out / "sampling.csv", COLUMNS, KEY, record, mode)
    done = table.done_keys()
    todo = [
        c
        for c in cells(quick, threads)
        if store.Table.key_of(c | {"impl": "ours"}, KEY) not in done
    ]
    for cell in tqdm(todo, desc="sampling", unit="cell", disable=not progress or None):
        table.append(measure(cell, peers, quick))
    path = store.finish(table)
    from experiments.report import sampling as report

    report.write(out)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.measure.sampling")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--quick", action="store_true", help="two shapes, 3 rounds")
    parser.add_argument("--no-progress", action="store_true")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--fresh", action="store_true")
    keep.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path("results") / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    mode = "fresh" if args.fresh else "keep" if args.keep else "auto"
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m experiments.measure.sampling " + " ".join(argv)
    path = run(out, args.quick, not args.no_progress, mode, command)
    sys.stderr.write(f"sampling: {path}, {out / 'SAMPLING.md'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
