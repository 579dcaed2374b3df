"""torchrun support: process group set-up (NCCL on GPU, gloo on CPU), rank helpers, reductions, and a lost
peer reported in one line.

When a rank dies (a crash, an OOM kill), the others fail inside a collective with a long gloo/NCCL
traceback ("Connection closed by peer"). :func:`guard_collectives` turns that into one
:class:`PeerLost` line naming the lost rank: every rank shares its host and pid when the group
starts, so a survivor can tell which peer on its own host is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from vitc.core.errors import VitcError
from vitc.core.host import process_running


class PeerLost(VitcError):
    """Another torchrun process died while this one waited for it in a collective."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    peers: tuple[tuple[str, int], ...] = field(default=())  # (host, pid) of every rank, by rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    peers: list[tuple[str, int] | None] = [None] * world
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    return DistInfo(rank=rank, world=world, local_rank=local_rank,
                    peers=tuple(p for p in peers if p is not None))


def lost_peers(info: DistInfo, wait_s: float = 2.0) -> list[tuple[int, int]]:
    """(rank, pid) of the peers on this host whose process is gone (or a zombie), waiting up to ``wait_s``
    for a dying one to go (the collective can fail a moment before the peer's process ends)."""
    import time

    host = socket.gethostname()
    local = [(rank, pid) for rank, (peer_host, pid) in enumerate(info.peers) if rank != info.rank and peer_host == host]
    deadline = time.monotonic() + wait_s
    while True:
        gone = [(rank, pid) for rank, pid in local if not process_running(pid)]
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.1)


@contextlib.contextmanager
def guard_collectives(info: DistInfo, what: str) -> Iterator[None]:
    """Turn a collective's failure after a peer died into one :class:`PeerLost` line naming the peer."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        if not info.enabled or isinstance(e, VitcError):
            raise
        gone = lost_peers(info)
        if gone:
            names = ", ".join(f"rank {r} (pid {p})" for r, p in gone)
            raise PeerLost(f"lost {names} during {what}: it exited or was killed (its own error, if any, is in its "
                           "log); stopping") from None
        text = str(e).lower()
        if any(k in text for k in ("connection closed", "connection reset", "broken pipe", "nccl", "gloo", "timed out")):
            raise PeerLost(f"lost contact with another rank during {what} (a peer on another host exited, was "
                           f"killed or hung): {str(e).splitlines()[0][:160]}") from None
        raise


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
