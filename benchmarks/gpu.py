"""Issue 26's GPU figures in one prepared script (< 5 minutes on one GPU): training images/s of
cnnlab's Trainer for `cnn` at 28 px (Fashion-MNIST's shape), `resnet29` and EfficientNet-Lite0 at
224 px, in fp32 and bf16 autocast, with the batches already on the GPU (GPU-resident data) or
copied from pinned CPU memory each step; 1 against 2 DDP processes (NCCL) when 2 GPUs exist; and
the batch that `--batch-size auto` finds for resnet29 and EfficientNet-Lite0 at 224 px.

    python benchmarks/gpu.py [--json OUT.json]        # on a GPU machine
    python benchmarks/gpu.py --dry-run                # CPU, tiny sizes: checks the script runs

Images are random tensors of the right shape (throughput does not depend on pixel values);
each figure is the median of timed steps after warm-up steps, synchronised with the device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from cnnlab.models.factory import create_model
from cnnlab.train.batchsize import auto_batch_size
from cnnlab.train.trainer import Trainer

NETS = {  # name: (channels, size, batch)
    "cnn": (1, 28, 512),
    "resnet29": (3, 224, 64),
    "efficientnet-lite0": (3, 224, 64),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(
    name: str, device: torch.device, bf16: bool, resident: bool, steps: int, warmup: int, tiny: bool
) -> float:
    """Median training throughput of cnnlab's Trainer for one setting."""
    chans, size, batch = NETS[name]
    if tiny:
        size, batch = (28 if name == "cnn" else 32), 8
    model = create_model(name, num_classes=10, in_chans=chans, input_size=size, **(
        {"pretrained": False} if name.startswith("efficientnet") else {}))  # fmt: skip
    trainer = Trainer(
        model,
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        device,
        amp_dtype=torch.bfloat16 if bf16 else None,
    )
    model.train()
    x_cpu = torch.randn(batch, chans, size, size)
    y_cpu = torch.randint(0, 10, (batch,))
    if device.type == "cuda" and not resident:
        x_cpu, y_cpu = x_cpu.pin_memory(), y_cpu.pin_memory()
    x_dev, y_dev = x_cpu.to(device), y_cpu.to(device)
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        if resident:
            x, y = x_dev, y_dev
        else:  # copied from (pinned) host memory every step
            x, y = x_cpu.to(device, non_blocking=True), y_cpu.to(device, non_blocking=True)
        trainer.train_step(x, y)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _ddp_worker(rank: int, world: int, name: str, steps: int, warmup: int, out: Any) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=rank, world_size=world)
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    chans, size, batch = NETS[name]
    model = create_model(name, num_classes=10, in_chans=chans, input_size=size)
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), device, amp_dtype=torch.bfloat16)
    trainer.ddp = DistributedDataParallel(trainer.model, device_ids=[rank])
    x = torch.randn(batch, chans, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        trainer.train_step(x, y)
        torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        out.put(world * batch / statistics.median(times))
    dist.destroy_process_group()


def ddp_images_per_s(name: str, world: int, steps: int, warmup: int) -> float:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(world, name, steps, warmup, q), nprocs=world, start_method="spawn")
    return float(q.get())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check that the script runs")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    have_gpu = torch.cuda.is_available()
    if not have_gpu and not a.dry_run:
        sys.exit("no GPU here (torch.cuda.is_available() is False): run with --dry-run to check the script")
    device = torch.device("cuda" if have_gpu and not a.dry_run else "cpu")
    steps, warmup = (2, 1) if a.dry_run else (a.steps, a.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, tiny sizes)"
    print(f"device: {name}; torch {torch.__version__}; {steps} timed steps after {warmup} warm-up")
    rows = []
    started = time.perf_counter()
    for net in NETS:
        for bf16 in (False, True):
            for resident in (True, False):
                ips = images_per_s(net, device, bf16, resident, steps, warmup, a.dry_run)
                row = {"net": net, "precision": "bf16" if bf16 else "fp32",
                       "data": "on GPU" if resident else "copied", "processes": 1, "images_per_s": ips}  # fmt: skip
                rows.append(row)
                print(f"{net:<20} {row['precision']:<5} data {row['data']:<7} 1 process  {ips:10.1f} images/s")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus >= 2:
        for net in ("resnet29", "efficientnet-lite0"):
            ips = ddp_images_per_s(net, 2, steps, warmup)
            rows.append({"net": net, "precision": "bf16", "data": "on GPU", "processes": 2, "images_per_s": ips})
            print(f"{net:<20} bf16  data on GPU 2 processes {ips:10.1f} images/s (DDP, NCCL)")
    else:
        print(f"DDP: {gpus} GPU(s) here, 2 needed for the 1-vs-2-process figure")
    auto = {}
    for net in ("resnet29", "efficientnet-lite0"):  # --batch-size auto's search, as training runs it
        channels, size, _ = NETS[net]
        size = 32 if a.dry_run else size
        t0 = time.perf_counter()
        amp = torch.bfloat16 if device.type == "cuda" else None
        build = lambda n=net, c=channels, s=size: create_model(n, 10, c, s)  # noqa: E731
        found, why = auto_batch_size(build, channels, size, 10, device, amp, 100_000, 128)
        auto[net] = {"batch": found, "seconds": round(time.perf_counter() - t0, 1), "why": why}
        prec = "bf16" if device.type == "cuda" else "fp32"
        print(f"{net:<20} --batch-size auto at {size} px, {prec}: {why} ({auto[net]['seconds']} s)")
    print(f"took {time.perf_counter() - started:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows, "auto_batch": auto}, f, indent=2)


if __name__ == "__main__":
    main()
