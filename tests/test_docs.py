"""The documentation site builds with warnings as errors, documents every public name, and its
Python blocks run.

The build is the one the docs' README names: ``sphinx-build -W --keep-going -b html docs OUT``
(plus ``-E``, a fresh environment, so no cached page hides a warning). It needs the ``docs`` extra;
CI installs it. ``nitpicky`` (docs/conf.py) makes an unresolved cross-reference a warning, and the
small builds below show that a renamed function does fail a build.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from markdown_blocks import ROOT, python_blocks, run_blocks

DOCS = ROOT / "docs"
EXT = DOCS / "_ext"
sys.path.insert(0, str(EXT))

import public_api  # noqa: E402


def _require_docs_extra() -> None:
    """Skip without the ``docs`` extra, except in CI (``$CI`` set), where it is installed and must work."""
    for package in ("sphinx", "myst_parser", "furo"):
        if os.environ.get("CI"):
            importlib.import_module(package)
        else:
            pytest.importorskip(package, reason='the docs need the docs extra: pip install -e ".[docs]"')


_require_docs_extra()


def sphinx_build(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html", *extra, str(src), str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = sphinx_build(DOCS, out)
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_docs_build_with_warnings_as_errors(built_site):
    assert (built_site / "index.html").is_file()
    assert (built_site / "api" / "generated" / "gameopt.html").is_file()


def test_every_public_name_has_an_api_entry(built_site):
    from sphinx.util.inventory import InventoryFile

    with open(built_site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda *parts: "/".join(parts))
    entries = getattr(inventory, "data", inventory)  # Sphinx 8.2 wraps the dict
    documented = {name for kind, objects in entries.items() if kind.startswith("py:") for name in objects}
    missing = [item.qualname for item in public_api.public_objects() if item.qualname not in documented]
    assert not missing, f"public names without an API entry: {missing}"
    modules = [m.__name__ for m in public_api.public_modules() if m.__name__ not in documented]
    assert not modules, f"public modules without an API page: {modules}"


def test_no_text_renders_as_an_email_link(built_site):
    """reStructuredText turns ``word@word`` into a mailto: link (LeNet-5's "conv 6@5x5" did); gameopt links no address."""
    pages = sorted(str(p.relative_to(built_site)) for p in built_site.rglob("*.html") if "mailto:" in p.read_text())
    assert not pages, f"pages with a mailto: link (write the text as ``literal``): {pages}"


# A renamed function or a stale reference fails the build: two small sites with the same
# reference machinery (docs/_ext/references.py, nitpicky), one with a reference that names
# something and one where it names nothing.

MINI_CONF = f"""
import sys
sys.path[:0] = [{str(EXT)!r}, {str(ROOT)!r}, "."]
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "references", "attribute_docstrings"]
nitpicky = True
"""


def _mini_site(tmp_path: Path, page: str, module: str, function: str = "current_name") -> subprocess.CompletedProcess:
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(MINI_CONF)
    (src / "index.md").write_text(textwrap.dedent(page))
    # autodoc output is parsed by the page's parser: API pages are reStructuredText, as in docs/api/
    (src / "api.rst").write_text(
        f"API\n===\n\n.. autofunction:: mini_module.{function}\n\n.. autoclass:: mini_module.Holder\n   :members:\n"
    )
    (src / "mini_module.py").write_text(textwrap.dedent(module))
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html", str(src), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=src, timeout=300,
    )


MODULE = '''
def current_name(x):
    """Doubles ``x``; see :func:`helper` and :func:`gameopt.toy_games.mixture_metrics`."""
    return 2 * x


def helper():
    """Helps."""


class Holder:
    """Holds a period."""

    @property
    def period(self):
        """Lazy regularisation period: the correction runs every k-th step (1: every step)."""
        return 1
'''

PAGE = """
# Mini

{py:func}`gameopt.toy_games.mixture_metrics`, {py:class}`gameopt.ConsensusOptimizer` and
{py:func}`mini_module.current_name`.

```{toctree}
api
```
"""


def test_references_that_name_something_build(tmp_path):
    result = _mini_site(tmp_path, PAGE, MODULE)
    assert result.returncode == 0, result.stderr


def test_a_page_naming_a_renamed_function_fails_the_build(tmp_path):
    page = PAGE.replace("gameopt.toy_games.mixture_metrics", "gameopt.toy_games.mixture_metric")
    result = _mini_site(tmp_path, page, MODULE)
    assert result.returncode != 0
    assert "gameopt.toy_games.mixture_metric" in result.stderr


def test_a_docstring_naming_a_renamed_function_fails_the_build(tmp_path):
    result = _mini_site(tmp_path, PAGE, MODULE.replace("def helper", "def renamed_helper"))
    assert result.returncode != 0
    assert "helper" in result.stderr and "reference target not found" in result.stderr


def test_an_api_page_documenting_a_removed_function_fails_the_build(tmp_path):
    result = _mini_site(tmp_path, PAGE, MODULE, function="old_name")
    assert result.returncode != 0
    assert "old_name" in result.stderr


# Python blocks in the docs run like the README's (tests/markdown_blocks.py).

DOC_PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts and "generated" not in p.parts)
DOC_BLOCKS = [(page, i) for page in DOC_PAGES for i in range(len(python_blocks(page)))]


@pytest.mark.parametrize(
    "page, index", DOC_BLOCKS, ids=[f"{p.relative_to(DOCS)}-{i}" for p, i in DOC_BLOCKS]
)
def test_docs_python_block_runs(page, index):
    """Block ``index`` of ``page`` runs as written, or after the code above when its prose says it continues it."""
    run_blocks(page, index)


def test_docs_have_python_blocks_to_run():
    assert len(DOC_BLOCKS) >= 3, "the docs' examples are no longer found (fence them as ```python)"
