"""What a table was measured on: written next to every table as JSON.

A *run* is one ``python -m experiments`` command: :func:`new_run` gives it an id and
records the code (git commit, local changes, a hash of the sources), the machine,
the package versions and the settings.  Every row a run writes carries its id (the
``run_id`` column, :mod:`experiments.harness.store`), and ``name.meta.json`` beside
``name.csv`` lists, under ``runs``, the record of every run whose rows are in the
table, with its row count; ``complete`` is false while the table is being
measured.  The top-level fields summarise the runs: a field on which they disagree
reads ``"mixed (see runs)"``, and ``date``, ``command`` and ``run_id`` are the
latest run's.  :data:`FINGERPRINT` names the fields that must agree for a run to
resume another's table.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import secrets
import shutil
import subprocess
import sys

import numba

PACKAGES = (
    "numpy",
    "numba",
    "llvmlite",
    "scipy",
    "pandas",
    "matplotlib",
    "ml_dtypes",
    "torch",
    "jax",
    "entmax",
    "onnxruntime",
    "onnx",
)


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=pathlib.Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
            or "none"
        )
    except (OSError, subprocess.SubprocessError):
        return "none"


def source_hash() -> str:
    """SHA-256 of the Python sources of ``softmax_numba`` and ``experiments``."""
    import softmax_numba

    digest = hashlib.sha256()
    harness = pathlib.Path(__file__).resolve().parents[1]  # experiments/, every subpackage
    for package in (pathlib.Path(softmax_numba.__file__).parent, harness):
        for path in sorted(package.rglob("*.py")):
            digest.update(f"{package.name}/{path.relative_to(package)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def machine() -> dict:
    """The processor and thread count of this process's machine (run on Dask workers too)."""
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
    }


def threading_layer() -> str:
    """Numba's threading layer, once a parallel region has chosen it."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return "not initialized"


def collect() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    layer = threading_layer()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "experiments", *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        # Local changes to the code; the results being written do not count.
        "git_dirty": bool(
            _git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)results",
            )
        ),
        "python": platform.python_version(),
        "packages": versions,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "threading_layer": layer,
        "gpu": _gpu(),
    }


#: What must agree for a run to resume another run's table: the code, the machine,
#: the package versions and the settings (``--quick``, ``--scheduler``).
FINGERPRINT = (
    "git_commit",
    "git_dirty",
    "source_hash",
    "python",
    "packages",
    "cpu",
    "cpu_count",
    "numba_threads",
    "gpu",
    "settings",
)
#: The top-level value of a field on which the runs of a table disagree.
MIXED = "mixed (see runs)"


def new_run(settings: dict | None = None) -> dict:
    """The record of a new run: :func:`collect`, the source hash, ``settings`` and an id.

    Parameters
    ----------
    settings : dict, optional
        The options that change what is measured (``quick``, ``scheduler``).

    Returns
    -------
    dict
        With ``run_id``, unique and sortable by start time (``20261201T191400Z-3fa9c1``).
    """
    record = collect()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return {
        "run_id": f"{stamp}-{secrets.token_hex(3)}",
        **record,
        "source_hash": source_hash(),
        "settings": dict(settings or {}),
    }


def differences(run: dict, other: dict) -> list[str]:
    """The :data:`FINGERPRINT` fields on which ``other`` differs from ``run``, in words."""
    return [
        f"{field} {other.get(field)!r} (here {run.get(field)!r})"
        for field in FINGERPRINT
        if other.get(field) != run.get(field)
    ]


def describe(run: dict) -> str:
    """One line naming a run: id, commit, processor and date."""
    commit = str(run.get("git_commit", "unknown"))[:12]
    if run.get("git_dirty"):
        commit += " with local changes"
    name = f"run {run['run_id']}" if run.get("run_id") else "a run without an id"
    return f"{name} (commit {commit}, {run.get('cpu')}, {run.get('date')})"


def meta_path(table_path) -> pathlib.Path:
    """``name.meta.json`` for ``name.csv``."""
    return pathlib.Path(table_path).with_suffix(".meta.json")


def read(table_path) -> dict | None:
    """The metadata beside a table (None if there is none or it is unreadable)."""
    try:
        return json.loads(meta_path(table_path).read_text())
    except (OSError, ValueError):
        return None


def _summary(runs: list[dict]) -> dict:
    """Each field's value if every run agrees on it, else :data:`MIXED`; ``date``,
    ``command`` and ``run_id`` are the last run's."""
    summary = {}
    for field in runs[-1]:
        values = [r.get(field) for r in runs]
        if field in ("date", "command", "run_id") or all(v == values[-1] for v in values):
            summary[field] = values[-1]
        elif field == "packages":
            names = dict.fromkeys(n for v in values for n in (v or {}))
            summary[field] = {
                n: values[-1].get(n)
                if all((v or {}).get(n) == values[-1].get(n) for v in values)
                else MIXED
                for n in names
            }
        else:
            summary[field] = MIXED
    return summary


def write(table_path, runs: dict[str, dict], complete: bool) -> pathlib.Path:
    """Write ``name.meta.json`` (atomically) for a table whose rows come from ``runs``.

    Parameters
    ----------
    table_path : path-like
        The table, ``name.csv``.
    runs : dict
        Run id -> run record (with its ``rows``), one entry per run whose rows are in
        the table, oldest first.
    complete : bool
        False while the table is being measured.
    """
    if not runs:
        raise ValueError(f"{table_path}: a table's metadata needs at least one run")
    path = meta_path(table_path)
    meta = {
        **_summary(list(runs.values())),
        "complete": complete,
        "rows": sum(r.get("rows", 0) for r in runs.values()),
        "runs": runs,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_next_to(table_path, *, complete: bool = True) -> pathlib.Path:
    """``name.meta.json`` beside ``name.csv``, describing this process only (for the
    tables without a ``run_id`` column: roofline, benchmarks); ``complete``: whether
    the table is finished (``False`` while it is being measured)."""
    path = meta_path(table_path)
    path.write_text(json.dumps({**collect(), "complete": complete}, indent=2) + "\n")
    return path


def start_or_resume(table_path) -> None:
    """Before a benchmark without run ids measures into ``table_path``: keep the
    table only if it is an unfinished one of this commit (an interrupted run, which
    the benchmark then resumes); otherwise remove it, so that every cell is measured
    here and now.  A finished table (or one whose metadata predates the ``complete``
    field) is never extended nor passed off as this run's: its metadata would
    otherwise name this commit and date for numbers measured before."""
    table_path = pathlib.Path(table_path)
    meta = read(table_path) or {}
    resumable = meta.get("complete") is False and meta.get("git_commit") == collect()["git_commit"]
    if not resumable:
        table_path.unlink(missing_ok=True)
    write_next_to(table_path, complete=False)
