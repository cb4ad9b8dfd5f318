"""Seed 004's MobileNetV2-style net: inverted residual linear bottlenecks (t=6), ReLU6, GAP."""

from __future__ import annotations

from torch import nn

from cnnlab.models.common import conv_bn_act, init_weights
from cnnlab.models.spec import register_model

# (expansion t, channels c, repeats n, stride s), seed 004 Figure 4.4
MOBILENET_SMALL = ((6, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 4, 2), (6, 96, 3, 1))


class InvertedResidual(nn.Module):
    """1×1 expand (×t) → 3×3 depthwise (stride) → 1×1 linear projection; residual only when the
    stride is 1 and the shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int, activation: str, bias: bool):
        super().__init__()
        hidden = cin * t
        self.block = nn.Sequential(
            conv_bn_act(cin, hidden, 1, 1, activation, bias=bias),
            conv_bn_act(hidden, hidden, 3, stride, activation, bias=bias, groups=hidden),
            conv_bn_act(hidden, cout, 1, 1, "linear", bias=bias),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Small(nn.Module):
    def __init__(
        self, num_classes: int, in_chans: int, activation: str = "relu6", dropout: float = 0.0, bias: bool = False
    ):
        super().__init__()
        self.stem = conv_bn_act(in_chans, 32, 3, 2, activation, bias=bias)
        blocks: list[nn.Module] = []
        cin = 32
        for t, c, n, s in MOBILENET_SMALL:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t, activation, bias))
                cin = c
        blocks.append(conv_bn_act(cin, 160, 1, 1, activation, bias=bias))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout) if dropout else nn.Identity()
        )
        self.head = nn.Linear(160, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


@register_model(
    "mobilenetv2-small",
    "seed 004's MobileNetV2-style net: t=6 linear bottlenecks, ReLU6, Conv1-160, "
    "GAP (see docs for its parameter count)",
    default_input_size=224,
    min_input_size=8,
)
def mobilenetv2_small(
    num_classes: int,
    in_chans: int,
    input_size: int,
    activation: str = "relu6",
    init: str = "he",
    dropout: float = 0.0,
    conv_bias: bool = False,
) -> nn.Module:
    return init_weights(MobileNetV2Small(num_classes, in_chans, activation, dropout, conv_bias), init)
