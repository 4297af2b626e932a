"""The fault table (docs/faults.md, and README.md's copy if it has one) cites tests that exist.

Each row is ``| fault | what gameopt does | test |``; the test cell holds one or more
``tests/test_x.py::test_name`` (or ``tests/test_x.py::TestClass::test_name``) in backticks.
Renaming or deleting a cited test fails here until the row is updated.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "faults.md"
README_MARKER = "<!-- FAULT TABLE -->"
HEADER = ["fault", "what gameopt does", "test"]
REF = re.compile(r"`(tests/[\w/]+\.py)::((?:\w+::)?\w+)`")


def _cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _tables(lines: list[str]) -> list[tuple[int, list[str], list[tuple[int, list[str]]]]]:
    """Markdown tables as (line number of the header, header cells, [(line number, cells)])."""
    tables = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.fullmatch(
            r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*", lines[i + 1]
        ):
            header, rows = _cells(lines[i]), []
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, _cells(lines[j])))
                j += 1
            tables.append((i + 1, header, rows))
            i = j
        else:
            i += 1
    return tables


def _collectable_tests(path: Path) -> set[str]:
    """``name`` of module-level test functions and ``Class::name`` of test methods in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, funcs) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names.update(f"{node.name}::{m.name}" for m in node.body
                         if isinstance(m, funcs) and m.name.startswith("test"))
    return names


def check_table(text: str, where: str, root: Path = ROOT) -> tuple[list[str], int]:
    """Problems with every fault table in ``text`` (and the number of rows checked)."""
    problems, count, cache = [], 0, {}
    tables = _tables(text.splitlines())
    if not tables:
        return [f"{where}: no fault table found"], 0
    for line_no, header, rows in tables:
        if [h.lower() for h in header] != HEADER:
            problems.append(f"{where}:{line_no}: header must be {HEADER}, got {header}")
            continue
        if not rows:
            problems.append(f"{where}:{line_no}: table has no rows")
        for row_no, cells in rows:
            count += 1
            if len(cells) != 3:
                problems.append(f"{where}:{row_no}: {len(cells)} cells, expected 3: {cells}")
                continue
            if not all(cells):
                problems.append(f"{where}:{row_no}: an empty cell: {cells}")
                continue
            refs = REF.findall(cells[2])
            if not refs or REF.sub("", cells[2]).strip(" ,;") not in ("", "<br>"):
                problems.append(
                    f"{where}:{row_no}: the test cell must hold `tests/test_x.py::test_name` reference(s) "
                    f"and nothing else, got {cells[2]!r}"
                )
                continue
            for file, name in refs:
                path = root / file
                if not path.is_file():
                    problems.append(f"{where}:{row_no}: {file} does not exist")
                    continue
                if file not in cache:
                    cache[file] = _collectable_tests(path)
                if name not in cache[file]:
                    problems.append(f"{where}:{row_no}: {file} has no test {name!r} (renamed or removed?)")
    return problems, count


def _readme_table(text: str) -> str | None:
    """The first table after the README's marker line, or None when there is no marker."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == README_MARKER)
    except StopIteration:
        return None
    tables = _tables(lines[start + 1:])
    if not tables:
        return ""
    header_line, _, rows = tables[0]
    first = start + header_line  # 0-based index of the header line in ``lines``
    last = start + 1 + (rows[-1][0] if rows else header_line + 1)
    return "\n".join(lines[first:last])


def test_every_row_has_three_cells_and_cites_tests_that_exist():
    problems, count = check_table(DOC.read_text(), "docs/faults.md")
    assert not problems, "\n".join(problems)
    assert count >= 40  # one row per class of fault: a table this short lost rows


def test_readme_fault_table_if_it_has_one():
    readme = ROOT / "README.md"
    table = _readme_table(readme.read_text()) if readme.is_file() else None
    if table is None:
        return  # no README copy of the table: docs/faults.md is the one checked
    problems, _ = check_table(table, "README.md")
    assert not problems, "\n".join(problems)


# The checker itself: each kind of broken row is caught.
GOOD = """
| fault | what gameopt does | test |
|---|---|---|
| NaN loss | skip | `tests/test_x.py::test_nan` |
| method | error | `tests/test_x.py::TestThing::test_method` |
"""

SOURCE = '''
import pytest

def test_nan():
    pass

@pytest.mark.parametrize("a", [1, 2])
def test_param(a):
    pass

class TestThing:
    def test_method(self):
        pass

def helper_not_a_test():
    pass
'''


@pytest.fixture
def fake_root(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(SOURCE)
    return tmp_path


def test_checker_accepts_functions_methods_and_parametrized_base_names(fake_root):
    text = GOOD + "| p | q | `tests/test_x.py::test_param` |\n"
    assert check_table(text, "t", fake_root) == ([], 3)


@pytest.mark.parametrize("row,problem", [
    ("| NaN loss | skip | `tests/test_x.py::test_nan_renamed` |", "has no test 'test_nan_renamed'"),
    ("| NaN loss | skip | `tests/test_x.py::TestOther::test_method` |", "has no test"),
    ("| NaN loss | skip | `tests/test_x.py::helper_not_a_test` |", "has no test"),
    ("| NaN loss | skip | `tests/test_gone.py::test_nan` |", "does not exist"),
    ("| NaN loss | | `tests/test_x.py::test_nan` |", "an empty cell"),
    ("| NaN loss | skip |", "2 cells"),
    ("| NaN loss | skip | test_nan |", "must hold"),
    ("| NaN loss | skip | `tests/test_x.py::test_nan` and more |", "nothing else"),
])
def test_checker_catches_each_broken_row(fake_root, row, problem):
    problems, _ = check_table(GOOD + row + "\n", "t", fake_root)
    assert len(problems) == 1 and problem in problems[0], problems


def test_checker_catches_a_missing_or_misheaded_table(fake_root):
    assert "no fault table" in check_table("# nothing here\n", "t", fake_root)[0][0]
    bad = GOOD.replace("| fault | what gameopt does | test |", "| fault | test |")
    assert "header must be" in check_table(bad, "t", fake_root)[0][0]


def test_readme_table_is_read_only_after_the_marker(fake_root):
    readme = "intro\n\n| a | b |\n|---|---|\n| x | y |\n\n" + README_MARKER + "\n" + GOOD + "\nafter\n"
    table = _readme_table(readme)
    assert table is not None and check_table(table, "README.md", fake_root) == ([], 2)
    assert _readme_table("no marker\n" + GOOD) is None
    broken = readme.replace("test_method`", "test_missing`")
    assert "has no test" in check_table(_readme_table(broken), "README.md", fake_root)[0][0]
