"""A CSV table that survives interruption: each finished cell is on disk at once.

Rows are appended with one ``write`` of whole lines, flushed and fsynced, so a
Ctrl-C or a kill loses at most the cell being measured.  On opening, a torn last
line (a kill in the middle of a write) is dropped and the file rewritten cleanly;
the keys already present are skipped by the sweep, so a rerun never duplicates a
row.  A table written before columns were added at the end of its schema (such as
the sweep's ``worker``) gets them, blank, on opening.

Provenance.  A table opened with a ``run_id`` has a last column :data:`RUN_ID`,
stamped on every row it appends.  :func:`open_run` gives a run its table to
measure: not ``name.csv`` itself but ``.partial/name.csv`` beside it, whose
``.meta.json`` lists the runs of its rows and says ``"complete": false``;
:func:`finish` marks it complete and moves both into place with ``os.replace``,
so a finished table is replaced whole, only once its successor is complete.
Whether the run starts afresh, resumes an interrupted run's rows or keeps rows of
other runs is decided by :func:`plan` (see its ``mode``), which refuses, with
:class:`Refused` and a message saying what to do, to resume rows measured by other
code, on another machine or with other settings.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import os
import pathlib
import shutil
from collections.abc import Iterable, Sequence

import pandas as pd

from experiments.harness import metadata

#: The column naming the run that measured a row (see :mod:`experiments.harness.metadata`).
RUN_ID = "run_id"
#: The folder, beside the finished tables, of the tables being measured.
PARTIAL = ".partial"
#: How :func:`plan` treats rows already on disk.
MODES = ("auto", "fresh", "keep")


def _complete_lines(text: str) -> tuple[list[str], list[list[str]], bool]:
    """The header, the complete well-formed rows, and whether there was nothing else."""
    lines = list(csv.reader(io.StringIO(text)))
    header = lines[0] if lines else []
    good = [line for line in lines[1:] if len(line) == len(header)]
    if not text.endswith("\n") and good and lines[-1] == good[-1]:
        good.pop()  # a last line without its newline may be cut short
    return header, good, len(good) == len(lines) - 1 and text.endswith("\n")


class Table:
    """An append-only CSV file with fixed columns, of which ``key`` identify a cell.

    Parameters
    ----------
    path : path-like
        The CSV file (created with its header if missing).
    columns : sequence of str
        All columns, in file order.
    key : sequence of str
        The columns that identify a cell (a subset of ``columns``).
    run_id : str, optional
        Stamp every appended row with this id, in a last column :data:`RUN_ID`.
    """

    def __init__(self, path, columns: Sequence[str], key: Sequence[str], run_id: str | None = None):
        self.path = pathlib.Path(path)
        self.run_id = run_id
        self.columns = list(columns)
        if run_id is not None and RUN_ID not in self.columns:
            self.columns.append(RUN_ID)
        self.key = list(key)
        missing = set(self.key) - set(self.columns)
        if missing:
            raise ValueError(f"key columns {sorted(missing)} are not among the columns")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Create the file, or keep only its complete, well-formed lines."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_atomically([])
            return
        text = self.path.read_text()
        header, good, clean = _complete_lines(text)
        added = len(self.columns) - len(header)
        if header != self.columns and not (added > 0 and self.columns[: len(header)] == header):
            raise ValueError(
                f"{self.path} has columns {header}, expected {self.columns}; "
                "move it away or choose another --out"
            )
        if added or not clean:
            # A table written before trailing columns were added gets them, blank.
            self._write_atomically([line + [""] * added for line in good])

    def _write_atomically(self, rows: list[list[str]]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.columns)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def done_keys(self) -> set[tuple[str, ...]]:
        """The keys of the rows on disk, as strings (how CSV stores them)."""
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            return {tuple(row[k] for k in self.key) for row in reader}

    @staticmethod
    def key_of(values: dict, key: Sequence[str]) -> tuple[str, ...]:
        """A cell's key in the form :meth:`done_keys` returns."""
        return tuple(str(values[k]) for k in key)

    def append(self, rows: Iterable[dict]) -> None:
        """Write rows (dicts with every column) durably, in one write."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            if self.run_id is not None:
                row = {**row, RUN_ID: self.run_id}
            extra = set(row) - set(self.columns)
            if extra:
                raise ValueError(f"unknown columns {sorted(extra)} for {self.path.name}")
            writer.writerow([row.get(c, "") for c in self.columns])
        data = buffer.getvalue().encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path)

    def rows_by_run(self) -> dict[str, int]:
        """How many rows each run id has in the table (``""``: rows without one)."""
        return _rows_by_run(self.path)


# ----------------------------------------------------------------------------- provenance


class Refused(Exception):
    """Rows on disk that this run may not resume; the message says what to do."""


def partial_path(path) -> pathlib.Path:
    """Where the table ``path`` is measured until it is complete: ``.partial/name.csv``."""
    path = pathlib.Path(path)
    return path.parent / PARTIAL / path.name


def _rows_by_run(path: pathlib.Path) -> dict[str, int]:
    if not path.exists():
        return {}
    header, good, _clean = _complete_lines(path.read_text())
    at = header.index(RUN_ID) if RUN_ID in header else None
    return dict(collections.Counter("" if at is None else line[at] for line in good))


def _runs(path: pathlib.Path, counts: dict[str, int]) -> tuple[dict[str, dict], set[str]]:
    """The records of the runs with rows in ``path`` (with their ``rows``), and the
    run ids of rows that its metadata does not describe (``""``: rows without one)."""
    listed = (metadata.read(path) or {}).get("runs", {})
    runs = {i: {**listed[i], "rows": n} for i, n in counts.items() if i in listed}
    return runs, set(counts) - set(runs)


def _recover(path: pathlib.Path) -> None:
    """Finish a :func:`finish` cut short between moving the table and its metadata."""
    partial = partial_path(path)
    stale = metadata.meta_path(partial)
    if stale.exists() and not partial.exists():
        if (metadata.read(partial) or {}).get("complete"):
            os.replace(stale, metadata.meta_path(path))
        else:
            stale.unlink()


def _describe(path: pathlib.Path, counts: dict[str, int]) -> str:
    runs, unknown = _runs(path, counts)
    parts = [f"{r['rows']} rows of {metadata.describe(r)}" for r in runs.values()]
    if unknown:
        n = sum(counts[i] for i in unknown)
        meta = metadata.read(path)
        said = f"; its metadata names {metadata.describe(meta)}" if meta else ""
        parts.append(f"{n} rows of no recorded run{said}")
    return "; ".join(parts) or "no rows"


def plan(path, run: dict, mode: str = "auto") -> tuple[str, str]:
    """What :func:`open_run` will do with the table ``path`` for ``run``, without doing it.

    Parameters
    ----------
    path : path-like
        The finished table, ``name.csv``.
    run : dict
        This run's record (:func:`experiments.harness.metadata.new_run`).
    mode : {"auto", "fresh", "keep"}
        ``"auto"``: measure every cell, but resume an interrupted run's rows
        (``.partial/name.csv``) if every run that measured them matches ``run``
        on :data:`experiments.harness.metadata.FINGERPRINT`; refuse any other.
        ``"fresh"``: measure every cell, discarding an interrupted run's rows.
        ``"keep"``: keep the rows of an interrupted run, else of the finished
        table, whatever measured them, and measure only the missing cells.
        In every mode the finished table is replaced only by :func:`finish`.

    Returns
    -------
    action, message : str
        ``action`` is ``"new"``, ``"resume"``, ``"keep"`` or ``"keep-finished"``;
        ``message`` says it in words.

    Raises
    ------
    Refused
        If the rows on disk may not be kept; the message says what to do.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = pathlib.Path(path)
    _recover(path)
    partial = partial_path(path)
    counts = _rows_by_run(partial)
    finished = _rows_by_run(path)
    replaces = (
        f"; replaces {path} ({_describe(path, finished)}) when complete" if path.exists() else ""
    )
    if counts and mode == "fresh":
        return "new", f"discards the interrupted {partial} ({_describe(partial, counts)}){replaces}"
    if counts:
        runs, unknown = _runs(partial, counts)
        if mode == "keep" and not unknown:
            return "keep", f"keeps {partial} ({_describe(partial, counts)}){replaces}"
        differ = sorted({d for r in runs.values() for d in metadata.differences(run, r)})
        if not unknown and not differ:
            return "resume", f"resumes {partial} ({_describe(partial, counts)}){replaces}"
        why = "its rows' runs are not all recorded" if unknown else "; ".join(differ)
        raise Refused(
            f"{partial} holds an interrupted measurement ({_describe(partial, counts)}) that "
            f"this run may not resume: {why}.  Rerun with --fresh to discard it and measure "
            "every cell"
            + (
                ""
                if unknown
                else ", with --keep to add this run's cells to it (the metadata "
                "then lists both runs)"
            )
            + ", or with --out pointing to another folder."
        )
    if mode == "keep" and finished:
        _, unknown = _runs(path, finished)
        if unknown:
            raise Refused(
                f"{path} cannot be kept: it has {sum(finished[i] for i in unknown)} rows that "
                "no recorded run measured (written before run ids were recorded?).  Rerun "
                "without --keep to measure it afresh, or with --out pointing to another folder."
            )
        return "keep-finished", f"keeps the rows of {path} ({_describe(path, finished)})"
    return "new", ("new table" + replaces) if replaces else "new table"


def open_run(path, columns: Sequence[str], key: Sequence[str], run: dict, mode="auto") -> Table:
    """The table in which ``run`` measures ``path`` (see :func:`plan` for ``mode``).

    Returns a :class:`Table` at :func:`partial_path` stamping ``run``'s id, with its
    metadata (``"complete": false``) written before any row; call :func:`finish`
    once every cell is measured.
    """
    path = pathlib.Path(path)
    action, _message = plan(path, run, mode)
    partial = partial_path(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if action == "new":
        partial.unlink(missing_ok=True)
        metadata.meta_path(partial).unlink(missing_ok=True)
    elif action == "keep-finished":
        shutil.copyfile(path, partial)
        shutil.copyfile(metadata.meta_path(path), metadata.meta_path(partial))
    table = Table(partial, columns, key, run_id=run["run_id"])
    runs, _unknown = _runs(partial, table.rows_by_run())
    record = {**run, "threading_layer": metadata.threading_layer(), "rows": 0}
    metadata.write(partial, {**runs, run["run_id"]: record}, complete=False)
    return table


def finish(table: Table) -> pathlib.Path:
    """Mark a table from :func:`open_run` complete and move it (and its metadata) into
    place, replacing the finished table; return its path."""
    runs, unknown = _runs(table.path, table.rows_by_run())
    if unknown:
        raise RuntimeError(f"{table.path} has rows of runs its metadata does not list: {unknown}")
    if not runs:  # an empty grid: the run that found nothing to measure
        runs = {table.run_id: {**metadata.read(table.path)["runs"][table.run_id], "rows": 0}}
    if table.run_id in runs:  # chosen by the first parallel region, after the run began
        runs[table.run_id]["threading_layer"] = metadata.threading_layer()
    metadata.write(table.path, runs, complete=True)
    path = table.path.parent.parent / table.path.name
    os.replace(table.path, path)
    os.replace(metadata.meta_path(table.path), metadata.meta_path(path))
    with contextlib.suppress(OSError):
        table.path.parent.rmdir()  # .partial/, once empty
    table.path = path
    return path


def write_whole(path, frame: pd.DataFrame, run: dict) -> pathlib.Path:
    """Write a table measured at once (with a :data:`RUN_ID` column) and its metadata."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.assign(**{RUN_ID: run["run_id"]}).to_csv(tmp, index=False)
    os.replace(tmp, path)
    record = {**run, "threading_layer": metadata.threading_layer(), "rows": len(frame)}
    metadata.write(path, {run["run_id"]: record}, complete=True)
    return path
