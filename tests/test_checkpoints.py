"""load_state_dict validates everything first: a bad checkpoint changes nothing."""

import copy
import io
import math

import pytest
import torch

import gameopt
from conftest import TinyGAN


def _train(opt, gan, steps=2):
    for _ in range(steps):
        if isinstance(opt, gameopt.AlternatingOptimizer):
            opt.step(gan.losses)
        else:
            opt.zero_grad()
            opt.backward(*gan.losses())
            opt.step()


def _consensus(gan, base=torch.optim.Adam, **kw):
    kw.setdefault("lr", 1e-2)
    return gameopt.ConsensusOptimizer(base, *gan.params(), gamma=1.0, **kw)


def _equal(a, b):
    """Deep equality of state dicts (tensors compared exactly, NaN-aware)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _refused(opt, sd, match):
    """Loading ``sd`` raises GameInputError matching ``match`` and leaves ``opt`` as it was."""
    before = copy.deepcopy(opt.state_dict())
    settings = _settings(opt)
    with pytest.raises(gameopt.GameInputError, match=match):
        opt.load_state_dict(sd)
    assert _equal(opt.state_dict(), before)
    assert _settings(opt) == settings


def _settings(opt):
    names = ("nonfinite", "skipped_steps", "smoothing", "unbiased", "order", "disc_steps", "gen_steps")
    return {n: copy.copy(getattr(opt, n)) for n in names if hasattr(opt, n)}


@pytest.fixture
def trained():
    gan = TinyGAN(seed=1)
    opt = _consensus(gan)
    _train(opt, gan)
    return opt, gan


def test_checkpoint_of_another_base_optimizer_is_refused(trained):
    opt, gan = trained
    sgd_gan = TinyGAN(seed=1)
    sgd = _consensus(sgd_gan, torch.optim.SGD, momentum=0.9)
    _train(sgd, sgd_gan)
    _refused(opt, sgd.state_dict(), "SGD base optimiser.*wraps Adam")
    _refused(sgd, opt.state_dict(), "Adam base optimiser.*wraps SGD")


def test_old_checkpoint_of_another_base_optimizer_is_refused_by_its_contents(trained):
    opt, gan = trained
    sgd_gan = TinyGAN(seed=1)
    sgd = _consensus(sgd_gan, torch.optim.SGD, momentum=0.9)
    _train(sgd, sgd_gan)
    old = opt.state_dict()
    del old["gameopt"]["class"], old["gameopt"]["base_class"]  # what main wrote before
    _refused(sgd, old, r"lacks \['dampening', 'momentum'\].*another base optimiser")
    old_sgd = sgd.state_dict()
    del old_sgd["gameopt"]["class"], old_sgd["gameopt"]["base_class"]
    _refused(opt, old_sgd, r"lacks \['betas', 'eps'\]")


def test_checkpoint_of_another_gameopt_optimizer_is_refused(trained):
    opt, gan = trained
    alt_gan = TinyGAN(seed=1)
    alt = gameopt.AlternatingOptimizer(torch.optim.Adam, *alt_gan.params(), lr=1e-2)
    _train(alt, alt_gan)
    _refused(opt, alt.state_dict(), "written by gameopt.AlternatingOptimizer, not ConsensusOptimizer")
    _refused(alt, opt.state_dict(), "written by gameopt.ConsensusOptimizer")
    old = alt.state_dict()
    del old["gameopt"]["class"], old["gameopt"]["base_class"]
    _refused(opt, old, r"settings \['disc_steps', 'gen_steps', 'order'\] that ConsensusOptimizer does not have")


def test_state_of_another_model_is_refused(trained):
    opt, gan = trained
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["state"][0]["exp_avg"] = torch.zeros(3, 8, dtype=torch.float64)  # the parameter is (8, 3)
    _refused(opt, sd, r"'exp_avg' has shape \(3, 8\), the parameter \(8, 3\)")
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["state"][0] = {"momentum_buffer": torch.zeros(8, 3)}
    _refused(opt, sd, r"has entries \['momentum_buffer'\], but Adam.*keeps \['exp_avg', 'exp_avg_sq', 'step'\]")
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["state"][99] = sd["state"][0]
    _refused(opt, sd, "parameter id 99, which no param group lists")


def test_nan_moments_are_refused(trained):
    opt, gan = trained
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["state"][3]["exp_avg_sq"] = sd["state"][3]["exp_avg_sq"].clone()
    sd["state"][3]["exp_avg_sq"].view(-1)[0] = float("nan")
    _refused(opt, sd, "parameter 3.*'exp_avg_sq' holds NaN or Inf")


@pytest.mark.parametrize("key,value,match", [
    ("lr", "0.01", "'lr' must be a finite number"),
    ("lr", float("nan"), "'lr' must be a finite number"),
    ("lr", -1.0, "learning rate.*>= 0"),
    ("betas", (0.9,), "'betas' must be a sequence of 2"),
    ("betas", (0.9, float("inf")), r"'betas'\[1\] must be a finite number"),
    ("amsgrad", "no", "'amsgrad' must be True or False"),
    ("gamma", -1.0, "gamma of param group 1 must be a finite number >= 0"),
    ("gamma", float("nan"), "'gamma' must be a finite number"),
    ("player", "generator", "belongs to player 'discriminator' here"),
])
def test_bad_group_values_are_refused(trained, key, value, match):
    opt, gan = trained
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["param_groups"][1][key] = value
    _refused(opt, sd, match)


@pytest.mark.parametrize("key,value,match", [
    ("nonfinite", "maybe", "'nonfinite' must be 'skip', 'raise' or 'ignore'"),
    ("skipped_steps", -1, "'skipped_steps' must be an integer >= 0"),
    ("smoothing", "yes", "'smoothing' must be True or False"),
    ("players", ["discriminator", "generator"], "do not match"),
])
def test_bad_gameopt_settings_are_refused(trained, key, value, match):
    opt, gan = trained
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["gameopt"][key] = value
    _refused(opt, sd, match)


@pytest.mark.parametrize("key,value,match", [
    ("order", ["generator", "generator"], "'order' must list every player"),
    ("disc_steps", 0, "'disc_steps' must be an integer >= 1"),
])
def test_bad_alternating_settings_are_refused(key, value, match):
    gan = TinyGAN(seed=2)
    opt = gameopt.AlternatingOptimizer(torch.optim.SGD, *gan.params(), lr=0.1, momentum=0.5)
    _train(opt, gan)
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["gameopt"][key] = value
    _refused(opt, sd, match)


def test_wrong_group_sizes_and_structure_are_refused(trained):
    opt, gan = trained
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]
    _refused(opt, sd, "has 4 parameters here and 3 in the checkpoint")
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["param_groups"] = sd["param_groups"][:1]
    _refused(opt, sd, "checkpoint has 1 param groups")
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["state"] = [1, 2]
    _refused(opt, sd, "'state' must be a dict")


def test_old_checkpoint_without_class_names_still_loads_and_resumes_bit_for_bit():
    gan = TinyGAN(seed=3, dtype=torch.float32)
    opt = _consensus(gan)
    _train(opt, gan, 3)
    buf = io.BytesIO()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["gameopt"].pop("class", None), sd["gameopt"].pop("base_class", None)
    torch.save({"opt": sd, "G": gan.G.state_dict(), "D": gan.D.state_dict()}, buf)
    _train(opt, gan, 2)
    buf.seek(0)
    ckpt = torch.load(buf)
    gan2 = TinyGAN(seed=3, dtype=torch.float32)  # same data; parameters from the checkpoint
    torch.nn.init.zeros_(gan2.G[0].weight)
    gan2.G.load_state_dict(ckpt["G"])
    gan2.D.load_state_dict(ckpt["D"])
    opt2 = _consensus(gan2)
    opt2.load_state_dict(ckpt["opt"])
    _train(opt2, gan2, 2)
    for a, b in zip(list(gan.G.parameters()) + list(gan.D.parameters()),
                    list(gan2.G.parameters()) + list(gan2.D.parameters())):
        assert torch.equal(a, b)


def test_checkpoint_with_scheduler_keys_loads_into_a_fresh_optimizer():
    gan = TinyGAN(seed=4)
    opt = _consensus(gan, torch.optim.SGD, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    _train(opt, gan)
    sched.step()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    fresh = _consensus(TinyGAN(seed=4), torch.optim.SGD, momentum=0.9)
    fresh.load_state_dict(sd)  # initial_lr, max_lr, ... are extra keys: accepted
    assert fresh.param_groups[0]["max_lr"] == 0.1


def test_loaded_settings_reach_the_optimizer_and_a_tensor_lr_loads():
    gan = TinyGAN(seed=5)
    opt = _consensus(gan, torch.optim.SGD)
    opt.param_groups[0]["lr"] = torch.tensor(0.05)
    _train(opt, gan)
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["gameopt"]["nonfinite"] = "raise"
    opt2 = _consensus(TinyGAN(seed=5), torch.optim.SGD)
    opt2.load_state_dict(sd)
    assert opt2.nonfinite == "raise" and float(opt2.param_groups[0]["lr"]) == pytest.approx(0.05)


def test_a_failure_inside_the_base_load_restores_everything(trained, monkeypatch):
    opt, gan = trained
    before = copy.deepcopy(opt.state_dict())
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live state's dicts
    sd["gameopt"]["nonfinite"] = "ignore"

    def broken(self, state):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(type(opt.base_optimizer), "__setstate__", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        opt.load_state_dict(sd)
    monkeypatch.undo()
    assert _equal(opt.state_dict(), before) and opt.nonfinite == "skip"
