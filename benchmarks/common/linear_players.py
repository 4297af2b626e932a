"""The two discriminators the Dualing-GAN robustness studies compare, on one fixed feature map
phi (RBF features on the toy, frozen CNN features on MNIST), F(w, x) = w^T phi(x).

Both minimise f(w) = C/2 ||w||^2 + 1/2 mean softplus(-F(x)) + 1/2 mean softplus(F(G(z))) over a
minibatch of n real and n generated samples; they differ in how:
  * :class:`DualPlayer`: exactly, in the dual, on every minibatch (Claim 1 of the paper); the
    generator's loss is -g(lam*, mu*) = -min_w f, whose gradient in the samples is that of
    -1/2 mean softplus(F(w*, G(z))) (envelope theorem).
  * :class:`GradientPlayer`: the standard GAN, one Adam step on w (its own optimiser and
    momentum) per generator step; generator loss ``"minimax"`` -1/2 mean softplus(F(w, G(z)))
    (the dual's objective at the current w) or ``"nonsaturating"`` 1/2 mean softplus(-F(w, G(z))).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gameopt import TrustRegionDualDiscriminator

GAN_LOSSES = ("minimax", "nonsaturating")


class DualPlayer:
    """The exact linear dual on every minibatch (``TrustRegionDualDiscriminator(model="linear")``)."""

    def __init__(self, phi: nn.Module, C: float) -> None:
        self.D = TrustRegionDualDiscriminator(phi, model="linear", C=C)

    def step(self, real: Tensor, fake: Tensor) -> tuple[float, bool]:
        """Solve the dual on (real, fake); returns (dual value g, whether the solver failed)."""
        st = self.D.step(real, fake)
        return st.dual_value, st.solver_failed

    def gen_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return self.D.generator_loss(real, fake)


class GradientPlayer:
    """The standard GAN's discriminator: w (``dim`` zeros at start), one Adam step on f per call."""

    def __init__(self, phi: nn.Module, dim: int, C: float, lr: float, beta1: float, gan_loss: str) -> None:
        if gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")
        self.phi, self.C, self.gan_loss = phi, C, gan_loss
        self.w = torch.zeros(dim, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=lr, betas=(beta1, 0.999))

    def disc_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        fr, ff = self.phi(real) @ self.w, self.phi(fake) @ self.w
        sp = nn.functional.softplus
        return 0.5 * self.C * (self.w @ self.w) + 0.5 * (sp(-fr).mean() + sp(ff).mean())

    def step(self, real: Tensor, fake: Tensor) -> tuple[float, bool]:
        """One Adam step on f; returns (f before the step, False)."""
        self.opt.zero_grad()
        loss = self.disc_loss(real, fake)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), False

    def gen_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        ff = self.phi(fake) @ self.w.detach()
        if self.gan_loss == "minimax":
            return -0.5 * nn.functional.softplus(ff).mean()
        return 0.5 * nn.functional.softplus(-ff).mean()
