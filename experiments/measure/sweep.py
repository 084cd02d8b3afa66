"""Grid runner: one tidy row per measured cell, written as soon as the cell is done.

A grid is a list of cells (dicts of configuration values).  ``run`` skips the
cells whose key is already in the table, measures the others under a progress
bar and appends each row at once (see :mod:`experiments.harness.store`), so an
interrupted sweep resumes where it stopped and never duplicates a row.

Given a ``dask.distributed`` client, ``run`` submits each missing cell as a task,
measured on the worker that runs it (its address in the row's ``worker`` column),
and appends the rows in this process as they arrive: only this process writes the
table, and a key is written once, so a cell whose worker died is measured again on
another worker (Dask reschedules it) and never appears twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
from tqdm import tqdm

from experiments.harness import inputs, settings, timing
from experiments.harness.store import Table
from experiments.measure import peers
from experiments.measure.lowprec import DTYPE_FORMATS
from experiments.measure.metrics import error_metrics
from softmax_numba import registry

ACCURACY_KEY = [
    "entry",
    "dtype",
    "preset",
    "n",
    "rows",
    "scale",
    "offset",
    "distribution",
    "backend",
]
ACCURACY_COLUMNS = [
    *ACCURACY_KEY,
    "op",
    "algorithm",
    "max_error_u",
    "max_rel_error_u",
    "bound_u",
    "bound_ratio",
    "max_ulp",
    "mismatched_rows",
    "nan",
    "inf",
    "zero",
    "sum_error_u",
    "max_kl",
    "support",
    "seconds",
]
SPEED_KEY = ["entry", "engine", "dtype", "preset", "n", "rows"]
SPEED_COLUMNS = [
    *SPEED_KEY,
    "op",
    "algorithm",
    "bytes",
    "median_s",
    "min_s",
    "max_s",
    "repeats",
    "inner",
    "gbps",
    "copy_gbps",
    "parallel_copy_gbps",
    "ratio_to_parallel_copy",
]

ENGINES = ("numpy", "cpu", "parallel")
#: The column naming the Dask worker that measured a row (blank for a local run).
WORKER = "worker"
#: Times Dask reruns a cell whose measurement raised (a dead worker is handled apart,
#: by the scheduler's ``distributed.scheduler.allowed-failures``).
RETRIES = 1
_BY_NAME = {e.name: e for e in registry.ENTRIES}


def entry(name: str) -> registry.Entry:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown entry {name!r}; registered: {sorted(_BY_NAME)}") from None


# ----------------------------------------------------------------------------- grids


def _rows_for(n: int, elements: int) -> int:
    """Rows of ``n`` in a cell of about ``elements`` entries (capped)."""
    return max(1, min(settings.ACCURACY_MAX_ROWS, elements // n))


def accuracy_cells(
    entries,
    dtypes,
    presets,
    scales,
    distributions,
    elements=settings.ACCURACY_ELEMENTS,
    backends=("cpu",),
    offsets=(0.0,),
) -> list[dict]:
    """Every combination that makes sense (``mnist_logits`` needs rows of 10; maxout
    needs rows its pool size divides), the logits ``offset + scale z``.  A backend
    may be a peer (scipy, torch, jax): it is scored on the entries of
    :data:`experiments.measure.peers.PEER_ENTRIES` in float32 and float64 only, and only
    where installed.  Raises ``ValueError`` for unknown names."""
    for name in entries:
        entry(name)
    for values, known, what in (
        (dtypes, inputs.DTYPES, "dtype"),
        (presets, inputs.ROW_LENGTHS, "preset"),
        (distributions, inputs.DISTRIBUTIONS, "distribution"),
        (backends, (*ENGINES, *peers._RESULT_LOADERS), "backend"),
    ):
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown {what} {sorted(unknown)}; known: {list(known)}")
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    cells = []
    for name in entries:
        for preset in presets:
            n = inputs.ROW_LENGTHS[preset]
            if not entry(name).accepts(n):
                continue
            for dist in distributions:
                if dist == "mnist_logits" and n != 10:
                    continue
                for dtype in dtypes:
                    for scale in scales:
                        for offset in offsets:
                            for backend in backends:
                                if backend not in ENGINES and not _peer_scores(
                                    backend, name, dtype
                                ):
                                    continue
                                cells.append(
                                    {
                                        "entry": name,
                                        "dtype": dtype,
                                        "preset": preset,
                                        "n": n,
                                        "rows": _rows_for(n, elements),
                                        "scale": float(scale),
                                        "offset": float(offset),
                                        "distribution": dist,
                                        "backend": backend,
                                    }
                                )
    return cells


def _peer_scores(peer: str, name: str, dtype: str) -> bool:
    """Whether ``peer`` is installed and scored on entry ``name`` in ``dtype``."""
    return (
        name in peers.PEER_ENTRIES
        and dtype in ("float32", "float64")
        and peer in peers.results_available()
    )


def speed_cells(entries, engines, dtypes, sizes) -> list[dict]:
    """``sizes``: ``(preset, bytes)`` pairs; ``rows`` makes the array about that big.
    ``engines`` are ours (numpy, cpu, parallel) or peers' (scipy, torch, jax, entmax);
    a peer appears for the ops it has and only when installed."""
    for name in entries:
        entry(name)
    known = set(ENGINES) | set(peers._LOADERS)
    unknown = set(engines) - known
    if unknown:
        raise ValueError(f"unknown engine {sorted(unknown)}; known: {sorted(known)}")
    cells = []
    for name in entries:
        e = entry(name)
        for engine in engines:
            if engine not in ENGINES and e.op not in peers.peer_ops(engine):
                continue
            if engine not in ENGINES and e.algorithm not in ("-", "shifted", "pivot"):
                continue  # one peer row per op, next to our default algorithm
            for dtype in dtypes:
                for preset, nbytes in sizes:
                    n = inputs.PRESETS[preset]
                    if not e.accepts(n):
                        continue
                    rows = max(1, round(nbytes / (n * inputs.numpy_dtype(dtype).itemsize)))
                    cells.append(
                        {
                            "entry": name,
                            "engine": engine,
                            "dtype": dtype,
                            "preset": preset,
                            "n": n,
                            "rows": rows,
                        }
                    )
    return cells


# ----------------------------------------------------------------------------- cells


def measure_accuracy(cell: dict) -> dict:
    """One accuracy cell: our engine, or a peer's function on the same arguments
    (scored on the op's first output), against the oracle."""
    e = entry(cell["entry"])
    x = inputs.logits(
        cell["distribution"],
        cell["rows"],
        cell["n"],
        cell["scale"],
        cell["dtype"],
        offset=cell.get("offset", 0.0),
    )
    args = e.arguments(x, np.random.default_rng(1))
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        if cell["backend"] in ENGINES:
            got = e.run(args, backend=cell["backend"])
        else:
            got = peers.results_available()[cell["backend"]][e.op](*args)
        ref = e.reference(registry.oracle_args(args))
        row = error_metrics(e, got, ref, args, DTYPE_FORMATS[cell["dtype"]])
    return {
        **cell,
        "op": e.op,
        "algorithm": e.algorithm,
        **row,
        "seconds": time.perf_counter() - start,
    }


def measure_speed(cell: dict) -> dict:
    e = entry(cell["entry"])
    x = inputs.logits("normal", cell["rows"], cell["n"], 1.0, cell["dtype"])
    args = e.arguments(x, np.random.default_rng(1))
    if cell["engine"] in ENGINES:
        fn = lambda: e.run(args, backend=cell["engine"])  # noqa: E731
    else:
        fn = peers.peer_ops(cell["engine"])[e.op](args)
    large = x.nbytes >= settings.LARGE_INPUT_BYTES
    repeats = settings.SPEED_REPEATS_LARGE if large else settings.SPEED_REPEATS
    t = timing.time_call(fn, repeats=repeats)
    roof = timing.copy_roofline(x, repeats=repeats)
    nbytes = int(e.bytes_factor * x.nbytes)
    gbps = nbytes / t["median_s"] / 1e9
    return {
        **cell,
        "op": e.op,
        "algorithm": e.algorithm,
        "bytes": nbytes,
        **t,
        "gbps": gbps,
        **roof,
        "ratio_to_parallel_copy": gbps / roof["parallel_copy_gbps"],
    }


# ----------------------------------------------------------------------------- runner


def run(
    cells: Iterable[dict],
    measure: Callable[[dict], dict],
    table: Table,
    desc: str = "sweep",
    progress: bool = True,
    client=None,
) -> int:
    """Measure the cells not yet in ``table``; return how many were measured.

    With a ``distributed.Client``, the cells are measured as Dask tasks on its
    workers (``measure`` must be importable there) and ``table`` needs a
    :data:`WORKER` column.  Either way the rows are appended here, so a table
    opened for a run (:func:`experiments.harness.store.open_run`) stamps each with the
    run's id.
    """
    done = table.done_keys()
    todo = [c for c in cells if Table.key_of(c, table.key) not in done]
    if client is not None:
        return _run_on_cluster(todo, measure, table, client, desc, progress)
    for cell in tqdm(todo, desc=desc, disable=not progress or None, unit="cell"):
        table.append([measure(cell)])
    return len(todo)


def measure_on_worker(measure: Callable[[dict], dict], cell: dict) -> dict:
    """``measure(cell)`` with the address of the Dask worker that ran it."""
    from distributed import get_worker

    return {**measure(cell), WORKER: get_worker().address}


def _run_on_cluster(todo, measure, table: Table, client, desc: str, progress: bool) -> int:
    """Submit every cell, append each row as it arrives, once per key."""
    from dask.base import tokenize
    from distributed import as_completed

    if WORKER not in table.columns:
        raise ValueError(f"{table.path.name} needs a {WORKER!r} column to record the workers")
    futures = [
        client.submit(
            measure_on_worker,
            measure,
            cell,
            key=f"{desc}-cell-{tokenize(str(table.path), Table.key_of(cell, table.key))}",
            retries=RETRIES,
            pure=False,
        )
        for cell in todo
    ]
    written = set()
    bar = tqdm(total=len(futures), desc=desc, disable=not progress or None, unit="cell")
    with bar:
        for future in as_completed(futures):
            row = future.result()
            key = Table.key_of(row, table.key)
            if key not in written:
                table.append([row])
                written.add(key)
            bar.update()
    return len(written)
