"""Sphinx configuration of gameopt's documentation (build: ``sphinx-build -W --keep-going -b html docs OUT``).

``nitpicky`` makes every unresolved cross-reference a warning, and the build runs with ``-W``, so a
renamed function, a stale ``:class:`` reference in a docstring or a broken link between pages fails
it. ``tests/test_docs.py`` runs exactly that build.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import gameopt  # noqa: E402

project = "gameopt"
author = "gameopt contributors"
copyright = "gameopt contributors"
release = gameopt.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "api_pages",
    "references",
    "attribute_docstrings",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"gameopt {release}"
pygments_style = "sphinx"

# MyST: $...$ maths, ::: fences, and anchors for every heading down to ### (links like
# [consensus](methods/consensus.md#options) are then checked).
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + napoleon: Google-style docstrings; the constructor's Args sit in the class docstring.
autoclass_content = "both"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Every cross-reference must resolve. The docs are built offline (no intersphinx), so names of
# other libraries cannot resolve; they are the only ones let through.
nitpicky = True
_EXTERNAL = r"(torch|numpy|np|scipy|typing|collections|os|pathlib|contextlib|enum|dataclasses|abc|types)(\..*)?"
nitpick_ignore_regex = [
    (r"py:.*", _EXTERNAL),
    (r"py:.*", r"(Tensor|Optimizer|Module|Parameter|ndarray|Generator|PathLike|Path|Any|Callable|Iterable"
               r"|Iterator|Mapping|Sequence|Protocol|Literal|Self|NoneType|optional|callable)"),
    (r"py:.*", r"(int|float|bool|str|bytes|dict|list|tuple|set|object|type|None|Exception|ValueError"
               r"|TypeError|RuntimeError|ImportError|FloatingPointError|KeyError|OSError|UserWarning"
               r"|FileNotFoundError|NotImplementedError|AttributeError)"),
]
