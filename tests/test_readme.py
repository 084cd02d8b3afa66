"""The README's Python examples run as written."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(monkeypatch):
    from softmax_numba import config

    # The GPU example runs on the CUDA simulator here: a thread is a Python thread.
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 4)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_the_table_of_operations_names_every_public_function():
    import softmax_numba

    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("|"))
    missing = [name for name in softmax_numba.__all__ if f"`{name}" not in table]
    assert not missing, f"README's table of operations does not list {missing}"
