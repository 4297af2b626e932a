"""What every Dualing-GAN discriminator step shares, and the factory that picks one by name.

Sign convention (gameopt: every player minimises its own loss). For score function
F(w, x) (a logit) and a batch of n real x_i and n fake y_j the discriminator minimises

    f(w) = C/2 ||w||^2 + 1/(2n) sum_i softplus(-F(w, x_i)) + 1/(2n) sum_j softplus(F(w, y_j)).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from ..distributed import check_distributed, check_same_shapes, gather_rows
from ..errors import GameInputError
from ..solvers._common import Checks, check_finite, check_positive, softplus_exact
from .radius import RadiusControl

__all__ = [
    "TrustRegionDualDiscriminator",
    "DualStepStats",
    "DualSolverWarning",
    "DualSolverError",
    "check_batch",
]


class DualSolverWarning(RuntimeWarning):
    """A step failed (dual solver status, or non-finite scores, kernel or step); it was skipped."""


class DualSolverError(RuntimeError):
    """Raised instead of :class:`DualSolverWarning` when ``on_failure="raise"``."""


class StepFailed(Exception):
    """Internal: a step cannot be taken; the message says why (turned into the on_failure policy)."""


@dataclass
class DualStepStats:
    """What one discriminator step did.

    Args:
        model: the ``model=`` name (``"linear"``, ``"cost"``, ``"score"``).
        accepted: whether the step was taken (the trust-region test passed).
        rho: the acceptance ratio (1 for the exact linear solve).
        delta: the radius used.
        next_delta: the radius for the next step.
        loss_before: f at the old parameters on this batch.
        loss_after: f(w + s) on this batch, even when the step was rejected.
        gap: duality gap of the solve (default 0).
        lam: (n,) dual variables of the real samples (None for the cost model).
        mu: (n,) dual variables of the fake samples (None for the cost model).
        solver_failed: the step was skipped (see :class:`DualSolverWarning`).
        predicted_decrease: the local model's decrease of f for the proposed step.
        step_norm: ``||s||`` of the proposed step.
        dual_value: the dual objective at the solution (NaN when no dual was solved).
        nu: the multiplier of the trust-region constraint (NaN when not applicable).
        iterations: the dual solver's iterations.
        solver_status: the solver's message when the step failed, else None.
        retries: re-solves with the shrunk radius after rejected steps in this call (``max_retries``).
    """

    model: str
    accepted: bool
    rho: float
    delta: float
    next_delta: float
    loss_before: float
    loss_after: float
    predicted_decrease: float
    step_norm: float
    gap: float = 0.0
    dual_value: float = math.nan
    nu: float = math.nan
    iterations: int = 0
    solver_failed: bool = False
    solver_status: str | None = None
    retries: int = 0
    lam: Tensor | None = field(default=None, repr=False)
    mu: Tensor | None = field(default=None, repr=False)


def check_batch(real: Tensor, fake: Tensor, checks: Checks | None = None) -> None:
    """GameInputError unless real and fake are tensors of one sample shape holding the same
    number n >= 1 of finite samples.

    With ``checks``, the finiteness of batches on a device is read later, with the step's
    first read (no sync of its own); the types and shapes are checked at once.
    """
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, Tensor):
            raise GameInputError(f"the {name} batch must be a tensor, got {type(t).__name__}; "
                                 "convert it with torch.as_tensor(...)")
    if real.shape[1:] != fake.shape[1:]:
        raise GameInputError(
            f"real and fake samples must have the same shape; got real {tuple(real.shape)}, "
            f"fake {tuple(fake.shape)} (the first dimension is the batch)"
        )
    if real.shape[0] != fake.shape[0]:
        raise GameInputError(
            f"real and fake batches must have the same number of samples n (the dual pairs n real with n fake); "
            f"got {real.shape[0]} real and {fake.shape[0]} fake. Draw as many generator samples as real ones."
        )
    if real.shape[0] == 0:
        raise GameInputError("empty batch: need at least one real and one fake sample; pass non-empty batches")
    check_finite("real batch", real, checks=checks)
    check_finite("fake batch", fake, checks=checks)


#: Old positional order of the factory's arguments after ``module, model``.
_POSITIONAL = ("C", "delta", "solver")
_RADIUS_ARGS = tuple(RadiusControl.__dataclass_fields__)


class _ChosenByModel(type):
    """Calling :class:`TrustRegionDualDiscriminator` itself builds the class its ``model=`` names."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_is_factory", False):
            return cls._from_model(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class TrustRegionDualDiscriminator(metaclass=_ChosenByModel):
    """Dualing-GAN discriminator step: replaces the discriminator's optimiser in a GAN loop.

    ``TrustRegionDualDiscriminator(module, model="score", C=1e-4, delta=1e-3, solver="torch", ...)``
    returns an instance of the class that implements ``model`` (all are subclasses, so
    ``isinstance(d, TrustRegionDualDiscriminator)`` holds):

    * ``"linear"``: :class:`~gameopt.dual.LinearDualDiscriminator`, F(w, x) = w^T phi(x);
      the dual is solved exactly per minibatch (Claim 1).
    * ``"cost"``: :class:`~gameopt.dual.CostLinearisedDiscriminator`, a normalised
      gradient step of length sqrt(2 Delta).
    * ``"score"``: :class:`~gameopt.dual.ScoreLinearisedDiscriminator`, the trust-region
      dual on the kernel K = J J^T of per-sample score gradients.

    Keyword arguments a model does not use (``delta`` and the radius options for
    ``"linear"``; ``solver``, ``per_sample``, ``jacobian_budget_bytes`` for ``"cost"``)
    are ignored. The radius options ``accept_threshold``, ``shrink_below``,
    ``grow_above``, ``shrink_factor``, ``grow_factor``, ``min_delta``, ``max_delta`` form
    a :class:`~gameopt.dual.RadiusControl`. See each class for its arguments.

    Every model offers :meth:`step`, :meth:`generator_loss`, :meth:`loss`, :meth:`score`,
    :meth:`parameters`, :meth:`monitor_stats` and :meth:`state_dict` /
    :meth:`load_state_dict`.

    Failure policy: a step that cannot be taken (a dual solve that fails, non-finite
    scores, kernel or step: the discriminator has diverged) leaves the discriminator
    unchanged, parameters and buffers, and warns with :class:`DualSolverWarning` with
    ``stats.solver_failed`` set (``on_failure="warn"``), or raises
    :class:`DualSolverError` (``on_failure="raise"``). Bad *input* (batches of different
    sizes, NaN in the real or fake batch, a module the model cannot handle) raises
    :class:`~gameopt.GameInputError` before any forward pass.

    Distributed (``distributed=True``, under ``torch.distributed``): each rank passes its
    own equal share of the batch and every rank makes exactly the full-batch step, over
    ``process_group`` (default: the world). See the classes for how each model reduces.

    Sign convention: the discriminator minimises its loss ``f(w)`` (:meth:`loss`); the
    generator minimises :meth:`generator_loss`.
    """

    _is_factory: ClassVar[bool] = True
    _classes: ClassVar[dict[str, type[TrustRegionDualDiscriminator]]] = {}
    #: The ``model=`` name of a concrete class.
    model: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model" in cls.__dict__:
            TrustRegionDualDiscriminator._classes[cls.model] = cls

    @classmethod
    def _from_model(cls, module: Any, model: str = "score", *args: Any, **kwargs: Any) -> TrustRegionDualDiscriminator:
        if model not in cls._classes:
            raise GameInputError(f"unknown model {model!r}; use one of {tuple(cls._classes)}")
        if len(args) > len(_POSITIONAL):
            raise GameInputError(f"TrustRegionDualDiscriminator takes at most {2 + len(_POSITIONAL)} positional arguments; "
                                 "pass the others by keyword")
        for name, value in zip(_POSITIONAL, args):
            if name in kwargs:
                raise GameInputError(f"TrustRegionDualDiscriminator got multiple values for argument {name!r}; pass it once")
            kwargs[name] = value
        target = cls._classes[model]
        accepted = inspect.signature(target.__init__).parameters
        radius = {k: kwargs.pop(k) for k in _RADIUS_ARGS if k in kwargs}
        if radius:
            control = RadiusControl(**radius)  # validated for every model, as before the split
            if "radius" in accepted:
                kwargs["radius"] = control
        known = set(accepted) | {"C", "delta", "solver", "solver_options", "max_retries", "jacobian_budget_bytes",
                                 "per_sample", "on_failure", "distributed", "process_group"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise GameInputError(f"TrustRegionDualDiscriminator got unexpected keyword arguments {unknown}; model "
                                 f"{model!r} accepts {sorted(known - {'self', 'module'})}")
        return target(module, **{k: v for k, v in kwargs.items() if k in accepted})

    def __init__(
        self,
        module: nn.Module | Callable[[Tensor], Tensor],
        C: float = 1e-4,
        *,
        on_failure: str = "warn",
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        check_positive("C", C)
        if on_failure not in ("warn", "raise"):
            raise GameInputError(f"on_failure must be 'warn' or 'raise', got {on_failure!r}")
        check_distributed(type(self).__name__, distributed)
        self.module = module
        self.C = float(C)
        self.on_failure = on_failure
        self.distributed = bool(distributed)
        self.process_group = process_group
        self.last_stats: DualStepStats | None = None

    # ------------------------------------------------ what each model provides
    def parameters(self) -> list[Tensor]:
        """The discriminator parameters w this object updates.

        Raises:
            NotImplementedError: on the base class (every model implements it).
        """
        raise NotImplementedError

    def score(self, x: Tensor) -> Tensor:
        """F(w, x): logits of shape (n,) for a batch ``x`` of n samples (``D(x) = sigmoid(F)``).

        Raises:
            NotImplementedError: on the base class (every model implements it).
        """
        raise NotImplementedError

    def generator_loss(self, real: Tensor | None, fake: Tensor, resolve: bool = False) -> Tensor:
        """Loss the generator minimises (a 0-d tensor, differentiable w.r.t. ``fake``).

        Args:
            real: the real batch (n samples), used by ``"linear"``; the others ignore it.
            fake: the generated batch (n samples), *not* detached.
            resolve: ``"linear"`` only: solve the dual again instead of reusing the last
                step's dual variables (default False).

        Raises:
            NotImplementedError: on the base class (every model implements it).
        """
        raise NotImplementedError

    def _step(self, real: Tensor, fake: Tensor) -> DualStepStats:
        """The model's update on a checked (and, when distributed, shared) batch."""
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        """The model's own entries of :meth:`state_dict`."""
        return {}

    def _check_state(self, state: Mapping[str, Any]) -> Callable[[], None]:
        """Validate the model's own entries of ``state``; return what loads them (nothing changes before)."""
        return lambda: None

    def _check_module(self) -> None:
        """Refuse a module the model cannot step, before any forward pass (default: accept)."""

    # ------------------------------------------------------------ shared API
    @property
    def delta(self) -> float:
        """Trust-region radius Delta (``inf`` for the exact linear solve)."""
        return math.inf

    def loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """The discriminator's loss f(w) on this batch (what :meth:`step` decreases), a 0-d tensor.

        Args:
            real: n real samples.
            fake: n generated samples.
        """
        return self._loss_from_scores(self.score(real), self.score(fake), self._sq_norm())

    @torch.no_grad()
    def step(self, real: Tensor, fake: Tensor) -> DualStepStats:
        """One discriminator update on a batch of n real and n fake samples.

        Updates the parameters in place (no autograd graph), returns the stats (also
        kept in ``last_stats``). Pass ``fake.detach()``. A step that is skipped or
        rejected leaves the module's parameters and buffers as they were.

        Raises:
            GameInputError: batches of different sizes, empty, or holding NaN/inf (every
                rank raises when distributed), or a module the model cannot step (e.g. batch
                norm in training mode for ``"score"``), before any parameter changes (before any
                forward pass for CPU batches; on a device the NaN check is read together with
                the step's first read, so that it costs no sync of its own).
            DualSolverError: a failed step with ``on_failure="raise"``.
        """
        if self.distributed:
            # Collectives first, checks after, on what every rank sees: a bad batch on one
            # rank then raises on every rank instead of leaving the others waiting.
            check_same_shapes({"real": real, "fake": fake}, self.process_group)
            real, fake = self._share_batch(real, fake)
        self._batch_checks = Checks()  # NaN in a batch on a device: read with the step's first read
        check_batch(real, fake, self._batch_checks)
        self._check_input_dtype(torch.promote_types(real.dtype, fake.dtype), real.device, "real and fake batches")
        self._check_module()
        buffers = self._save_buffers()
        try:
            stats = self._step(real, fake)
        except BaseException:
            self._restore_buffers(buffers)
            raise
        if stats.solver_failed or not stats.accepted:
            self._restore_buffers(buffers)
        if self.distributed:
            self._sync_replicas()
        self.last_stats = stats
        return stats

    def monitor_stats(self) -> dict[str, Any]:
        """Radius, acceptance ratio, duality gap and dual variables of the last step, for :class:`gameopt.Monitor`."""
        out: dict[str, Any] = {"delta": self.delta}
        st = self.last_stats
        if st is not None:
            out.update(rho=st.rho, gap=st.gap, accepted=float(st.accepted), step_norm=st.step_norm,
                       dual_value=st.dual_value, solver_failed=float(st.solver_failed))
            if st.lam is not None:
                out["lam"] = st.lam
            if st.mu is not None:
                out["mu"] = st.mu
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model name, C and the model's own state (radius, or the linear weights).

        The network's own parameters live in ``module`` (save ``module.state_dict()`` too).
        """
        return {"model": self.model, "C": self.C, **self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, all or nothing.

        Everything is validated before anything changes: the model name and C must match
        this object's (C is part of the loss the radius and weights were tuned for;
        construct with the checkpoint's C to resume it, or remove ``"C"`` from the state
        to keep this object's), and each model checks its own entries.

        Raises:
            GameInputError: not a state of this model, a different C, a missing or
                invalid radius, or weights of the wrong shape or with NaN/inf.
        """
        if not isinstance(state, Mapping):
            raise GameInputError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        model = state.get("model", self.model)
        if model != self.model:
            raise GameInputError(f"state is for model {model!r}, this discriminator uses {self.model!r}")
        if "C" in state:
            C = state["C"]
            if not isinstance(C, (int, float)) or isinstance(C, bool) or float(C) != self.C:
                raise GameInputError(
                    f"state has C={C!r}, this discriminator has C={self.C!r}: construct it with the checkpoint's C "
                    "to resume, or delete state['C'] to load the rest under this C"
                )
        load = self._check_state(state)
        load()

    # ------------------------------------------------------------- helpers
    def _batch_ok(self) -> Tensor | None:
        """The deferred batch checks as one 0-d bool device tensor (None when nothing is deferred)."""
        checks = getattr(self, "_batch_checks", None)
        if checks is None or not checks.flags:
            return None
        return torch.stack(checks.flags).all()

    def _raise_bad_batch(self) -> None:
        """Raise the deferred batch check's GameInputError (its flag read False)."""
        checks, self._batch_checks = self._batch_checks, None
        checks.run()

    def _check_input_dtype(self, dtype: torch.dtype, device: torch.device, what: str) -> None:
        """GameInputError when a batch of ``dtype`` cannot go through the module (models that differentiate it)."""

    def _fail(self, msg: str, stats: DualStepStats) -> DualStepStats:
        if self.on_failure == "raise":
            raise DualSolverError(msg)
        warnings.warn(msg + "; the discriminator was left unchanged", DualSolverWarning, stacklevel=4)
        stats.solver_failed = True
        stats.solver_status = msg
        stats.accepted = False
        return stats

    def _sq_norm(self) -> Tensor:
        ps = self.parameters()
        if not ps:
            return torch.zeros((), dtype=torch.float64)
        return torch.stack([torch.linalg.vector_norm(p.detach(), dtype=torch.float64) for p in ps]).square().sum()

    def _loss_from_scores(self, f_real: Tensor, f_fake: Tensor, sq_norm: Tensor) -> Tensor:
        n = f_real.shape[0]
        data = (softplus_exact(-f_real.double()).sum() + softplus_exact(f_fake.double()).sum()) / (2 * n)
        return 0.5 * self.C * sq_norm.to(data.device) + data

    def _share_batch(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Distributed: the full batch on every rank (models whose dual couples all samples)."""
        return gather_rows(real.detach(), self.process_group), gather_rows(fake.detach(), self.process_group)

    def _sync_replicas(self) -> None:
        """Distributed: copy the group's first rank's parameters (and radius) to every rank.

        Every rank made the same full-batch step; the broadcast guards against drift by rounding.
        """
        import torch.distributed as dist

        ps = self.parameters()
        device = ps[0].device if ps else None
        flat = torch.cat([p.detach().reshape(-1).double() for p in ps]
                         + [torch.tensor([self._radius_value()], dtype=torch.float64, device=device)])
        src = 0 if self.process_group is None else dist.get_global_rank(self.process_group, 0)
        dist.broadcast(flat, src=src, group=self.process_group)
        offset = 0
        for p in ps:
            p.copy_(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        self._set_radius_value(float(flat[-1]))

    def _radius_value(self) -> float:
        return math.inf

    def _set_radius_value(self, value: float) -> None:
        pass

    def _save_buffers(self) -> list[tuple[Tensor, Tensor]]:
        if not isinstance(self.module, nn.Module):
            return []
        return [(b, b.clone()) for b in self.module.buffers()]

    @staticmethod
    def _restore_buffers(saved: list[tuple[Tensor, Tensor]]) -> None:
        for b, copy in saved:
            b.copy_(copy)
