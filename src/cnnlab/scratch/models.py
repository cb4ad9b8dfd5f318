"""A ``Sequential`` of hand-written layers and the registry's small nets rebuilt from them, with
PyTorch's parameter names (``features.0.weight``, ``head.bias``…) so that state dicts move
between the engines as they are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnlab.scratch import layers as L
from cnnlab.scratch.optim import he_normal, torch_default, xavier_uniform

ACTIVATIONS: dict[str, Callable[[], L.Layer]] = {"relu": L.ReLU, "elu": L.ELU, "tanh": L.Tanh, "sigmoid": L.Sigmoid}


class Sequential:
    """Named layers applied in turn; the names are PyTorch's module paths."""

    def __init__(self, named: Sequence[tuple[str, L.Layer]]):
        self.named = list(named)

    @property
    def layers(self) -> list[L.Layer]:
        return [layer for _, layer in self.named]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, g: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def parameters(self) -> list[tuple[str, np.ndarray]]:
        return [(f"{n}.{k}", v) for n, layer in self.named for k, v in layer.params.items()]

    def num_parameters(self) -> int:
        return int(sum(v.size for _, v in self.parameters()))

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}

    def train(self, mode: bool = True) -> Sequential:
        for layer in self.layers:
            layer.training = mode
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {}
        for n, layer in self.named:
            out.update({f"{n}.{k}": v for k, v in {**layer.params, **layer.buffers}.items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load arrays (NumPy, or anything with ``.numpy()``) by name; every name must match."""
        mine = self.state_dict()
        missing, unexpected = set(mine) - set(state), set(state) - set(mine)
        if missing or unexpected:
            raise ValueError(
                f"state dict does not fit: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        for n, layer in self.named:
            for store in (layer.params, layer.buffers):
                for k in store:
                    v = state[f"{n}.{k}"]
                    v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                    if v.shape != store[k].shape:
                        raise ValueError(f"{n}.{k}: shape {v.shape} does not fit {store[k].shape}")
                    store[k] = v.astype(store[k].dtype).copy()

    def astype(self, dtype: type) -> Sequential:
        for layer in self.layers:
            for store in (layer.params, layer.buffers):
                for k, v in store.items():
                    if v.dtype.kind == "f":
                        store[k] = v.astype(dtype)
        return self


def init(model: Sequential, scheme: str, rng: np.random.Generator) -> Sequential:
    """Initialise Dense/Conv weights and biases: ``default`` (PyTorch's U(±1/√fan_in) for both),
    ``he`` (N(0, 2/fan_in), zero bias) or ``xavier`` (Glorot uniform, zero bias)."""
    for layer in model.layers:
        if not isinstance(layer, (L.Dense, L.Conv2D)):
            continue
        w = layer.params["weight"]
        fan_in = int(np.prod(w.shape[1:]))
        fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
        if scheme == "he":
            new, bias = he_normal(w.shape, fan_in, rng), np.zeros(w.shape[0])
        elif scheme == "xavier":
            new, bias = xavier_uniform(w.shape, fan_in, fan_out, rng), np.zeros(w.shape[0])
        else:
            new, bias = torch_default(w.shape, fan_in, rng), torch_default((w.shape[0],), fan_in, rng)
        layer.params["weight"], layer.params["bias"] = new.astype(w.dtype), bias.astype(w.dtype)
    return model


class _Builder:
    """Appends layers under PyTorch's module paths (``prefix.index``)."""

    def __init__(self, rng: np.random.Generator, dtype: type):
        self.named: list[tuple[str, L.Layer]] = []
        self.counts: dict[str, int] = {}
        self.rng, self.dtype = rng, dtype

    def add(self, prefix: str, layer: L.Layer) -> None:
        i = self.counts.get(prefix, 0)
        self.counts[prefix] = i + 1
        self.named.append((f"{prefix}.{i}" if prefix != "head" else "head", layer))

    def act(self, prefix: str, name: str) -> None:
        self.add(prefix, ACTIVATIONS[name]())

    def dense_stack(
        self, prefix: str, width: int, hidden: Sequence[int], activation: str, dropout: float, dropout_each: bool
    ) -> int:
        for h in hidden:
            self.add(prefix, L.Dense(width, h, self.dtype))
            self.act(prefix, activation)
            if dropout_each and dropout > 0:
                self.add(prefix, L.Dropout(dropout, self.rng))
            width = h
        if not dropout_each and dropout > 0:
            self.add(prefix, L.Dropout(dropout, self.rng))
        return width


def mlp(
    num_classes: int,
    in_chans: int,
    input_size: int,
    hidden: Sequence[int],
    dropout: float = 0.0,
    activation: str = "relu",
    init_scheme: str = "default",
    seed: int = 0,
    dtype: type = np.float32,
) -> Sequential:
    """Flatten → [Dense → activation → Dropout]* → Dense (``head``): cnnlab's ``mlp`` family."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, dtype)
    b.add("features", L.Flatten())
    width = b.dense_stack("features", in_chans * input_size * input_size, hidden, activation, dropout, True)
    b.add("head", L.Dense(width, num_classes, dtype))
    return init(Sequential(b.named), init_scheme, rng)


def convnet(
    num_classes: int,
    in_chans: int,
    input_size: int,
    stages: Sequence[tuple[Sequence[tuple[int, int]], bool]],
    hidden: Sequence[int],
    dropout: float,
    activation: str = "relu",
    batch_norm: bool = False,
    init_scheme: str = "default",
    seed: int = 0,
    dtype: type = np.float32,
) -> Sequential:
    """[Conv (same padding) → [BatchNorm] → activation]* → [max-pool 2] per stage → Flatten →
    [Dense → activation]* → Dropout → Dense (``head``): cnnlab's ``cnn`` family."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, dtype)
    chans, size = in_chans, input_size
    for convs, pool in stages:
        for filters, k in convs:
            b.add("features", L.Conv2D(chans, filters, k, 1, k // 2, dtype))
            if batch_norm:
                b.add("features", L.BatchNorm(filters, dtype=dtype))
            b.act("features", activation)
            chans = filters
        if pool:
            b.add("features", L.MaxPool2D(2))
            size //= 2
    b.add("neck", L.Flatten())
    width = b.dense_stack("neck", chans * size * size, hidden, activation, dropout, False)
    b.add("head", L.Dense(width, num_classes, dtype))
    return init(Sequential(b.named), init_scheme, rng)


def _mlp(hidden: Sequence[int], dropout: float) -> Callable[..., Sequential]:
    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        hidden: Sequence[int] = hidden,
        dropout: float = dropout,
        activation: str = "relu",
        init: str = "default",
        **kw: Any,
    ) -> Sequential:
        return mlp(num_classes, in_chans, input_size, hidden, dropout, activation, init, **kw)

    return build


def _cnn(default_filters: Sequence[int], default_bn: bool) -> Callable[..., Sequential]:
    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.3,
        activation: str = "relu",
        init: str = "default",
        batch_norm: bool = default_bn,
        filters: Sequence[int] = default_filters,
        kernels: Sequence[int] | None = None,
        **kw: Any,
    ) -> Sequential:
        stages = [(((f, k),), True) for f, k in zip(filters, kernels or [3] * len(filters))]  # checked by the twin
        return convnet(num_classes, in_chans, input_size, stages, hidden, dropout, activation, batch_norm, init, **kw)

    return build


def _cnn_small(
    num_classes: int,
    in_chans: int,
    input_size: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
    activation: str = "relu",
    init: str = "default",
    filters: Sequence[int] = (3,),
    kernels: Sequence[int] = (3,),
    pool: bool = False,
    **kw: Any,
) -> Sequential:
    convs = list(zip(filters, kernels))  # checked by the registry's twin (simple_cnn.conv_list) first
    stages = [(((f, k),), pool) for f, k in convs]
    return convnet(num_classes, in_chans, input_size, stages, hidden, dropout, activation, False, init, **kw)


# the registry's models this engine builds, with the same defaults (hidden sizes, dropout)
MODELS: dict[str, Callable[..., Sequential]] = {
    "mlp": _mlp((512, 256), 0.0),
    "mlp-lego": _mlp((512, 400, 200, 50), 0.0),
    "mlp-fys": _mlp((128, 128, 64), 0.0),
    "simplest": _mlp((1,), 0.0),
    "cnn": _cnn((32, 64), False),
    "cnn-bn": _cnn((16, 32, 64), True),
    "cnn-small": _cnn_small,
}
OPTIONS = {"hidden", "dropout", "activation", "init", "batch_norm"}
CONV_OPTIONS = {  # model options a scratch twin takes
    "cnn": {"filters", "kernels"},
    "cnn-bn": {"filters", "kernels"},
    "cnn-small": {"filters", "kernels", "pool"},
}


def build(
    name: str,
    num_classes: int,
    in_chans: int,
    input_size: int,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: type = np.float32,
) -> Sequential:
    """The scratch twin of registry model ``name`` (see :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"the scratch engine builds {', '.join(MODELS)}; not {name!r}")
    opts = dict(options or {})
    bad = set(opts) - OPTIONS - CONV_OPTIONS.get(name, set())
    if bad:
        raise ValueError(f"the scratch engine does not support option(s) {', '.join(sorted(bad))} of {name!r}")
    if opts.get("activation", "relu") not in ACTIVATIONS:
        raise ValueError(f"the scratch engine has activations {', '.join(ACTIVATIONS)}; not {opts['activation']!r}")
    return MODELS[name](num_classes, in_chans, input_size, seed=seed, dtype=dtype, **opts)
