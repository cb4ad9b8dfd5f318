"""Data-parallel training under `torchrun` (PyTorch's own distributed engine): gloo on CPUs, NCCL
on GPUs. Every rank sees the same seeded order of each epoch and trains on its share of each
global batch; the loss is weighted so that DDP's gradient average is exactly the gradient of the
global batch's mean loss; only rank 0 writes the run folder.

    torchrun --nproc-per-node 2 -m cnnlab train --data digits --model cnn --epochs 2
"""

from __future__ import annotations

import datetime
import logging
import os

import torch

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the process that writes (rank 0), and in every ordinary single-process run."""
    return rank() == 0


def active() -> bool:
    return world_size() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def init(device: str) -> torch.device | None:
    """Join the process group torchrun describes (environment variables), once; returns this rank's
    device (cuda:LOCAL_RANK on GPUs), or None outside torchrun."""
    if world_size() <= 1:
        return None
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=10))
        log.info("distributed: rank %d of %d (%s)", rank(), world_size(), "nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def all_sum(*values: float) -> list[float]:
    """The sums of ``values`` over all ranks (the values themselves outside torchrun)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


def broadcast(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (e.g. a run folder name made from the clock)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(wait: bool = False) -> None:
    """Leave the process group (after this rank's part of the run). With ``wait`` (a run that
    finished on every rank) the ranks first meet at a barrier, so that none destroys its group while
    another still talks to it — the suspected cause of an occasional gloo abort ("terminate called
    without an active exception") in a worker of the two-process tests."""
    if active():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
