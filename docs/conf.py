"""Sphinx configuration of the API reference (``make docs``).

The pages are built from the numpy docstrings of the package (autodoc + numpydoc);
the study's ``results/CLAIMS.md``, its figures and ``docs/ARCHITECTURE.md`` are
included from where they lie, through myst-parser.  ``make docs`` builds with ``-W``:
every warning is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import softmax_numba  # noqa: E402

project = "softmax_numba"
author = "the softmax_numba developers"
copyright = "2026, the softmax_numba developers"
release = version = softmax_numba.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# autodoc: members in the order of the source; signatures without their type hints,
# as numpy's and scipy's references show them (each docstring's Parameters give the
# types, and autodoc would print ``npt.ArrayLike`` as the long union it stands for).
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"show-inheritance": False}

# numpydoc: the docstrings' own sections; no autosummary tables of class members,
# no cross-reference guessing of parameter types (they are prose, not class names).
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_class_members_toctree = False

# myst: headings as link targets, $...$ maths as in the markdown files.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
html_title = f"softmax_numba {release}"
html_theme_options = {
    "description": "Fast, numerically careful softmax-family kernels",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []
