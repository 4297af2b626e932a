"""gameopt's public API, found by walking the package, and what a docstring of it must say.

Shared by the docs build (``api_pages.py`` beside this file writes one API page per public module
from it) and the tests (``tests/test_docstrings.py`` checks every docstring it finds).

Public means what a user can import without an underscore: every module whose dotted path has no
component starting with ``_``; in it, the names of its ``__all__``, or, without ``__all__``, the
classes and functions it defines (not the ones it imports) whose names do not start with ``_``;
in a public class, the methods, properties and ``__call__`` it defines itself (``__init__`` is
checked with its class: Google style documents the constructor's arguments in the class docstring).

Three checks, each naming ``(qualified name, check)``:

* ``"docstring"``: the object has no docstring of its own (a method may inherit one from a
  gameopt class it overrides, not from torch's: torch's ``forward`` or ``step`` does not say what
  gameopt's does; a dataclass's generated ``Name(field: type, ...)`` signature does not count).
* ``"args"``: a named parameter (not ``*args``, ``**kwargs`` or ``_private``) is not mentioned in the docstring (for a class: in the class or
  ``__init__`` docstring, which is where Google style puts the constructor's ``Args:``).
* ``"raises"``: the body raises an exception class (``raise SomeError(...)``, nested functions
  excluded) that the docstring neither names nor covers with a ``Raises:`` section.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from types import ModuleType

import gameopt

CHECKS = ("docstring", "args", "raises")


@dataclass(frozen=True)
class PublicObject:
    """One public object: ``qualname`` is where the docs list it (``gameopt.images.mode_kl``)."""

    qualname: str
    obj: object
    owner: type | None = None  # the class, for methods and properties
    module: str = ""  # the public module whose page lists it


def public_modules() -> list[ModuleType]:
    """Every importable gameopt module without an underscore in its path, sorted by name."""
    names = [gameopt.__name__]
    for info in pkgutil.walk_packages(gameopt.__path__, prefix="gameopt."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [importlib.import_module(n) for n in sorted(names)]


def module_names(module: ModuleType) -> list[str]:
    """The public names of one module: its ``__all__``, else the classes and functions it defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    ]


def _is_gameopt(obj: object) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "gameopt"


def _members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property) or inspect.isfunction(attr):
            out.append((name, attr))
    return out


def public_objects() -> list[PublicObject]:
    """Public classes, functions, methods and properties, each once, under its first public path.

    Modules (``gameopt.solvers`` in ``gameopt.__all__``) and constants (``GENERATOR``) are listed by
    their module's docs but carry no docstring of their own, so they are not returned.
    """
    seen: set[int] = set()
    out: list[PublicObject] = []
    for module in public_modules():
        for name in module_names(module):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not _is_gameopt(obj):
                continue
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            qualname = f"{module.__name__}.{name}"
            out.append(PublicObject(qualname, obj, module=module.__name__))
            if inspect.isclass(obj):
                for member_name, member in _members(obj):
                    out.append(PublicObject(f"{qualname}.{member_name}", member, obj, module.__name__))
    return out


def public_constants(module: ModuleType) -> list[str]:
    """Names in ``module.__all__`` that are data (``GENERATOR``), not classes, functions or modules."""
    return [
        name
        for name in getattr(module, "__all__", [])
        if not (inspect.isclass(obj := getattr(module, name)) or callable(obj) or inspect.ismodule(obj))
    ]


def _own_doc(obj: object) -> str:
    doc = obj.__doc__ if isinstance(obj, property) else vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    doc = doc or ""
    if inspect.isclass(obj) and re.match(rf"{re.escape(obj.__name__)}\(.*\)$", doc.strip(), flags=re.S):
        return ""  # a dataclass's or NamedTuple's generated signature
    return doc.strip()


def _inherited_gameopt_doc(item: PublicObject) -> str:
    name = item.qualname.rsplit(".", 1)[1]
    for base in item.owner.__mro__[1:]:
        if name in vars(base) and _is_gameopt(base):
            attr = vars(base)[name]
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            doc = _own_doc(attr)
            if doc:
                return doc
    return ""


def docstring(item: PublicObject) -> str:
    """The docstring the docs show for ``item`` (own, or inherited from a gameopt base)."""
    doc = _own_doc(item.obj)
    if not doc and item.owner is not None:
        doc = _inherited_gameopt_doc(item)
    return doc


def _own_init(obj: object):
    """The ``__init__`` a gameopt class defines (or its dataclass generates), else ``None``.

    A ``typing.Protocol``'s placeholder ``__init__`` is not the class's own constructor.
    """
    init = vars(obj).get("__init__") if inspect.isclass(obj) else None
    if not inspect.isfunction(init) or not init.__qualname__.startswith(f"{obj.__qualname__}."):
        return None
    return init


def _function(item: PublicObject):
    obj = item.obj
    if isinstance(obj, property):
        return obj.fget
    if inspect.isclass(obj):
        return _own_init(obj)
    return obj


def _parameters(func) -> list[str]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and not p.name.startswith("_")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _raised(func) -> set[str]:
    """Exception class names raised directly in ``func``'s body (not in nested functions)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    body = tree.body[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", None)
                if name and name[0].isupper():  # a class, not a re-raised variable
                    names.add(name)
            visit(child)

    visit(body)
    return names


def problems(item: PublicObject) -> set[str]:
    """The checks ``item`` fails (a subset of :data:`CHECKS`)."""
    doc = docstring(item)
    init = _own_init(item.obj)
    if init is not None and init.__doc__:
        doc = doc + "\n" + init.__doc__
    if not doc:
        return {"docstring"}
    out = set()
    func = _function(item)
    if func is None:
        return out
    if any(not re.search(rf"\b{re.escape(p)}\b", doc) for p in _parameters(func)):
        out.add("args")
    raised = _raised(func)
    if raised and "Raises" not in doc and not all(name in doc for name in raised):
        out.add("raises")
    return out


def missing_parameters(item: PublicObject) -> list[str]:
    """Parameters of ``item`` its docstring does not mention (for failure messages)."""
    func = _function(item)
    doc = docstring(item)
    if inspect.isclass(item.obj) and func is not None and func.__doc__:
        doc += "\n" + func.__doc__
    return [p for p in _parameters(func) if not re.search(rf"\b{re.escape(p)}\b", doc)] if func else []


def all_problems() -> dict[str, set[str]]:
    """``{qualname: failed checks}`` over the whole public API (only names that fail something)."""
    out = {}
    for item in public_objects():
        failed = problems(item)
        if failed:
            out[item.qualname] = failed
    return out
