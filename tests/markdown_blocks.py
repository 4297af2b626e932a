"""Run the Python blocks of a Markdown page (README.md, docs/**/*.md) as a reader would.

Every fenced block opened with a bare ```` ```python ```` line runs, in order, in one namespace
per page, after :data:`PRELUDE` (small stand-in models and data under the names the pages use).
Blocks meant to be read, not run (they need a GPU, data, a path or an optional package), are fenced
as ```` ```{code-block} python ```` (highlighted) or ```` ```text ````.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = '''
import torch
import torch.nn.functional as F
import gameopt
torch.manual_seed(0)
z_dim = 4
G = torch.nn.Sequential(torch.nn.Linear(z_dim, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
D = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
loader = [torch.randn(32, 2) + 1 for _ in range(2)]
real = loader[0]
x = real
z = torch.randn(32, z_dim)
opt_g = torch.optim.Adam(G.parameters(), 1e-3)
g_opt = opt_g
opt_d = torch.optim.Adam(D.parameters(), 1e-3)
phi_real = torch.randn(16, 5, dtype=torch.float64)
phi_fake = torch.randn(16, 5, dtype=torch.float64)
def _losses():
    d_fake = D(G(z))
    return F.softplus(-d_fake).mean(), F.softplus(-D(x)).mean() + F.softplus(d_fake).mean()
gen_loss_fn = lambda: _losses()[0]
disc_loss_fn = lambda: _losses()[1]
opt = gameopt.ConsensusOptimizer(torch.optim.SGD, G.parameters(), D.parameters(), lr=1e-3)
n_params = sum(p.numel() for p in list(G.parameters()) + list(D.parameters()))
d = torch.randn(n_params)
w = torch.randn(n_params)
'''

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    """The source of every ```` ```python ```` block of ``path``, in order."""
    return _PYTHON_BLOCK.findall(path.read_text())


def run_blocks(path: Path, upto: int, prelude: str = PRELUDE) -> dict:
    """Run the prelude, then blocks ``0..upto`` of ``path`` in one namespace; return it.

    A failing block raises with its page and index in the traceback's file name
    (``<README.md block 3>``).
    """
    namespace: dict = {}
    exec(compile(prelude, "<prelude>", "exec"), namespace)
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for i, block in enumerate(python_blocks(path)[: upto + 1]):
        exec(compile(block, f"<{name} block {i}>", "exec"), namespace)
    return namespace
