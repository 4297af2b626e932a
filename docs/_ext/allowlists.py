"""Sphinx extension: the phase-2 allow-lists of ``conf.py``, and the check that each entry is still needed.

``verbatim_docstrings``: ``{documented name: offending text}``. Such a docstring is shown as a
literal block instead of being parsed as reStructuredText (where it would fail the ``-W`` build).
``known_broken_references``: ``{(docstring's object, target)}``, references that name nothing;
they are shown as code instead of failing ``nitpicky``.

An entry whose text is gone, whose reference now resolves or is gone, or whose object was never
documented in this build, is reported as a warning, so ``-W`` makes the lists shrink.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)
_DOCSTRING_OF = re.compile(r"docstring of (\S+)")


def verbatim(app, what, name, obj, options, lines):
    """Show an allow-listed docstring as a literal block, if it still contains its offending text."""
    entries = app.config.verbatim_docstrings
    if name not in entries:
        return
    app.env.gameopt_verbatim_seen = getattr(app.env, "gameopt_verbatim_seen", set()) | {name}
    if entries[name] not in "\n".join(lines):
        logger.warning(
            "%s's docstring no longer contains %r: remove it from verbatim_docstrings in docs/conf.py",
            name, entries[name],
        )
        return
    lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def broken_reference(app, env, node, contnode):
    """Show an allow-listed unresolvable reference as code (runs after ``references.py``)."""
    match = _DOCSTRING_OF.search(node.source or "")
    key = (match.group(1) if match else "", node.get("reftarget"))
    if key in app.config.known_broken_references:
        env.gameopt_broken_seen = getattr(env, "gameopt_broken_seen", set()) | {key}
        return nodes.literal(key[1], contnode.astext())
    return None



def report_stale(app, exception):
    """Warn about every entry that this build did not need."""
    if exception is not None:
        return
    env = app.env
    for name in sorted(set(app.config.verbatim_docstrings) - getattr(env, "gameopt_verbatim_seen", set())):
        logger.warning("verbatim_docstrings entry %r documents nothing in this build: remove it from docs/conf.py", name)
    for key in sorted(set(app.config.known_broken_references) - getattr(env, "gameopt_broken_seen", set())):
        logger.warning("known_broken_references entry %r is not needed any more: remove it from docs/conf.py", key)


def setup(app):
    app.add_config_value("verbatim_docstrings", {}, "env")
    app.add_config_value("known_broken_references", set(), "env")
    app.connect("autodoc-process-docstring", verbatim, priority=900)
    app.connect("missing-reference", broken_reference, priority=900)
    app.connect("build-finished", report_stale)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
