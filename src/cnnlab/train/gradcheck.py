"""`cnnlab gradcheck`: every hand-written layer of the NumPy engine against PyTorch autograd and
against central finite differences, in float64, over random shapes, kernels, strides and paddings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.core.registry import did_you_mean
from cnnlab.scratch import layers as L

TOLERANCE_TORCH = 1e-6  # relative, float64
TOLERANCE_FD = 1e-5  # central differences, step 1e-6


@dataclass
class Case:
    """One random configuration: the scratch layer, the PyTorch function of (x, params) it must
    equal, the input and a description."""

    layer: Any
    torch_fn: Callable[..., Any]
    x: np.ndarray
    what: str
    loss: bool = False  # a loss: forward(z, target) → (value, ∂L/∂z)
    target: np.ndarray | None = None


def _conv(rng: np.random.Generator) -> Case:
    import torch.nn.functional as F

    c, f, k = int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.choice([1, 2, 3, 5]))
    s, p = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    h, w = int(rng.integers(k, k + 9)), int(rng.integers(k, k + 9))
    layer = L.Conv2D(c, f, k, s, p, np.float64)
    layer.params = {"weight": rng.normal(size=(f, c, k, k)), "bias": rng.normal(size=f)}
    return Case(
        layer,
        lambda x, weight, bias: F.conv2d(x, weight, bias, s, p),
        rng.normal(size=(2, c, h, w)),
        f"C{c} F{f} k{k} s{s} p{p} {h}×{w}",
    )


def _dense(rng: np.random.Generator) -> Case:
    import torch.nn.functional as F

    i, o = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    layer = L.Dense(i, o, np.float64)
    layer.params = {"weight": rng.normal(size=(o, i)), "bias": rng.normal(size=o)}
    return Case(
        layer,
        lambda x, weight, bias: F.linear(x, weight, bias),
        rng.normal(size=(int(rng.integers(1, 6)), i)),
        f"{i}→{o}",
    )


def _pool(kind: str) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        import torch.nn.functional as F

        k, s = int(rng.integers(2, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(k, k + 8)), int(rng.integers(k, k + 8))
        layer = L.MaxPool2D(k, s) if kind == "max" else L.AvgPool2D(k, s)
        fn = (lambda x: F.max_pool2d(x, k, s)) if kind == "max" else (lambda x: F.avg_pool2d(x, k, s))
        return Case(layer, fn, rng.normal(size=(2, int(rng.integers(1, 4)), h, w)), f"k{k} s{s} {h}×{w}")

    return make


def _batchnorm(dims: int) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        import torch.nn.functional as F

        c = int(rng.integers(1, 6))
        shape = (int(rng.integers(2, 7)), c) + ((int(rng.integers(1, 6)), int(rng.integers(1, 6))) if dims == 2 else ())
        layer = L.BatchNorm(c, dtype=np.float64)
        layer.params = {"weight": rng.normal(size=c), "bias": rng.normal(size=c)}

        def fn(x: Any, weight: Any, bias: Any) -> Any:
            return F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)

        return Case(layer, fn, rng.normal(size=shape), f"C{c} {shape}")

    return make


def _activation(name: str) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        import torch

        layer = {
            "relu": L.ReLU,
            "elu": L.ELU,
            "tanh": L.Tanh,
            "sigmoid": L.Sigmoid,
            "softmax": L.Softmax,
            "flatten": L.Flatten,
        }[name]()
        fn = {
            "relu": torch.relu,
            "elu": torch.nn.functional.elu,
            "tanh": torch.tanh,
            "sigmoid": torch.sigmoid,
            "softmax": lambda x: torch.softmax(x, 1),
            "flatten": lambda x: torch.flatten(x, 1),
        }[name]
        shape = (int(rng.integers(1, 5)), int(rng.integers(2, 6))) + ((3, 4) if name == "flatten" else ())
        return Case(layer, fn, rng.normal(size=shape) * 3, str(shape))

    return make


def _dropout(rng: np.random.Generator) -> Case:
    p = float(rng.uniform(0.1, 0.7))
    layer = L.Dropout(p, np.random.default_rng(int(rng.integers(1 << 30))))
    x = rng.normal(size=(3, int(rng.integers(2, 30))))
    layer.forward(x)
    mask = layer.mask
    layer.rng = None  # type: ignore[assignment]  # the mask stays fixed for the checks below

    class Fixed(L.Layer):
        def forward(self, x: np.ndarray) -> np.ndarray:
            layer.mask = mask
            return x * mask

        def backward(self, g: np.ndarray) -> np.ndarray:
            return layer.backward(g)

    import torch

    return Case(Fixed(), lambda x: x * torch.from_numpy(mask), x, f"p={p:.2f}")


def _loss(kind: str) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        import torch
        import torch.nn.functional as F

        n, k = int(rng.integers(1, 8)), int(rng.integers(2, 7))
        z = rng.normal(size=(n, k)) * 3
        if kind == "cross-entropy":
            weights = rng.uniform(0.5, 2, k) if rng.random() < 0.5 else None
            y = rng.integers(0, k, n)
            w_t = torch.from_numpy(weights) if weights is not None else None
            return Case(
                L.SoftmaxCrossEntropy(weights),
                lambda z: F.cross_entropy(z, torch.from_numpy(y), weight=w_t),
                z,
                f"N{n} K{k}{' weighted' if weights is not None else ''}",
                loss=True,
                target=y,
            )
        t = (rng.random((n, k)) < 0.4).astype(np.float64)
        return Case(
            L.BinaryCrossEntropy(),
            lambda z: F.binary_cross_entropy_with_logits(z, torch.from_numpy(t)),
            z,
            f"N{n} K{k}",
            loss=True,
            target=t,
        )

    return make


LAYERS: dict[str, Callable[[np.random.Generator], Case]] = {
    "dense": _dense,
    "conv2d": _conv,
    "maxpool2d": _pool("max"),
    "avgpool2d": _pool("avg"),
    "batchnorm1d": _batchnorm(1),
    "batchnorm2d": _batchnorm(2),
    "relu": _activation("relu"),
    "elu": _activation("elu"),
    "tanh": _activation("tanh"),
    "sigmoid": _activation("sigmoid"),
    "softmax": _activation("softmax"),
    "flatten": _activation("flatten"),
    "dropout": _dropout,
    "cross-entropy": _loss("cross-entropy"),
    "binary-cross-entropy": _loss("bce"),
}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖∞ / ‖b‖∞ (0 when both are 0)."""
    scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
    diff = float(np.max(np.abs(a - b))) if np.size(b) else 0.0
    return diff / scale if scale > 0 else diff


def _scratch(case: Case, x: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray, dict[str, np.ndarray], Any]:
    """Scalar L = Σ y·r (or the loss), its output, ∂L/∂x and ∂L/∂θ from the hand-written layer."""
    if case.loss:
        value, dz = case.layer(x, case.target)
        return value, np.asarray(value), {"x": dz}, None
    y = case.layer.forward(x)
    dx = case.layer.backward(r)
    return float((y * r).sum()), y, {"x": dx, **{k: v for k, v in case.layer.grads.items()}}, y


def check_case(case: Case, rng: np.random.Generator, fd_entries: int = 12) -> dict[str, float]:
    """Max relative errors of output and gradients against torch autograd and finite differences."""
    import torch

    x = case.x
    params = {k: v for k, v in getattr(case.layer, "params", {}).items()} if not case.loss else {}
    out_probe = case.layer.forward(x) if not case.loss else None
    r = rng.normal(size=out_probe.shape) if out_probe is not None else None
    value, y, grads, _ = _scratch(case, x, r)
    xt = torch.tensor(x, requires_grad=True)
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    yt = case.torch_fn(xt, **pt)
    lt = yt if case.loss else (yt * torch.from_numpy(r)).sum()
    lt.backward()
    res = {"output": _rel(np.asarray(y), yt.detach().numpy()), "input grad": _rel(grads["x"], xt.grad.numpy())}
    if pt:
        res["param grads"] = max(_rel(grads[k], pt[k].grad.numpy()) for k in pt)
    # central finite differences on a few entries of the input and of each parameter
    h, worst = 1e-6, 0.0
    targets = [("x", x, grads["x"])] + [(k, params[k], grads[k]) for k in params]
    for _name, arr, analytic in targets:
        for idx in rng.choice(arr.size, min(fd_entries, arr.size), replace=False):
            flat = arr.reshape(-1)
            old = flat[idx]
            flat[idx] = old + h
            up = _scratch(case, x, r)[0]
            flat[idx] = old - h
            down = _scratch(case, x, r)[0]
            flat[idx] = old
            numeric, exact = (up - down) / (2 * h), analytic.reshape(-1)[idx]
            worst = max(worst, abs(numeric - exact) / max(abs(numeric), abs(exact), 1e-3))
    res["finite differences"] = worst
    return res


@dataclass(frozen=True)
class LayerCheck:
    """One layer checked: its configurations and the worst relative error of each comparison
    (output, input grad, param grads against PyTorch; finite differences), and whether all are in tolerance."""

    layer: str
    configs: int
    errors: dict[str, float]
    ok: bool


def gradcheck(names: list[str] | None = None, configs: int = 20, seed: int = 0) -> list[LayerCheck]:
    """Per layer: configurations checked and the worst relative error of each comparison.

    Raises:
        CnnlabError: a name that is not a scratch layer.
    """
    for name in names or []:
        if name not in LAYERS:
            raise CnnlabError(f"--layer {name!r} is not a scratch layer; choose from {', '.join(LAYERS)}"
                              f"{did_you_mean(name, LAYERS)}")  # fmt: skip
    rows = []
    for name in names or list(LAYERS):
        rng = np.random.default_rng(seed)
        worst: dict[str, float] = {}
        for _ in range(configs):
            case = LAYERS[name](rng)
            for k, v in check_case(case, rng).items():
                worst[k] = max(worst.get(k, 0.0), v)
        ok = all(v <= (TOLERANCE_FD if k == "finite differences" else TOLERANCE_TORCH) for k, v in worst.items())
        rows.append(LayerCheck(name, configs, worst, ok))
    return rows
