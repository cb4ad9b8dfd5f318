"""Pieces shared by the model families: activations and weight initialisation by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.core.names import ACTIVATIONS, INITS

# each name of core/names.py's ACTIVATIONS → its module for ``channels`` channels (a test checks the keys)
ACTIVATION_MODULES: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda c: nn.ReLU(inplace=True),
    "relu6": lambda c: nn.ReLU6(inplace=True),
    "elu": lambda c: nn.ELU(inplace=True),
    "tanh": lambda c: nn.Tanh(),
    "sigmoid": lambda c: nn.Sigmoid(),
    "prelu": lambda c: nn.PReLU(c),
}


def make_act(name: str, channels: int = 1) -> nn.Module:
    """An activation module by name; ``prelu`` learns one slope per channel (as Keras' PReLU)."""
    if name not in ACTIVATION_MODULES:
        raise CnnlabError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATION_MODULES[name](channels)


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise conv and linear weights: ``he`` (Kaiming normal, fan-in, as the seeds' He
    init N(0, √(2/n))), ``xavier`` (Glorot uniform, Keras' default) or ``default`` (PyTorch's).
    Biases start at zero for he/xavier; BatchNorm starts at γ=1, β=0."""
    if scheme not in INITS:
        raise CnnlabError(f"unknown init {scheme!r}; choose from {', '.join(INITS)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def conv_bn_act(
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    act: str = "relu",
    batch_norm: bool = True,
    bias: bool = True,
    groups: int = 1,
) -> nn.Sequential:
    """Conv (same padding) → [BatchNorm] → [activation]; ``act='linear'`` leaves it out."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    if act != "linear":
        layers.append(make_act(act, cout))
    return nn.Sequential(*layers)
