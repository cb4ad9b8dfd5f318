"""Seed 004's VGG-style net: 10 conv layers with BN before ReLU, average pooling, FC-16/FC-8 with BN + PReLU."""

from __future__ import annotations

from torch import nn

from cnnlab.models.common import conv_bn_act, init_weights, make_act
from cnnlab.models.spec import register_model

# (filters, kernel) per conv; None marks a 2×2 average pool (seed 004 Figure 2.1a)
VGG_BN_LAYOUT = [
    (64, 3),
    (64, 3),
    None,
    (128, 3),
    (128, 3),
    None,
    (256, 3),
    (256, 3),
    (256, 1),
    None,
    (512, 3),
    (512, 3),
    (512, 1),
    None,
]


class VGGBN(nn.Module):
    """Conv(3×3 or 1×1) → BN → activation, AvgPool between blocks, then flatten →
    FC-16 → BN → PReLU → FC-8 → BN → PReLU → ``head``."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        input_size: int,
        activation: str = "relu",
        fc: tuple[int, ...] = (16, 8),
        fc_activation: str = "prelu",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        chans, size = in_chans, input_size
        for item in VGG_BN_LAYOUT:
            if item is None:
                layers.append(nn.AvgPool2d(2))
                size //= 2
                continue
            filters, k = item
            layers.append(conv_bn_act(chans, filters, k, act=activation, batch_norm=batch_norm))
            chans = filters
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        width = chans * size * size
        for h in fc:
            dense += [nn.Linear(width, h)] + ([nn.BatchNorm1d(h)] if batch_norm else []) + [make_act(fc_activation, h)]
            if dropout > 0:
                dense.append(nn.Dropout(dropout))
            width = h
        self.neck = nn.Sequential(*dense)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.neck(self.features(x)))


@register_model(
    "vgg-bn",
    "seed 004's VGG: 10 conv + BN, AvgPool, FC-16/FC-8 with BN + PReLU, He init "
    "(6,625,101 params at 224×224×3, 5 classes)",
    default_input_size=224,
    min_input_size=16,
)
def vgg_bn(
    num_classes: int,
    in_chans: int,
    input_size: int,
    activation: str = "relu",
    init: str = "he",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> nn.Module:
    return init_weights(
        VGGBN(num_classes, in_chans, input_size, activation, dropout=dropout, batch_norm=batch_norm), init
    )
