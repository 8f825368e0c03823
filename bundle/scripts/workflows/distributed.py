"""The process's rank under ``torch.distributed``, for handlers that act on rank 0 only.

``ignite.distributed.get_rank()`` is not safe there: on its first call in a process launched by ``torchrun`` it
builds ignite's computation model, which creates a process group (``torch.distributed.new_group``, a collective
every rank must enter). A rank-0-only handler that asks ignite for its rank therefore waits for the other ranks,
which are already inside DDP's first forward pass waiting for rank 0: both hang. This module only reads the rank.
"""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["global_rank", "is_main_process"]


def global_rank() -> int:
    """The global rank when a default process group is initialised, else 0 (no collective is run)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only process)."""
    return global_rank() == 0
