"""The README's Python examples run as written."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
#: The peers that the test extra does not install (JAX is large; CuPy needs a GPU):
#: their examples are skipped where they are missing, and run where they are not.
OPTIONAL = {"jax", "cupy"}


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_readme_examples_run(block, monkeypatch):
    from softmax_numba import config

    # The GPU example runs on the CUDA simulator here: a thread is a Python thread.
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 4)
    try:
        exec(compile(block, str(README), "exec"), {})
    except ModuleNotFoundError as missing:
        if missing.name.partition(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"needs {missing.name}")


def test_the_table_of_operations_names_every_public_function():
    import softmax_numba

    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("|"))
    missing = [name for name in softmax_numba.__all__ if f"`{name}" not in table]
    assert not missing, f"README's table of operations does not list {missing}"
