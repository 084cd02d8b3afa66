"""Every registered entry on every engine and the installed peers, plus a plain copy of
the same array (the roofline), grouped by op and shape."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.harness import inputs, timing
from experiments.measure import peers
from softmax_numba import registry

SHAPES = {
    "imagenet 4096x1000": (4096, 1000),
    "attention 1024x4096": (1024, 4096),
    "gpt2 64x50257": (64, 50257),
}
ENGINES = ("numpy", "cpu", "parallel")


def _cases():
    for label, (rows, n) in SHAPES.items():
        for entry in registry.ENTRIES:
            if not entry.accepts(n):
                continue
            for engine in ENGINES + tuple(peers.available()):
                if engine in ENGINES or entry.op in peers.peer_ops(engine):
                    yield pytest.param(entry, engine, rows, n, id=f"{entry.name}-{engine}-{label}")


@pytest.mark.parametrize(("entry", "engine", "rows", "n"), list(_cases()))
def test_op(benchmark, entry, engine, rows, n):
    x = inputs.logits("normal", rows, n, 1.0, "float32")
    args = entry.arguments(x, np.random.default_rng(0))
    if engine in ENGINES:
        fn = lambda: entry.run(args, backend=engine)  # noqa: E731
    else:
        fn = peers.peer_ops(engine)[entry.op](args)
    benchmark.group = f"{entry.name} {rows}x{n}"
    benchmark.extra_info.update(
        bytes=int(entry.bytes_factor * x.nbytes), entry=entry.name, engine=engine, rows=rows, n=n
    )
    fn()  # compile outside the timing
    benchmark(fn)


@pytest.mark.parametrize(("rows", "n"), list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("kind", ["np.copyto", "parallel copy"])
def test_copy(benchmark, kind, rows, n):
    src = inputs.logits("normal", rows, n, 1.0, "float32")
    dst = np.empty_like(src)
    raw_src, raw_dst = src.reshape(-1).view(np.uint8), dst.reshape(-1).view(np.uint8)
    threads = timing.numba.get_num_threads()
    if kind == "np.copyto":
        fn = lambda: np.copyto(dst, src)  # noqa: E731
    else:
        fn = lambda: timing._parallel_copy(raw_src, raw_dst, threads)  # noqa: E731
    fn()
    benchmark.group = f"copy {rows}x{n}"
    benchmark.extra_info.update(bytes=2 * src.nbytes, entry="copy", engine=kind, rows=rows, n=n)
    benchmark(fn)
