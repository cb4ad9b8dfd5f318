"""Small model operations shared by training and inference: the device, conv detection, logits over
batches and logits → probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from cnnlab.core.errors import CnnlabError

__all__ = ["predict_logits", "probabilities", "resolve_device", "uses_conv"]


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when present, else mps, else cpu; an unavailable explicit device is an error."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps and mps.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnlabError(f"train.device {name!r}: no CUDA device is available here; use --device cpu or auto")
    if name == "mps" and not (mps and mps.is_available()):
        raise CnnlabError("train.device 'mps': no Apple GPU is available here; use --device cpu or auto")
    return torch.device(name)


def uses_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over ``batches``, in eval mode, returned on the CPU.

    ``forward`` replaces ``model(x)`` (a trainer that runs part of the model passes its own).
    """
    model.eval()
    channels_last = uses_conv(model)
    outs, ys = [], []
    for x, y in batches:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append((forward or model)(x).float().cpu())
        ys.append(y.cpu())
    if not outs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Independent sigmoids for multi-label models, a softmax otherwise."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)
