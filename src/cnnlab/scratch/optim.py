"""Optimizers and initialisers in NumPy, with PyTorch's update rules (so both engines take the
same steps from the same weights)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class Optimizer:
    """Updates the ``params`` of layers from their ``grads`` (read at each step)."""

    def __init__(self, layers: Iterable[Any], lr: float, weight_decay: float = 0.0):
        self.layers = [layer for layer in layers if layer.params]
        self.lr, self.weight_decay = lr, weight_decay
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self.t = 0

    def _grads(self) -> Iterator[tuple[int, dict[str, np.ndarray], str, np.ndarray]]:
        i = 0
        for layer in self.layers:
            for name in layer.params:
                yield i, layer.params, name, layer.grads[name]
                i += 1

    def step(self) -> None:
        self.t += 1
        for i, params, name, g in self._grads():
            p = params[name]
            if self.weight_decay and not isinstance(self, AdamW):
                g = g + self.weight_decay * p  # L2 penalty ½λ‖θ‖² in the gradient
            params[name] = self.update(i, p, g).astype(p.dtype)

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"t": np.asarray(self.t)}
        for i, s in self.state.items():
            out.update({f"{i}.{k}": v for k, v in s.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        self.state = {}
        for key, v in state.items():
            if key != "t":
                i, name = key.split(".", 1)
                self.state.setdefault(int(i), {})[name] = np.array(v)


class SGD(Optimizer):
    """v ← μv + g (v₀ = g),  θ ← θ − η v  (PyTorch's momentum; μ = 0: plain gradient descent)."""

    def __init__(self, layers, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(layers, lr, weight_decay)
        self.momentum = momentum

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.momentum:
            s = self.state.setdefault(i, {})
            s["v"] = g.copy() if "v" not in s else self.momentum * s["v"] + g
            g = s["v"]
        return p - self.lr * g


class RMSprop(Optimizer):
    """s ← αs + (1−α)g²,  θ ← θ − η g/(√s + ε)  (α = 0.99, ε = 1e-8; with momentum μ:
    b ← μb + g/(√s + ε), θ ← θ − η b)."""

    def __init__(
        self,
        layers,
        lr: float,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        super().__init__(layers, lr, weight_decay)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        s = self.state.setdefault(i, {"sq": np.zeros_like(p)})
        s["sq"] = self.alpha * s["sq"] + (1 - self.alpha) * g * g
        step = g / (np.sqrt(s["sq"]) + self.eps)
        if self.momentum:
            s["b"] = self.momentum * s.get("b", np.zeros_like(p)) + step
            step = s["b"]
        return p - self.lr * step


class Adam(Optimizer):
    """Adam (Kingma & Ba; seed 001's eqs. 34–36):
    m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
    θ ← θ − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)   (PyTorch's placement of ε)."""

    def __init__(
        self,
        layers,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(layers, lr, weight_decay)
        self.b1, self.b2 = betas
        self.eps = eps

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        s = self.state.setdefault(i, {"m": np.zeros_like(p), "v": np.zeros_like(p)})
        s["m"] = self.b1 * s["m"] + (1 - self.b1) * g
        s["v"] = self.b2 * s["v"] + (1 - self.b2) * g * g
        bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        return p - (self.lr / bc1) * s["m"] / (np.sqrt(s["v"]) / math.sqrt(bc2) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay: θ ← θ(1 − ηλ) before the Adam step (λ = 0.01 default)."""

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        return super().update(i, p * (1 - self.lr * self.weight_decay), g)


def he_normal(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) normal: N(0, 2/fan_in), for ReLU nets."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)


def xavier_uniform(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Glorot/Xavier uniform: U(−a, a), a = √(6/(fan_in + fan_out)) (Keras' default)."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, shape)


def torch_default(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's default for Linear/Conv weights and biases: U(−1/√fan_in, 1/√fan_in)."""
    a = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-a, a, shape)
