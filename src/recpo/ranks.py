"""Which process of a job this is, and what rank 0 decided or gathered.

A job runs as one process, or as several ranks of one process group (DDP, DeepSpeed,
ranks started by a cluster launcher: :mod:`recpo.training.distributed`). Rank 0
evaluates, writes results and takes the decisions every rank must share; these helpers
answer the same way before, inside and after a Lightning Trainer, and with no process
group open (one process: rank 0 of 1).
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def is_rank_zero() -> bool:
    """True in the process that evaluates and writes results (rank 0, or the only one).

    Read from the environment Lightning's launcher sets, so it also holds before and
    after a Trainer exists.
    """
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks of the open process group
    (``(0, 1)`` when none is open: one process evaluates everything)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero_decides(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank of the open process group (the value
    itself when none is open)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank_zero(value: Any) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0 (``None`` elsewhere); ``[value]``
    when no process group is open."""
    rank, world = rank_and_world()
    if world == 1:
        return [value]
    out = [None] * world if rank == 0 else None
    dist.gather_object(value, out, dst=0)
    return out
