"""Tools for testing code that trains with gameopt (no accelerator needed).

:class:`SyncCounter` counts the host synchronisations of a block of code with the
tensors on the ``meta`` device, so a CPU-only test can hold a training step to a sync
budget that then holds on a GPU.
"""

from .sync_budget import SYNC_KINDS, SyncCounter

__all__ = ["SyncCounter", "SYNC_KINDS"]
