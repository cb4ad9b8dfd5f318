"""Small convolutional nets: `cnn` (default), seed 001's `cnn-small`, seed 000's `triple`, seed 003's `baseline-cnn`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models.common import init_weights, make_act
from cnnlab.models.spec import register_model


@dataclass(frozen=True)
class Stage:
    """Convs (filters, kernel) applied in turn, then optional BatchNorm, dropout and 2×2 max-pool."""

    convs: tuple[tuple[int, int], ...]
    pool: bool = True
    stack_bn: bool = False
    dropout: float = 0.0


class ConvNet(nn.Module):
    """Conv stages → flatten → dense layers → dropout → ``head``.

    Args:
        num_classes, in_chans, input_size: task and input shape.
        stages: the convolutional stages (same padding, stride 1).
        hidden: dense layer sizes before the output layer.
        dropout: dropout before the output layer.
        activation: activation after every conv and dense layer.
        conv_bn: BatchNorm between each conv and its activation.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        input_size: int,
        stages: Sequence[Stage],
        hidden: Sequence[int],
        dropout: float,
        activation: str = "relu",
        conv_bn: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        chans, size = in_chans, input_size
        for st in stages:
            for filters, k in st.convs:
                layers.append(nn.Conv2d(chans, filters, k, padding=k // 2))
                if conv_bn:
                    layers.append(nn.BatchNorm2d(filters))
                layers.append(make_act(activation, filters))
                chans = filters
            if st.stack_bn:
                layers.append(nn.BatchNorm2d(chans))
            if st.dropout > 0:
                layers.append(nn.Dropout(st.dropout))
            if st.pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        width = chans * size * size
        for h in hidden:
            dense += [nn.Linear(width, h), make_act(activation, h)]
            width = h
        if dropout > 0:
            dense.append(nn.Dropout(dropout))
        self.neck = nn.Sequential(*dense)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.neck(self.features(x)))


def _cnn(default_filters: Sequence[int], default_bn: bool):
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
    ) -> nn.Module:
        """``filters``/``kernels`` (model.options): one conv (+ 2×2 max-pool) per entry, 3×3 unless given."""
        stages = [Stage(((f, k),)) for f, k in conv_list(filters, kernels, input_size, True)]
        return init_weights(
            ConvNet(num_classes, in_chans, input_size, stages, hidden, dropout, activation, batch_norm), init
        )

    return build


register_model("cnn", "Conv32-pool-Conv64-pool-Dense128-dropout (the default until cnn-bn)", min_input_size=4)(
    _cnn((32, 64), False)
)
# cnnlab's default net for small images, chosen by time to 90 % on Fashion-MNIST (benchmarks/race.py,
# 3 seeds): BatchNorm lets the one-cycle recipe reach it in 2 epochs (850 steps); three narrower
# stages cost ~2.0 M multiply-adds an image at 28 px, cnn's 32-64 ~4.2 M
register_model(
    "cnn-bn",
    "Conv16-Conv32-Conv64, each BN + pool, Dense128-dropout (the default; half cnn's multiply-adds)",
    min_input_size=8,
    recipe_steps=850,
)(_cnn((16, 32, 64), True))


MAX_FILTERS, MAX_KERNEL = 4096, 31  # per conv of `triple`/`cnn-small`: beyond these a typo, not a model


def conv_list(filters: object, kernels: object, input_size: int, pooled: bool) -> list[tuple[int, int]]:
    """Checked (filters, kernel) per conv from model options: lists (or one whole number for one
    conv) of equal length, each within bounds; with ``pooled`` each conv's 2×2 max-pool halves
    the image, which must keep at least one pixel."""
    filters = [filters] if isinstance(filters, int) and not isinstance(filters, bool) else filters
    kernels = [kernels] if isinstance(kernels, int) and not isinstance(kernels, bool) else kernels
    if kernels is None and isinstance(filters, (list, tuple)):  # 3×3 throughout unless given
        kernels = [3] * len(filters)
    if not isinstance(filters, (list, tuple)) or not isinstance(kernels, (list, tuple)):
        raise CnnlabError(f"model options filters/kernels: lists, e.g. [32, 64, 128, 128] / [7, 5, 3, 1], "
                          f"not {filters!r} / {kernels!r}")  # fmt: skip
    if len(filters) != len(kernels) or not filters:
        raise CnnlabError(
            f"model options filters {list(filters)} and kernels {list(kernels)}: give one kernel size per conv"
        )
    bounds = [(v, MAX_FILTERS) for v in filters] + [(v, MAX_KERNEL) for v in kernels]
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most for v, most in bounds):
        raise CnnlabError(f"model options filters/kernels: whole numbers from 1 to {MAX_FILTERS} / {MAX_KERNEL}, "
                          f"not {list(filters)} / {list(kernels)}")  # fmt: skip
    if pooled and input_size // 2 ** len(filters) < 1:
        raise CnnlabError(f"{len(filters)} convs each halve the image: {input_size} px is too small for them")
    return list(zip(filters, kernels))


@register_model("cnn-small", "seed 001: one conv of 3 filters 3×3 (pad 1, no pooling), dense 128-64")
def cnn_small(
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
) -> nn.Module:
    """``filters``/``kernels`` (model.options): one conv per entry, same padding; ``pool``: a 2×2
    max-pool after each. Seed 001's Keras variants: filters 32 (one conv of 32 3×3 filters), and
    filters 5,3 kernels 5,3 pool true (conv 5×5×5 → pool → conv 3×3×3 → pool)."""
    if not isinstance(pool, bool):
        raise CnnlabError(f"model option pool: true or false, not {pool!r}")
    stages = [Stage(((f, k),), pool=pool) for f, k in conv_list(filters, kernels, input_size, pool)]
    return init_weights(ConvNet(num_classes, in_chans, input_size, stages, hidden, dropout, activation), init)


def _triple(default_activation: str):
    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.5,
        activation: str = default_activation,
        init: str = "default",
        batch_norm: bool = False,
        filters: Sequence[int] = (32, 64, 128, 128),
        kernels: Sequence[int] = (7, 5, 3, 1),
    ) -> nn.Module:
        """``filters``/``kernels``: one conv (+ 2×2 max-pool) per entry (model.options); the report's
        ~660 k-parameter TripleV2 at 64 px grey is filters 32,64,64,64 with hidden 512,64: 652,234 parameters,
        558,282 in the dense layers (docs/results.md)."""
        stages = [Stage(((f, k),)) for f, k in conv_list(filters, kernels, input_size, True)]
        return init_weights(
            ConvNet(num_classes, in_chans, input_size, stages, hidden, dropout, activation, batch_norm), init
        )

    return build


register_model(
    "triple",
    "seed 000's Triple: conv 7, 5, 3, 1 each + max-pool, dropout, dense head (ReLU)",
    default_input_size=64,
    min_input_size=16,
)(_triple("relu"))
register_model(
    "triple-tanh", "seed 000's Triple V2: the Triple CNN with tanh", default_input_size=64, min_input_size=16
)(_triple("tanh"))


@register_model(
    "baseline-cnn",
    "seed 003: two stacks of [conv, conv, batch-norm, dropout, max-pool], dense 512",
    default_input_size=64,
    min_input_size=4,
)
def baseline_cnn(
    num_classes: int,
    in_chans: int,
    input_size: int,
    hidden: Sequence[int] = (512,),
    dropout: float = 0.4,
    activation: str = "relu",
    init: str = "default",
    batch_norm: bool = True,
) -> nn.Module:
    stages = [
        Stage(((32, 3), (32, 3)), stack_bn=batch_norm, dropout=dropout),
        Stage(((64, 3), (64, 3)), stack_bn=batch_norm, dropout=dropout),
    ]
    return init_weights(ConvNet(num_classes, in_chans, input_size, stages, hidden, dropout, activation), init)
