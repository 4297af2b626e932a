"""The relativistic pairing GAN loss (RpGAN; Jolicoeur-Martineau 2019, used by R3GAN, Huang et al. 2024).

Each real sample is paired with one generated sample and the discriminator scores the
*difference* of their logits: in gameopt's convention (both players minimise)

    disc_loss = mean_i softplus(-(d_real_i - d_fake_i))
    gen_loss  = mean_i softplus(-(d_fake_i - d_real_i))

the logistic loss of "the real sample is more real than its fake partner" for D, and the
reverse for G. It is not zero-sum, and ``gen_loss`` depends on ``d_real``, which does not depend
on the generator (so it only shapes D's scores). R3GAN pairs it with R1 and R2 penalties
(:class:`gameopt.GradientPenalty`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .errors import GameInputError

__all__ = ["relativistic_losses"]


def relativistic_losses(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """The relativistic pairing losses ``(gen_loss, disc_loss)`` from paired discriminator logits.

    Args:
        d_real: D's logits on B real samples, shape ``(B,)`` or ``(B, 1)``.
        d_fake: D's logits on B generated samples, the same shape; sample i is paired with real
            sample i. Keep ``d_fake``'s graph to the generator for gameopt's game optimisers (no
            ``fake.detach()``), so the discriminator's loss sees the generator.

    Returns:
        ``(gen_loss, disc_loss)``, two 0-d tensors, both minimised:
        ``gen_loss = mean softplus(d_real - d_fake)`` and ``disc_loss = mean softplus(d_fake - d_real)``.

    Raises:
        GameInputError: an argument that is not a floating-point tensor, shapes that are not
            ``(B,)`` or ``(B, 1)``, or the two shapes differ (the pairing needs as many fakes as reals).
    """
    for name, t in (("d_real", d_real), ("d_fake", d_fake)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise GameInputError(f"{name} must be a floating-point tensor of logits, got {type(t).__name__}")
        if not (t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1)) or t.shape[0] < 1:
            raise GameInputError(
                f"{name} must hold one logit per sample, shape (B,) or (B, 1), got {tuple(t.shape)}"
            )
    if d_real.shape != d_fake.shape:
        raise GameInputError(
            f"the relativistic pairing loss pairs real sample i with fake sample i, so d_real and d_fake "
            f"need the same shape; got {tuple(d_real.shape)} and {tuple(d_fake.shape)} (draw as many "
            "fakes as reals)"
        )
    diff = d_real - d_fake
    return F.softplus(diff).mean(), F.softplus(-diff).mean()
