"""Gradient penalties on the discriminator: R1, R2 and WGAN-GP, optionally lazy.

A gradient penalty is a term of the discriminator's loss (gameopt's sign convention: both
players minimise; the penalty is *added* to ``disc_loss``) that pushes the norm of
``grad_x D(x)`` towards zero (R1 on real samples, R2 on generated ones; Mescheder, Geiger &
Nowozin 2018) or towards one (WGAN-GP on interpolates; Gulrajani et al. 2017). The input
gradient is taken with ``create_graph=True``, so the penalty's gradient with respect to D's
parameters is a second derivative; inputs are detached first, so no gradient reaches the
generator through the penalty.

Lazy regularisation (Karras et al. 2020, StyleGAN2): with ``every=k`` the term is computed on
calls ``0, k, 2k, ...`` and multiplied by ``k``, so its average over ``k`` calls equals the
eager penalty; :func:`lazy_adam_settings` gives StyleGAN2's matching correction of Adam's
learning rate and betas.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .errors import GameInputError

__all__ = ["GradientPenalty", "lazy_adam_settings"]

# Autograd nodes that raise when the penalty's gradient is back-propagated: an op whose
# derivative is not implemented, a once_differentiable backward, torch.compile's backward.
_NOT_TWICE_DIFFERENTIABLE = ("torch::autograd::NotImplemented", "torch::autograd::Error")
_COMPILED_NODE = "CompiledFunctionBackward"


class _Kind:
    """One penalty: which samples it is evaluated at and what it does with the gradient norm."""

    name = ""
    needs: tuple[str, ...] = ()

    def points(self, real: Tensor | None, fake: Tensor | None, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def value(self, sq_norms: Tensor, gamma: float) -> Tensor:
        raise NotImplementedError


class _R1(_Kind):
    name, needs = "r1", ("real",)

    def points(self, real, fake, generator):
        return real

    def value(self, sq_norms, gamma):
        return 0.5 * gamma * sq_norms.mean()


class _R2(_R1):
    name, needs = "r2", ("fake",)

    def points(self, real, fake, generator):
        return fake


class _WGANGP(_Kind):
    name, needs = "wgan-gp", ("real", "fake")

    def points(self, real, fake, generator):
        eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
        return eps * real + (1 - eps) * fake

    def value(self, sq_norms, gamma):
        # sqrt through vector_norm's rule would be inf at 0; clamp keeps a zero gradient finite
        return gamma * (sq_norms.clamp_min(1e-30).sqrt() - 1).pow(2).mean()


_KINDS: dict[str, _Kind] = {k.name: k for k in (_R1(), _R2(), _WGANGP())}


def _check_gamma(gamma: object) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(float(gamma)) \
            or float(gamma) < 0:
        raise GameInputError(
            f"gamma must be a finite number >= 0 (the penalty's weight, e.g. 10.0), got {gamma!r}"
        )
    return float(gamma)


def _check_every(every: object) -> int:
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or int(every) < 1:
        raise GameInputError(
            f"every must be an integer >= 1 (1: every call; StyleGAN2 uses 16), got {every!r}"
        )
    return int(every)


class GradientPenalty:
    """A gradient penalty on the discriminator, added to ``disc_loss``; optionally lazy.

    Usage::

        pen = gameopt.GradientPenalty("r1", gamma=10.0)       # "r1" | "r2" | "wgan-gp"
        disc_loss = disc_loss + pen(D, real=x)                # r2: fake=...; wgan-gp: both

    With ``g_i = grad_x D(x)_i`` for sample i (the norm runs over every non-batch dimension)
    and B samples:

    - ``"r1"``: ``gamma / 2 * mean_i ||g_i||^2`` at the real samples ``x = real``;
    - ``"r2"``: the same at the generated samples ``x = fake``;
    - ``"wgan-gp"``: ``gamma * mean_i (||g_i|| - 1)^2`` at ``x_i = eps_i real_i + (1 - eps_i) fake_i``,
      ``eps_i ~ U(0, 1)`` drawn per sample (from ``generator`` if given).

    The samples are detached, so the returned 0-d tensor's gradient reaches only D's parameters
    (a second derivative: ``create_graph=True``). It works in any torch loop and inside the
    discriminator's loss of every gameopt optimiser (with :class:`~gameopt.ConsensusOptimizer`
    the regulariser then differentiates it once more: third derivatives, exact). It is a
    per-sample mean, so under data parallelism with equal shares per rank the ranks' averaged
    gradients are those of the full batch.

    Lazy regularisation: with ``every=k`` the penalty is computed on calls ``0, k, 2k, ...``
    and multiplied by ``k``; on the other calls D is not run and a zero tensor (no graph) is
    returned. Every call counts, so with an optimiser that evaluates its closure twice per step
    (:class:`~gameopt.ExtragradientOptimizer`) ``every`` counts evaluations, not steps. The
    count is in :meth:`state_dict`. When the lazy penalty is its own optimiser step, as in
    StyleGAN2, correct Adam's settings with :func:`lazy_adam_settings`.

    Mixed precision: the squared norms and the returned value are float32 (float64 for float64
    inputs). Under float16 autocast with a ``torch.amp.GradScaler``, pass ``scaler=`` to the
    call: the input gradient is then computed from scores scaled by the scaler's scale (no
    float16 underflow) and unscaled in float32, and the returned penalty is *unscaled*: add it
    to ``disc_loss`` and scale the sum once, ``scaler.scale(disc_loss + pen(...)).backward()``.
    An overflowing scaled gradient makes the penalty infinite, so the scaler skips that step
    and lowers its scale, as for any overflow. bfloat16 needs no scaler.

    Args:
        kind: ``"r1"``, ``"r2"`` or ``"wgan-gp"``.
        gamma: the penalty's weight, a finite number >= 0 (default 10.0; R1 papers use 0.1-10
            depending on the data, WGAN-GP uses 10).
        every: compute the penalty every ``every`` calls, times ``every`` (default 1: every call).
        generator: the ``torch.Generator`` for WGAN-GP's interpolation weights (default: the
            global generator of the samples' device).

    Raises:
        GameInputError: an unknown ``kind``; ``gamma`` negative, NaN, Inf or not a number;
            ``every`` not an integer >= 1; ``generator`` not a ``torch.Generator``.
    """

    def __init__(self, kind: str, gamma: float = 10.0, every: int = 1,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(kind, str) or kind.lower() not in _KINDS:
            raise GameInputError(
                f"unknown gradient penalty {kind!r}: use one of {sorted(_KINDS)} "
                "(R1 + R2 together: two penalties, one on real= and one on fake=)"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise GameInputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self._kind = _KINDS[kind.lower()]
        self.gamma = _check_gamma(gamma)
        self.every = _check_every(every)
        self.generator = generator
        self.calls = 0

    @property
    def kind(self) -> str:
        """The penalty's name: ``"r1"``, ``"r2"`` or ``"wgan-gp"``."""
        return self._kind.name

    @property
    def computes_next(self) -> bool:
        """Whether the next call computes the penalty (``calls % every == 0``); for logging."""
        return self.calls % self.every == 0

    def __repr__(self) -> str:
        return f"GradientPenalty({self.kind!r}, gamma={self.gamma}, every={self.every})"

    def __call__(self, D: Callable[[Tensor], Tensor], real: Tensor | None = None, fake: Tensor | None = None,
                 *, scaler: Any = None) -> Tensor:
        """The penalty for one discriminator step, to add to ``disc_loss``.

        Args:
            D: the discriminator: any callable mapping a batch ``(B, ...)`` to scores of shape
                ``(B,)`` or ``(B, 1)`` (a module, a DDP-wrapped module, a function).
            real: real samples ``(B, ...)``; needed by ``"r1"`` and ``"wgan-gp"``.
            fake: generated samples ``(B, ...)``; needed by ``"r2"`` and ``"wgan-gp"`` (same
                shape as ``real``). Both are detached here.
            scaler: the ``torch.amp.GradScaler`` that will scale the discriminator's loss, for
                float16 (see the class docstring); ``None`` otherwise.

        Returns:
            A 0-d tensor: the penalty (times ``every`` on computing calls), float32 or float64,
            whose gradient reaches only D's parameters; a zero tensor without a graph on the
            calls that lazy regularisation skips.

        Raises:
            GameInputError: a sample the kind needs is missing, or one it does not use is given;
                samples that are not floating-point tensors with a batch dimension, or real and
                fake of different shapes for WGAN-GP; D's output not one score per sample, or
                not depending on its input; D not twice differentiable (``torch.compile``'d
                modules, fused attention kernels, ``once_differentiable`` functions); ``scaler``
                not a ``GradScaler``.
        """
        samples = self._check_samples(real, fake)
        if scaler is not None and not (hasattr(scaler, "get_scale") and hasattr(scaler, "is_enabled")):
            raise GameInputError(
                f"scaler must be the torch.amp.GradScaler that scales disc_loss, got {type(scaler).__name__}"
            )
        ref = samples[0]
        out_dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
        if self.calls % self.every != 0:
            self.calls += 1
            return torch.zeros((), dtype=out_dtype, device=ref.device)
        with torch.no_grad():
            x = self._kind.points(real, fake, self.generator).detach()
        x.requires_grad_(True)
        sq_norms = _squared_input_gradient_norms(D, x, scaler, out_dtype)
        self.calls += 1   # only now: a call refused above leaves the lazy schedule where it was
        return self._kind.value(sq_norms, self.gamma) * self.every

    def _check_samples(self, real: Tensor | None, fake: Tensor | None) -> list[Tensor]:
        given = {"real": real, "fake": fake}
        for name in ("real", "fake"):
            if name in self._kind.needs and given[name] is None:
                call = ", ".join(f"{n}=..." for n in self._kind.needs)
                raise GameInputError(
                    f"the {self.kind!r} penalty needs {name} samples: call pen(D, {call})"
                )
        for name in ("real", "fake"):
            if name not in self._kind.needs and given[name] is not None:
                other = "r2" if name == "fake" else "r1"
                raise GameInputError(
                    f"the {self.kind!r} penalty does not use {name} samples, but {name}= was given: "
                    f"drop it, or add a second GradientPenalty({other!r}) for the {name} samples"
                )
        samples = [given[n] for n in self._kind.needs]
        for name, t in zip(self._kind.needs, samples):
            if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 1 or t.shape[0] < 1:
                what = f"shape {tuple(t.shape)} dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                raise GameInputError(
                    f"{name} must be a floating-point tensor of samples (B, ...) with B >= 1, got {what}"
                )
        if len(samples) == 2 and samples[0].shape != samples[1].shape:
            raise GameInputError(
                f"{self.kind!r} interpolates real and fake samples, so they need the same shape; got "
                f"real {tuple(samples[0].shape)} and fake {tuple(samples[1].shape)}"
            )
        return samples

    def state_dict(self) -> dict[str, Any]:
        """The penalty's settings and its call count, for checkpoints.

        Returns:
            ``{"kind": str, "gamma": float, "every": int, "calls": int}``.
        """
        return {"kind": self.kind, "gamma": self.gamma, "every": self.every, "calls": self.calls}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s settings and call count, all or nothing.

        Args:
            state_dict: from :meth:`state_dict` of a penalty of the same kind.

        Raises:
            GameInputError: not a mapping with exactly those keys, another kind, a bad ``gamma``
                or ``every``, or ``calls`` not an integer >= 0; the penalty is then unchanged.
        """
        keys = {"kind", "gamma", "every", "calls"}
        if not isinstance(state_dict, Mapping) or set(state_dict) != keys:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise GameInputError(f"a GradientPenalty state_dict has the keys {sorted(keys)}, got {got}")
        if state_dict["kind"] != self.kind:
            raise GameInputError(
                f"this checkpoint is of a {state_dict['kind']!r} penalty, not {self.kind!r}: load it "
                f"into GradientPenalty({state_dict['kind']!r})"
            )
        gamma, every, calls = _check_gamma(state_dict["gamma"]), _check_every(state_dict["every"]), state_dict["calls"]
        if isinstance(calls, bool) or not isinstance(calls, numbers.Integral) or calls < 0:
            raise GameInputError(f"calls in a GradientPenalty state_dict must be an integer >= 0, got {calls!r}")
        self.gamma, self.every, self.calls = gamma, every, int(calls)


def _squared_input_gradient_norms(D: Callable[[Tensor], Tensor], x: Tensor, scaler: Any,
                                  out_dtype: torch.dtype) -> Tensor:
    """``||grad_x D(x)_i||^2`` per sample, shape (B,), in ``out_dtype``, differentiable in D's parameters."""
    batch = x.shape[0]
    scores = D(x)
    if not isinstance(scores, Tensor) or scores.shape not in ((batch,), (batch, 1)):
        what = f"shape {tuple(scores.shape)}" if isinstance(scores, Tensor) else type(scores).__name__
        raise GameInputError(
            f"D must return one score per sample, shape ({batch},) or ({batch}, 1), got {what}; "
            "reduce other dimensions inside D (e.g. a patch discriminator's scores: .mean((1, 2, 3)))"
        )
    if not scores.requires_grad:
        raise GameInputError(
            "D's scores do not depend on its input (no graph): do not call the penalty under "
            "torch.no_grad() or torch.inference_mode(), and do not detach inside D"
        )
    # The mean, not the sum, seeds the backward pass: a GradScaler's default scale (2**16)
    # times one per sample would overflow a float16 score's gradient.
    seed = scores.to(out_dtype).mean()
    scale = None
    if scaler is not None and scaler.is_enabled():
        # the scale as a device tensor (reading it would sync); a clone, since update() changes it in place
        get_async = getattr(scaler, "_get_scale_async", None)
        scale = get_async() if get_async is not None else None
        if scale is None:   # before the scaler's first scale(): its initial scale
            scale = torch.tensor(float(scaler.get_scale()))
        scale = scale.detach().to(device=seed.device, dtype=out_dtype).clone()
        seed = seed * scale
    elif scaler is None and scores.dtype == torch.float16:
        warnings.warn(
            "GradientPenalty: D's scores are float16 and no scaler= was given: the input gradient "
            "may underflow. Pass pen(D, ..., scaler=scaler) with the GradScaler that scales disc_loss",
            RuntimeWarning, stacklevel=3,
        )
    try:
        (grad,) = torch.autograd.grad(seed, x, create_graph=True, allow_unused=True)
    except RuntimeError as err:
        if any(m in str(err).lower() for m in ("aot_autograd", "donated buffer", _COMPILED_NODE.lower())):
            raise GameInputError(_COMPILED_FIX + f" ({err})") from err
        raise
    if grad is None:
        raise GameInputError(
            "D's scores do not depend on its input: the gradient penalty is only defined for a D "
            "that reads its input (check that D does not detach it)"
        )
    _check_twice_differentiable(grad)
    grad = grad.to(out_dtype) * (batch if scale is None else batch / scale)
    return grad.reshape(batch, -1).pow(2).sum(1)


_COMPILED_FIX = (
    "the gradient penalty needs second derivatives, but D was compiled with torch.compile, whose "
    "compiled backward (AOTAutograd) cannot be differentiated again. Pass the uncompiled module to "
    "the penalty (e.g. D._orig_mod of a compiled D; the plain loss may keep the compiled D), or "
    "train without the penalty"
)


def _check_twice_differentiable(grad: Tensor) -> None:
    """Raise now, not at the user's ``backward()``, if the input gradient cannot be differentiated."""
    seen: set[Any] = set()
    stack = [grad.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        name = fn.name()
        if name.startswith(_COMPILED_NODE):
            raise GameInputError(_COMPILED_FIX)
        if name in _NOT_TWICE_DIFFERENTIABLE:
            raise GameInputError(
                "the gradient penalty needs second derivatives, but an operation in D has no "
                f"derivative of its backward ({name}). Ways around it: for attention, run D inside "
                "torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH); for cuDNN RNNs, "
                "torch.backends.cudnn.flags(enabled=False); for a custom autograd.Function, a "
                "differentiable backward (no @once_differentiable)"
            )
        stack.extend(f for f, _ in fn.next_functions)


def lazy_adam_settings(lr: float, betas: tuple[float, float], every: int) -> dict[str, Any]:
    """StyleGAN2's correction of Adam's settings for a lazily regularised player.

    StyleGAN2 applies its lazy penalty as a separate optimiser step (``pen(D, real=x).backward();
    opt.step()`` on the computing calls, after the ordinary discriminator step), so the regularised
    player takes ``every + 1`` steps where it would take ``every``. It therefore multiplies the
    learning rate by ``c = every / (every + 1)`` and raises each beta to the power ``c``, so that
    the step size and the moments' time constants per unit of training stay those of the
    unregularised schedule. When the penalty is instead added to the same step's ``disc_loss``
    (``disc_loss + pen(D, real=x)``), the number of steps does not change and no correction is
    needed. With ``every=1`` the settings are ``(lr / 2, betas ** 0.5)``: StyleGAN2 uses the helper
    only with ``every > 1``.

    Usage::

        torch.optim.Adam(D.parameters(), **gameopt.lazy_adam_settings(2e-3, (0.0, 0.99), every=16))

    Args:
        lr: the learning rate you would use without lazy regularisation (> 0).
        betas: Adam's ``(beta1, beta2)``, each in ``[0, 1)``.
        every: the penalty's ``every``, an integer >= 1.

    Returns:
        ``{"lr": lr * c, "betas": (beta1 ** c, beta2 ** c)}``, keyword arguments for Adam (or a
        gameopt optimiser's discriminator param group).

    Raises:
        GameInputError: ``lr`` not a finite number > 0, a beta outside ``[0, 1)``, or a bad ``every``.
    """
    every = _check_every(every)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise GameInputError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(
            isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
        raise GameInputError(f"betas must be two numbers in [0, 1), e.g. (0.0, 0.99), got {betas!r}")
    c = every / (every + 1)
    return {"lr": lr * c, "betas": (float(betas[0]) ** c, float(betas[1]) ** c)}
