"""``--batch-size auto`` on a GPU: the largest power-of-two batch whose training step fits in the
device's memory with headroom, found by trying steps on a copy of the model (Ultralytics'
``batch=-1`` and Lightning's BatchSizeFinder do the same search; neither is usable as a library
here, and the search is ten lines)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.models.ops import uses_conv

HEADROOM = 0.8  # a batch fits when its step's peak memory stays under 80 % of the device's
FIRST, LARGEST = 16, 4096


def largest_fitting(fits: Callable[[int], bool], cap: int, first: int = FIRST) -> int | None:
    """The largest power of two ``b <= cap`` with ``fits(b)``, assuming that a batch that fits means
    every smaller one fits: doubling up from ``first`` while it fits, halving down while it does
    not. None when not even a batch of 1 fits."""
    cap = max(1, cap)
    b = min(first, 1 << (cap.bit_length() - 1))
    if fits(b):
        while b * 2 <= cap and fits(b * 2):
            b *= 2
        return b
    while b > 1:
        b //= 2
        if fits(b):
            return b
    return None


def step_fits(
    model: nn.Module, channels: int, size: int, classes: int, device: torch.device, amp: torch.dtype | None
) -> Callable[[int], bool]:
    """Whether a forward/backward pass of a batch fits on ``device`` with :data:`HEADROOM`, counting
    room for an Adam-like optimizer's two states per trainable parameter. The pass runs on a copy,
    so the model's weights and BatchNorm statistics stay as they were."""
    total = torch.cuda.get_device_properties(device).total_memory
    trial = copy.deepcopy(model).to(device).train()
    if uses_conv(trial):
        trial = trial.to(memory_format=torch.channels_last)
    states = 2 * sum(p.numel() * p.element_size() for p in trial.parameters() if p.requires_grad)

    def fits(b: int) -> bool:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            x = torch.randn(b, channels, size, size, device=device)
            y = torch.randint(0, classes, (b,), device=device)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = nn.functional.cross_entropy(trial(x).float(), y)
            loss.backward()
            peak = torch.cuda.max_memory_allocated(device) + states
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            trial.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        return peak <= HEADROOM * total

    return fits


def auto_batch_size(
    build: Callable[[], nn.Module], channels: int, size: int, classes: int, device: torch.device,
    amp: torch.dtype | None, n_train: int, default: int,
) -> tuple[int, str]:  # fmt: skip
    """The batch size of ``--batch-size auto`` and a sentence saying how it was chosen; ``build``
    makes the model to try (only on a GPU)."""
    if device.type != "cuda":
        return default, f"--batch-size auto: on {device.type} memory is not what limits a batch; keeping {default}"
    cap = min(LARGEST, n_train)
    found = largest_fitting(step_fits(build(), channels, size, classes, device, amp), cap)
    if found is None:
        return 1, "--batch-size auto: not even one image's step fits with 20 % headroom; trying batch 1"
    why = (
        "with 20 % memory headroom"
        if found * 2 <= cap
        else f"the cap of {cap}: {'the training split' if cap == n_train else 'cnnlab searches no further'}"
    )
    return found, f"--batch-size auto: {found}, the largest power of two that fits ({why}) on {device}"
