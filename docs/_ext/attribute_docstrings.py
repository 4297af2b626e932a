"""Sphinx extension: keep a property's or attribute's first sentence when it holds a colon.

Napoleon reads the first line of an attribute's Google-style docstring as ``type: description``,
so ``"Lazy regularisation period: the correction runs every k-th step"`` would render with the
type ``Lazy regularisation period`` (and, under ``nitpicky``, fail the build as an unresolvable
class). This runs after napoleon and puts such a "type" back into the sentence when it is prose:
two words side by side with only a space between them (a type such as ``dict[str, float]`` or
``int | None`` has none).
"""

from __future__ import annotations

import re

_PROSE = re.compile(r"\w\s+\w")


def restore_prose(app, what, name, obj, options, lines):
    """Undo napoleon's ``:type:`` splits of an attribute docstring whose "types" are sentences.

    Napoleon splits the first line at a colon, then splits the rest again at the next one, so
    ``"A: B (1: C)"`` becomes ``C)`` with the types ``A`` and ``B (1``, listed outermost first.
    """
    if what not in ("attribute", "property", "data"):
        return
    prose = [i for i, line in enumerate(lines) if line.startswith(":type: ") and _PROSE.search(line[7:])]
    if not prose:
        return
    parts = [lines[i][7:] for i in prose]
    for i in reversed(prose):
        del lines[i]
        if i > 0 and not lines[i - 1].strip():
            del lines[i - 1]
    first = next((j for j, text in enumerate(lines) if text.strip()), None)
    if first is None:
        lines.insert(0, ": ".join(parts))
    else:
        lines[first] = ": ".join([*parts, lines[first]])


def setup(app):
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("autodoc-process-docstring", restore_prose, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
