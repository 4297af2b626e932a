"""examples/lightning_gan.py and examples/accelerate_gan.py follow the plain 8-Gaussian demo step for step."""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--steps", "8", "--batch", "64", "--eval-samples", "256", "--no-progress"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*", "ignore:.*isinstance\\(treespec, LeafSpec\\).*",
)


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plain_demo():
    """The plain demo's consensus run (examples/eight_gaussians.py) at the tiny settings."""
    demo = load("eight_gaussians")
    args = argparse.Namespace(gamma=10.0, lr=1e-4, batch=64, z_dim=16, loss="nonsat", eval_samples=256)
    snapshots = [0, 2, 4, 8]
    result = demo.run("consensus", 8, snapshots, 0, args, lambda it, **_: it)
    return result["history"], torch.from_numpy(result["samples"][8])


def assert_prints_reached_and_covered(out, history):
    """Both counts, as the plain demo prints them: a run 8/8 reached but 0/8 covered must not read as "modes 0/8"."""
    for m in history:
        assert f"step {m['step']:6d}  modes reached {m['modes_reached']}/8  covered {m['modes_covered']}/8  " in out
    f = history[-1]
    assert (f"consensus  modes reached {f['modes_reached']}/8  covered {f['modes_covered']}/8  "
            f"high-quality {f['high_quality']:.3f}  KL {f['kl']:.3f}") in out


def test_lightning_example_matches_the_plain_demo(plain_demo, capsys):
    result = load("lightning_gan").main(TINY)
    history, samples = plain_demo
    assert result["global_step"] == 8 and result["skipped_steps"] == 0
    assert result["history"] == history
    assert torch.equal(result["samples"], samples)
    assert_prints_reached_and_covered(capsys.readouterr().out, history)


def test_accelerate_example_matches_the_plain_demo(plain_demo, capsys):
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        result = load("accelerate_gan").main(TINY + ["--cpu"])
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    history, samples = plain_demo
    assert result["skipped_steps"] == 0
    assert result["history"] == history
    assert torch.equal(result["samples"], samples)
    assert_prints_reached_and_covered(capsys.readouterr().out, history)
