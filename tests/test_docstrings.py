"""Every public function has a numpy-style docstring whose Examples run (issue 12).

The public functions are ``softmax_numba.__all__`` and ``softmax_numba.dask.__all__``.
Each docstring needs the sections Parameters, Returns, Notes, References and
Examples (a title underlined with dashes, in numpy's order); every argument of the
signature is documented under Parameters; Notes gives the formula and an error
bound; References cites a source with its year; the Examples run as doctests.
"""

from __future__ import annotations

import doctest
import inspect
import io
import re

import numpy as np
import pytest

import softmax_numba

try:
    from softmax_numba import dask as sn_dask
except ImportError:  # pragma: no cover - dask is a test dependency
    sn_dask = None

#: The sections every public docstring has, in numpydoc's order.
REQUIRED = ("Parameters", "Returns", "Notes", "References", "Examples")
#: numpydoc's order of all the sections (``Raises`` and ``See Also`` are optional).
ORDER = (
    "Parameters",
    "Returns",
    "Raises",
    "See Also",
    "Notes",
    "References",
    "Examples",
)


def _public():
    params = [
        pytest.param(getattr(softmax_numba, name), id=f"softmax_numba.{name}")
        for name in softmax_numba.__all__
    ]
    if sn_dask is None:  # pragma: no cover
        skip = pytest.mark.skip(reason="dask is not installed")
        return [*params, pytest.param(None, id="softmax_numba.dask", marks=skip)]
    return params + [
        pytest.param(getattr(sn_dask, name), id=f"softmax_numba.dask.{name}")
        for name in sn_dask.__all__
    ]


PUBLIC = _public()


def sections(func) -> dict[str, str]:
    """The numpy-style sections of ``func``'s docstring: title -> body, in order."""
    assert func.__doc__ is not None, f"{func.__qualname__} has no docstring"
    lines = inspect.cleandoc(func.__doc__).splitlines()
    titles = [
        i
        for i in range(1, len(lines) - 1)
        if lines[i].strip() and lines[i] == lines[i].strip() and lines[i + 1] == "-" * len(lines[i])
    ]
    found = {}
    for k, i in enumerate(titles):
        end = titles[k + 1] if k + 1 < len(titles) else len(lines)
        assert lines[i] not in found, f"section {lines[i]!r} appears twice"
        found[lines[i]] = "\n".join(lines[i + 2 : end])
    return found


def check_sections(func) -> None:
    found = sections(func)
    missing = [title for title in REQUIRED if title not in found]
    assert not missing, f"{func.__qualname__}: no {missing} section (title, then dashes)"
    unknown = [title for title in found if title not in ORDER]
    assert not unknown, f"{func.__qualname__}: sections {unknown} are not numpydoc's"
    assert list(found) == sorted(found, key=ORDER.index), (
        f"{func.__qualname__}: sections {list(found)} are not in numpydoc's order"
    )


def documented_parameters(func) -> set[str]:
    """The names of the Parameters entries (``x, axis, out`` documents three)."""
    names = set()
    for line in sections(func)["Parameters"].splitlines():
        if line.strip() and not line.startswith(" "):
            names.update(name.strip() for name in line.split(" : ")[0].split(","))
    return names


def check_notes(func) -> None:
    notes = sections(func)["Notes"]
    assert "=" in notes, f"{func.__qualname__}: Notes gives no formula"
    assert re.search(r"error bound", notes, re.IGNORECASE), (
        f"{func.__qualname__}: Notes states no error bound"
    )
    # The bound in units of the unit roundoff u (inside a literal), or exactness.
    assert re.search(r"``[^`]*\bu\b[^`]*``", notes) or "exact" in notes, (
        f"{func.__qualname__}: the error bound is not stated in units of u"
    )


def run_examples(func) -> doctest.TestResults:
    """Run the Examples of ``func`` as a doctest, with fixed print options and no
    names but those the examples import."""
    (test,) = doctest.DocTestFinder(recurse=False).find(func, func.__qualname__, globs={})
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
    )
    report = io.StringIO()
    with np.printoptions(
        precision=8,
        threshold=1000,
        edgeitems=3,
        linewidth=75,
        suppress=False,
        nanstr="nan",
        infstr="inf",
        sign="-",
        floatmode="maxprec",
        legacy=False,
    ):
        result = runner.run(test, out=report.write)
    assert result.failed == 0, f"{func.__qualname__}: the examples fail:\n{report.getvalue()}"
    return result


@pytest.mark.parametrize("func", PUBLIC)
def test_has_a_docstring_with_a_summary(func):
    assert func.__doc__ is not None, f"{func.__qualname__} has no docstring"
    summary = inspect.cleandoc(func.__doc__).splitlines()[0]
    assert summary.strip(), f"{func.__qualname__}: the docstring opens with no summary"


@pytest.mark.parametrize("func", PUBLIC)
def test_has_the_numpy_sections(func):
    check_sections(func)


@pytest.mark.parametrize("func", PUBLIC)
def test_documents_every_parameter(func):
    missing = set(inspect.signature(func).parameters) - documented_parameters(func)
    assert not missing, f"{func.__qualname__}: {sorted(missing)} not under Parameters"


@pytest.mark.parametrize("func", PUBLIC)
def test_notes_give_the_formula_and_an_error_bound(func):
    check_notes(func)


@pytest.mark.parametrize("func", PUBLIC)
def test_references_cite_a_dated_source(func):
    references = sections(func)["References"]
    assert re.search(r"^\.\. \[\d+\] ", references, re.MULTILINE), (
        f"{func.__qualname__}: References has no numbered citation"
    )
    assert re.search(r"\b(19|20)\d\d\b", references), (
        f"{func.__qualname__}: References gives no year"
    )


@pytest.mark.parametrize("func", PUBLIC)
def test_examples_run(func):
    examples = sections(func)["Examples"]
    assert ">>> " in examples, f"{func.__qualname__}: Examples has no example"
    result = run_examples(func)
    assert result.attempted >= 1


# --------------------------------------------------------------------------- the checks fail


def _concatenated(x):
    ("""A parenthesized concatenation is an expression, not a docstring.""" + "")  # noqa: B018
    return x


def _wrong_example(x):
    """Twice ``x``: :math:`y = 2x`.

    Parameters
    ----------
    x : float

    Returns
    -------
    float

    Notes
    -----
    ``y = 2 x``, and nothing about its accuracy.

    References
    ----------
    .. [1] Nobody, 2024.

    Examples
    --------
    >>> 2.0 * 2
    5.0
    """
    return 2 * x


def _out_of_order(x):
    """Identity.

    Parameters
    ----------
    x : float

    Notes
    -----
    ``y = x``, exact: no error bound needed.

    Returns
    -------
    float

    References
    ----------
    .. [1] Nobody, 2024.

    Examples
    --------
    >>> 1
    1
    """
    return x


def test_the_checks_catch_what_they_are_for():
    """Each check fails on a docstring with its defect (so none cannot fail)."""
    assert _concatenated.__doc__ is None
    with pytest.raises(AssertionError, match="no docstring"):
        check_sections(_concatenated)
    with pytest.raises(AssertionError, match="not in numpydoc's order"):
        check_sections(_out_of_order)
    with pytest.raises(AssertionError, match="states no error bound"):
        check_notes(_wrong_example)
    with pytest.raises(AssertionError, match="the examples fail"):
        run_examples(_wrong_example)
    assert documented_parameters(_wrong_example) == {"x"}
    check_sections(_wrong_example)
    check_notes(_out_of_order)
