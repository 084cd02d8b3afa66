"""Dask benchmark (``make bench-dask``): the softmax family out of core on a local cluster.

Logits several times larger than one worker's memory limit are generated lazily,
chunk by chunk (the array is never whole anywhere), with the vocabulary axis split
into several chunks, and reduced on a ``LocalCluster`` of worker processes that each
have a memory limit.  Each workload is timed once, after a warm-up that loads the
kernels on the workers, while a thread samples every worker's resident memory.

Writes ``dask.csv`` (one row per workload and worker: seconds, GB/s of logits
processed, peak and idle resident memory), its ``.meta.json`` and a ``README.md``
into ``--out`` (default ``results/dask``).  GB/s is the logits' size over the wall
time; the ``generate`` workload (make the logits and sum them) is the floor that
every other workload pays too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import threading
import time

import numpy as np
import pandas as pd

from experiments.harness import metadata

MiB = 1 << 20
COLUMNS = [
    "workload",
    "worker",
    "rows",
    "vocab",
    "chunk_shape",
    "dtype",
    "array_gib",
    "workers",
    "threads_per_worker",
    "memory_limit_mib",
    "seconds",
    "gbps",
    "idle_rss_mib",
    "peak_rss_mib",
    "value",
    "expected",
]


def _logits_block(block_info=None, seed=0, dtype=np.float32):
    """One chunk of uniform logits in [-8, 8), from a generator seeded by its place."""
    info = block_info[None]
    rng = np.random.default_rng([seed, *info["chunk-location"]])
    block = rng.random(info["chunk-shape"], dtype=np.float32)
    return (block * np.float32(16) - np.float32(8)).astype(dtype, copy=False)


def logits(rows: int, vocab: int, chunk_rows: int, vocab_chunks: int, dtype=np.float32):
    """A lazy ``(rows, vocab)`` array whose chunks are made where they are used."""
    import dask.array as da

    chunks = (chunk_rows, -(-vocab // vocab_chunks))
    chunks = da.core.normalize_chunks(chunks, (rows, vocab), dtype=dtype)
    return da.map_blocks(_logits_block, chunks=chunks, dtype=dtype, meta=np.empty((0, 0), dtype))


def _dask_softmax(x):
    """Dask's own ops, for comparison: ``exp(x - max) / sum``."""
    import dask.array as da

    e = da.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def workloads() -> dict:
    """Name -> (lazy scalar from the logits, expected value or None)."""
    import softmax_numba.dask as sd

    return {
        "generate": (lambda x: x.sum(dtype=np.float64), None),
        "logsumexp": (lambda x: sd.logsumexp(x).sum(dtype=np.float64), None),
        "softmax": (lambda x: sd.softmax(x).sum(dtype=np.float64), "rows"),
        "log_softmax": (lambda x: sd.log_softmax(x).max(), None),
        "dask_softmax": (lambda x: _dask_softmax(x).sum(dtype=np.float64), "rows"),
    }


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Samples every worker's resident memory in a thread; ``peaks`` by address."""

    def __init__(self, client, interval: float = 0.1):
        self.client, self.interval = client, interval
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                for worker, rss in self.client.run(_rss).items():
                    self.peaks[worker] = max(self.peaks.get(worker, 0), rss)
            except Exception:  # a worker leaving mid-sample: try again
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(client, x, names=None) -> list[dict]:
    """Time each workload on ``x`` once (after a warm-up) with peak memory per worker."""
    chosen = {k: v for k, v in workloads().items() if names is None or k in names}
    small = x[: x.chunks[0][0]]
    for build, _ in chosen.values():
        build(small).compute()  # load and compile the kernels on every worker
    client.run(lambda: __import__("gc").collect())
    idle = client.run(_rss)
    info = client.scheduler_info()["workers"]
    rows = []
    for name, (build, expected) in chosen.items():
        graph = build(x)
        with PeakMemory(client) as memory:
            start = time.perf_counter()
            value = float(graph.compute())
            seconds = time.perf_counter() - start
        for i, worker in enumerate(sorted(idle)):
            rows.append(
                {
                    "workload": name,
                    "worker": i,
                    "rows": x.shape[0],
                    "vocab": x.shape[1],
                    "chunk_shape": "x".join(str(c[0]) for c in x.chunks),
                    "dtype": str(x.dtype),
                    "array_gib": x.nbytes / (1 << 30),
                    "workers": len(idle),
                    "threads_per_worker": info[worker]["nthreads"] if worker in info else "",
                    "memory_limit_mib": info[worker]["memory_limit"] / MiB
                    if worker in info
                    else "",
                    "seconds": seconds,
                    "gbps": x.nbytes / seconds / 1e9,
                    "idle_rss_mib": idle[worker] / MiB,
                    "peak_rss_mib": memory.peaks.get(worker, 0) / MiB,
                    "value": value,
                    "expected": x.shape[0] if expected == "rows" else "",
                }
            )
    return rows


def summary(table: pd.DataFrame, load: str = "unknown") -> str:
    """The README of the results folder, from the table."""
    first = table.iloc[0]
    per = table.groupby("workload", sort=False).agg(
        seconds=("seconds", "first"),
        gbps=("gbps", "first"),
        peak_rss_mib=("peak_rss_mib", lambda s: " / ".join(f"{v:.0f}" for v in s)),
        idle_rss_mib=("idle_rss_mib", lambda s: " / ".join(f"{v:.0f}" for v in s)),
    )
    lines = [
        "# softmax_numba.dask out of core",
        "",
        "Generated by `python -m experiments.measure.dask_bench` (`make bench-dask`); "
        "the numbers are in `dask.csv`, the machine in `dask.meta.json`.",
        "",
        f"Logits of {first.rows} x {first.vocab} {first['dtype']} ({first.array_gib:.2f} GiB), "
        f"chunks of {first.chunk_shape} (the vocabulary axis in "
        f"{-(-first.vocab // int(first.chunk_shape.split('x')[1]))} chunks), generated "
        f"lazily chunk by chunk, on a LocalCluster of {first.workers} worker processes with "
        f"{first.threads_per_worker} thread each and a memory limit of "
        f"{first.memory_limit_mib:.0f} MiB per worker: the array is "
        f"{first.array_gib * 1024 / first.memory_limit_mib:.1f} times one worker's limit.",
        f"Load average of this machine when the run began: {load}; the workers share "
        "its cores with the scheduler, this process and anything else running.",
        "Each workload is reduced to one number (so nothing but the logits' chunks is "
        "held), timed once after a warm-up; GB/s is the logits' size over the wall time; "
        "memory is each worker's resident set, sampled every 0.1 s (idle: after the "
        "warm-up, kernels loaded).",
        "",
        "| workload | seconds | GB/s | peak RSS per worker (MiB) | idle RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, row in per.iterrows():
        lines.append(
            f"| {name} | {row.seconds:.2f} | {row.gbps:.3f} | {row.peak_rss_mib} | "
            f"{row.idle_rss_mib} |"
        )
    lines += [
        "",
        "`generate` makes the logits and sums them: the floor every workload pays. "
        "`softmax` and `log_softmax` read each chunk twice (state, then normalization): "
        "between the two, the chunks of a row block stay in worker memory (or spill). "
        "`dask_softmax` is `exp(x - max) / sum` with Dask's own ops, for comparison. "
        "The state of each row piece comes from `softmax_numba.cpu.softmax.online_state`; "
        "its speed sets what `logsumexp` costs beyond `generate`.",
        "",
    ]
    return "\n".join(lines)


def write(rows: list[dict], out: pathlib.Path, cluster: dict) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(out / "dask.csv", index=False)
    meta_path = metadata.write_next_to(out / "dask.csv")
    meta = json.loads(meta_path.read_text())
    meta["command"] = " ".join(["python", "-m", "experiments.measure.dask_bench", *sys.argv[1:]])
    meta["cluster"] = cluster
    for name in ("dask", "distributed"):
        meta["packages"][name] = __import__(name).__version__
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(summary(table, cluster.get("load_average", "unknown")))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.measure.dask_bench", description=__doc__
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/dask"))
    parser.add_argument("--gib", type=float, default=2.0, help="size of the logits (GiB)")
    parser.add_argument("--vocab", type=int, default=262144, help="row length")
    parser.add_argument("--vocab-chunks", type=int, default=4, help="chunks along a row")
    parser.add_argument("--chunk-mib", type=float, default=8.0, help="size of one chunk")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB", help="per worker")
    args = parser.parse_args(argv)

    import distributed

    dtype = np.dtype(np.float32)
    rows = max(1, round(args.gib * (1 << 30) / (args.vocab * dtype.itemsize)))
    chunk_cols = -(-args.vocab // args.vocab_chunks)
    chunk_rows = max(1, round(args.chunk_mib * MiB / (chunk_cols * dtype.itemsize)))
    cluster_args = {
        "n_workers": args.workers,
        "threads_per_worker": 1,
        "processes": True,
        "memory_limit": args.memory_limit,
    }
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with (
        distributed.LocalCluster(
            **cluster_args, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        x = logits(rows, args.vocab, chunk_rows, args.vocab_chunks, dtype)
        table = write(measure(client, x), args.out, {**cluster_args, "load_average": load})
    print(summary(table, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
