"""Every figure that README.md or docs/ quote with a source marker is still in its results file.

A marker is an HTML comment right after the quoted number (invisible once rendered)::

    3.1x<!-- source: benchmarks/consensus_step_cost/results/consensus_step_cost.json#/results/dcgan/nonsat/time/gameopt/ratio_vs_plain -->

* ``PATH#/a/b/0/c``: a JSON results file and the path of one number in it (``/``-separated keys
  or list indices; a key that itself holds ``/``, such as ``dcgan/nonsat``, is written as is and
  found greedily; a space is written ``%20``). ``*100`` after the path scales the value (fractions quoted as percent).
  The quoted number is the last number before the marker (for ``4/8``, the ``4``); it must equal
  the value rounded to the decimals shown.
* ``PATH "fragment"``: a text results file (a ``table.md``) that must contain the fragment, whose
  last number must be the last number before the marker. Inside a table cell, a fragment that is a
  whole table row escapes its pipes (``\\|``), as Markdown tables require.

The markers name the results file; the study's README beside it gives the command that made it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common.quotes import last_number, markers, matches, pages, refresh, resolve

ROOT = Path(__file__).resolve().parents[1]
PAGES = pages()

ALL = [(page, line, before, m) for page in PAGES for line, before, m in markers(page)]


def test_pages_carry_source_markers():
    # README's results table and the benchmarks page are covered; losing the markers fails here
    counted = {p.relative_to(ROOT).as_posix(): 0 for p in PAGES}
    for page, *_ in ALL:
        counted[page.relative_to(ROOT).as_posix()] += 1
    assert counted["README.md"] >= 20 and counted["docs/benchmarks.md"] >= 20, counted


@pytest.mark.parametrize("page,line,before,m", ALL,
                         ids=[f"{p.relative_to(ROOT)}:{ln}" for p, ln, _, _ in ALL])
def test_quoted_figure_is_in_its_results_file(page, line, before, m):
    where = f"{page.relative_to(ROOT)}:{line}"
    source = ROOT / m["path"]
    assert source.is_file(), f"{where} names {m['path']}, which does not exist"
    quoted = last_number(before)
    assert quoted is not None, f"{where}: no number before the marker"
    if m["text"] is not None:
        text = m["text"].replace("\\|", "|")  # a table row's pipes are escaped inside a table cell
        assert text in source.read_text(), f"{where}: {m['path']} no longer holds {text!r}"
        assert last_number(text) == quoted, f"{where}: quotes {quoted}, the fragment says {text!r}"
        return
    value = resolve(json.loads(source.read_text()), m["pointer"])
    assert isinstance(value, (int, float)), f"{where}: {m['pointer']} is {value!r}, not a number"
    value = value * float(m["scale"]) if m["scale"] else value
    assert matches(quoted, value), f"{where}: quotes {quoted}, {m['path']}#{m['pointer']} holds {value}"


def test_the_checker_fails_on_a_changed_number(tmp_path):
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"results": {"dcgan/nonsat": {"ratio": 3.11}}, "runs": [{"modes": 4}]}))
    assert matches("3.1", resolve(json.loads(res.read_text()), "/results/dcgan/nonsat/ratio"))
    assert not matches("3.2", 3.11) and matches("946", 946) and not matches("945", 946)
    assert resolve(json.loads(res.read_text()), "/runs/0/modes") == 4
    assert last_number("consensus 4/8") == "4" and last_number("3.1x a plain") == "3.1"
    assert last_number("8 / 0.83") == "0.83"
    assert last_number("SimGA 1.5e-3") == "1.5e-3" and matches("1e-13", 1.216e-13) and not matches("2e-13", 1.216e-13)
    with pytest.raises(KeyError):
        resolve({"a": 1}, "/b")


def _git_ignored(paths: list[str]) -> set[str]:
    """Those of ``paths`` that the repository's ignore rules would keep out of a commit."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: ignore rules cannot be read")
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, text=True,
                         input="\n".join(paths), capture_output=True)
    assert out.returncode in (0, 1), out.stderr  # 1: none ignored
    return set(out.stdout.split())


def test_quoted_results_files_are_not_git_ignored():
    # a results file that exists here but is ignored passes locally and fails on a fresh checkout
    # (a bare "runs/" rule once kept benchmarks/mnist/results/runs/ out of every commit)
    named = sorted({m["path"] for _, _, _, m in ALL})
    ignored = _git_ignored(named)
    assert not ignored, f"quoted results files that git ignores (fix .gitignore): {sorted(ignored)}"


def test_refresh_rewrites_quoted_numbers_to_their_sources_with_the_decimals_shown(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"m": 823, "f": 0.91254, "k": 3.4314, "e": 1.26e-13}]}))
    page = tmp_path / "page.md"
    page.write_text('modes 832<!-- source: r.json#/rows/0/m --> of 1000, fraction 0.92<!-- source: r.json#/rows/0/f -->\n'
                    'FD 3.5<!-- source: r.json#/rows/0/k -->, tiny 1.2e-13<!-- source: r.json#/rows/0/e -->, '
                    'pct 91.3%<!-- source: r.json#/rows/0/f*100 -->, 823/1000<!-- source: r.json#/rows/0/m -->\n'
                    'fragment 5<!-- source: r.json "no such text 5" -->\n')
    assert len(refresh(page, write=False, root=tmp_path)) == 5 and "832" in page.read_text()   # dry run
    changes = refresh(page, root=tmp_path)
    assert page.read_text() == (
        'modes 823<!-- source: r.json#/rows/0/m --> of 1000, fraction 0.91<!-- source: r.json#/rows/0/f -->\n'
        'FD 3.4<!-- source: r.json#/rows/0/k -->, tiny 1.3e-13<!-- source: r.json#/rows/0/e -->, '
        'pct 91.3%<!-- source: r.json#/rows/0/f*100 -->, 823/1000<!-- source: r.json#/rows/0/m -->\n'
        'fragment 5<!-- source: r.json "no such text 5" -->\n')
    assert any("832 -> 823" in c and "CHECK" not in c for c in changes) and any("fragment no longer" in c for c in changes)
    assert [c for c in changes if "CHECK" in c] == []
    assert refresh(page, root=tmp_path) == [c for c in changes if "fragment" in c]   # idempotent
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"m": 86, "f": 0.91254, "k": 3.4314, "e": 1.26e-13}]}))
    assert any("823 -> 86" in c and "CHECK" in c for c in refresh(page, write=False, root=tmp_path))
