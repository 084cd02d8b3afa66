"""The tunables of :mod:`softmax_numba.config`: every compile-time value is part of
the CPU kernels' cache key, so that editing one never loads code compiled with the
old value."""

from __future__ import annotations

import pytest

from softmax_numba import config
from softmax_numba.cpu import _compile


def test_compile_time_names_exist():
    for name in config.COMPILE_TIME:
        assert hasattr(config, name), name


@pytest.mark.parametrize("name", [n for n in config.COMPILE_TIME if n != "FASTMATH"])
def test_each_compile_time_value_is_in_the_cache_key(name, monkeypatch):
    before = _compile._compile_time()
    value = getattr(config, name)
    changed = (not value) if isinstance(value, bool) else (value * 2 if value else 1)
    monkeypatch.setattr(config, name, changed)
    assert _compile._compile_time() != before


def test_fastmath_flags_in_the_key_in_a_stable_order(monkeypatch):
    before = _compile._compile_time()
    monkeypatch.setattr(config, "FASTMATH", frozenset(sorted(config.FASTMATH, reverse=True)))
    assert _compile._compile_time() == before
    monkeypatch.setattr(config, "FASTMATH", config.FASTMATH - {"reassoc"})
    assert _compile._compile_time() != before


def test_baked_values_are_the_ones_the_kernels_read():
    from softmax_numba.cpu import softmax
    from softmax_numba.gpu import sparse

    assert softmax.ROW_CHUNKS == config.ROW_CHUNKS
    assert softmax.ONLINE_BLOCK == config.ONLINE_BLOCK
    assert sparse.BRACKET_STEPS == config.BRACKET_STEPS
    assert sparse.MAX_REFINEMENTS == config.MAX_REFINEMENTS
