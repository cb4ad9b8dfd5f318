"""Seed 004's ResNet29: 7×7 stem, bottleneck stages [64,64,256]×3, [128,128,512]×4, [256,256,1024]×2, GAP."""

from __future__ import annotations

from torch import nn

from cnnlab.models.common import conv_bn_act, init_weights, make_act
from cnnlab.models.spec import register_model


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 convs, each with BN (bias on, as in the report); a 1×1
    projection shortcut with BN when the shape changes, identity otherwise."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, activation: str):
        super().__init__()
        self.conv1 = conv_bn_act(cin, mid, 1, stride, activation)
        self.conv2 = conv_bn_act(mid, mid, 3, 1, activation)
        self.conv3 = conv_bn_act(mid, cout, 1, 1, "linear")
        self.shortcut = conv_bn_act(cin, cout, 1, stride, "linear") if stride != 1 or cin != cout else nn.Identity()
        self.act = make_act(activation, cout)

    def forward(self, x):
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet29(nn.Module):
    """29 weight layers: stem conv, 9 bottlenecks (27 convs), FC."""

    stages = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 2, 2))

    def __init__(self, num_classes: int, in_chans: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(in_chans, 64, 7, 2, activation), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = 64
        for mid, cout, n, stride in self.stages:
            for i in range(n):
                blocks.append(Bottleneck(cin, mid, cout, stride if i == 0 else 1, activation))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout) if dropout else nn.Identity()
        )
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


@register_model(
    "resnet29",
    "seed 004's ResNet29 with bottleneck blocks (4,088,837 params at 224×224×3, 5 classes)",
    default_input_size=224,
    min_input_size=8,
)
def resnet29(
    num_classes: int, in_chans: int, input_size: int, activation: str = "relu", init: str = "he", dropout: float = 0.0
) -> nn.Module:
    return init_weights(ResNet29(num_classes, in_chans, activation, dropout), init)
