"""Per-sample weight gradients of ``nn.Linear`` / ``nn.Conv2d`` layers, in factored form.

The hooks route of :mod:`gameopt.dual.per_sample` sees, for every layer, its inputs and
its output gradients delta over the layer's P output positions; the weight gradient of
sample i is sum_p delta_ip u_ip^T (u_ip the input patch at position p). This module forms a
layer's block of K = J J^T from those factors by the cheaper of two exact routes
(materialised gradients, or Gram matrices over positions), J^T eta, and the map through
spectral normalisation to the trained ``weight_orig``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm as _HookSpectralNorm

__all__ = [
    "LayerFactors",
    "SpectralNormed",
    "Workspace",
    "exact",
    "hookable",
    "hooks_unsupported",
    "sym_gram",
    "trained_weight",
]

# Rows of one block of the position-Gram route: block products of about this size run
# near peak GEMM speed on a CPU and keep the Gram blocks small.
_GRAM_BLOCK_ROWS = 512
# Cost, in multiply-adds per gradient entry, of writing and re-reading a materialised
# per-sample gradient (a batched product with few positions is memory bound).
_MATERIALISE_OVERHEAD = 32


def sym_gram(A: Tensor) -> Tensor:
    """A A^T (rows of A), exactly symmetric, in A's dtype."""
    G = A @ A.T
    return (G + G.T) * 0.5


def exact(t: Tensor) -> Tensor:
    """t in at least float32: kernel blocks of half-precision factors are formed in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class SpectralNormed:
    """A weight trained through spectral normalisation: W = W_orig / sigma, sigma = u^T W_orig v.

    u and v are the power-iteration vectors the forward pass used (read after it); W_orig is
    flattened as (out, in) for dim 0, the layout of ``torch.nn.utils.spectral_norm`` and of
    its parametrization for Linear and Conv2d.

    Args:
        orig: the trained tensor ``W_orig`` (``weight_orig``, or the parametrization's original).
        u, v: the power-iteration vectors, shapes ``(out,)`` and ``(in,)``.
    """

    def __init__(self, orig: Tensor, u: Tensor, v: Tensor) -> None:
        self.orig, self._u, self._v = orig, u, v

    def vectors(self) -> tuple[Tensor, Tensor, Tensor]:
        """(u, v, sigma) as this forward pass used them, in at least float32."""
        u, v = exact(self._u.detach()).clone(), exact(self._v.detach()).clone()
        W = exact(self.orig.detach()).reshape(u.shape[0], -1)
        return u, v, u @ (W @ v)


def trained_weight(mod: nn.Module) -> tuple[Tensor | None, SpectralNormed | None] | None:
    """The tensor a Linear/Conv2d layer trains for its weight, and its spectral normalisation.

    Args:
        mod: the layer.

    Returns:
        ``(weight tensor or None, SpectralNormed or None)``; None when the hooks route cannot
        serve the layer (a reparametrisation other than spectral norm over dim 0).
    """
    if parametrize.is_parametrized(mod, "weight"):
        plist = mod.parametrizations["weight"]
        sn_cls = getattr(nn.utils.parametrizations, "_SpectralNorm", None)
        if len(plist) != 1 or sn_cls is None or not isinstance(plist[0], sn_cls) or plist[0].dim != 0 \
                or plist.original.ndim < 2:
            return None
        return plist.original, SpectralNormed(plist.original, plist[0]._u, plist[0]._v)
    for hook in mod._forward_pre_hooks.values():
        if isinstance(hook, _HookSpectralNorm) and hook.name == "weight":
            if hook.dim != 0:
                return None
            return mod.weight_orig, SpectralNormed(mod.weight_orig, mod.weight_u, mod.weight_v)
    if any(k not in ("weight", "bias") for k, p in mod._parameters.items() if p is not None and p.requires_grad):
        return None  # e.g. weight_norm's weight_g / weight_v
    return mod._parameters.get("weight"), None


def hookable(mod: nn.Module) -> bool:
    """Whether the hooks route serves layer ``mod`` (a plain or spectrally normalised Linear / Conv2d)."""
    return isinstance(mod, (nn.Linear, nn.Conv2d)) and not (
        isinstance(mod, nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str))
    ) and not parametrize.is_parametrized(mod, "bias") and trained_weight(mod) is not None


def hooks_unsupported(module: nn.Module) -> str | None:
    """Why the hooks route cannot serve ``module`` (None when it can)."""
    served: set[int] = set()
    for mod in module.modules():
        if hookable(mod):
            weight, _ = trained_weight(mod)  # type: ignore[misc]
            served |= {id(t) for t in (weight, mod.bias) if t is not None}
    for name, p in module.named_parameters():
        if p.requires_grad and id(p) not in served:
            owner_name = name.rsplit(".", 1)[0] if "." in name else ""
            owner = module.get_submodule(owner_name)
            if isinstance(owner, parametrize.ParametrizationList):
                what = "a reparametrised weight other than spectral_norm (e.g. weight_norm)"
            elif isinstance(owner, nn.Conv2d):
                what = "a grouped, not zero-padded or string-padded nn.Conv2d"
            elif isinstance(owner, (nn.Linear, nn.Conv2d)):
                what = f"a reparametrisation of {type(owner).__name__} other than spectral_norm (e.g. weight_norm)"
            else:
                what = f"a {type(owner).__name__}, not an nn.Linear or nn.Conv2d"
            return f"parameter {name!r} belongs to {what}"
    return None


class Workspace:
    """Large scratch tensors kept from one kernel build to the next.

    Allocating the tens of MB that materialised gradients and input patches take costs,
    on the CPU, about as much as computing them: every page is faulted in afresh (the
    C allocator returns such blocks to the system on free). Reusing them halves the
    batched product that materialises the gradients of a DCGAN-like layer. A tensor
    handed out stays valid until the next build.
    """

    def __init__(self) -> None:
        self._store: dict[tuple, Tensor] = {}

    def get(self, key: tuple, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A scratch tensor of ``shape`` with ``like``'s dtype and device, reused under ``key`` (contents undefined)."""
        n = 1
        for size in shape:
            n *= size
        buf = self._store.get(key)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._store[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)

    def clear(self) -> None:
        """Free every scratch tensor."""
        self._store.clear()


class LayerFactors:
    """Per-sample gradients of one Linear / Conv2d layer in factored form.

    Over the layer's P output positions, the weight gradient of sample i is
    sum_p delta_ip u_ip^T: delta (m, out, P) the output gradients and u_ip the input
    patch (in,) at position p (the unfolded input of a convolution).

    Args:
        mod: the ``nn.Linear`` or ``nn.Conv2d`` layer.
        weight: the tensor it trains for its weight (see :func:`trained_weight`), or None.
        a: the layer's input, batch first (m samples).
        delta: the gradients at the layer's output, shape of the output.
        m: the number of samples.
        workspace: scratch tensors shared between layers (default: a new one).
    """

    def __init__(self, mod: nn.Module, weight: Tensor | None, a: Tensor, delta: Tensor, m: int,
                 workspace: Workspace | None = None) -> None:
        self.mod, self.weight, self.a, self.m = mod, weight, a, m
        self.workspace = workspace if workspace is not None else Workspace()
        self.sn: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # (u, v in patch order, sigma, J_W W)
        if isinstance(mod, nn.Linear):  # positions: every leading dim after the batch
            self.Dt = delta.reshape(m, -1, delta.shape[-1]).transpose(1, 2)
            self.in_f = a.shape[-1]
        else:
            self.Dt = delta.reshape(m, delta.shape[1], -1)
            self.out_hw = delta.shape[2], delta.shape[3]
            self.in_f = a.shape[1] * mod.kernel_size[0] * mod.kernel_size[1]
        self.out_f, self.P = self.Dt.shape[1], self.Dt.shape[2]
        self.dsum = self.Dt.sum(2)  # (m, out): the bias gradients
        self.rows: Tensor | None = None  # materialised weight gradients (m, out * in), when kept
        self.Df: Tensor | None = None  # (m P, out) and (m P, in) position rows, when the Gram route ran
        self.Uf: Tensor | None = None

    def _patch_rows(self) -> Tensor:
        """Inputs as (m P, in) rows, one per sample and position.

        A convolution's patches are gathered from a zero-padded channels-last copy of its
        input, so every row is (kh, kw, c)-ordered and copied in runs of c contiguous
        numbers (far faster than ``unfold`` and a transpose on the CPU); :meth:`_as_weight`
        maps a gradient in that order back to the weight's layout.
        """
        m, mod, a = self.m, self.mod, self.a
        if isinstance(mod, nn.Linear):
            return a.reshape(m * self.P, self.in_f)
        (ph, pw), (sh, sw), (dh, dw), (kh, kw) = mod.padding, mod.stride, mod.dilation, mod.kernel_size
        _, c, h, w = a.shape
        xp = self.workspace.get(("padded",), (m, h + 2 * ph, w + 2 * pw, c), a)
        for border in (xp[:, :ph], xp[:, ph + h:], xp[:, :, :pw], xp[:, :, pw + w:]):
            border.zero_()
        xp[:, ph:ph + h, pw:pw + w] = a.permute(0, 2, 3, 1)
        st = xp.stride()
        oh, ow = self.out_hw
        patches = xp.as_strided((m, oh, ow, kh, kw, c), (st[0], st[1] * sh, st[2] * sw, st[1] * dh, st[2] * dw, st[3]))
        rows = self.workspace.get((id(self.mod), "patches"), (m, oh, ow, kh, kw, c), a)
        rows.copy_(patches)
        return rows.view(m * self.P, self.in_f)

    def _as_weight(self, g: Tensor) -> Tensor:
        """A weight gradient (out, in) in the order of :meth:`_patch_rows`, in the weight's layout."""
        assert self.weight is not None
        if isinstance(self.mod, nn.Linear):
            return g.reshape(self.weight.shape)
        o, c, kh, kw = self.weight.shape
        return g.reshape(o, kh, kw, c).permute(0, 3, 1, 2)

    def _to_patch_order(self, v: Tensor) -> Tensor:
        """A vector over the weight's inputs, (c, kh, kw)-ordered for a convolution, in patch order."""
        if isinstance(self.mod, nn.Linear):
            return v
        _, c, kh, kw = self.weight.shape  # type: ignore[union-attr]
        return v.reshape(c, kh, kw).permute(1, 2, 0).reshape(-1)

    def through_spectral_norm(self, sn: SpectralNormed, c: Tensor, Kw: Tensor) -> Tensor:
        """The kernel block of ``W_orig`` from that of ``W = W_orig / sigma`` (float64).

        The gradient in ``W_orig`` of sample i is ``(g_i - c_i u v^T) / sigma`` with ``g_i`` its
        gradient in ``W`` and ``c_i = <g_i, W>``; so
        ``K_orig = (K_W - c d^T - d c^T + ||u||^2 ||v||^2 c c^T) / sigma^2`` with ``d_i = u^T g_i v``.

        Args:
            sn: the layer's spectral normalisation.
            c: ``c_i = <g_i, W>``, shape ``(m,)``.
            Kw: ``K_W``, the block of W, shape ``(m, m)``.

        Returns:
            ``K_orig``, shape ``(m, m)``, float64.
        """
        u, v, sigma = sn.vectors()
        v = self._to_patch_order(v)
        if self.rows is not None:
            d = self.rows @ torch.outer(u, v).reshape(-1)
        else:
            Uf = self.Uf if self.Uf is not None else self._patch_rows()
            d = (torch.einsum("mop,o->mp", self.Dt, u) * (Uf @ v).view(self.m, self.P)).sum(1)
        self.sn = (u, v, sigma, c)
        c64, d64, s64 = c.double(), d.double(), sigma.double()
        cd = torch.outer(c64, d64)
        return (Kw - cd - cd.T + (u @ u).double() * (v @ v).double() * torch.outer(c64, c64)) / s64**2

    def _position_rows(self) -> tuple[Tensor, Tensor]:
        """(m P, out) output gradients and (m P, in) inputs, one row per sample and position."""
        return self.Dt.transpose(1, 2).reshape(self.m * self.P, self.out_f), self._patch_rows()

    def weight_kernel(self, budget_bytes: int, keep_bytes: int) -> Tensor:
        """The weight's block of K, shape ``(m, m)``, float64, by the cheaper exact route.

        Args:
            budget_bytes: memory the materialised-rows route may use at once.
            keep_bytes: keep the materialised rows (for :meth:`jt_eta`) if they fit in this.
        """
        m, P, out_f, in_f = self.m, self.P, self.out_f, self.in_f
        by_positions = (m * P) ** 2 * (out_f + in_f) / 2
        by_rows = m * out_f * in_f * (P + _MATERIALISE_OVERHEAD) + m * m * out_f * in_f
        if by_positions < by_rows:
            return self._kernel_by_positions()
        return self._kernel_by_rows(budget_bytes, keep_bytes)

    def _kernel_by_positions(self) -> Tensor:
        m, P = self.m, self.P
        Df, Uf = self.Df, self.Uf = self._position_rows()
        bs = max(1, _GRAM_BLOCK_ROWS // P)
        K = torch.empty(m, m, dtype=Df.dtype, device=Df.device)
        for i0 in range(0, m, bs):
            i1 = min(i0 + bs, m)
            for j0 in range(0, i1, bs):
                j1 = min(j0 + bs, m)
                rows_i, rows_j = slice(i0 * P, i1 * P), slice(j0 * P, j1 * P)
                prod = (Df[rows_i] @ Df[rows_j].T) * (Uf[rows_i] @ Uf[rows_j].T)
                blk = prod.view(i1 - i0, P, j1 - j0, P).sum((1, 3))
                K[i0:i1, j0:j1] = blk
                K[j0:j1, i0:i1] = blk.T
        return ((K + K.T) * 0.5).double()

    def _kernel_by_rows(self, budget_bytes: int, keep_bytes: int) -> Tensor:
        m, out_f, in_f = self.m, self.out_f, self.in_f
        U = self._patch_rows().view(m, self.P, in_f)
        row_bytes = m * in_f * self.Dt.element_size()  # one output channel of every sample
        chunk = max(1, min(out_f, budget_bytes // max(row_bytes, 1)))
        K = torch.zeros(m, m, dtype=torch.float64, device=self.Dt.device)
        for o0 in range(0, out_f, chunk):
            rows = self.workspace.get((id(self.mod), "rows"), (m, min(chunk, out_f - o0), in_f), U)
            torch.bmm(self.Dt[:, o0:o0 + chunk], U, out=rows)
            rows = rows.view(m, -1)
            K += sym_gram(rows).double()
            if chunk == out_f and rows.numel() * rows.element_size() <= keep_bytes:
                self.rows = rows  # J^T eta for this weight is then one matrix-vector product
            del rows
        return K

    def jt_eta(self, eta: Tensor) -> dict[int, Tensor]:
        """J^T eta for this layer's trainable weight and bias, keyed by parameter id."""
        mod = self.mod
        e = eta.to(self.Dt)
        out: dict[int, Tensor] = {}
        if self.weight is not None and self.weight.requires_grad:
            if self.rows is not None:
                g = self.rows.T @ e
            else:  # sum_i e_i sum_p delta_ip u_ip^T as one (out, m P) x (m P, in) product
                if self.Df is None or self.Uf is None:
                    self.Df, self.Uf = self._position_rows()
                g = (self.Df * e.repeat_interleave(self.P)[:, None]).T @ self.Uf
            if self.sn is not None:
                u, v, sigma, c = self.sn
                g = (g.reshape(u.shape[0], -1) - (e @ c) * torch.outer(u, v)) / sigma
            out[id(self.weight)] = self._as_weight(g)
        if mod.bias is not None and mod.bias.requires_grad:
            out[id(mod.bias)] = e @ self.dsum
        return out
