"""A CSV table that survives interruption: each finished cell is on disk at once.

Rows are appended with one ``write`` of whole lines, flushed and fsynced, so a
Ctrl-C or a kill loses at most the cell being measured.  On opening, a torn last
line (a kill in the middle of a write) is dropped and the file rewritten cleanly;
the keys already present are skipped by the sweep, so a rerun never duplicates a
row.  A table written before columns were added at the end of its schema (such as
the sweep's ``worker``) gets them, blank, on opening.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
from collections.abc import Iterable, Sequence

import pandas as pd


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
    """

    def __init__(self, path, columns: Sequence[str], key: Sequence[str]):
        self.path = pathlib.Path(path)
        self.columns = list(columns)
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
        lines = list(csv.reader(io.StringIO(text)))
        header = lines[0] if lines else []
        added = len(self.columns) - len(header)
        if header != self.columns and not (added > 0 and self.columns[: len(header)] == header):
            raise ValueError(
                f"{self.path} has columns {header}, expected {self.columns}; "
                "move it away or choose another --out"
            )
        good = [line for line in lines[1:] if len(line) == len(header)]
        if added or not text.endswith("\n") or len(good) != len(lines) - 1:
            if not text.endswith("\n") and good and lines[-1] == good[-1]:
                good.pop()  # a last line without its newline may be cut short
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
