"""docs/ARCHITECTURE.md names real modules: every backticked path ending in ``.py``
exists in the tree, and every module of the library is named on the page."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "ARCHITECTURE.md"


def _named_paths() -> set[str]:
    return set(re.findall(r"`([\w/]+\.py)`", PAGE.read_text()))


def test_every_named_module_exists():
    named = _named_paths()
    assert named, "the page names no module"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_library_module_is_on_the_page():
    modules = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "softmax_numba").rglob("*.py")
        if p.name != "__init__.py" or p.parent.name == "softmax_numba"
    }
    missing = sorted(modules - _named_paths())
    assert not missing, f"docs/ARCHITECTURE.md does not place: {missing}"


def test_study_grids_come_from_the_registry_tags():
    from experiments.harness import grids
    from experiments.measure import peers, roofline
    from experiments.report import plots
    from softmax_numba import registry

    assert grids.SOFTMAX_FAMILY == registry.tagged("family")
    assert grids.ALTERNATIVES == registry.tagged("alternative")
    assert grids.OFFSET_FAMILY == registry.tagged("offsets")
    assert peers.PEER_ENTRIES == roofline.SOFTMAX_FAMILY == plots.CORE == registry.tagged("core")
    names = {e.name for e in registry.ENTRIES}
    for tag in registry.STUDY_TAGS:
        assert registry.tagged(tag), tag
        assert set(registry.tagged(tag)) <= names


def test_a_kernel_must_name_its_outputs():
    """``engines()`` reads a kernel's outputs from its parameter names (the CUDA
    launcher copies those back to host arrays); a kernel that names none is refused."""
    from softmax_numba.cpu import _compile
    from softmax_numba.cpu.softmax import LOGSUMEXP_WEIGHTED

    assert LOGSUMEXP_WEIGHTED.outputs == (2, 3)  # (x, b, out, sign)

    def _no_outputs(x, y):
        pass

    with pytest.raises(TypeError, match="names no output parameter"):
        _compile.engines(_no_outputs)


def test_every_public_function_is_declared_once_by_its_module():
    """An op is declared beside its function (``ENTRIES``) and the registry collects
    every declaring module: an exported function with no entry, an entry of a
    function that is not exported, or a module with ``ENTRIES`` that the registry
    does not read would each leave an op untested and out of the study."""
    import importlib

    import softmax_numba
    from softmax_numba import registry

    declared = {e.op: e.function for e in registry.ENTRIES}
    exported = {name: getattr(softmax_numba, name) for name in softmax_numba.__all__}
    apart = (*registry.COMPOSITES, *registry.SELECTIONS, *registry.SEGMENTED)
    assert set(apart) <= set(exported)
    assert declared == {k: f for k, f in exported.items() if k not in apart}
    for entry in registry.ENTRIES:
        assert entry.function.__module__ in registry.DECLARING_MODULES, entry.name
    with_entries = {
        f"softmax_numba.{p.stem}"
        for p in (ROOT / "softmax_numba").glob("_*.py")
        if hasattr(importlib.import_module(f"softmax_numba.{p.stem}"), "ENTRIES")
    }
    assert with_entries == set(registry.DECLARING_MODULES)


def test_a_declaration_with_an_unknown_tag_or_a_missing_bound_is_refused():
    from softmax_numba import bounds, reference, softmax
    from softmax_numba.declaration import Entry

    args = ("softmax", "-", softmax, reference.softmax, ("probability",))
    with pytest.raises(ValueError, match="unknown study tags"):
        Entry(*args, bounds=(bounds.SOFTMAX,), study={"familly"})
    with pytest.raises(ValueError, match="a bound per output"):
        Entry(*args)


def test_peers_name_registered_ops():
    from experiments.measure import peers
    from softmax_numba import registry

    ops = {e.op for e in registry.ENTRIES}
    for peer, table in peers.available().items():
        assert set(table) <= ops, peer
    for peer, table in peers.results_available().items():
        assert set(table) <= ops, peer
