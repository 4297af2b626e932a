"""Monitor: one small interface to the per-step statistics of gameopt objects.

Every gameopt optimiser, regulariser and discriminator has ``monitor_stats()``,
returning ``{name: tensor or number}`` for its last step without reading anything
from the device. A :class:`Monitor` gathers them under prefixes; only
:meth:`Monitor.read`, :meth:`Monitor.log` and :meth:`Monitor.format` synchronise
(once, for all scalars together).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from .errors import GameInputError
from .frameworks import find_game_optimizer
from .game_optimizer import GameOptimizer


class HasMonitorStats(Protocol):
    """What a :class:`Monitor` source provides: every gameopt optimiser, regulariser and discriminator."""

    def monitor_stats(self) -> dict[str, Any]:
        """The last step's statistics, ``{name: tensor or number}``, read without a host sync."""


def _unwrap(src: Any) -> Any:
    """A gameopt optimiser inside a framework's wrapper (Lightning, accelerate) reports itself."""
    if isinstance(src, GameOptimizer) or not callable(getattr(src, "monitor_stats", None)):
        return find_game_optimizer(src) or src
    return src


class Monitor:
    """Collect statistics from named sources: ``Monitor(opt=opt, reg=regularizer)``.

    Args:
        **sources: ``name=object`` pairs; each object has ``monitor_stats()`` (gameopt's
            optimisers, :class:`~gameopt.PrimalDualRegularizer`,
            :class:`~gameopt.TrustRegionDualDiscriminator`). The name becomes the prefix of
            its statistics' keys (``"opt/consensus_loss"``).

    Raises:
        GameInputError: a source has no ``monitor_stats()`` method.

    Example::

        mon = gameopt.Monitor(consensus=opt)
        ...
        if step % 100 == 0:
            print(step, mon.format())            # one host sync
            mon.log(tensorboard_writer, step)   # add_scalar / add_histogram
    """

    def __init__(self, **sources: HasMonitorStats) -> None:
        sources = {name: _unwrap(src) for name, src in sources.items()}
        for name, src in sources.items():
            if not callable(getattr(src, "monitor_stats", None)):
                raise GameInputError(
                    f"source '{name}' ({type(src).__name__}) has no monitor_stats() method; "
                    "pass gameopt optimisers, regularisers or discriminators"
                )
        self.sources = dict(sources)

    def tensors(self) -> dict[str, Any]:
        """All statistics as ``{"source/name": tensor or number}``; no host sync."""
        out: dict[str, Any] = {}
        for prefix, src in self.sources.items():
            for key, value in src.monitor_stats().items():
                out[f"{prefix}/{key}"] = value
        return out

    def read(self) -> dict[str, Any]:
        """Statistics as Python floats (scalars) and lists (vectors); one device-to-host copy.

        Every tensor (scalars and vectors such as dual variables) is flattened into one
        float64 buffer per device and copied to the host once; numbers pass through.
        """
        items = self.tensors()
        by_device: dict[torch.device, list[str]] = {}
        for k, v in items.items():
            if isinstance(v, torch.Tensor):
                by_device.setdefault(v.device, []).append(k)
        out: dict[str, Any] = {}
        for device, keys in by_device.items():
            flat = [items[k].detach().reshape(-1).to(torch.float64) for k in keys]
            values = torch.cat(flat).cpu().tolist() if device.type != "cpu" else torch.cat(flat).tolist()
            start = 0
            for k, t in zip(keys, flat):
                part = values[start:start + t.numel()]
                start += t.numel()
                out[k] = part[0] if items[k].numel() == 1 else part
        return {k: out[k] if k in out else v for k, v in items.items()}

    def log(self, writer: Any, step: int) -> None:
        """Write to a TensorBoard-style writer: ``add_scalar`` for scalars, ``add_histogram`` for vectors.

        Args:
            writer: anything with ``add_scalar(tag, value, step)`` (and, for vectors such as dual
                variables, ``add_histogram(tag, values, step)``; vectors are skipped without it),
                e.g. ``torch.utils.tensorboard.SummaryWriter``.
            step: the global step to log at.
        """
        for key, value in self.read().items():
            if isinstance(value, list):
                if hasattr(writer, "add_histogram") and value:
                    writer.add_histogram(key, torch.tensor(value), step)
            elif value is not None:
                writer.add_scalar(key, float(value), step)

    def format(self, precision: int = 4) -> str:
        """Scalars as ``key=value`` pairs on one line, for printing (vectors are left out).

        Args:
            precision: significant digits of each value (default 4).
        """
        parts = []
        for key, value in self.read().items():
            if isinstance(value, list) or value is None:
                continue
            parts.append(f"{key}={value:.{precision}g}")
        return " ".join(parts)
