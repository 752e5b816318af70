"""Several processes on torch.distributed (launched by torchrun): who this rank is, sharding an
evaluation's batches over ranks, gathering their per-example results, and rank-0-only work.

A search stays one deterministic program that every rank runs in lockstep: each rank scores its
share of the batches for every mask, :func:`gather_owned` gives every rank the full result, so
every rank takes the same decisions. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from kmshc.types import KmshcError

T = TypeVar("T")


def active() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or another launcher setting ``WORLD_SIZE``) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group() -> Iterator[None]:
    """Join the launcher's process group for the block (nothing to do in a single process).

    Backends: gloo for CPU tensors and, where CUDA exists, NCCL for GPU tensors; torch routes each
    collective by its tensors' device.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise KmshcError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def owner_of(batch_index: int) -> int:
    """Round-robin: batch ``i`` of an evaluation is scored by rank ``i mod world``."""
    return batch_index % world_size()


def _comm_device(t: torch.Tensor) -> torch.device:
    """A device the backend can move ``t`` on (NCCL only moves CUDA tensors, gloo CPU ones)."""
    backend = str(dist.get_backend())
    if t.device.type == "cuda" and "nccl" in backend:
        return t.device
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_owned(t: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Every rank filled the columns ``t[:, j]`` with ``owner[j] == rank``; return ``t`` with every
    rank's columns, identical on all ranks. ``t``: ``[M, N, ...]``; ``owner``: ``[N]`` ranks.

    Values are copied, never summed, so the result is bitwise the single-process one.
    """
    if not active():
        return t
    dev = _comm_device(t)
    mine = t.to(dev).contiguous()
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    out = t.clone()
    for r, part in enumerate(parts):
        cols = (owner == r).nonzero()[:, 0]
        out[:, cols.to(t.device)] = part[:, cols.to(dev)].to(t.device)
    return out


def main_then_all(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; every rank returns once it is done, and raises its KmshcError.

    For the checks and writes that must happen once (run-directory lock, refusing to clobber).
    """
    if not active():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except KmshcError as e:
            error = str(e)
    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise KmshcError(box[0])
    return result


def barrier() -> None:
    if active():
        dist.barrier()
