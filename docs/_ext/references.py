"""Sphinx extension: resolve Python cross-references by what they name, and fail on what names nothing.

Docstrings refer to objects by the path where they are defined (``gameopt.images.metrics.mode_kl``,
``Monitor.read`` inside ``gameopt/monitor.py``), while the API pages document each object once,
under the path users import (``gameopt.images.mode_kl``, ``gameopt.Monitor.read``). When Sphinx's
own lookup fails, this extension imports the target (relative to the docstring's own module and
class, as Python would see the name there) and:

* links to the object's documented name when it is public;
* renders it as code, without a link, when it exists but is not documented (a private helper,
  a constant, a name from torch or numpy: the docs are built offline, without intersphinx);
* leaves it unresolved when it names nothing, so ``nitpicky`` reports it and ``-W`` fails the
  build. A renamed or removed function therefore breaks every reference to its old name.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys

from docutils import nodes
from sphinx import addnodes

import public_api

_DOCSTRING_OF = re.compile(r"docstring of (\S+)")
_documented: dict[int, str] | None = None


def documented_names() -> dict[int, str]:
    """``{id(object): documented name}`` for every public object and public module."""
    global _documented
    if _documented is None:
        names = {id(m): m.__name__ for m in public_api.public_modules()}
        for item in public_api.public_objects():
            names.setdefault(id(item.obj), item.qualname)
        _documented = names
    return _documented


def _import(path: str):
    """The object a dotted path names (module, then attributes), or ``None``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = sys.modules.get(modname) or importlib.import_module(modname)
        except Exception:
            continue
        try:
            for attr in parts[i:]:
                obj = inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _scopes(node) -> list[str]:
    """Dotted prefixes under which a relative target is looked up, innermost first."""
    scopes = []
    source = node.source or ""
    match = _DOCSTRING_OF.search(source)
    if match:  # the docstring's own object: its class, then its module, then the packages above
        parts = match.group(1).split(".")
        scopes += [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    parent = node.parent
    while parent is not None and not isinstance(parent, addnodes.desc_content):
        parent = parent.parent
    if parent is not None:  # a type hint in an object's description: that object's own module
        signature = parent.parent.next_node(addnodes.desc_signature)
        documented = _import(f"{signature.get('module')}.{signature.get('fullname')}") if signature else None
        home = getattr(_unwrap(documented), "__module__", None)
        if home:
            scopes.append(home)
    modname, clsname = node.get("py:module"), node.get("py:class")
    if modname and clsname:
        scopes.append(f"{modname}.{clsname}")
    if modname:
        scopes.append(modname)
    return scopes


def resolve(target: str, node):
    """The object ``target`` names from where it is written, or ``None``."""
    target = target.lstrip(".~")
    for scope in _scopes(node):
        obj = _import(f"{scope}.{target}")
        if obj is not None:
            return obj
        module = sys.modules.get(scope)
        head, _, rest = target.partition(".")
        if module is not None and head in vars(module):  # a name the module imported
            obj = vars(module)[head]
            if rest:
                obj = _import(f"{getattr(obj, '__name__', '')}.{rest}") if inspect.ismodule(obj) else _attr(obj, rest)
            if obj is not None:
                return obj
    return _import(target)


def _attr(obj, path: str):
    try:
        for attr in path.split("."):
            obj = inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
        return obj
    except AttributeError:
        return None


def _unwrap(obj):
    return obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj


def missing_reference(app, env, node, contnode):
    """Sphinx ``missing-reference`` handler for the ``py`` domain (see the module docstring)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    obj = resolve(target, node)
    if obj is None:
        return None  # names nothing: nitpicky reports it
    name = documented_names().get(id(_unwrap(obj)))
    if name is not None and name != target:
        domain = env.domains["py"]
        reftype = "mod" if inspect.ismodule(obj) else node["reftype"]
        for kind in (reftype, "obj"):
            ref = domain.resolve_xref(env, node["refdoc"], app.builder, kind, name, node, contnode)
            if ref is not None:
                return ref
    return nodes.literal(target, contnode.astext())  # exists, but has no page of its own


def setup(app):
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
