"""The API reference builds with no warning, and names what it should (issue 26).

`make docs` runs ``sphinx-build -W --keep-going -b html docs docs/_build/html``; this
test runs the same build into a temporary folder, so that `make test` fails on any
warning (a docstring that numpydoc or docutils cannot read, a broken include).  Sphinx,
numpydoc and myst-parser come with the ``docs`` extra, which `make test` installs.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def slow(test):
    """A test of the build (a subprocess, about 10 s): skipped by `make test-fast`, run by
    `make test`, in one pytest-xdist worker so that the build runs once."""
    return pytest.mark.slow(pytest.mark.xdist_group(name="docs")(test))


@pytest.fixture(scope="session")
def html(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    sphinx = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    build = subprocess.run(
        [*sphinx, "-d", str(out.parent / "doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert build.returncode == 0, f"sphinx-build -W failed:\n{build.stdout}\n{build.stderr}"
    return out


def _documented(html: pathlib.Path) -> str:
    """Every page of the API reference, as one string."""
    return "\n".join(page.read_text() for page in sorted((html / "api").glob("*.html")))


@slow
@pytest.mark.parametrize("module", ["softmax_numba", "softmax_numba.torch", "softmax_numba.dask"])
def test_the_api_reference_documents_every_public_function(html, module):
    imported = __import__(module, fromlist=["__all__"])
    pages = _documented(html)
    missing = [name for name in imported.__all__ if f'id="{module}.{name}"' not in pages]
    assert not missing, f"no entry in docs/api/*.rst for {module}.{missing}"


@slow
def test_the_api_reference_documents_the_config(html):
    from softmax_numba import config

    pages = _documented(html)
    tunables = [name for name in vars(config) if name.isupper() and not name.startswith("_")]
    assert tunables
    missing = [name for name in tunables if f'id="softmax_numba.config.{name}"' not in pages]
    assert not missing, f"softmax_numba.config's {missing} have no #: comment in docs"


@slow
def test_the_study_page_shows_claims_and_every_figure(html):
    page = (html / "claims.html").read_text()
    assert "claims, tested" in page  # results/CLAIMS.md's title
    figures = sorted(path.name for path in (ROOT / "results").rglob("*.png"))
    assert figures
    missing = [name for name in figures if not (html / "_images" / name).exists()]
    assert not missing, f"results/ figures {missing} are not shown by docs/claims.md: add them"


@slow
def test_the_architecture_page_is_built(html):
    assert (html / "ARCHITECTURE.html").exists()


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_contents_list_every_section():
    readme = (ROOT / "README.md").read_text()
    contents = readme.partition("## Contents\n")[2].partition("\n## ")[0]
    listed = re.findall(r"^\s*- \[[^\]]+\]\(#([^)]+)\)", contents, flags=re.M)
    headings = re.findall(r"^#{2,3} (.+)$", readme, flags=re.M)
    sections = [_anchor(h) for h in headings if h != "Contents"]
    assert listed == sections, (
        "README's Contents must link its ## and ### headings in order: "
        f"missing {sorted(set(sections) - set(listed))}, dead {sorted(set(listed) - set(sections))}"
    )


def test_the_anchor_rule():
    assert _anchor("Large vocabularies: the linear layer fused into the loss") == (
        "large-vocabularies-the-linear-layer-fused-into-the-loss"
    )
    assert _anchor("With PyTorch, CuPy and JAX") == "with-pytorch-cupy-and-jax"
