"""``python -m experiments``: the study harness.

    python -m experiments study [--quick] [--out DIR]   everything, in order
    python -m experiments bhh|exp|overflow|accuracy|speed|claims [--quick] [--out DIR]
    python -m experiments plots [--out DIR]             figures + CLAIMS.md from the tables
    python -m experiments bench-summary [--out DIR]     GB/s table from make bench's JSON
    python -m experiments roofline [--quick] [--out DIR] our GB/s against a parallel copy and
                                                        the peers, interleaved in one run

Every sweep is resumable: rerun the same command after an interruption and it
measures only the cells that are missing.

With --scheduler ADDRESS (a dask.distributed scheduler, e.g. tcp://10.0.0.1:8786;
needs softmax_numba[dask] here and on the workers), the accuracy, speed and
overflow sweeps run each cell as a Dask task, measured on the worker that runs it;
this process gathers the rows into the same tables (column `worker`).  A cell lost
with its worker is measured again elsewhere, never written twice.  The other steps
run here.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import pandas as pd

from experiments import (
    bench_summary,
    bhh,
    claims,
    claims_measure,
    elementary_paths,
    exp_accuracy,
    grids,
    metadata,
    overflow,
    plots,
    report,
    roofline,
    sweep,
)
from experiments.store import Table

STEPS = ("bhh", "exp", "overflow", "accuracy", "speed", "claims")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sweep(out, name, columns, key, cells, measure, progress, client=None) -> None:
    table = Table(out / f"{name}.csv", [*columns, sweep.WORKER], key)
    measured = sweep.run(cells, measure, table, desc=name, progress=progress, client=client)
    _log(f"{name}: {measured} cells measured, {len(cells) - measured} already on disk")
    metadata.write_next_to(table.path)


def connect(address: str | None):
    """A ``dask.distributed`` client of the scheduler at ``address`` (None: none)."""
    if address is None:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise SystemExit(
            "--scheduler needs dask.distributed: pip install 'softmax_numba[dask]'"
        ) from None
    client = Client(address)
    _log(f"scheduler {address}: {len(client.scheduler_info()['workers'])} workers")
    return client


def run_step(
    step: str, out: pathlib.Path, quick: bool, progress: bool, bhh_data=None, client=None
) -> None:
    if step == "bhh":
        per_vector, summary = bhh.reproduce(bhh_data)
        folder = out / "blanchard_higham_higham"
        folder.mkdir(parents=True, exist_ok=True)
        per_vector.to_csv(folder / "per_vector.csv", index=False)
        summary.to_csv(folder / "summary.csv", index=False)
        metadata.write_next_to(folder / "summary.csv")
        _log(f"bhh: {len(per_vector)} evaluations, summary in {folder / 'summary.csv'}")
    elif step == "exp":
        table = pd.DataFrame(exp_accuracy.rows(quick), columns=exp_accuracy.COLUMNS)
        table.to_csv(out / "exp_ulp.csv", index=False)
        metadata.write_next_to(out / "exp_ulp.csv")
        names = table.function + " " + table.dtype
        _log(f"exp: max ulp {dict(zip(names, table.max_ulp, strict=True))}")
        paths = pd.DataFrame(elementary_paths.rows(quick), columns=elementary_paths.COLUMNS)
        paths.to_csv(out / "elementary_paths.csv", index=False)
        metadata.write_next_to(out / "elementary_paths.csv")
        _log(f"exp: fast and libm paths compared on {len(paths)} cells")
    elif step == "overflow":
        _sweep(
            out,
            "overflow",
            overflow.COLUMNS,
            overflow.KEY,
            grids.overflow_cells(quick),
            overflow.measure,
            progress,
            client,
        )
    elif step == "accuracy":
        _sweep(
            out,
            "accuracy",
            sweep.ACCURACY_COLUMNS,
            sweep.ACCURACY_KEY,
            grids.accuracy(quick),
            sweep.measure_accuracy,
            progress,
            client,
        )
    elif step == "speed":
        _sweep(
            out,
            "speed",
            sweep.SPEED_COLUMNS,
            sweep.SPEED_KEY,
            grids.speed(quick),
            sweep.measure_speed,
            progress,
            client,
        )
    elif step == "claims":
        table = Table(out / "claims.csv", claims_measure.COLUMNS, ["claim", "quantity"])
        done = table.done_keys()
        rows = [
            r for r in claims_measure.all_measurements() if Table.key_of(r, table.key) not in done
        ]
        table.append(rows)
        metadata.write_next_to(table.path)
        _log(f"claims: {len(rows)} measurements")


def redraw(out: pathlib.Path) -> None:
    made = plots.draw_all(out)
    path = claims.write(out)
    report.write(out)
    if (out / "roofline.csv").exists():
        roofline.write_report(out)
    _log(f"plots: {len(made)} figures; verdicts in {path}; summary in {out / 'README.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("study", *STEPS, "plots", "bench-summary", "roofline"))
    parser.add_argument("--quick", action="store_true", help="small grids (about a minute)")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="output folder (default results/, or results/quick with --quick)",
    )
    parser.add_argument(
        "--bhh-data",
        type=pathlib.Path,
        default=None,
        help="path of data_presoftmax.mat (default: the copy in experiments/data/)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the sweeps' cells on this dask.distributed scheduler's workers",
    )
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path("results") / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "bench-summary":
        table = bench_summary.summarize(out / "benchmark.json", out / "bench_summary.csv")
        metadata.write_next_to(out / "bench_summary.csv")
        _log(f"bench-summary: {len(table)} rows in {out / 'bench_summary.csv'}")
        return 0
    if args.command == "roofline":
        table = roofline.run(out, args.quick, progress=not args.no_progress)
        _log(f"roofline: {len(table.read())} rows in {table.path}")
        return 0
    if args.command != "plots":
        bhh.load_logits(args.bhh_data)  # a missing data set is an error before anything runs
        steps = STEPS if args.command == "study" else (args.command,)
        # Build every grid first: a bad configuration fails before any cell runs.
        grids.accuracy(args.quick), grids.speed(args.quick), grids.overflow_cells(args.quick)
        client = connect(args.scheduler)
        try:
            for step in steps:
                run_step(step, out, args.quick, not args.no_progress, args.bhh_data, client)
        finally:
            if client is not None:
                client.close()
    redraw(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
