"""What a table was measured on: written next to every table as JSON."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
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


def collect() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = "not initialized"
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


def write_next_to(table_path) -> pathlib.Path:
    """``name.meta.json`` beside ``name.csv``."""
    table_path = pathlib.Path(table_path)
    path = table_path.with_suffix(".meta.json")
    path.write_text(json.dumps(collect(), indent=2) + "\n")
    return path
