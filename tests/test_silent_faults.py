"""Faults that used to pass silently or fail obscurely (issue 22): each is now caught or works."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import gameopt
from conftest import TinyGAN

ALL_KINDS = ["consensus", "simultaneous", "extragradient", "optimistic", "sga", "alternating",
             "lookahead", "competitive"]


def make(kind, gp, dp, base=torch.optim.Adam, **kw):
    kw.setdefault("lr", 1e-2)
    if kind == "consensus":
        return gameopt.ConsensusOptimizer(base, gp, dp, gamma=0.5, **kw)
    if kind == "simultaneous":
        return gameopt.SimultaneousOptimizer(base, gp, dp, **kw)
    if kind == "extragradient":
        return gameopt.ExtragradientOptimizer(base, gp, dp, **kw)
    if kind == "optimistic":
        return gameopt.OptimisticOptimizer(base, gp, dp, **kw)
    if kind == "sga":
        return gameopt.SGAOptimizer(base, gp, dp, lam=0.5, **kw)
    if kind == "alternating":
        return gameopt.AlternatingOptimizer(base, gp, dp, **kw)
    if kind == "lookahead":
        return gameopt.LookaheadMinmax(gameopt.ConsensusOptimizer(base, gp, dp, gamma=0.5, **kw), k=2)
    assert kind == "competitive"
    return gameopt.CompetitiveOptimizer(gp, dp, **kw)


def _snapshot(params):
    return [p.detach().clone() for p in params]


# --- 1. zero-size parameters ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_zero_size_parameter_in_the_loss_trains_like_torch(kind):
    gan = TinyGAN(seed=3)
    head = torch.nn.Linear(3, 0).double()   # a zero-width head: its output takes part in the loss
    gp, dp = gan.params()
    gp = gp + list(head.parameters())

    def losses():
        fake = gan.G(gan.z) + head(gan.z).sum()
        d_fake = gan.D(fake).squeeze(1)
        lg = F.softplus(-d_fake).mean()
        ld = (F.softplus(-gan.D(gan.x).squeeze(1)) + F.softplus(d_fake)).mean()
        if kind == "competitive":
            return ld, -ld
        return lg, ld

    opt = make(kind, gp, dp)
    before = _snapshot(gp + dp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            opt.zero_grad()
            opt.step(losses)
    assert opt.skipped_steps == 0
    moved = [not torch.equal(p, b) for p, b in zip(gp + dp, before) if p.numel()]
    assert all(moved)


# --- 2. ConsensusOptimizer fed by loss.backward() -----------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_plain_backward_then_step_warns_that_no_consensus_term_was_computed(gamma):
    gan = TinyGAN(seed=4)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=gamma, lr=1e-2)
    lg, ld = gan.losses()
    (lg + ld).backward()   # the torch habit: no per-player gradients, no consensus term
    with pytest.warns(RuntimeWarning, match=r"no opt\.backward\(gen_loss, disc_loss\).*loss\.backward\(\)"):
        opt.step()
    # the same through a closure that leaves plain gradients in p.grad
    opt.zero_grad()
    with pytest.warns(RuntimeWarning, match=r"no opt\.backward"):
        opt.step(lambda: sum(gan.losses()).backward())


def test_opt_backward_then_step_and_closures_do_not_warn():
    gan = TinyGAN(seed=4)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2, every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):   # lazy: the plain turns are opt.backward too
            opt.zero_grad()
            opt.backward(*gan.losses())
            opt.step()
        opt.step(gan.losses)

        def closure():   # Lightning's kind: the closure calls opt.backward and returns None
            opt.zero_grad()
            opt.backward(*gan.losses())
        opt.step(closure)
        opt.zero_grad()
        opt.step()   # nothing in p.grad: nothing to warn about


# --- 3. what the base step makes of a finite gradient ------------------------------------


def _state_snapshot(opt):
    return {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()} for p, st in opt.state.items()}


def _state_equal(opt, snap):
    return snap.keys() == opt.state.keys() and all(
        all(torch.equal(v, opt.state[p][k]) if torch.is_tensor(v) else v == opt.state[p][k] for k, v in st.items())
        for p, st in snap.items())


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_a_gradient_whose_square_overflows_adams_second_moment_is_refused(policy):
    """gamma=1e30 in float32: v + gamma v'^T v is finite (~1e30) but its square is not, so Adam's
    exp_avg_sq would become Inf and the parameters would never move again."""
    gan = TinyGAN(seed=5, dtype=torch.float32)
    params = [p for ps in gan.params() for p in ps]
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1e30, lr=1e-2, nonfinite=policy)
    opt.param_groups[0]["gamma"] = 0.0   # a good first step, so there is Adam state to protect
    opt.param_groups[1]["gamma"] = 0.0
    opt.step(gan.losses)
    for g in opt.param_groups:
        g["gamma"] = 1e30
    before, state = _snapshot(params), _state_snapshot(opt)
    opt.zero_grad()
    opt.backward(*gan.losses())
    assert all(torch.isfinite(p.grad).all() for p in params)
    if policy == "raise":
        with pytest.raises(FloatingPointError, match=r"square.*overflow"):
            opt.step()
    else:
        with pytest.warns(RuntimeWarning, match=r"square.*overflow"):
            opt.step()
        assert opt.skipped_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert _state_equal(opt, state)
    assert all(torch.isfinite(t).all() for st in opt.state.values() for t in st.values())


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_optimistic_correction_that_overflows_is_refused_and_rolled_back(momentum):
    """Bilinear x*y in float32 at lr 2e38: the base step z + Delta_t (about -2e38) is finite, the
    optimistic z + 2 Delta_t - Delta_{t-1} (about -4e38) is not."""
    x = torch.nn.Parameter(torch.ones(1))
    y = torch.nn.Parameter(torch.ones(1))

    def losses():
        f = (x * y).sum()
        return f, -f

    opt = gameopt.OptimisticOptimizer(torch.optim.SGD, [x], [y], lr=0.1, momentum=momentum)
    opt.step(losses)
    for g in opt.param_groups:
        g["lr"] = 2e38
    before, state = _snapshot([x, y]), _state_snapshot(opt)
    prev = {p: opt.game_state[p]["prev_update"].clone() for p in (x, y)}
    opt.zero_grad()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(losses)
    assert opt.skipped_steps == 1 and opt.last_step_skipped
    assert all(torch.equal(p, b) for p, b in zip((x, y), before))
    assert _state_equal(opt, state)
    assert all(torch.equal(opt.game_state[p]["prev_update"], prev[p]) for p in (x, y))
    for g in opt.param_groups:   # and training goes on from there
        g["lr"] = 0.1
    opt.zero_grad()
    opt.step(losses)
    assert not opt.last_step_skipped and torch.isfinite(x).all()


# --- 4. a step that fails half-way leaves nothing half-done -------------------------------


@pytest.mark.parametrize("failure", ["nan", "error"])
def test_extragradient_failing_at_the_second_evaluation_restores_parameters_and_state(failure):
    gan = TinyGAN(seed=7, dtype=torch.float32)
    params = [p for ps in gan.params() for p in ps]
    opt = gameopt.ExtragradientOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
    opt.step(gan.losses)
    before, state = _snapshot(params), _state_snapshot(opt)
    calls = []

    def closure():
        calls.append(1)
        lg, ld = gan.losses()
        if len(calls) == 2:
            if failure == "error":
                raise RuntimeError("data loader failed")
            return lg * float("nan"), ld
        return lg, ld

    if failure == "error":
        with pytest.raises(RuntimeError, match="data loader"):
            opt.step(closure)
    else:
        with pytest.warns(RuntimeWarning, match="state left untouched"):
            opt.step(closure)
        assert opt.skipped_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert _state_equal(opt, state)   # Adam's moments and step count as before the step


def test_a_failed_backward_does_not_advance_the_lazy_consensus_count():
    gan = TinyGAN(seed=8)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), gamma=1.0, lr=1e-2, every=2)
    opt.zero_grad()
    opt.backward(*gan.losses())
    opt.step()
    calls = opt.state_dict()["gameopt"]["lazy_calls"]
    lg, _ = gan.losses()
    with pytest.raises(gameopt.GameInputError):
        opt.backward(lg, lg.detach() + gan.G[0].weight.sum())   # disc_loss reaches no D parameter
    assert opt.state_dict()["gameopt"]["lazy_calls"] == calls


def test_alternating_step_whose_closure_changes_mid_step_leaves_nothing_stepped():
    gan = TinyGAN(seed=9, dtype=torch.float32)
    params = [p for ps in gan.params() for p in ps]
    opt = gameopt.AlternatingOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
    opt.step(gan.losses)
    before, state = _snapshot(params), _state_snapshot(opt)
    calls = []

    def closure():   # the second evaluation (the generator's) returns a loss without G
        calls.append(1)
        lg, ld = gan.losses()
        return (ld.detach() * 0 + gan.D(gan.x).mean(), ld) if len(calls) == 2 else (lg, ld)

    with pytest.raises(gameopt.GameInputError, match="generator"):
        opt.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(params, before))   # D's update undone too
    assert _state_equal(opt, state)


# --- 5. bad closures and frozen parameters touch nothing ----------------------------------


def _grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def _same_grads(params, grads):
    return all((g is None and p.grad is None) or (g is not None and p.grad is not None and torch.equal(p.grad, g))
               for p, g in zip(params, grads))


@pytest.mark.parametrize("kind", ["consensus", "optimistic", "sga"])
@pytest.mark.parametrize("bad", ["one_loss", "no_graph", "wrong_player"])
def test_a_bad_closure_return_leaves_p_grad_alone(kind, bad):
    gan = TinyGAN(seed=10)
    params = [p for ps in gan.params() for p in ps]
    opt = make(kind, *gan.params())
    opt.zero_grad()
    opt.backward(*gan.losses())   # gradients the user may still want
    grads = _grads(params)

    def closure():
        lg, ld = gan.losses()
        if bad == "one_loss":
            return (lg,)
        if bad == "no_graph":
            return lg, ld.detach()
        return lg, gan.G(gan.z).sum()   # the discriminator's loss reaches no D parameter

    with pytest.raises(gameopt.GameInputError):
        opt.step(closure)
    assert _same_grads(params, grads)


@pytest.mark.parametrize("kind", ["consensus", "simultaneous", "optimistic", "sga", "extragradient", "alternating"])
def test_a_parameter_frozen_after_construction_gets_a_clear_error_and_nothing_changes(kind):
    gan = TinyGAN(seed=11)
    params = [p for ps in gan.params() for p in ps]
    opt = make(kind, *gan.params())
    opt.step(gan.losses)
    gan.D[0].weight.requires_grad_(False)   # frozen after the optimiser was built
    before, state = _snapshot(params), _state_snapshot(opt)
    grads = _grads(params)
    with pytest.raises(gameopt.GameInputError, match=r"player 'discriminator'.*requires_grad=False.*requires_grad_\(True\)"):
        opt.step(gan.losses)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert _state_equal(opt, state) and _same_grads(params, grads)


# --- 6. silent acceptance: detached fakes in SGA, tied storage, checkpoints ---------------


def test_sga_warns_about_detached_fakes_like_consensus():
    gan = TinyGAN(seed=12)
    opt = gameopt.SGAOptimizer(torch.optim.SGD, *gan.params(), lam=1.0, lr=1e-2)
    with pytest.warns(RuntimeWarning, match=r"disc_loss does not depend.*D\(fake.detach\(\)\)"):
        opt.backward(*gan.losses("nonsat_detached"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.zero_grad()
        opt.backward(*gan.losses("nonsat"))


@pytest.mark.parametrize("kind", ["consensus", "extragradient", "alternating"])
def test_parameters_sharing_storage_across_players_are_refused(kind):
    gen = torch.nn.Parameter(torch.randn(4, 3))
    disc = torch.nn.Parameter(gen.data.view(3, 4))   # another tensor, the same memory
    with pytest.raises(gameopt.GameInputError, match=r"'generator'.*'discriminator'.*share memory"):
        make(kind, [gen], [disc])
    other = torch.nn.Parameter(torch.randn(2))
    opt = make(kind, [gen], [other])
    with pytest.raises(gameopt.GameInputError, match="share"):
        opt.add_param_group({"params": [torch.nn.Parameter(other.data[:1])], "player": "generator"})


def test_a_checkpoint_with_an_extra_group_names_the_groups():
    gan = TinyGAN(seed=13)
    extra = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = gameopt.OptimisticOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
    opt.add_param_group({"params": [extra], "player": "generator"})

    def losses():
        lg, ld = gan.losses()
        return lg + extra.sum(), ld

    opt.step(losses)
    fresh = gameopt.OptimisticOptimizer(torch.optim.Adam, *TinyGAN(seed=13).params(), lr=1e-2)
    with pytest.raises(gameopt.GameInputError, match="checkpoint has 3 param groups, this optimiser has 2"):
        fresh.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("setting", ["every", "smoothing", "unbiased"])
def test_loading_a_checkpoint_that_changes_a_constructor_setting_says_so(setting):
    gan = TinyGAN(seed=14)
    kw = {"every": 2} if setting == "every" else {setting: True}
    saved = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2, **kw)
    opt = gameopt.ConsensusOptimizer(torch.optim.Adam, *gan.params(), lr=1e-2)
    with pytest.warns(UserWarning, match=rf"checkpoint.*{setting}.*constructor"):
        opt.load_state_dict(saved.state_dict())
    assert getattr(opt, setting) == getattr(saved, setting)   # torch's rule: the checkpoint wins
    with warnings.catch_warnings():   # the same settings load without a word
        warnings.simplefilter("error")
        saved.load_state_dict(saved.state_dict())


# --- 6, dual discriminators and solvers -----------------------------------------------------


def _dual_batch(n=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=g, dtype=dtype) + 1.0, torch.randn(n, 2, generator=g, dtype=dtype))


def _linear_disc():
    torch.manual_seed(0)
    return gameopt.TrustRegionDualDiscriminator(
        gameopt.RBFFeatures(torch.randn(4, 2, dtype=torch.float64)), model="linear")


@pytest.mark.parametrize("target", ["trained", "fresh"])
def test_a_float32_weight_in_a_linear_dual_checkpoint_loads_in_the_discriminators_dtype(target):
    saved = _linear_disc()
    saved.step(*_dual_batch())
    state = saved.state_dict()
    state["weight"] = state["weight"].float()
    disc = _linear_disc()
    if target == "trained":
        disc.step(*_dual_batch(seed=2))
    disc.load_state_dict(state)
    stats = disc.step(*_dual_batch(seed=3))   # used to fail in torch: Double and Float
    assert stats.accepted and disc.weight.dtype == torch.float64
    assert disc.generator_loss(*_dual_batch(seed=3)).dtype == torch.float64


def test_a_jw_inconsistent_with_k_is_refused_not_reported_converged():
    g = torch.Generator().manual_seed(0)
    J = torch.randn(8, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    K, Fk = J @ J.T, torch.randn(8, generator=g, dtype=torch.float64)
    res = gameopt.solvers.solve_trust_region_dual(K, J @ w, Fk, float(w @ w), 1e-2, 0.5)
    assert res.success
    # J w with ||w||^2 given: (Jw)^T K^+ (Jw) = ||P w||^2 <= ||w||^2 for a true J w
    with pytest.raises(gameopt.GameInputError, match=r"Jw.*K.*w_norm_sq"):
        gameopt.solvers.solve_trust_region_dual(K, 100 * (J @ w), Fk, float(w @ w), 1e-2, 0.5)
    with pytest.raises(gameopt.GameInputError, match=r"Jw.*K.*w_norm_sq"):
        gameopt.solvers.solve_trust_region_dual(K, J @ w, Fk, 1e-3 * float(w @ w), 1e-2, 0.5)


@pytest.mark.parametrize("case", ["list", "feature_shapes", "module_dtype", "gen_loss_dtypes", "mixed_dtypes"])
@pytest.mark.parametrize("model", ["linear", "score", "cost"])
def test_dual_discriminator_inputs_get_a_game_input_error_not_torchs(model, case):
    """Bad batches are refused before any forward pass; a real and a fake batch of two floating
    dtypes (a bf16 generator under autocast) are promoted, as torch promotes them."""
    if model == "linear":
        disc = _linear_disc()
    else:
        disc = gameopt.TrustRegionDualDiscriminator(torch.nn.Linear(2, 1).double(), model=model, C=1e-3, delta=0.3)
    real, fake = _dual_batch()
    if case == "mixed_dtypes":   # works for every model (was torch's "addmv ... same dtype" for linear)
        assert disc.step(real, fake.float()).accepted
        if model == "linear":
            assert torch.isfinite(disc.generator_loss(real, fake.float().requires_grad_()))
        return
    if case == "list":
        call = lambda: disc.step(real.tolist(), fake.tolist())
    elif case == "feature_shapes":
        call = lambda: disc.step(real, torch.randn(6, 3, dtype=torch.float64))
    elif case == "module_dtype":
        if model == "linear":   # the RBF features take any floating batch: nothing to refuse
            assert disc.step(real.float(), fake.float()).accepted
            return
        call = lambda: disc.step(real.float(), fake.float())
    else:
        if model == "linear":
            assert torch.isfinite(disc.generator_loss(real, fake.float().requires_grad_()))
            return
        call = lambda: disc.generator_loss(real, fake.float().requires_grad_())
    with pytest.raises(gameopt.GameInputError):
        call()


@pytest.mark.parametrize("case", ["bool_features", "str_kernel", "half_kernel"])
def test_dual_solver_inputs_get_a_game_input_error_or_work(case):
    g = torch.Generator().manual_seed(0)
    J = torch.randn(8, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    K, Jw, Fk = J @ J.T, J @ w, torch.randn(8, generator=g, dtype=torch.float64)
    S = gameopt.solvers
    if case == "bool_features":
        with pytest.raises(gameopt.GameInputError, match="bool"):
            S.solve_linear_dual(torch.ones(4, 3, dtype=torch.bool), torch.zeros(4, 3, dtype=torch.bool), 1e-2)
    elif case == "str_kernel":
        with pytest.raises(gameopt.GameInputError, match="K must be"):
            S.solve_trust_region_dual("K", Jw, Fk, float(w @ w), 1e-2, 0.5)
    else:   # a kernel formed under fp16/bf16 autocast is solved (in float32 or wider), like a float32 one
        for dtype in (torch.float16, torch.bfloat16):
            res = S.solve_trust_region_dual(K.to(dtype), Jw.to(dtype), Fk.to(dtype), float(w @ w), 1e-2, 0.5)
            assert bool(res.converged)


# --- 7. mixed precision and what step(closure) returns ------------------------------------


def test_stats_are_finite_under_a_huge_grad_scaler_scale():
    gan = TinyGAN(seed=15, dtype=torch.float32)
    opt = gameopt.ConsensusOptimizer(torch.optim.SGD, *gan.params(), gamma=1.0, lr=1e-2)
    plain = opt.backward(*gan.losses())
    want = float(plain.consensus_loss)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)   # float32 norms of s*v overflow
    opt.zero_grad()
    stats = opt.backward(*(scaler.scale(l) for l in gan.losses()), scaler=scaler)
    assert bool(stats.finite)
    assert float(stats.consensus_loss) == pytest.approx(want, rel=1e-5)
    scaler.step(opt)
    scaler.update()
    assert opt.skipped_steps == 0 and scaler.get_scale() == 2.0**100


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_step_closure_returns_detached_losses(kind):
    gan = TinyGAN(seed=16)
    opt = make(kind, *gan.params())

    def closure():
        lg, ld = gan.losses()
        return (ld, -ld) if kind == "competitive" else (lg, ld)

    out = opt.step(closure)
    assert len(out) == 2 and all(isinstance(l, torch.Tensor) and not l.requires_grad for l in out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [float(l) for l in out]
