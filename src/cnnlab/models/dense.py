"""Fully connected (dense) classifiers on flattened pixels."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .factory import register_model


class MLP(nn.Module):
    """Flatten → [Linear → ReLU → Dropout]* → Linear.

    Args:
        num_classes: outputs.
        in_features: flattened input size.
        hidden: hidden layer sizes.
        dropout: dropout after each hidden layer (0 disables it).
    """

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@register_model("mlp", "dense net on flattened pixels, hidden 512-256 (set --hidden)")
def mlp(num_classes: int, in_chans: int, input_size: int, hidden: Sequence[int] = (512, 256),
        dropout: float = 0.2) -> nn.Module:
    return MLP(num_classes, in_chans * input_size * input_size, hidden, dropout)
