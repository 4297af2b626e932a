"""Sphinx extension: one API reference page per public gameopt module, written before reading.

Each public object (see ``public_api.py``) is documented once, under the path users import it
from (``gameopt.ConsensusOptimizer``, not ``gameopt.consensus.ConsensusOptimizer``), so a name
added to ``__all__`` appears in the reference without anyone editing a page, and a renamed one
disappears from it: a page or docstring that still refers to the old name then fails the
``-W`` build (``nitpicky`` turns unresolved references into warnings).

The pages go to ``docs/api/generated/`` (git-ignored) and are rewritten only when they change.
``docs/api/index.md`` places each module's page in a section by hand: a new public module's page
is then in no toctree, which Sphinx reports, so the ``-W`` build fails until it is placed.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import public_api

OUT = Path(__file__).resolve().parents[1] / "api" / "generated"


def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def module_page(module, objects: list[public_api.PublicObject], documented: dict[int, str]) -> str:
    """The reStructuredText of one module's page: its docstring, then its objects in order."""
    lines = [_title(f"``{module.__name__}``"), f".. automodule:: {module.__name__}", "   :no-members:", ""]
    for item in objects:
        if item.owner is not None:
            continue
        if inspect.isclass(item.obj):
            members = [o.qualname.rsplit(".", 1)[1] for o in objects if o.owner is item.obj]
            lines.append(f".. autoclass:: {item.qualname}")
            if item.obj.__bases__ != (object,):
                lines.append("   :show-inheritance:")
            regular = [m for m in members if not m.startswith("__")]
            special = [m for m in members if m.startswith("__")]
            lines.append(f"   :members: {', '.join(regular)}" if regular else "   :no-members:")
            lines.append("   :undoc-members:")
            if special:
                lines.append(f"   :special-members: {', '.join(special)}")
        else:
            lines.append(f".. autofunction:: {item.qualname}")
        lines.append("")
    for name in public_api.public_constants(module):
        lines += [f".. autodata:: {module.__name__}.{name}", ""]
    listed = {item.qualname for item in objects}
    elsewhere = [
        documented[id(obj)]
        for name in public_api.module_names(module)
        if id(obj := getattr(module, name)) in documented and documented[id(obj)] not in listed
        and documented[id(obj)] != module.__name__
    ]
    if elsewhere:
        lines += ["Also available from this module, documented where users import them:", ""]
        lines += [f"* :py:obj:`{name}`" for name in elsewhere] + [""]
    return "\n".join(lines)


def write_pages(app=None) -> list[Path]:
    """Write every module's page (and the index the API page's toctree globs); return them."""
    OUT.mkdir(parents=True, exist_ok=True)
    documented = {id(m): m.__name__ for m in public_api.public_modules()}
    by_module: dict[str, list[public_api.PublicObject]] = {}
    for item in public_api.public_objects():
        by_module.setdefault(item.module, []).append(item)
        documented.setdefault(id(item.obj), item.qualname)
    written = []
    for module in public_api.public_modules():
        path = OUT / f"{module.__name__}.rst"
        text = module_page(module, by_module.get(module.__name__, []), documented)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for stale in set(OUT.glob("*.rst")) - set(written):
        stale.unlink()
    return written


def drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant has no docstring of its own; autodoc would show its type's (``dict``'s)."""
    if what == "data" and obj.__doc__ == type(obj).__doc__:
        lines.clear()


def setup(app):
    app.connect("builder-inited", write_pages)
    app.connect("autodoc-process-docstring", drop_type_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
