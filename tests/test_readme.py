"""Every Python block in README.md runs as written (with small stand-in models)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

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


def python_blocks():
    text = README.read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index):
    """Block ``index`` runs after the ones before it, as for a reader going through the README."""
    namespace: dict = {}
    exec(compile(PRELUDE, "<prelude>", "exec"), namespace)
    for i, block in enumerate(python_blocks()[: index + 1]):
        exec(compile(block, f"<README block {i}>", "exec"), namespace)


def test_readme_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert "examples/eight_gaussians.py" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
