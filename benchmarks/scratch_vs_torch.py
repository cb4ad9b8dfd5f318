"""The NumPy engine against PyTorch on this machine, in the same run: images/s of forward+backward
per layer and of a whole training step (Adam) of `cnn` and `mlp` at batch 128 on 1×28×28 input
(Fashion-MNIST's size), and their ratio; then seed 001's check, both engines' losses over 100
Adam steps from the same weights on the same batches, drawn as one figure.

Usage: python benchmarks/scratch_vs_torch.py [--batch 128] [--repeats 10] [--figure agree.png]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.models import get_spec
from cnnlab.scratch import build
from cnnlab.scratch import layers as L
from cnnlab.scratch import optim as O


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call: the median of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def layer_cases(n: int) -> list[tuple[str, L.Layer, torch.nn.Module, tuple[int, ...]]]:
    """The layers of `cnn` with the shapes they see at batch n."""
    rng = np.random.default_rng(0)
    out = []
    for name, mine, ref, shape in [
        ("conv 1→32 3×3", L.Conv2D(1, 32, 3, 1, 1), torch.nn.Conv2d(1, 32, 3, padding=1), (n, 1, 28, 28)),
        ("relu 32×28×28", L.ReLU(), torch.nn.ReLU(), (n, 32, 28, 28)),
        ("maxpool 2 on 32×28×28", L.MaxPool2D(2), torch.nn.MaxPool2d(2), (n, 32, 28, 28)),
        ("conv 32→64 3×3", L.Conv2D(32, 64, 3, 1, 1), torch.nn.Conv2d(32, 64, 3, padding=1), (n, 32, 14, 14)),
        ("maxpool 2 on 64×14×14", L.MaxPool2D(2), torch.nn.MaxPool2d(2), (n, 64, 14, 14)),
        ("dense 3136→128", L.Dense(3136, 128), torch.nn.Linear(3136, 128), (n, 3136)),
    ]:
        if mine.params:
            mine.params = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
        out.append((name, mine, ref, shape))
    del rng
    return out


def per_layer(n: int, repeats: int) -> None:
    print(f"forward + backward per layer, batch {n} (images/s; ratio = scratch / PyTorch)")
    print(f"  {'layer':<24}{'scratch':>10}{'pytorch':>10}{'ratio':>8}")
    rng = np.random.default_rng(0)
    for name, mine, ref, shape in layer_cases(n):
        x = rng.normal(size=shape).astype(np.float32)
        g = rng.normal(size=mine.forward(x).shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_(True)
        gt = torch.from_numpy(g)

        def scratch() -> None:
            mine.forward(x)
            mine.backward(g)

        def pytorch() -> None:
            xt.grad = None
            ref.zero_grad()
            ref(xt).backward(gt)

        s, p = timed(scratch, repeats), timed(pytorch, repeats)
        print(f"  {name:<24}{n / s:>10.0f}{n / p:>10.0f}{p / s:>8.2f}")


def per_step(n: int, repeats: int) -> None:
    print(f"whole training step (forward, loss, backward, Adam), batch {n}")
    print(f"  {'model':<24}{'scratch':>10}{'pytorch':>10}{'ratio':>8}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    for name in ("cnn", "mlp", "mlp-fys", "cnn-small"):
        mine = build(name, 10, 1, 28)
        opt, loss = O.Adam(mine.layers, 1e-3), L.SoftmaxCrossEntropy()
        ref = get_spec(name).builder(num_classes=10, in_chans=1, input_size=28)
        topt = torch.optim.Adam(ref.parameters(), 1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def scratch() -> None:
            _, dz = loss(mine.forward(x), y)
            mine.backward(dz)
            opt.step()

        def pytorch() -> None:
            topt.zero_grad()
            F.cross_entropy(ref(xt), yt).backward()
            topt.step()

        s, p = timed(scratch, repeats), timed(pytorch, repeats)
        print(f"  {name:<24}{n / s:>10.0f}{n / p:>10.0f}{p / s:>8.2f}")


def agreement(figure: str) -> None:
    """100 Adam steps of cnn-small in both engines from the same weights on the same digits batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images[:, None] / 16.0).astype(np.float64), d.target
    ref = get_spec("cnn-small").builder(num_classes=10, in_chans=1, input_size=8).double()
    mine = build("cnn-small", 10, 1, 8, dtype=np.float64)
    mine.load_state_dict(ref.state_dict())
    topt, opt, loss = torch.optim.Adam(ref.parameters(), 1e-3), O.Adam(mine.layers, 1e-3), L.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    lt_all, ls_all = [], []
    for _ in range(100):
        idx = rng.choice(len(x), 32, replace=False)
        lt = F.cross_entropy(ref(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        topt.zero_grad()
        lt.backward()
        topt.step()
        ls, dz = loss(mine.forward(x[idx]), y[idx])
        mine.backward(dz)
        opt.step()
        lt_all.append(lt.item())
        ls_all.append(ls)
    gap = float(np.max(np.abs(np.subtract(lt_all, ls_all))))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lt_all, label="PyTorch", linewidth=3, alpha=0.5)
    ax.plot(ls_all, "--", label="scratch (NumPy)", color="black")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("training loss")
    ax.set_title(f"cnn-small on digits: largest gap {gap:.1e}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    print(
        f"100 Adam steps of cnn-small (float64, same weights and batches): largest loss gap {gap:.2e}; figure {figure}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--figure", default="scratch_vs_torch.png")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    per_layer(args.batch, args.repeats)
    per_step(args.batch, args.repeats)
    agreement(args.figure)


if __name__ == "__main__":
    main()
