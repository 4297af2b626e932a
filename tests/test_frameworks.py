"""gameopt.backward: finding the gameopt optimiser and the loss scaler inside real framework wrappers."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState, GradientState
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import MixedPrecision as FabricMixedPrecision
from lightning.pytorch.core.optimizer import LightningOptimizer

import gameopt
from conftest import TinyGAN


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _grads(gan):
    return torch.cat([p.grad.reshape(-1) for ps in gan.params() for p in ps])


def _reference_grads():
    gan = TinyGAN(seed=3)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    opt.backward(*gan.losses())
    return _grads(gan)


@pytest.mark.parametrize("wrap", ["none", "lightning", "accelerate", "accelerate(lightning)"])
def test_backward_through_wrappers_equals_the_optimisers_own(wrap):
    gan = TinyGAN(seed=3)
    real = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    if wrap.startswith("accelerate"):
        Accelerator(cpu=True)  # AcceleratedOptimizer reads the process-wide state it sets up
    opt = {
        "none": lambda: real,
        "lightning": lambda: LightningOptimizer(real),
        "accelerate": lambda: AcceleratedOptimizer(real, device_placement=False),
        "accelerate(lightning)": lambda: AcceleratedOptimizer(LightningOptimizer(real), device_placement=False),
    }[wrap]()
    assert gameopt.frameworks.game_optimizer(opt) is real
    stats = gameopt.backward(opt, *gan.losses())
    assert stats is real.stats
    assert torch.equal(_grads(gan), _reference_grads())


def test_plain_optimiser_error_names_what_was_found():
    gan = TinyGAN()
    sgd = torch.optim.SGD([p for ps in gan.params() for p in ps], lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="found SGD, with no gameopt optimiser"):
        gameopt.backward(sgd, *gan.losses())
    with pytest.raises(gameopt.GameInputError, match="LightningSGD -> SGD"):
        gameopt.backward(LightningOptimizer(sgd), *gan.losses())
    with pytest.raises(gameopt.GameInputError, match="found str"):
        gameopt.backward("adam", *gan.losses())
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_a_cycle_of_wrappers_ends_in_an_error_not_a_hang():
    class Wrapper:
        def __init__(self):
            self.optimizer = None

    a, b = Wrapper(), Wrapper()
    a.optimizer, b.optimizer = b, a
    with pytest.raises(gameopt.GameInputError, match="Wrapper -> Wrapper"):
        gameopt.backward(a, torch.zeros(()), torch.zeros(()))


def test_scaler_argument_is_refused_with_the_alternative():
    gan = TinyGAN()
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    with pytest.raises(gameopt.GameInputError, match="scaler.scale\\(gen_loss\\)"):
        gameopt.backward(opt, *gan.losses(), scaler=torch.amp.GradScaler("cpu"))
    assert all(p.grad is None for ps in gan.params() for p in ps)


def test_alternating_optimizer_points_to_step_closure():
    gan = TinyGAN()
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1)
    with pytest.raises(RuntimeError, match="step\\(closure\\)"):
        gameopt.backward(LightningOptimizer(opt), *gan.losses())


def test_fabric_fp16_scaler_is_found_and_used():
    """Lightning Fabric: setup_optimizers wraps the optimiser, the scaler lives on its precision plugin."""
    def run(use_fabric):
        gan = TinyGAN(seed=3, dtype=torch.float32, batch=32)
        opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.05)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        if use_fabric:
            fabric = Fabric(accelerator="cpu", devices=1, plugins=[FabricMixedPrecision("16-mixed", "cpu", scaler)])
            opt = fabric.setup_optimizers(opt)
            assert gameopt.frameworks.loss_scaler(opt) is scaler
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.float16):
                gen_loss, disc_loss = gan.losses()
            opt.zero_grad()
            if use_fabric:
                gameopt.backward(opt, gen_loss, disc_loss)
                opt.step()
            else:
                opt.backward(scaler.scale(gen_loss), scaler.scale(disc_loss), scaler=scaler)
                scaler.step(opt)
                scaler.update()
        return torch.cat([p.detach().reshape(-1) for ps in gan.params() for p in ps])

    assert torch.equal(run(True), run(False))


def _wrapped(real, wrap):
    if wrap == "lightning":
        return LightningOptimizer(real)
    Accelerator(cpu=True)
    return AcceleratedOptimizer(real, device_placement=False)


@pytest.mark.parametrize("wrap", ["lightning", "accelerate"])
def test_game_field_and_monitor_take_a_wrapped_optimiser(wrap):
    """Diagnostics and monitoring see the players and statistics of the optimiser inside the wrapper."""
    gan = TinyGAN(seed=3)
    real = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=2.0, lr=0.1)
    opt = _wrapped(real, wrap)
    field = gameopt.GameField(gan.losses, opt, gamma=2.0)
    assert torch.equal(field.jacobian(), gameopt.GameField(gan.losses, real, gamma=2.0).jacobian())
    gameopt.backward(opt, *gan.losses())
    assert gameopt.Monitor(opt=opt).read() == gameopt.Monitor(opt=real).read()
