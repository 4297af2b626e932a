"""Every Python block in README.md runs as written (with small stand-in models)."""

import re

import pytest

from markdown_blocks import ROOT, python_blocks, run_blocks

README = ROOT / "README.md"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_readme_python_block_runs(index):
    """Block ``index`` runs after the ones before it, as for a reader going through the README."""
    run_blocks(README, index)


def test_readme_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert "examples/eight_gaussians.py" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
