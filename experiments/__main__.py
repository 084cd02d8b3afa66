"""``python -m experiments``: the study harness.

    python -m experiments study [--quick] [--out DIR]   everything, in order
    python -m experiments bhh|exp|overflow|accuracy|speed|claims|collapse [--quick] [--out DIR]
    python -m experiments plots [--out DIR]             figures + CLAIMS.md from the tables
    python -m experiments bench-summary [--out DIR]     GB/s table from make bench's JSON
    python -m experiments roofline [--quick] [--out DIR] our GB/s against a parallel copy and
                                                        the peers, interleaved in one run
    python -m experiments torch-autograd [--quick]      forward + backward through
                                                        softmax_numba.torch against torch
    python -m experiments linear-ce [--quick]           linear_cross_entropy against the
                                                        materialized forms and the products
    python -m experiments sizes [--quick] [--library PATH]
                                                        every op from 1 x 10 to 16384 x 4096
                                                        against torch, onnxruntime, scipy,
                                                        JAX and a copy (SIZES.md); PATH: time
                                                        that checkout of the library
    python -m experiments crossover [--quick]           serial against parallel engine per
                                                        op and size (CROSSOVER.md): where
                                                        backend="auto" starts the threads
    python -m experiments sampling [--quick]            a token drawn from logits (sample:
                                                        temperature, top-k, top-p, min-p)
                                                        against torch's sort path (vLLM's),
                                                        torch.topk and multinomial, and NumPy
                                                        (SAMPLING.md)

Every step measures every cell of its grid, here and now: the tables already in
DIR (such as the committed results/) are not reused, and each is replaced only
when its successor is complete.  While a step runs, its table is written in
DIR/.partial/ (a row as soon as its cell is measured, the metadata marked
"complete": false) and moved into place, with its metadata, when the step ends.
bhh, exp and collapse compute their tables at once and write them when done.

After an interruption, rerun the same command: a table in DIR/.partial/ is
resumed (only its missing cells are measured), and `study` skips the steps that
the interrupted study finished (it records its runs in DIR/.partial/study.json
until its last step is done), if every run involved had the same code (git
commit, local changes, hash of the sources), machine, package versions and
settings (--quick, --scheduler) as this one.  Otherwise the command stops before
measuring anything and says why; then choose:

    --fresh   discard the interrupted rows and measure every step and cell
    --keep    keep the rows already there (the interrupted ones, else the finished
              table's, if they have run ids) whatever measured them, and measure
              only the missing cells; bhh, exp and collapse tables with run ids are kept
    --out D   measure into another folder and leave this one as it is

Every row of the overflow, accuracy, speed and claims tables (and of the tables
that bhh and exp write at once) has a run_id; NAME.meta.json beside NAME.csv
lists each run whose rows are in the table (its commit, machine, date, packages,
settings and row count), and its top-level fields summarise them.

With --scheduler ADDRESS (a dask.distributed scheduler, e.g. tcp://10.0.0.1:8786;
needs softmax_numba[dask] here and on the workers), the accuracy, speed and
overflow sweeps run each cell as a Dask task, measured on the worker that runs it;
this process gathers the rows into the same tables (column `worker`; the workers'
processors are in the run's metadata).  A cell lost with its worker is measured
again elsewhere, never written twice.  The other steps run here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import subprocess
import sys
import time

import pandas as pd

from experiments.harness import grids, metadata, store
from experiments.measure import (
    bhh,
    claims_measure,
    elementary_paths,
    exp_accuracy,
    overflow,
    roofline,
    sweep,
)
from experiments.report import bench_summary, claims, plots, readme

STEPS = ("bhh", "exp", "overflow", "accuracy", "speed", "claims", "collapse")
#: The tables each step writes; overflow's to claims' are measured cell by cell (resumable).
STEP_TABLES = {
    "bhh": ("blanchard_higham_higham/per_vector.csv", "blanchard_higham_higham/summary.csv"),
    "exp": ("exp_ulp.csv", "elementary_paths.csv"),
    **{name: (f"{name}.csv",) for name in ("overflow", "accuracy", "speed", "claims")},
    "collapse": ("collapse.csv",),
}
CELL_STEPS = ("overflow", "accuracy", "speed", "claims")
#: Where ``study`` records its runs until every step is done (see :func:`study_runs`).
STUDY_MARKER = pathlib.Path(store.PARTIAL) / "study.json"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sweep(out, name, columns, key, cells, measure, progress, client, run, mode) -> None:
    table = store.open_run(out / f"{name}.csv", [*columns, sweep.WORKER], key, run, mode)
    measured = sweep.run(cells, measure, table, desc=name, progress=progress, client=client)
    path = store.finish(table)
    _log(f"{name}: {measured} cells measured, {len(cells) - measured} already there; {path}")


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
    step: str,
    out: pathlib.Path,
    quick: bool,
    progress: bool,
    bhh_data=None,
    client=None,
    run: dict | None = None,
    mode: str = "auto",
) -> None:
    """Measure one step into ``out`` as ``run`` (a new one if None); ``mode`` as in
    :func:`experiments.harness.store.plan`."""
    if run is None:
        run = metadata.new_run({"quick": quick, "scheduler": None})
    if step == "bhh":
        per_vector, summary = bhh.reproduce(bhh_data)
        folder = out / "blanchard_higham_higham"
        store.write_whole(folder / "per_vector.csv", per_vector, run)
        store.write_whole(folder / "summary.csv", summary, run)
        _log(f"bhh: {len(per_vector)} evaluations, summary in {folder / 'summary.csv'}")
    elif step == "exp":
        table = pd.DataFrame(exp_accuracy.rows(quick), columns=exp_accuracy.COLUMNS)
        store.write_whole(out / "exp_ulp.csv", table, run)
        names = table.function + " " + table.dtype
        _log(f"exp: max ulp {dict(zip(names, table.max_ulp, strict=True))}")
        paths = pd.DataFrame(elementary_paths.rows(quick), columns=elementary_paths.COLUMNS)
        store.write_whole(out / "elementary_paths.csv", paths, run)
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
            run,
            mode,
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
            run,
            mode,
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
            run,
            mode,
        )
    elif step == "claims":
        table = store.open_run(
            out / "claims.csv", claims_measure.COLUMNS, ["claim", "quantity"], run, mode
        )
        done = table.done_keys()
        rows = [
            r
            for r in claims_measure.all_measurements()
            if store.Table.key_of(r, table.key) not in done
        ]
        table.append(rows)
        store.finish(table)
        _log(f"claims: {len(rows)} measurements")
    elif step == "collapse":
        from experiments.measure import collapse

        table = pd.DataFrame(collapse.rows(quick), columns=collapse.COLUMNS)
        store.write_whole(out / "collapse.csv", table, run)
        _log(f"collapse: {len(table)} cells (claim 16), in {out / 'collapse.csv'}")


def study_runs(out: pathlib.Path, run: dict, mode: str) -> dict[str, dict]:
    """The runs of the interrupted study in ``out`` that ``run`` continues (empty: none).

    ``study`` writes ``.partial/study.json`` when it starts and removes it when its
    last step is done; one left behind lists the runs of an interrupted study.  It
    is continued (the steps whose tables those runs wrote are not measured again)
    if every run in it matches ``run`` (or with ``--keep``), discarded with
    ``--fresh``, and otherwise refused (:class:`experiments.harness.store.Refused`).
    """
    path = out / STUDY_MARKER
    if mode == "fresh" or not path.exists():
        return {}
    runs = json.loads(path.read_text())["runs"]
    differ = sorted({d for r in runs.values() for d in metadata.differences(run, r)})
    if differ and mode != "keep":
        names = "; ".join(map(metadata.describe, runs.values()))
        raise store.Refused(
            f"{path} records an interrupted study ({names}) "
            f"that this run may not continue: {'; '.join(differ)}.  Rerun with --fresh to "
            "measure every step again, with --keep to keep its tables and measure only what "
            "is missing, or with --out pointing to another folder."
        )
    return runs


def step_done(out: pathlib.Path, step: str, runs: dict[str, dict] | None) -> bool:
    """Whether every table of ``step`` is complete, was measured by ``runs`` only
    (None: by any recorded runs) and is not being measured again (in ``.partial/``)."""
    for name in STEP_TABLES[step]:
        meta = metadata.read(out / name) or {}
        listed = set(meta.get("runs", {}))
        if not (out / name).exists() or not meta.get("complete") or not listed:
            return False
        if store.partial_path(out / name).exists():
            return False
        if runs is not None and not listed <= set(runs):
            return False
    return True


def check_tables(out: pathlib.Path, steps, run: dict, mode: str, refused=()) -> None:
    """Log what each step will do with its tables in ``out``; exit, saying why and
    what to do, if any of them holds rows that this run may not resume."""
    refused = list(refused)
    for step in steps:
        if step not in CELL_STEPS:
            _log(f"{step}: measured at once, written when done ({', '.join(STEP_TABLES[step])})")
            continue
        try:
            _action, message = store.plan(out / STEP_TABLES[step][0], run, mode)
            _log(f"{step}: {message}")
        except store.Refused as why:
            refused.append(str(why))
    if refused:
        raise SystemExit("Nothing was measured.\n" + "\n".join(refused))


def redraw(out: pathlib.Path) -> None:
    made = plots.draw_all(out)
    path = claims.write(out)
    readme.write(out)
    if (out / "roofline.csv").exists():
        roofline.write_report(out)
    if (out / "sizes.csv").exists():
        from experiments.report import sizes as sizes_report

        sizes_report.write(out)
    if (out / "sampling.csv").exists():
        from experiments.report import sampling as sampling_report

        sampling_report.write(out)
    _log(f"plots: {len(made)} figures; verdicts in {path}; summary in {out / 'README.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=(
            "study",
            *STEPS,
            "plots",
            "bench-summary",
            "roofline",
            "torch-autograd",
            "linear-ce",
            "sizes",
            "sampling",
            "crossover",
        ),
    )
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
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument(
        "--fresh",
        action="store_true",
        help="discard the rows of an interrupted run and measure every cell",
    )
    keep.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows already in the tables, whatever measured them, and measure "
        "only the missing cells (the metadata lists every run)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the sweeps' cells on this dask.distributed scheduler's workers",
    )
    parser.add_argument(
        "--library",
        metavar="PATH",
        default=None,
        help="sizes only: time the softmax_numba of the checkout at PATH (a process of its own)",
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
    if args.command == "torch-autograd":
        from experiments.measure import torch_autograd

        table = torch_autograd.run(out, args.quick, progress=not args.no_progress)
        _log(f"torch-autograd: {len(table.read())} rows in {table.path}")
        return 0
    if args.command == "sizes":
        from experiments.measure import sizes

        mode = "fresh" if args.fresh else "keep" if args.keep else "auto"
        progress = not args.no_progress
        if args.library is not None and not sizes.use_library(args.library):
            # This process has imported this checkout's softmax_numba: time the other
            # in a process that imports it first.
            command = sizes.child_command(out, args.quick, progress, mode, args.library)
            return subprocess.call(command, cwd=sizes.ROOT)
        path = sizes.run(out, args.quick, progress, mode, args.library)
        _log(f"sizes: {path}, {out / 'SIZES.md'}, {out / 'sizes.png'}")
        return 0
    if args.command == "sampling":
        from experiments.measure import sampling

        mode = "fresh" if args.fresh else "keep" if args.keep else "auto"
        path = sampling.run(out, args.quick, not args.no_progress, mode)
        _log(f"sampling: {path}, {out / 'SAMPLING.md'}")
        return 0
    if args.command == "crossover":
        from experiments.measure import crossover

        table = crossover.run(out, args.quick, progress=not args.no_progress)
        _log(f"crossover: {len(table)} rows in {out / 'crossover.csv'}, {out / 'CROSSOVER.md'}")
        return 0
    if args.command == "linear-ce":
        from experiments.measure import linear_ce

        table = linear_ce.run(out, args.quick, progress=not args.no_progress)
        _log(f"linear-ce: {len(table.read())} rows in {table.path}")
        return 0
    if args.command != "plots":
        bhh.load_logits(args.bhh_data)  # a missing data set is an error before anything runs
        steps = STEPS if args.command == "study" else (args.command,)
        # Build every grid first: a bad configuration fails before any cell runs.
        grids.accuracy(args.quick), grids.speed(args.quick), grids.overflow_cells(args.quick)
        mode = "fresh" if args.fresh else "keep" if args.keep else "auto"
        run = metadata.new_run({"quick": args.quick, "scheduler": args.scheduler})
        _log(f"{metadata.describe(run)}, into {out}")
        refused, earlier = [], {}
        if args.command == "study":
            try:
                earlier = study_runs(out, run, mode)
            except store.Refused as why:
                refused.append(str(why))
        skip = {}
        for step in steps:
            if earlier and step_done(out, step, earlier):
                skip[step] = "done by the interrupted study"
            elif mode == "keep" and step not in CELL_STEPS and step_done(out, step, None):
                skip[step] = "kept (--keep)"
        for step, why in skip.items():
            _log(f"{step}: {why}, not measured again")
        check_tables(out, [s for s in steps if s not in skip], run, mode, refused)
        marker = out / STUDY_MARKER
        if args.command == "study":
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"runs": {**earlier, run["run_id"]: run}}, indent=2))
        client = connect(args.scheduler)
        try:
            if client is not None:
                run["workers"] = client.run(metadata.machine)
            for step in steps:
                if step not in skip:
                    run_step(
                        step,
                        out,
                        args.quick,
                        not args.no_progress,
                        args.bhh_data,
                        client,
                        run,
                        mode,
                    )
        finally:
            if client is not None:
                client.close()
        if args.command == "study":
            marker.unlink()
            with contextlib.suppress(OSError):
                marker.parent.rmdir()
    redraw(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
