"""Transfer-learning policies: which parameters train, frozen BatchNorm in eval mode, head vs backbone."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


def output_layer(model: nn.Module) -> nn.Linear:
    """The classifier layer: ``model.head`` when it is a Linear, timm's ``get_classifier()``,
    else the model's last Linear module."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    if hasattr(model, "get_classifier") and isinstance(model.get_classifier(), nn.Linear):  # type: ignore[operator]  # timm's method, not a buffer
        return model.get_classifier()  # type: ignore[operator]  # timm's method, not a buffer
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear output layer")
    return linears[-1]


class DenseHead(nn.Sequential):
    """A pretrained net's new classifier with hidden dense layers: [flatten,] (Linear, ReLU,
    dropout) per hidden width, then the output Linear — seed 002's Flatten → Dense(256, relu) →
    Dense(classes) on a frozen base. The whole block is the head (:func:`head_block`): it trains
    when the backbone is frozen, and cached backbone features are its input."""

    def __init__(
        self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0, flatten: bool = False
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


def head_block(model: nn.Module) -> nn.Module:
    """What trains above a frozen backbone: a :class:`DenseHead` when the model has one, else
    the output layer."""
    return next((m for m in model.modules() if isinstance(m, DenseHead)), None) or output_layer(model)


def parent_of(model: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    for module in model.modules():
        for name, child in module.named_children():
            if child is target:
                return module, name
    raise ValueError("module not found among the model's children")


def replace_output_layer(model: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` where the output layer is; returns the old layer."""
    old = output_layer(model)
    parent, name = parent_of(model, old)
    setattr(parent, name, new)
    return old


@contextmanager
def without_output_layer(model: nn.Module, block: bool = False) -> Iterator[None]:
    """Temporarily replace the output layer (with ``block``, the whole :func:`head_block`) by
    identity, so the model returns its penultimate features (the backbone's features)."""
    head = head_block(model) if block else output_layer(model)
    parent, name = parent_of(model, head)
    setattr(parent, name, nn.Identity())
    try:
        yield
    finally:
        setattr(parent, name, head)


def units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks in order, bottom to top: the model's top-level children, with
    containers (Sequential/ModuleList) expanded one level, keeping those with parameters and
    leaving out the head. ``--unfreeze-last N`` counts these from the top."""
    head = head_block(model)
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        parts = list(child.named_children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else [("", child)]
        for sub, mod in parts:
            if any(m is head for m in mod.modules()) or next(mod.parameters(), None) is None:
                continue
            out.append((f"{name}.{sub}" if sub else name, mod))
    return out


def apply_freeze(
    model: nn.Module, freeze: str = "none", unfreeze_last: int | None = None, train_bn_only: bool = False
) -> None:
    """Set ``requires_grad`` for a transfer policy; the head (:func:`head_block`) always trains.

    Args:
        freeze: "none" (everything trains) or "backbone" (only the output layer trains).
        unfreeze_last: with a frozen backbone, train the top N blocks of :func:`units` too.
        train_bn_only: train only BatchNorm parameters (and the head), seed 000's variant.
    """
    head = head_block(model)
    frozen = freeze == "backbone" or unfreeze_last is not None or train_bn_only
    for p in model.parameters():
        p.requires_grad = not frozen
    if unfreeze_last:
        for _, mod in units(model)[-unfreeze_last:]:
            for p in mod.parameters():
                p.requires_grad = True
    if train_bn_only:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                for p in m.parameters():
                    p.requires_grad = True
    for p in head.parameters():
        p.requires_grad = True


def bn_to_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: its running statistics stay as they are (its
    affine parameters still train). Fine-tuning on small batches keeps the pretrained ones."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


def frozen_bn_to_eval(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are frozen in eval mode, so their running
    statistics do not move while the rest trains (the classic Keras fine-tuning trap)."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()
