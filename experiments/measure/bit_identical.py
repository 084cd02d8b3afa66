"""Bit-identical outputs before and after a refactor: a guard rail.

Every registry entry (:data:`softmax_numba.registry.ENTRIES`) runs on every CPU
engine (:data:`softmax_numba.registry.BACKENDS`: numpy, cpu, parallel), in float32
and float64, over a fixed set of inputs (:data:`CASES`); each output array is
hashed (sha256 of its dtype, shape and bytes).  Write the fingerprints of one tree,
write those of another, compare: a refactor that claims "same bits" must show no
differing cell.

    python -m experiments.measure.bit_identical write FILE.json [--entry NAME ...] [--case NAME ...]
    python -m experiments.measure.bit_identical compare BEFORE.json AFTER.json

To fingerprint another checkout (say a worktree of the commit before a change),
run this file by its path with that tree first on ``PYTHONPATH``; the package is
imported from there, not from the editable install::

    git worktree add /tmp/bitbase HEAD
    cd /tmp/bitbase && PYTHONPATH=/tmp/bitbase \\
        python /path/to/experiments/measure/bit_identical.py write /tmp/base.json
    cd /path/to/checkout && python -m experiments.measure.bit_identical write /tmp/new.json
    python -m experiments.measure.bit_identical compare /tmp/base.json /tmp/new.json

Notes
-----
The inputs are built here (not by :mod:`experiments.harness.inputs`), from fixed seeds, so
that both trees see the same bytes whatever else changed; the arguments an entry
builds from them (targets, upstream gradients) are fingerprinted too, under the
engine name ``inputs``, so a change there shows as such and not as a kernel's.

A cell that raises is recorded as ``error:<ExceptionType>``: it compares equal
when it raises the same way on both sides.  Cells an entry does not accept (row
lengths that ``maxout``'s pool does not divide) are left out.

``backend="parallel"`` always runs the parallel kernels, whatever the size; a row
is split across threads only when there are fewer rows than threads and the row
has at least ``config.SPLIT_ROW_MIN_LENGTH`` elements, hence the ``1 x 40000``
case.  How a split row is cut depends on the thread count, so Numba's thread count
is pinned to :data:`THREADS` (or fewer, if fewer are available) and recorded, with
the package versions and ``config.EXP``, in the file's ``meta``; ``compare`` warns
when those differ.  Some cases patch a ``config`` value for their duration (a
small split threshold, streaming stores on small outputs); a tree without that
setting runs them unpatched.

Numba's disk cache matters: a kernel freshly compiled can give other bits than the
same kernel loaded from the cache (seen on the parallel ``entmax15_backward``), so
``write`` records cache-loaded kernels' bits; when its process had to compile (a
tree's first run: minutes), it fingerprints again in a new process, which loads
what the first one cached.  ``meta["compiled"]`` says how many kernels the
recording process compiled.

Bit-identity is strict: a NaN of another sign or payload differs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from collections import Counter

import numpy as np

#: Numba threads used (the split-row path cuts rows by the thread count).
THREADS = 2
#: The compute dtypes fingerprinted.
DTYPES = ("float32", "float64")
#: The engine name under which an entry's arguments are fingerprinted.
INPUTS = "inputs"


@dataclasses.dataclass(frozen=True)
class Case:
    """One fixed input: ``rows x n`` logits of a distribution, times ``scale``, plus
    ``offset``, from ``seed``; ``config`` values patched while it runs."""

    name: str
    distribution: str
    rows: int
    n: int
    scale: float = 1.0
    offset: float = 0.0
    seed: int = 0
    config: tuple[tuple[str, int], ...] = ()


CASES: tuple[Case, ...] = (
    Case("normal_8x128", "normal", 8, 128, seed=1),
    Case("uniform_37x781", "uniform", 37, 781, seed=2),
    Case("dominant_5x1000", "dominant", 5, 1000, seed=3),
    Case("ties_16x64", "ties", 16, 64, seed=4),
    Case("masked_9x333", "masked", 9, 333, seed=5),
    Case("length1_4x1", "normal", 4, 1, seed=6),
    Case("nonfinite_8x52", "nonfinite", 8, 52, seed=7),
    Case("offset1e4_4x300", "normal", 4, 300, offset=1e4, seed=8),
    Case("scale30_8x200", "normal", 8, 200, scale=30.0, seed=9),
    Case("longrow_1x40000", "normal", 1, 40000, seed=10),
    Case(
        "split2048_1x4100", "dominant", 1, 4100, seed=11, config=(("SPLIT_ROW_MIN_LENGTH", 2048),)
    ),
    Case("stream_16x1024", "normal", 16, 1024, seed=12, config=(("STREAM_MIN_BYTES", 0),)),
)


def _logits(case: Case, dtype: str) -> np.ndarray:
    """The case's ``(rows, n)`` logits in ``dtype`` (as :func:`experiments.harness.inputs.logits`
    draws them, plus ``nonfinite``: rows with NaN, +inf and -inf, all-(-inf), all-inf)."""
    rng = np.random.default_rng(case.seed)
    shape = (case.rows, case.n)
    rows = np.arange(case.rows)
    if case.distribution in ("normal", "nonfinite"):
        x = rng.standard_normal(shape)
    elif case.distribution == "uniform":
        x = rng.uniform(-1, 1, shape)
    elif case.distribution == "dominant":
        x = rng.standard_normal(shape)
        x[rows, rng.integers(0, case.n, case.rows)] += 10
    elif case.distribution == "ties":
        x = rng.integers(-1, 2, shape).astype(np.float64)
    elif case.distribution == "masked":
        x = rng.standard_normal(shape)
        mask = rng.random(shape) < 0.5
        mask[rows, rng.integers(0, case.n, case.rows)] = False
        x[mask] = -np.inf
    else:
        raise ValueError(f"unknown distribution {case.distribution!r}")
    if case.distribution == "nonfinite":  # needs 8 rows of at least 8
        x[0, 3] = np.nan
        x[1, [0, 7]] = np.inf
        x[2, : case.n // 2] = -np.inf
        x[3, :] = -np.inf
        x[4, 1], x[4, 2] = np.inf, -np.inf
        x[5, 4], x[5, 5] = np.nan, np.inf
        x[6, :] = np.inf
    with np.errstate(all="ignore"):
        return (case.offset + x * case.scale).astype(dtype)


def digest(value) -> str:
    """sha256 of an array's (or scalar's) dtype string, shape and bytes."""
    a = np.asarray(value)
    h = hashlib.sha256()
    h.update(a.dtype.str.encode())
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _digests(result) -> str:
    """One string for a result: the digests of its arrays (a tuple's, in order)."""
    parts = result if isinstance(result, tuple | list) else (result,)
    return ";".join(digest(p) for p in parts)


@contextlib.contextmanager
def _patched(config, settings):
    """Set ``config`` attributes for a while (those the tree has; others are skipped)."""
    old = {}
    try:
        for name, value in settings:
            if hasattr(config, name):
                old[name] = getattr(config, name)
                setattr(config, name, value)
        yield
    finally:
        for name, value in old.items():
            setattr(config, name, value)


def pinned_threads() -> int:
    """The Numba thread count the fingerprints run with: :data:`THREADS`, or all
    there are if fewer."""
    import numba

    return max(1, min(THREADS, numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def _pinned_threads():
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(pinned_threads())
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _select(items, names, name_of, what):
    if names is None:
        return list(items)
    known = {name_of(i): i for i in items}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"no {what} {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]


def fingerprints(
    entries=None, cases=None, backends=None, dtypes=DTYPES, inputs: bool = True
) -> dict[str, str]:
    """The digest of every cell, keyed ``"entry|backend|dtype|case"``.

    Parameters
    ----------
    entries, cases, backends : sequence of str, optional
        Entry names (``Entry.name``), case names (:data:`CASES`) and engines; all
        by default (the engines of ``registry.BACKENDS``).
    dtypes : sequence of str
        The dtypes of the logits.
    inputs : bool
        Also fingerprint each entry's arguments, under the engine ``"inputs"``.

    Returns
    -------
    dict of str to str
        Per cell, its outputs' digests joined by ``;``, or ``error:<ExceptionType>``.
    """
    from softmax_numba import config, registry

    chosen = _select(registry.ENTRIES, entries, lambda e: e.name, "entry")
    cases = _select(CASES, cases, lambda c: c.name, "case")
    backends = tuple(registry.BACKENDS if backends is None else backends)
    found: dict[str, str] = {}
    with np.errstate(all="ignore"), _pinned_threads():
        for case in cases:
            with _patched(config, case.config):
                for dtype in dtypes:
                    x = _logits(case, dtype)
                    for entry in chosen:
                        accepts = getattr(entry, "accepts", lambda n: True)
                        if not accepts(case.n):
                            continue
                        _fingerprint_entry(found, entry, x, case, dtype, backends, inputs)
    return found


def _fingerprint_entry(found, entry, x, case, dtype, backends, inputs) -> None:
    key = f"{entry.name}|{{}}|{dtype}|{case.name}"
    seed = [case.seed, zlib.crc32(entry.name.encode())]
    try:
        args = entry.arguments(x.copy(), np.random.default_rng(seed))
    except Exception as exc:
        for backend in (INPUTS, *backends) if inputs else backends:
            found[key.format(backend)] = f"error:{type(exc).__name__}"
        return
    if inputs:
        found[key.format(INPUTS)] = _digests(tuple(args))
    for backend in backends:
        try:
            # Copies: a kernel that wrote into its input would change the next cell's.
            result = entry.run(tuple(np.copy(a) for a in args), backend=backend)
            found[key.format(backend)] = _digests(result)
        except Exception as exc:
            found[key.format(backend)] = f"error:{type(exc).__name__}"


def metadata(threads: int | None = None) -> dict:
    """Where the fingerprints come from: the package's path and commit, versions,
    Numba threads and ``config.EXP``."""
    import numba

    import softmax_numba
    from softmax_numba import config

    root = os.path.dirname(os.path.dirname(os.path.abspath(softmax_numba.__file__)))

    def git(*args):
        try:
            out = subprocess.run(
                ["git", "-C", root, *args], capture_output=True, text=True, timeout=30
            )
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "package": os.path.abspath(softmax_numba.__file__),
        "commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": threads,
        "exp": getattr(config, "EXP", None),
        "machine": platform.machine(),
    }


def compiled_here() -> int:
    """How many kernel signatures of ``softmax_numba`` this process compiled rather
    than loaded from Numba's disk cache."""
    import gc

    from numba.core.dispatcher import Dispatcher

    return sum(
        sum(d.stats.cache_misses.values())
        for d in gc.get_objects()
        if isinstance(d, Dispatcher)
        and getattr(d.py_func, "__module__", "").startswith("softmax_numba")
    )


def write(path, entries=None, cases=None, retry: bool = True) -> dict:
    """Fingerprint this tree and write ``{"meta": ..., "fingerprints": ...}`` to ``path``.

    A kernel freshly compiled can give other bits than the same kernel loaded from
    Numba's disk cache (seen: the parallel ``entmax15_backward``), so the recorded
    fingerprints come from cache-loaded kernels: when this process had to compile
    (a cold cache), the kernels are now cached and, with ``retry``, a fresh process
    fingerprints again and writes the file.  ``meta["compiled"]`` counts the
    kernels the recording process compiled (0 with a warm cache).
    """
    import softmax_numba

    start = time.perf_counter()
    found = fingerprints(entries=entries, cases=cases)
    compiled = compiled_here()
    if compiled and retry:
        root = os.path.dirname(os.path.dirname(os.path.abspath(softmax_numba.__file__)))
        print(f"compiled {compiled} kernels (cold cache); fingerprinting again in a new process")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        command = [sys.executable, os.path.abspath(__file__), "write", str(path), "--no-retry"]
        for flag, names in (("--entry", entries), ("--case", cases)):
            for name in names or ():
                command += [flag, name]
        subprocess.run(command, env=env, check=True)
        with open(path) as f:
            meta = json.load(f)["meta"]
        if meta["package"] != os.path.abspath(softmax_numba.__file__):
            raise RuntimeError(f"the new process imported {meta['package']}")
        return meta
    meta = metadata(pinned_threads()) | {
        "compiled": compiled,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if not found:
        raise RuntimeError("no cells fingerprinted")
    with open(path, "w") as f:
        json.dump({"meta": meta, "fingerprints": found}, f, indent=1, sort_keys=True)
    errors = sum(v.startswith("error:") for v in found.values())
    print(
        f"{len(found)} cells ({errors} errors) from {meta['package']} "
        f"(commit {meta['commit']}, dirty {meta['dirty']}, {meta['threads']} threads, "
        f"{compiled} kernels compiled here) in {meta['seconds']} s -> {path}"
    )
    return meta


@dataclasses.dataclass
class Comparison:
    """The outcome of :func:`compare`: keys by status."""

    identical: list[str]
    differing: list[str]
    only_before: list[str]
    only_after: list[str]

    @property
    def compared(self) -> int:
        return len(self.identical) + len(self.differing)


def compare(before: dict[str, str], after: dict[str, str]) -> Comparison:
    """Compare two fingerprint dicts cell by cell."""
    common = sorted(before.keys() & after.keys())
    return Comparison(
        identical=[k for k in common if before[k] == after[k]],
        differing=[k for k in common if before[k] != after[k]],
        only_before=sorted(before.keys() - after.keys()),
        only_after=sorted(after.keys() - before.keys()),
    )


def _load(path):
    with open(path) as f:
        data = json.load(f)
    return data.get("meta", {}), data["fingerprints"]


def _report(path_a, path_b) -> int:
    meta_a, a = _load(path_a)
    meta_b, b = _load(path_b)
    for label, path, meta in (("before", path_a, meta_a), ("after", path_b, meta_b)):
        print(f"{label}: {path}: {meta.get('package')} commit {meta.get('commit')}", end="")
        print(f" dirty {meta.get('dirty')}, {meta.get('threads')} threads, exp {meta.get('exp')}")
    for field in ("numpy", "numba", "python", "threads", "exp", "machine", "compiled"):
        if meta_a.get(field) != meta_b.get(field) and (
            field != "compiled" or any(meta.get(field) for meta in (meta_a, meta_b))
        ):
            print(f"WARNING: {field} differs: {meta_a.get(field)} vs {meta_b.get(field)}")
    result = compare(a, b)
    inputs = [k for k in result.differing if k.split("|")[1] == INPUTS]
    print(
        f"cells compared: {result.compared}, identical: {len(result.identical)}, "
        f"differing: {len(result.differing)} ({len(inputs)} of them inputs), "
        f"only in before: {len(result.only_before)}, only in after: {len(result.only_after)}"
    )
    if result.differing:
        by = Counter(k.split("|")[1] for k in result.differing)
        print("differing by engine: " + ", ".join(f"{e} {c}" for e, c in sorted(by.items())))
        for key in result.differing:
            print(f"  differs: {key}  {_short(a[key])} -> {_short(b[key])}")
    for label, keys in (
        ("only in before", result.only_before),
        ("only in after", result.only_after),
    ):
        for key in keys:
            print(f"  {label}: {key}")
    return 1 if result.differing else 0


def _short(value: str) -> str:
    return value if value.startswith("error:") else ";".join(p[:12] for p in value.split(";"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.measure.bit_identical", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="fingerprint this tree into a JSON file")
    w.add_argument("file")
    w.add_argument("--entry", action="append", help="an entry name (repeatable); default all")
    w.add_argument("--case", action="append", help="a case name (repeatable); default all")
    w.add_argument(
        "--no-retry",
        dest="retry",
        action="store_false",
        help="record this process's bits even if it compiled kernels (a cold cache)",
    )
    c = sub.add_parser("compare", help="compare two fingerprint files; exit 1 if any differ")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.file, entries=args.entry, cases=args.case, retry=args.retry)
        return 0
    return _report(args.before, args.after)


if __name__ == "__main__":
    if not __package__:
        # Run as a file: its folder (experiments/measure/) is not a place to import from;
        # softmax_numba comes from PYTHONPATH (or the installed package).
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.exit(main())
