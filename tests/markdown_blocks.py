"""Run the Python blocks of a Markdown page (README.md, docs/**/*.md) as a reader would.

Every fenced block opened with a bare ```` ```python ```` line runs as written, in a fresh
namespace, with nothing defined before it: a block defines (or imports) every name it uses. A block
may instead continue the code before it on the same page, and must then say so in the prose just
above it, in words a reader sees ("continuing the code above", "continues the example above"; see
:data:`CONTINUES`): it runs after the blocks it continues, in their namespace, back to the last
block that stands alone. Blocks meant to be read, not run (they need a GPU, data, a path or an
optional package), are fenced as ```` ```{code-block} python ```` (highlighted) or ```` ```text ````.

The namespace is fresh and torch's global settings (default dtype, grad mode, RNG state) are
restored after each run, so no block can lean on what another page, or another test, left behind.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)

#: The words, in the prose between a block and the one before it, that make it continue that code.
CONTINUES = re.compile(r"\bcontinu(?:es|ing)\s+the\s+(?:code|example|examples|block|blocks)\s+above\b", flags=re.I)


def _blocks_with_prose(path: Path) -> list[tuple[str, str]]:
    """``(prose before the block, since the previous python block; the block's source)``, in order."""
    text = path.read_text()
    out, end = [], 0
    for match in _PYTHON_BLOCK.finditer(text):
        out.append((text[end:match.start()], match.group(1)))
        end = match.end()
    return out


def python_blocks(path: Path) -> list[str]:
    """The source of every ```` ```python ```` block of ``path``, in order."""
    return [source for _, source in _blocks_with_prose(path)]


def continues_previous(path: Path) -> list[bool]:
    """For each python block of ``path``: whether the prose above it says it continues the code above.

    Raises:
        ValueError: the page's first block says it continues code, but there is none above it.
    """
    flags = [bool(CONTINUES.search(prose)) for prose, _ in _blocks_with_prose(path)]
    if flags and flags[0]:
        raise ValueError(f"{path}: the first python block says it continues the code above, but there is none")
    return flags


def chain(path: Path, index: int) -> range:
    """The blocks that run for block ``index``: back to the last block before it that stands alone."""
    flags = continues_previous(path)
    start = index
    while flags[start]:
        start -= 1
    return range(start, index + 1)


def run_blocks(path: Path, upto: int) -> dict:
    """Run block ``upto`` of ``path`` as written, after the blocks it continues; return the namespace.

    The namespace starts empty (as ``python`` does for a script); a failing block raises with its
    page and index in the traceback's file name (``<README.md block 3>``), and a block that uses a
    name defined nowhere on its chain raises ``NameError``.
    """
    blocks = python_blocks(path)
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    dtype, grad, rng = torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_rng_state()
    try:
        for i in chain(path, upto):
            exec(compile(blocks[i], f"<{name} block {i}>", "exec"), namespace)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_rng_state(rng)
    return namespace
