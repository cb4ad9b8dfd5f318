"""Load on `cnnlab serve`: N concurrent clients post single images to /predict; prints throughput and
p50/p95/p99 latency, first with one client (the latency of one image), then with N.

Usage:
  python benchmarks/serve_load.py RUN_OR_MODEL [--clients 8] [--requests 400] [--seconds 30]
  python benchmarks/serve_load.py --url http://127.0.0.1:8000 [--token T] ...   (a server already up)

Without --url it starts `cnnlab serve RUN_OR_MODEL` on a free local port and stops it after. The
images are real Fashion-MNIST test images (PNG) when the run is a Fashion-MNIST one, else a folder
of images given with --images. Each phase is bounded by --requests and by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def images(folder: str | None, n: int = 64) -> list[bytes]:
    if folder:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
        if not files:
            sys.exit(f"no .png/.jpg images in {folder}")
        return [f.read_bytes() for f in files]
    if not FMNIST.is_file():
        sys.exit("give --images DIR (Fashion-MNIST's test set is not installed)")
    with gzip.open(FMNIST) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    out = []
    for a in x:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def phase(
    url: str, headers: dict[str, str], bodies: list[bytes], clients: int, requests: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors, sent
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                body = bodies[(i * 7 + sent) % len(bodies)]
                t = time.perf_counter()
                r = await c.post("/predict", content=body, headers={"Content-Type": "image/png"})
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": wall,
        "throughput": len(latencies) / wall,
        "p50_ms": 1000 * q[49],
        "p95_ms": 1000 * q[94],
        "p99_ms": 1000 * q[98],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "serve", model, "--port", str(port), "--log-level", "warning"]
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit("the server exited")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    sys.exit("the server did not start in 60 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="run folder or exported .onnx (omit with --url)")
    ap.add_argument("--url", help="an already running server")
    ap.add_argument("--token", default=os.environ.get("CNNLAB_TOKEN"))
    ap.add_argument("--images", help="folder of images to send (default: Fashion-MNIST test images)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400, help="requests per phase (default 400)")
    ap.add_argument("--seconds", type=float, default=30.0, help="time bound per phase (default 30)")
    args = ap.parse_args()
    if not args.url and not args.model:
        ap.error("give RUN_OR_MODEL or --url")
    proc = None
    url = args.url
    if not url:
        port = free_port()
        proc = start_server(args.model, port)
        url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    bodies = images(args.images)
    try:
        asyncio.run(phase(url, headers, bodies, 1, 20, 10))  # warm-up
        print(
            f"{os.cpu_count()} CPU cores; server {url}; {len(bodies)} distinct images, "
            f"{len(bodies[0])} bytes each or so"
        )
        print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for clients in dict.fromkeys((1, args.clients)):
            r = asyncio.run(phase(url, headers, bodies, clients, args.requests, args.seconds))
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['throughput']:>8.1f} "
                f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f}"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
