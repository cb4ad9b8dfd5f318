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
    Large images go through in slices of at most :func:`inference_slice` images, so one pass
    holds ~0.5 GB of activations on a GPU (~48 MB on a CPU, where that is faster) whatever the
    batch size (256 images of 224 px through EfficientNet-Lite0 would hold ~2.5 GB).
    """
    model.eval()
    channels_last = uses_conv(model)
    outs, ys = [], []
    step: int | None = None
    for x, y in batches:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if step is None:
            step = inference_slice(model, x) if x.dim() == 4 and x.shape[-1] >= 64 else len(x)
        for start in range(0, len(x), max(step, 1)):
            outs.append((forward or model)(x[start : start + step]).float().cpu())
        ys.append(y.cpu())
    if not outs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)


def probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Independent sigmoids for multi-label models, a softmax otherwise."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)


INFERENCE_BUDGET = 0.5 * 2**30  # bytes of activations one no-grad pass may hold
# On a CPU a pass runs fastest when its activations stay near the last-level cache: measured at one
# thread on a 32 MB-L3 EPYC, Lite0 at 224 px ran 8.4 img/s in passes of 64, 19.5 of 16, 30.5 of 8;
# `triple` at 64 px 242 img/s in passes of 256, 353 of 32. ~48 MB of the largest outputs (x3) gives
# those best slices (10 and 30 images); a GPU keeps the memory budget above.
CPU_INFERENCE_BUDGET = 48 * 2**20


def _leaf_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """The byte size of every leaf module's output on ``x``, by a forward with hooks."""
    sizes: list[int] = []

    def hook(_: torch.nn.Module, __: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not next(m.children(), None)]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return sizes


def inference_slice(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Images per no-grad pass within INFERENCE_BUDGET (CPU_INFERENCE_BUDGET for a tensor on the
    CPU): a pass holds about three of its largest outputs at once (a layer's input, its output and
    a residual)."""
    largest = max(_leaf_outputs(model, x[:1]) or [1])
    budget = CPU_INFERENCE_BUDGET if x.device.type == "cpu" else INFERENCE_BUDGET
    return max(1, int(budget // (3 * largest)))


def activation_bytes(model: torch.nn.Module, channels: int, size: int) -> int:
    """Bytes of activations one image costs a training pass: the outputs of every leaf module on
    one image (what autograd keeps for the backward pass, roughly). On EfficientNet-Lite0 at
    224 px it says 96 MB; a measured training step costs 79 MB an image."""
    device = next(model.parameters()).device
    return sum(_leaf_outputs(model, torch.zeros(1, channels, size, size, device=device)))
