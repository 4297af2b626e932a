"""Source markers of quoted figures: parse them, check them, and refresh the quoted numbers.

A marker is an HTML comment right after a number that README.md, docs/ or a benchmark README
quotes, naming the results file (and, for JSON, the path of the value) it comes from; the
format is described in ``tests/test_quoted_figures.py``, which checks every marker. After a
results file is regenerated (a table re-scored, say), refresh the quoted numbers and read the
list of changes it prints, since the prose around a number may no longer hold::

    python benchmarks/common/quotes.py [--dry-run] [PAGE ...]

Only numbers whose marker names a JSON value are rewritten, to the decimals already shown; a
number quoted from a text fragment (``PATH "fragment"``) is reported when it no longer matches. A
pointer names a row or group by its index, so a results file whose rows moved (a group inserted
before others, say) would rewrite a number from the wrong row: every change over 20% is flagged.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]

MARKER = re.compile(r"<!--\s*source:\s*(?P<path>[^\s#\"]+)(?:#(?P<pointer>[^\s*]+)(?:\*(?P<scale>[\d.]+))?|\s+\"(?P<text>[^\"]+)\")\s*-->")
NUMBER = re.compile(r"(?<![\w.])(?:(\d+)/\d+(?![\d.])|(\d+(?:\.\d+)?(?:e-?\d+)?))")  # no signs: "1-158" is a range


def markers(page: Path) -> list[tuple[int, str, re.Match]]:
    """(line number, text before the marker on its line, match) for every marker of a page."""
    out = []
    for i, line in enumerate(page.read_text().splitlines(), 1):
        start = 0
        for m in MARKER.finditer(line):
            before = line[start:m.start()]
            out.append((i, before, m))
            start = m.end()
    return out


def last_number(text: str) -> str | None:
    """The last number of a text; for ``N/M`` (a count out of a total) the ``N``."""
    found = [(a or b) for a, b in NUMBER.findall(text)]
    return found[-1] if found else None


def resolve(data, pointer: str):
    """Follow a ``/``-separated path; a key holding ``/`` is matched greedily."""
    parts = [unquote(p).replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/")]
    node, i = data, 0
    while i < len(parts):
        if isinstance(node, list):
            node, i = node[int(parts[i])], i + 1
            continue
        for j in range(len(parts), i, -1):
            key = "/".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            raise KeyError(f"no key {parts[i]!r} (keys: {sorted(node)[:20]})")
    return node


def matches(quoted: str, value: float) -> bool:
    """``quoted`` is ``value`` rounded to the decimals shown (``8e-05``: to the mantissa's digits)."""
    if "e" in quoted.lower():
        mantissa = quoted.lower().split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return float(f"{value:.{digits}e}") == float(quoted)
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return math.isclose(round(value, decimals), float(quoted), abs_tol=10 ** -(decimals + 6))


def pages() -> list[Path]:
    """The pages whose markers are checked: README.md, docs/ and every benchmark README."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").rglob("README.md"))]
    return [p for p in found if "_build" not in p.parts and "generated" not in p.parts]


def formatted(quoted: str, value: float) -> str:
    """``value`` written with the decimals (or mantissa digits) that ``quoted`` shows."""
    if "e" in quoted.lower():
        mantissa = quoted.lower().split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return f"{value:.{digits}e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return f"{value:.{decimals}f}"


def refresh(page: Path, write: bool = True, root: Path = ROOT) -> list[str]:
    """Rewrite ``page``'s quoted numbers to their JSON sources' values; returns one line per change
    (``page:line old -> new  source``) and per text-fragment marker that no longer matches."""
    cache: dict[Path, object] = {}
    changes, out = [], []
    for i, line in enumerate(page.read_text().splitlines(keepends=True), 1):
        pieces, start = [], 0
        for m in MARKER.finditer(line):
            before = line[start:m.start()]
            found = list(NUMBER.finditer(before))
            where = f"{page.relative_to(root)}:{i}"
            if m["text"] is not None or not found:
                if m["text"] is not None and m["text"].replace("\\|", "|") not in (root / m["path"]).read_text():
                    changes.append(f"{where} fragment no longer in {m['path']}: {m['text']!r}")
                pieces.append(line[start:m.end()])
                start = m.end()
                continue
            last = found[-1]
            group = 1 if last.group(1) is not None else 2
            quoted = last.group(group)
            source = root / m["path"]
            if source not in cache:
                cache[source] = json.loads(source.read_text())
            value = resolve(cache[source], m["pointer"])
            value = value * float(m["scale"]) if m["scale"] else value
            if isinstance(value, (int, float)) and not matches(quoted, value):
                new = formatted(quoted, value)
                moved = abs(value - float(quoted)) > 0.2 * max(abs(float(quoted)), abs(value), 1e-12)
                flag = "  CHECK: moved more than 20%; has a row or group index shifted?" if moved else ""
                changes.append(f"{where} {quoted} -> {new}  ({m['path']}#{m['pointer']}){flag}")
                a, b = last.start(group), last.end(group)
                before = before[:a] + new + before[b:]
            pieces.append(before + line[m.start():m.end()])
            start = m.end()
        pieces.append(line[start:])
        out.append("".join(pieces))
    if write and changes:
        page.write_text("".join(out))
    return changes


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description="Refresh quoted figures from their marked JSON sources.")
    p.add_argument("pages", nargs="*", help="pages to refresh (default: every page with markers)")
    p.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    args = p.parse_args(argv)
    changes = []
    for page in [Path(x).resolve() for x in args.pages] or pages():
        changes += refresh(page, write=not args.dry_run)
    print("\n".join(changes) or "every quoted figure matches its source")
    return changes


if __name__ == "__main__":
    main()
