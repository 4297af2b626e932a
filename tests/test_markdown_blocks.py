"""The runner of the README's and the docs' Python blocks (tests/markdown_blocks.py) runs each block
as written: a name the block does not define fails, unless the prose says it continues the code above."""

import subprocess
import sys
import textwrap

import pytest

from markdown_blocks import ROOT, chain, python_blocks, run_blocks


def page(tmp_path, text):
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text))
    return path


PAGE = """
    # A page

    ```python
    a = 1
    ```

    A new example:

    ```python
    b = a + 1
    ```

    Continuing the code above, in words a reader sees:

    ```python
    c = b + 1
    ```

    Standalone again:

    ```python
    d = 4
    ```

    This block continues the
    example above (the prose may wrap):

    ```python
    e = d + 1
    ```
"""


def test_a_block_using_a_name_it_does_not_define_fails(tmp_path):
    path = page(tmp_path, PAGE)
    with pytest.raises(NameError, match="'a' is not defined"):
        run_blocks(path, 1)


def test_a_block_that_says_it_continues_runs_after_the_code_above(tmp_path):
    path = page(tmp_path, PAGE)
    assert [list(chain(path, i)) for i in range(5)] == [[0], [1], [1, 2], [3], [3, 4]]
    with pytest.raises(NameError):  # its chain starts at block 1, which needs block 0's a
        run_blocks(path, 2)
    assert run_blocks(path, 4)["e"] == 5
    assert "a" not in run_blocks(path, 4)


def test_nothing_is_predefined(tmp_path):
    path = page(tmp_path, """
        ```python
        x = torch.zeros(1)
        ```
    """)
    with pytest.raises(NameError, match="'torch' is not defined"):
        run_blocks(path, 0)


def test_a_first_block_cannot_continue_anything(tmp_path):
    path = page(tmp_path, """
        Continuing the code above:

        ```python
        x = 1
        ```
    """)
    with pytest.raises(ValueError, match="none"):
        run_blocks(path, 0)


def test_the_readme_example_runs_in_a_fresh_interpreter():
    """The first example of the README (and of the docs' first pages) runs with ``python -c``, nothing else."""
    block = python_blocks(ROOT / "README.md")[0]
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
