"""Every Python block in README.md runs as written, with nothing defined before it (tests/markdown_blocks.py)."""

import re

import pytest

from markdown_blocks import ROOT, python_blocks, run_blocks

README = ROOT / "README.md"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_block_runs(index):
    """Block ``index`` runs as written, or after the code above when its prose says it continues it."""
    run_blocks(README, index)


def test_readme_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert "examples/eight_gaussians.py" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


# One first example: the pages a newcomer opens first show the README's, as written.
FIRST_PAGES = ["docs/index.md", "docs/getting-started.md", "docs/methods/consensus.md"]


@pytest.mark.parametrize("page", FIRST_PAGES)
def test_first_pages_open_with_the_readme_example(page):
    assert python_blocks(ROOT / page)[0] == python_blocks(README)[0]


def test_the_readme_example_uses_the_default_gamma():
    import inspect

    import gameopt

    default = inspect.signature(gameopt.ConsensusOptimizer).parameters["gamma"].default
    first = python_blocks(README)[0]
    assert "torch.optim.Adam" in first and f"gamma={default}" in first


# The README and the docs speak to a user: no talk of how and where the authors worked.
INTERNAL_WORDING = {
    r"this project's": "say what it was (e.g. 'measured on a 2-core CPU, no GPU')",
    r"\blent\b": "say 'no GPU was available'",
    r"\bsessions?\b": "say what ran, not whose session",
    r"/work/": "a path on the authors' machine: give the command a user runs",
    r"`quiet`|\bbg\b": "the authors' wrappers: say 'on an otherwise idle machine'",
    r"a few minutes": "say the measured time: the tests take about 8 minutes on an idle 2-core machine",
}


def test_readme_and_docs_speak_to_a_user():
    pages = [README] + sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
    found = [
        f"{page.relative_to(ROOT)}:{n}: {pattern!r} ({fix}): {line.strip()[:100]}"
        for page in pages
        for n, line in enumerate(page.read_text().splitlines(), 1)
        for pattern, fix in INTERNAL_WORDING.items()
        if re.search(pattern, line)
    ]
    assert not found, "\n".join(found)
