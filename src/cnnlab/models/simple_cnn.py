"""Small convolutional nets: the default `cnn` and seed 001's one-layer `cnn-small`."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .factory import register_model


class SmallCNN(nn.Module):
    """Conv stages (conv 3×3 same → ReLU [→ max-pool 2]) → flatten → dense head.

    Args:
        num_classes: outputs.
        in_chans: input channels.
        input_size: square input side.
        filters: output channels of each conv stage.
        pool: max-pool 2×2 after each stage.
        hidden: dense layer sizes before the output layer.
        dropout: dropout before the output layer (0 disables it).
    """

    def __init__(self, num_classes: int, in_chans: int, input_size: int, filters: Sequence[int],
                 pool: bool, hidden: Sequence[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        chans, size = in_chans, input_size
        for f in filters:
            layers += [nn.Conv2d(chans, f, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            chans = f
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        width = chans * size * size
        for h in hidden:
            dense += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        if dropout > 0:
            dense.append(nn.Dropout(dropout))
        self.neck = nn.Sequential(*dense)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.neck(self.features(x)))


@register_model("cnn", "Conv32-pool-Conv64-pool-Dense128-dropout (the default)", min_input_size=4)
def cnn(num_classes: int, in_chans: int, input_size: int, hidden: Sequence[int] = (128,),
        dropout: float = 0.3) -> nn.Module:
    return SmallCNN(num_classes, in_chans, input_size, (32, 64), True, hidden, dropout)


@register_model("cnn-small", "seed 001: one conv of 3 filters 3×3 (pad 1, no pooling), dense 128-64")
def cnn_small(num_classes: int, in_chans: int, input_size: int, hidden: Sequence[int] = (128, 64),
              dropout: float = 0.0) -> nn.Module:
    return SmallCNN(num_classes, in_chans, input_size, (3,), False, hidden, dropout)
