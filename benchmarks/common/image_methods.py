"""The training methods the image benchmarks compare, each one step of a GAN on an image batch.

Every method trains the same (G, D) pair on the non-saturating GAN loss in gameopt's
convention (both players minimise):

    gen_loss  = mean softplus(-D(G(z)))
    disc_loss = mean softplus(-D(x)) + mean softplus(D(G(z)))

except where a method replaces a player's step:

| name | what one step does |
|---|---|
| ``simga`` | simultaneous gradient step of both players (``gameopt.SimultaneousOptimizer``) |
| ``altga`` | ``disc_steps`` discriminator steps, then ``gen_steps`` generator steps (``gameopt.AlternatingOptimizer``) |
| ``consensus`` | simultaneous step with ``gamma * grad(1/2 ||v||^2)`` (``gameopt.ConsensusOptimizer``) |
| ``primal_dual`` | Algorithm 1 of Chen et al.: an alternating step whose generator loss adds ``PrimalDualRegularizer`` |
| ``dual_score`` / ``dual_cost`` | a ``TrustRegionDualDiscriminator`` step (score / cost linearisation), then a generator step |
| ``extragradient`` | ExtraAdam: an extrapolation step, the gradient there applied from the start (``gameopt.ExtragradientOptimizer``; both evaluations on the step's batch) |
| ``optimistic`` | Optimistic Adam: the base step plus its change since the last step (``gameopt.OptimisticOptimizer``) |
| ``sga`` | symplectic gradient adjustment ``xi + lam A^T xi`` with alignment (``gameopt.SGAOptimizer``) |
| ``lookahead`` / ``lookahead_eg`` | ``gameopt.LookaheadMinmax`` over AltGA (LA-GAN) / over ExtraAdam (LA-ExtraGrad) |
| ``cgd`` / ``acgd`` | competitive gradient descent / its adaptive form (``gameopt.CompetitiveOptimizer``) on the minimax loss ``(-disc_loss, disc_loss)`` (CGD needs a zero-sum game) |
| ``consensus_lazy`` | consensus with the correction every ``--every`` steps, scaled by it (``ConsensusOptimizer(every=k)``) |
| ``r3gan`` | the practitioner's baseline (R3GAN-style): relativistic pairing loss with R1 + R2 (``gameopt.relativistic_losses``, ``gameopt.GradientPenalty``, weight ``--penalty-gamma``), simultaneous steps |
| ``consensus_r1`` | consensus with R1 (weight ``--penalty-gamma``) in the discriminator's loss |

Each method object has ``step(real, z) -> dict`` (detached losses and statistics of the step),
``state_dict()`` and ``load_state_dict()`` covering every optimiser, schedule and radius, so a
run resumes bit-for-bit from a checkpoint.

Adding a method is one registration. A gameopt optimiser over both players (``GameOptimizer``
subclass taking ``(base_optimizer, gen_params, disc_params, **kw)``) needs one line::

    register("extragradient", game_optimizer(lambda base, gp, dp, kw, args: gameopt.Extragradient(base, gp, dp, **kw)))

Anything else registers a builder ``(G, D, args) -> object with step/state_dict/load_state_dict
/skipped_steps``; extra command-line options go in ``add_method_arguments``. The runner's
``--method`` choices, the tests (every method is smoke-run and resumed bit for bit) and the suite
scripts pick the new name up from ``METHODS``.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gameopt

#: Methods whose discriminator loss carries gradient penalties (see ``GameStep``).
PENALISED = ("r3gan", "consensus_r1")

#: ``name -> builder(G, D, args)``, in registration order; see :func:`register`.
METHODS: dict[str, Callable[[nn.Module, nn.Module, argparse.Namespace], Any]] = {}

#: Per-method defaults of the optimiser settings (overridden by the command line). Every method
#: shares DCGAN's Adam 2e-4, so runs differ only in the method; the consensus paper's CIFAR-10
#: setting is ``--optim rmsprop --lr 1e-4 --gamma 10``.
DEFAULTS: dict[str, dict[str, Any]] = {}

GameOptimizerFactory = Callable[
    [type[torch.optim.Optimizer], Any, Any, dict[str, Any], argparse.Namespace], gameopt.GameOptimizer
]


def register(
    name: str,
    builder: Callable[[nn.Module, nn.Module, argparse.Namespace], Any],
    *,
    optim: str = "adam",
    lr: float = 2e-4,
) -> None:
    """Make ``--method name`` build ``builder(G, D, args)``, with default base optimiser and lr."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = builder
    DEFAULTS[name] = {"optim": optim, "lr": lr}


def game_optimizer(
    factory: GameOptimizerFactory, zero_sum: bool = False,
) -> Callable[[nn.Module, nn.Module, argparse.Namespace], "GameStep"]:
    """A builder for a method that is one gameopt optimiser over both players.

    ``factory(base, gen_params, disc_params, base_kwargs, args)`` returns the optimiser; the
    players, the loss, the primal-dual term (``--pd``) and checkpoints are handled by :class:`GameStep`.
    ``zero_sum``: train on the minimax loss ``(-disc_loss, disc_loss)`` instead of the
    non-saturating pair (for optimisers defined for zero-sum games only, such as CGD).
    """
    return lambda G, D, args: GameStep(G, D, args, factory, zero_sum=zero_sum)


def add_method_arguments(ap: argparse.ArgumentParser) -> None:
    """Command-line options of the methods (``None`` = the method's default, see ``DEFAULTS``)."""
    g = ap.add_argument_group("method hyper-parameters")
    g.add_argument("--optim", choices=["adam", "rmsprop", "sgd"], default=None,
                   help="base optimiser (default adam)")
    g.add_argument("--lr", type=float, default=None, help="learning rate of both players (default per method)")
    g.add_argument("--lr-g", type=float, default=None, help="generator's learning rate (default --lr)")
    g.add_argument("--lr-d", type=float, default=None, help="discriminator's learning rate (default --lr)")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    g.add_argument("--gamma", type=float, default=1.0,
                   help="consensus: weight of grad(1/2||v||^2) (the paper's 10 failed on stacked digits with Adam)")
    g.add_argument("--smoothing", action="store_true", help="consensus: regulariser on D only")
    g.add_argument("--d-batch", choices=["separate", "joint"], default="separate",
                   help="real and fake through D as two batches (DCGAN's practice; with batch norm in D each "
                        "is normalised by its own statistics) or as one concatenated batch")
    g.add_argument("--disc-steps", type=int, default=1, help="altga / primal_dual / lookahead: D steps per round")
    g.add_argument("--gen-steps", type=int, default=1,
                   help="altga / primal_dual / lookahead: G steps per round, each on a fresh evaluation (2 in "
                        "DCGAN-tensorflow, the code of PacGAN's standard-size stacked-MNIST runs)")
    g.add_argument("--divergence", default="js", help="primal_dual: Table 1 variant (js, kl, wgan, ...)")
    g.add_argument("--alpha", type=float, default=1.0, help="primal_dual: dual step size alpha")
    g.add_argument("--bandwidth", type=float, default=None,
                   help="primal_dual: kernel sigma (default: pixels sqrt(number of pixels) / 2; "
                        "features: the median distance between real samples' features)")
    g.add_argument("--pd-features", choices=["pixels", "classifier", "projection"], default="pixels",
                   help="primal_dual: kernel space (eq. 17): pixels, the evaluation classifier's "
                        "features (MNIST games), or a fixed random projection to 64 dims")
    g.add_argument("--pd-gen-loss", choices=["nonsat", "algorithm1"], default="nonsat",
                   help="primal_dual: generator loss beside the term: the non-saturating loss, or "
                        "Algorithm 1's f1(D(G(z))) (saturating for js)")
    g.add_argument("--lam", type=float, default=1.0, help="sga: weight lam of the adjustment A^T xi")
    g.add_argument("--every", type=int, default=4, help="consensus_lazy: regularise every k-th step (scaled by k)")
    g.add_argument("--penalty-gamma", type=float, default=1.0,
                   help="r3gan / consensus_r1: weight of the R1 (and R2) gradient penalties")
    g.add_argument("--la-k", type=int, default=5, help="lookahead*: inner steps per synchronisation")
    g.add_argument("--la-alpha", type=float, default=0.5, help="lookahead*: slow-weight step")
    g.add_argument("--C", type=float, default=1e-4, help="dual_*: weight decay C of the discriminator loss")
    g.add_argument("--delta", type=float, default=1e-3, help="dual_*: initial trust-region radius")


def _base(args: argparse.Namespace) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    name = args.optim or DEFAULTS[args.method]["optim"]
    lr = args.lr if args.lr is not None else DEFAULTS[args.method]["lr"]
    if name == "adam":
        return torch.optim.Adam, {"lr": lr, "betas": (args.beta1, args.beta2)}
    if name == "rmsprop":
        return torch.optim.RMSprop, {"lr": lr}
    return torch.optim.SGD, {"lr": lr}


def player_params(G: nn.Module, D: nn.Module, args: argparse.Namespace) -> tuple[Any, Any]:
    """``(gen_params, disc_params)`` for a game optimiser: parameter-group dicts carrying
    ``--lr-g`` / ``--lr-d`` where given (per-player learning rates, as PacGAN's D 2e-4 / G 1e-4)."""
    lr_g, lr_d = getattr(args, "lr_g", None), getattr(args, "lr_d", None)
    gp = [{"params": list(G.parameters()), "lr": lr_g}] if lr_g is not None else G.parameters()
    dp = [{"params": list(D.parameters()), "lr": lr_d}] if lr_d is not None else D.parameters()
    return gp, dp


def gan_losses(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Non-saturating GAN losses (gen_loss, disc_loss) from raw logits; one D(fake) pass serves both."""
    gen_loss = F.softplus(-d_fake).mean()
    disc_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    return gen_loss, disc_loss


class GameStep:
    """A method that is one gameopt optimiser over both players (simga, altga, consensus, ...),
    with the primal-dual term of Chen et al. added to the generator's loss when
    ``args.method == "primal_dual"``."""

    def __init__(
        self, G: nn.Module, D: nn.Module, args: argparse.Namespace, factory: GameOptimizerFactory,
        zero_sum: bool = False,
    ) -> None:
        self.G, self.D, self.method = G, D, args.method
        self.zero_sum = zero_sum
        base, kw = _base(args)
        self.opt: gameopt.GameOptimizer = factory(base, *player_params(G, D, args), kw, args)
        self.reg: gameopt.PrimalDualRegularizer | None = None
        if args.method == "primal_dual":
            feature_map = getattr(args, "pd_feature_map", None)
            if args.bandwidth is not None:
                sigma = args.bandwidth
            elif feature_map is None:
                sigma = 0.5 * args.image_numel**0.5
            else:
                raise ValueError("primal_dual in a feature space needs --bandwidth (the runner sets one)")
            self.reg = gameopt.PrimalDualRegularizer(
                args.divergence, alpha=args.alpha, bandwidth=sigma, feature_map=feature_map)
            self.reg.attach(self.opt)
            self.pd_gen_loss = args.pd_gen_loss
        # gradient penalties on D, by method: r3gan (with the relativistic loss) and consensus_r1
        gamma = getattr(args, "penalty_gamma", 1.0)
        self.relativistic = args.method == "r3gan"
        self.joint_d_batch = getattr(args, "d_batch", "separate") == "joint"
        self.penalties = {"r1": gameopt.GradientPenalty("r1", gamma=gamma)} if args.method in PENALISED else {}
        if self.relativistic:
            self.penalties["r2"] = gameopt.GradientPenalty("r2", gamma=gamma)

    def _closure(self, real: Tensor, z: Tensor) -> Callable[[], tuple[Tensor, Tensor]]:
        def losses() -> tuple[Tensor, Tensor]:
            fake = self.G(z)
            if self.joint_d_batch:
                d_fake, d_real = self.D(torch.cat([fake, real])).flatten().split([len(fake), len(real)])
            else:
                d_fake, d_real = self.D(fake).flatten(), self.D(real).flatten()
            if self.penalties:
                gen_loss, disc_loss = (gameopt.relativistic_losses if self.relativistic else gan_losses)(d_real, d_fake)
                disc_loss = disc_loss + self.penalties["r1"](self.D, real=real)
                if "r2" in self.penalties:
                    disc_loss = disc_loss + self.penalties["r2"](self.D, fake=fake)
                return gen_loss, disc_loss
            if self.reg is None:
                gen_loss, disc_loss = gan_losses(d_real, d_fake)
                return (-disc_loss, disc_loss) if self.zero_sum else (gen_loss, disc_loss)
            div = self.reg.divergence
            disc_loss = div.discriminator_loss(d_real, d_fake)
            gen_loss = gan_losses(d_real, d_fake)[0] if self.pd_gen_loss == "nonsat" else div.generator_loss(d_fake)
            # the term's gradient reaches only fake; D(real) is a constant for it
            return gen_loss + self.reg(real.flatten(1), fake.flatten(1), d_real.detach()), disc_loss

        return losses

    def step(self, real: Tensor, z: Tensor) -> dict[str, Tensor]:
        gen_loss, disc_loss = self.opt.step(self._closure(real, z))
        out = {"gen_loss": gen_loss.detach(), "disc_loss": disc_loss.detach()}
        if isinstance(self.opt, gameopt.ConsensusOptimizer) and self.opt.stats is not None:
            stats = self.opt.stats
            out["consensus_loss"] = stats.consensus_loss.detach()
            # how many times the regulariser outweighs the game in each player's gradient
            gammas = {g["player"]: g["gamma"] for g in self.opt.param_groups}   # one group per player here
            if any(gammas.values()):
                for player, v_sq in stats.grad_sq_norm.items():
                    ratio = gammas[player] * stats.reg_grad_sq_norm[player].sqrt() / v_sq.sqrt().clamp_min(1e-30)
                    out[f"reg_ratio_{player}"] = ratio.detach()
        return out

    @property
    def skipped_steps(self) -> int:
        return self.opt.skipped_steps

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "reg": None if self.reg is None else self.reg.state_dict(),
                "penalties": {k: p.state_dict() for k, p in self.penalties.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        if self.reg is not None:
            self.reg.load_state_dict(state["reg"])
        for k, p in self.penalties.items():
            p.load_state_dict(state["penalties"][k])


class DualStep:
    """dual_score / dual_cost: a trust-region dual discriminator step, then a generator step."""

    def __init__(self, G: nn.Module, D: nn.Module, args: argparse.Namespace) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
            raise ValueError(
                f"{args.method} needs a discriminator that scores samples independently; "
                "batch norm couples them: use --model dcgan or conv4 (no batch norm)"
            )
        if getattr(args, "d_batch", "separate") != "separate":
            raise ValueError(f"{args.method} scores each sample on its own: --d-batch joint does not apply, drop it")
        self.G, self.D = G, D
        base, kw = _base(args)
        if getattr(args, "lr_g", None) is not None:
            kw = kw | {"lr": args.lr_g}
        self.g_opt = base(G.parameters(), **kw)
        self.d_step = gameopt.TrustRegionDualDiscriminator(
            D, model=args.method.removeprefix("dual_"), C=args.C, delta=args.delta)
        self.skipped_steps = 0

    def step(self, real: Tensor, z: Tensor) -> dict[str, Tensor]:
        fake = self.G(z)
        stats = self.d_step.step(real, fake.detach())
        gen_loss = self.d_step.generator_loss(real, fake)
        self.g_opt.zero_grad(set_to_none=True)
        gen_loss.backward()
        grads = [p.grad for p in self.G.parameters() if p.grad is not None]
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):   # one host sync
            self.g_opt.step()
        else:
            self.skipped_steps += 1
        d_loss = stats.loss_after if stats.accepted else stats.loss_before  # f(w) incl. C/2 ||w||^2
        return {"gen_loss": gen_loss.detach(), "disc_loss": torch.tensor(d_loss),
                "delta": torch.tensor(stats.delta), "accepted": torch.tensor(float(stats.accepted))}

    def state_dict(self) -> dict[str, Any]:
        return {"g_opt": self.g_opt.state_dict(), "d_step": self.d_step.state_dict(),
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_step.load_state_dict(state["d_step"])
        self.skipped_steps = int(state["skipped_steps"])


def build_method(G: nn.Module, D: nn.Module, args: argparse.Namespace) -> Any:
    """The method object named by ``args.method`` for the players G and D."""
    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; use one of {tuple(METHODS)}")
    return METHODS[args.method](G, D, args)


#: the methods built on gameopt.AlternatingOptimizer: the only ones that take --disc-steps / --gen-steps
ALTERNATING_METHODS = ("altga", "primal_dual", "lookahead")

register("simga", game_optimizer(lambda base, gp, dp, kw, args: gameopt.SimultaneousOptimizer(base, gp, dp, **kw)))
register("altga", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.AlternatingOptimizer(
        base, gp, dp, disc_steps=args.disc_steps, gen_steps=args.gen_steps, **kw)))
register("consensus", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.ConsensusOptimizer(
        base, gp, dp, gamma=args.gamma, smoothing=args.smoothing, **kw)))
# Algorithm 1 of Chen et al.: alternating steps, the term joins the generator's loss (GameStep)
register("primal_dual", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.AlternatingOptimizer(
        base, gp, dp, disc_steps=args.disc_steps, gen_steps=args.gen_steps, **kw)))
register("dual_score", DualStep)
register("dual_cost", DualStep)
register("extragradient", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.ExtragradientOptimizer(base, gp, dp, **kw)))
register("optimistic", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.OptimisticOptimizer(base, gp, dp, **kw)))
register("sga", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.SGAOptimizer(base, gp, dp, lam=args.lam, **kw)))
register("lookahead", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.LookaheadMinmax(
        gameopt.AlternatingOptimizer(base, gp, dp, disc_steps=args.disc_steps, gen_steps=args.gen_steps, **kw),
        k=args.la_k, alpha=args.la_alpha)))
register("lookahead_eg", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.LookaheadMinmax(
        gameopt.ExtragradientOptimizer(base, gp, dp, **kw), k=args.la_k, alpha=args.la_alpha)))
register("cgd", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.CompetitiveOptimizer(gp, dp, lr=kw["lr"]), zero_sum=True))
register("acgd", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.CompetitiveOptimizer(gp, dp, lr=kw["lr"], adaptive=True), zero_sum=True))
register("consensus_lazy", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.ConsensusOptimizer(
        base, gp, dp, gamma=args.gamma, smoothing=args.smoothing, every=args.every, **kw)))
register("r3gan", game_optimizer(lambda base, gp, dp, kw, args: gameopt.SimultaneousOptimizer(base, gp, dp, **kw)))
register("consensus_r1", game_optimizer(
    lambda base, gp, dp, kw, args: gameopt.ConsensusOptimizer(
        base, gp, dp, gamma=args.gamma, smoothing=args.smoothing, **kw)))
